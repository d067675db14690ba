//! The SQLite file behind `auth.db`: keys created at run time (stored as their SHA-256, the
//! key itself shown once at creation) and their revocation. Only the admin API and start-up
//! touch it; requests read the in-memory [`super::keys::Keys`].

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;
use switchyard_core::admission::{Priority, RateLimitSpec};

use crate::admission::spend::Budget;
use crate::config::auth::KeyHash;

/// Characters of a key kept in clear to tell keys apart in listings.
const PREFIX_LEN: usize = 10;

/// A run-time key's settings, as the admin API takes them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Its tenant (must be configured).
    pub tenant: String,
    /// A label for people.
    #[serde(default)]
    pub name: Option<String>,
    /// Models it may use; absent: all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Its level; `normal` when absent.
    #[serde(default)]
    pub priority: Option<String>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests in flight.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Unix seconds or `YYYY-MM-DD` after which it is refused.
    #[serde(default)]
    pub expires: Option<serde_json::Value>,
    /// Most it may spend per period (by the backends' `price:`).
    #[serde(default)]
    pub budget: Option<f64>,
    /// `day` or `month` (the default).
    #[serde(default)]
    pub budget_period: Option<String>,
}

/// A stored key, as listings show it (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct StoredKey {
    /// Its id.
    pub id: i64,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// Its label.
    pub name: Option<String>,
    /// Its tenant.
    pub tenant: String,
    /// Models it may use; `None`: all.
    pub models: Option<Vec<String>>,
    /// Its level.
    pub priority: String,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Requests in flight.
    pub max_concurrent: Option<u32>,
    /// Unix seconds after which it is refused.
    pub expires: Option<u64>,
    /// Unix seconds at creation.
    pub created: u64,
    /// Unix seconds at revocation; `None`: usable.
    pub revoked: Option<u64>,
    /// Most it may spend per period.
    pub budget: Option<f64>,
    /// `day` or `month`, with a budget.
    pub budget_period: Option<String>,
    /// The key it replaced by rotation, whose spend counts toward its budget.
    pub rotated_from: Option<i64>,
}

impl StoredKey {
    /// Its level, parsed (stored values were checked at creation).
    pub fn priority(&self) -> Priority {
        self.priority.parse().unwrap_or_default()
    }

    /// Its budget (stored values were checked at creation).
    pub fn budget(&self) -> Option<Budget> {
        crate::config::auth::budget(self.budget, self.budget_period.as_deref())
            .ok()
            .flatten()
    }

    /// Its limits.
    pub fn limits(&self) -> RateLimitSpec {
        RateLimitSpec {
            rpm: self.rpm,
            tpm: self.tpm,
            max_concurrent: self.max_concurrent,
        }
    }
}

/// The open database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

const COLUMNS: &str = "id, prefix, name, tenant, models, priority, rpm, tpm, max_concurrent, \
     expires, created, revoked, budget, budget_period, rotated_from";

/// Columns added after the table's first version, added to an older file when opened.
const ADDED: [(&str, &str); 3] = [
    ("budget", "REAL"),
    ("budget_period", "TEXT"),
    ("rotated_from", "INTEGER"),
];

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredKey> {
    let models: Option<String> = r.get(4)?;
    Ok(StoredKey {
        id: r.get(0)?,
        prefix: r.get(1)?,
        name: r.get(2)?,
        tenant: r.get(3)?,
        models: models.and_then(|m| serde_json::from_str(&m).ok()),
        priority: r.get(5)?,
        rpm: unsigned(r.get(6)?),
        tpm: unsigned(r.get(7)?),
        max_concurrent: r.get(8)?,
        expires: unsigned(r.get(9)?),
        created: unsigned(r.get(10)?).unwrap_or(0),
        revoked: unsigned(r.get(11)?),
        budget: r.get(12)?,
        budget_period: r.get(13)?,
        rotated_from: r.get(14)?,
    })
}

/// SQLite integers are signed; the values stored here are never negative.
fn unsigned(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

fn signed(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens (creating if need be) the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS keys (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 hash BLOB NOT NULL UNIQUE,
                 prefix TEXT NOT NULL,
                 name TEXT,
                 tenant TEXT NOT NULL,
                 models TEXT,
                 priority TEXT NOT NULL,
                 rpm INTEGER,
                 tpm INTEGER,
                 max_concurrent INTEGER,
                 expires INTEGER,
                 created INTEGER NOT NULL,
                 revoked INTEGER
             );",
        )?;
        let have: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('keys')")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for (name, kind) in ADDED {
            if !have.iter().any(|h| h == name) {
                conn.execute_batch(&format!("ALTER TABLE keys ADD COLUMN {name} {kind};"))?;
            }
        }
        Ok(Self { conn })
    }

    /// The connection (spend reads at start, the admin API's spend listing).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Stores a new key with `settings` (already checked), returning its row and the key,
    /// which is not kept anywhere.
    pub fn create(
        &self,
        settings: &NewKey,
        (priority, expires, rotated_from): (Priority, Option<u64>, Option<i64>),
        now_unix: u64,
    ) -> rusqlite::Result<(StoredKey, String, KeyHash)> {
        let key = new_key();
        let hash = KeyHash::of(key.as_bytes());
        let models = settings
            .models
            .as_ref()
            .map(|m| serde_json::to_string(m).unwrap_or_default());
        self.conn.execute(
            "INSERT INTO keys (hash, prefix, name, tenant, models, priority, rpm, tpm, max_concurrent, expires, created, budget, budget_period, rotated_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                &hash.0[..],
                &key[..PREFIX_LEN],
                settings.name,
                settings.tenant,
                models,
                priority.name(),
                signed(settings.rpm),
                signed(settings.tpm),
                settings.max_concurrent,
                signed(expires),
                signed(Some(now_unix)),
                settings.budget,
                settings.budget.and(settings.budget_period.as_deref()),
                rotated_from,
            ],
        )?;
        let id = self.conn.last_insert_rowid();
        let stored = self.get(id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        Ok((stored, key, hash))
    }

    /// The key `id`, revoked or not.
    pub fn get(&self, id: i64) -> rusqlite::Result<Option<StoredKey>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM keys WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
    }

    /// Every key, oldest first.
    pub fn list(&self) -> rusqlite::Result<Vec<StoredKey>> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM keys ORDER BY id"))?;
        let rows = st.query_map([], row)?;
        rows.collect()
    }

    /// Every key not revoked, with its hash (for the in-memory table at start).
    pub fn usable(&self) -> rusqlite::Result<Vec<(KeyHash, StoredKey)>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLUMNS}, hash FROM keys WHERE revoked IS NULL ORDER BY id"
        ))?;
        let rows = st.query_map([], |r| {
            let blob: Vec<u8> = r.get(15)?;
            let mut h = [0u8; 32];
            if blob.len() == 32 {
                h.copy_from_slice(&blob);
            }
            Ok((KeyHash(h), row(r)?))
        })?;
        rows.collect()
    }

    /// `id`'s scope in the spend table and those of the keys it replaced by rotation, newest
    /// first: a rotated key's budget counts what the old one spent.
    pub fn lineage(&self, id: i64) -> Vec<String> {
        let mut out = vec![format!("key:{id}")];
        let mut next = self.get(id).ok().flatten().and_then(|k| k.rotated_from);
        while let Some(old) = next.filter(|_| out.len() < 64) {
            out.push(format!("key:{old}"));
            next = self.get(old).ok().flatten().and_then(|k| k.rotated_from);
        }
        out
    }

    /// Revokes `id`; whether it was usable.
    pub fn revoke(&self, id: i64, now_unix: u64) -> rusqlite::Result<bool> {
        let n = self.conn.execute(
            "UPDATE keys SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL",
            params![id, signed(Some(now_unix))],
        )?;
        Ok(n == 1)
    }
}

/// A fresh key: `sk-sy-` and 48 random hex digits (192 bits).
fn new_key() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 24];
    // The system's random source does not fail on the platforms the gateway runs on; if it
    // ever did, a key from the clock and address space is still unique, if weaker.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes[..16].copy_from_slice(&t.to_le_bytes());
    }
    let mut s = String::with_capacity(6 + 48);
    s.push_str("sk-sy-");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_hashed_and_revocation_sticks() {
        let dir = std::env::temp_dir().join(format!("sy-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.db");
        let _ = std::fs::remove_file(&path);
        let store = Store::open(&path).unwrap();
        let settings = NewKey {
            tenant: "acme".into(),
            rpm: Some(5),
            ..NewKey::default()
        };
        let (row, key, hash) = store
            .create(&settings, (Priority::High, None, None), 100)
            .unwrap();
        assert!(key.starts_with("sk-sy-") && key.len() == 54);
        assert_eq!(row.prefix, key[..PREFIX_LEN]);
        assert_eq!(hash, KeyHash::of(key.as_bytes()));
        drop(store);
        let store = Store::open(&path).unwrap();
        let usable = store.usable().unwrap();
        assert_eq!(usable.len(), 1);
        assert_eq!(usable[0].0, hash);
        assert_eq!(usable[0].1.priority(), Priority::High);
        let raw = std::fs::read(&path).unwrap();
        assert!(
            !raw.windows(key.len()).any(|w| w == key.as_bytes()),
            "the key is not in the file"
        );
        assert!(store.revoke(row.id, 200).unwrap());
        assert!(!store.revoke(row.id, 300).unwrap());
        assert!(store.usable().unwrap().is_empty());
        assert_eq!(store.list().unwrap()[0].revoked, Some(200));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_from_before_budgets_gains_the_new_columns() {
        let dir = std::env::temp_dir().join(format!("sy-store-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.db");
        let _ = std::fs::remove_file(&path);
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE keys (id INTEGER PRIMARY KEY AUTOINCREMENT, hash BLOB NOT NULL UNIQUE,
             prefix TEXT NOT NULL, name TEXT, tenant TEXT NOT NULL, models TEXT,
             priority TEXT NOT NULL, rpm INTEGER, tpm INTEGER, max_concurrent INTEGER,
             expires INTEGER, created INTEGER NOT NULL, revoked INTEGER);
             INSERT INTO keys (hash, prefix, tenant, priority, created)
             VALUES (x'00', 'sk-sy-0000', 'acme', 'normal', 1);",
        )
        .unwrap();
        drop(old);
        let store = Store::open(&path).unwrap();
        let keys = store.list().unwrap();
        assert_eq!((keys.len(), keys[0].budget), (1, None));
        let settings = NewKey {
            tenant: "acme".into(),
            budget: Some(2.5),
            budget_period: Some("day".into()),
            ..NewKey::default()
        };
        let (row, _, _) = store
            .create(&settings, (Priority::Normal, None, Some(1)), 5)
            .unwrap();
        assert_eq!(row.budget().map(|b| b.amount), Some(2.5));
        assert_eq!(
            store.lineage(row.id),
            [format!("key:{}", row.id), "key:1".into()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
