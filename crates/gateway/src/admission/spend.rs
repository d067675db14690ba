//! Spend: what each key and tenant used and cost, per model and UTC day, and budgets.
//!
//! The request path adds to in-memory totals ([`Spent`]) and sends the event to a writer
//! thread ([`SpendWriter`]) that writes batches to the `spend` table of `auth.db` about once
//! a second: no request waits on disk. At start the current periods' totals are read back,
//! so a budget spent before a restart stays spent.

use rusqlite::{params, Connection};
use serde::Serialize;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

/// How often the writer writes what arrived.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Over what a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Period {
    /// The current UTC day.
    Day,
    /// The current UTC month.
    #[default]
    Month,
}

impl Period {
    /// `day` or `month`.
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    /// The period `unix` falls in, as a `LIKE` pattern over `YYYY-MM-DD` days.
    fn pattern(self, unix: u64) -> String {
        let day = day_of(unix);
        match self {
            Period::Day => day,
            Period::Month => format!("{}%", &day[..8]),
        }
    }

    /// A number that changes when the period does.
    fn index(self, unix: u64) -> u64 {
        let day = day_of(unix);
        match self {
            Period::Day => unix / 86_400,
            Period::Month => {
                let y: u64 = day[..4].parse().unwrap_or(0);
                let m: u64 = day[5..7].parse().unwrap_or(0);
                y * 12 + m
            }
        }
    }
}

/// A budget: most that may be spent per period, in the currency of `price:`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Budget {
    /// The amount.
    pub amount: f64,
    /// Its period.
    pub period: Period,
}

/// `YYYY-MM-DD` (UTC) of unix seconds.
pub fn day_of(unix: u64) -> String {
    switchyard_core::calendar::date_of(unix)
}

/// What one scope (a key or a tenant) spent in its budget's current period.
#[derive(Debug)]
pub struct Spent {
    /// The budget.
    pub budget: Budget,
    /// (period index, spent in it).
    spent: Mutex<(u64, f64)>,
}

impl Spent {
    /// A budget with `already` spent in the period of `unix`.
    pub fn new(budget: Budget, already: f64, unix: u64) -> Self {
        Self {
            budget,
            spent: Mutex::new((budget.period.index(unix), already)),
        }
    }

    /// Whether the budget is used up at `unix`.
    pub fn exhausted(&self, unix: u64) -> bool {
        let s = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0 == self.budget.period.index(unix) && s.1 >= self.budget.amount
    }

    /// What was spent in the period of `unix` (0 once a new one started).
    pub fn spent(&self, unix: u64) -> f64 {
        let s = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.0 == self.budget.period.index(unix) {
            s.1
        } else {
            0.0
        }
    }

    /// Adds `cost` at `unix` (a new period starts from zero).
    pub fn add(&self, cost: f64, unix: u64) {
        let mut s = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let p = self.budget.period.index(unix);
        if s.0 != p {
            *s = (p, 0.0);
        }
        s.1 += cost;
    }
}

/// One request's spend, as the writer records it.
#[derive(Debug, Clone)]
pub struct SpendEvent {
    /// `key:<id>` or `tenant:<name>`.
    pub scope: String,
    /// The model.
    pub model: String,
    /// Unix seconds.
    pub unix: u64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output tokens.
    pub completion_tokens: u32,
    /// Cost by the serving backend's `price:` (0 without one).
    pub cost: f64,
}

/// A row of `GET /admin/spend`.
#[derive(Debug, Clone, Serialize)]
pub struct SpendRow {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// `key:<id>` or `tenant:<name>`.
    pub scope: String,
    /// The model.
    pub model: String,
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Cost.
    pub cost: f64,
}

fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS spend (
             day TEXT NOT NULL,
             scope TEXT NOT NULL,
             model TEXT NOT NULL,
             requests INTEGER NOT NULL DEFAULT 0,
             prompt_tokens INTEGER NOT NULL DEFAULT 0,
             completion_tokens INTEGER NOT NULL DEFAULT 0,
             cost REAL NOT NULL DEFAULT 0,
             PRIMARY KEY (day, scope, model)
         );",
    )
}

/// What `scope` spent in `period` as of `unix`, from the table.
pub fn spent_in(conn: &Connection, scope: &str, period: Period, unix: u64) -> f64 {
    let _ = create(conn);
    conn.query_row(
        "SELECT COALESCE(SUM(cost), 0) FROM spend WHERE scope = ?1 AND day LIKE ?2",
        params![scope, period.pattern(unix)],
        |r| r.get(0),
    )
    .unwrap_or(0.0)
}

/// Every row, newest day first.
pub fn rows(conn: &Connection) -> rusqlite::Result<Vec<SpendRow>> {
    create(conn)?;
    let mut st = conn.prepare(
        "SELECT day, scope, model, requests, prompt_tokens, completion_tokens, cost FROM spend ORDER BY day DESC, scope, model",
    )?;
    let rows = st.query_map([], |r| {
        Ok(SpendRow {
            day: r.get(0)?,
            scope: r.get(1)?,
            model: r.get(2)?,
            requests: r.get::<_, i64>(3)?.max(0) as u64,
            prompt_tokens: r.get::<_, i64>(4)?.max(0) as u64,
            completion_tokens: r.get::<_, i64>(5)?.max(0) as u64,
            cost: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// The write-behind writer: a thread with its own connection, fed through a channel.
#[derive(Debug)]
pub struct SpendWriter {
    tx: Mutex<Option<mpsc::Sender<SpendEvent>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SpendWriter {
    /// Starts the writer on the database at `path`.
    pub fn start(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        create(&conn)?;
        let (tx, rx) = mpsc::channel::<SpendEvent>();
        let thread = std::thread::Builder::new()
            .name("switchyard-spend".into())
            .spawn(move || {
                let mut batch = Vec::new();
                loop {
                    let open = match rx.recv_timeout(FLUSH_EVERY) {
                        Ok(e) => {
                            batch.push(e);
                            batch.extend(rx.try_iter());
                            true
                        }
                        Err(RecvTimeoutError::Timeout) => true,
                        Err(RecvTimeoutError::Disconnected) => false,
                    };
                    if !batch.is_empty() {
                        if let Err(e) = write(&conn, &batch) {
                            tracing::error!(error = %e, events = batch.len(), "cannot record spend");
                        }
                        batch.clear();
                    }
                    if !open {
                        return;
                    }
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues one event (never blocks).
    pub fn record(&self, e: SpendEvent) {
        if let Some(tx) = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            let _ = tx.send(e);
        }
    }
}

impl Drop for SpendWriter {
    /// Writes what is queued before the gateway's admission state goes (shutdown, reload).
    fn drop(&mut self) {
        self.tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
    }
}

fn write(conn: &Connection, batch: &[SpendEvent]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO spend (day, scope, model, requests, prompt_tokens, completion_tokens, cost)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)
             ON CONFLICT (day, scope, model) DO UPDATE SET
                 requests = requests + 1,
                 prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                 completion_tokens = completion_tokens + excluded.completion_tokens,
                 cost = cost + excluded.cost",
        )?;
        for e in batch {
            st.execute(params![
                day_of(e.unix),
                e.scope,
                e.model,
                e.prompt_tokens,
                e.completion_tokens,
                e.cost
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_periods() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_801_353_600), "2027-01-31");
        assert_eq!(day_of(951_868_800 - 1), "2000-02-29");
        assert_eq!(Period::Month.pattern(1_801_353_600), "2027-01-%");
        let s = Spent::new(
            Budget {
                amount: 1.0,
                period: Period::Day,
            },
            0.5,
            0,
        );
        assert!(!s.exhausted(10));
        s.add(0.5, 20);
        assert!(s.exhausted(30));
        assert!(!s.exhausted(86_400), "a new day starts afresh");
    }
}
