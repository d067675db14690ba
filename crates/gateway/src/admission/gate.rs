//! A pool's waiting room: the [`AdmissionQueue`] of `core`, driven by real time.
//!
//! A request goes at once when nobody waits and some backend has room (usable, under its
//! `max_concurrency`, its engine's scraped queue under `engine_queue_threshold`). When every
//! backend that could serve is full, it waits. Each admitted request holds a slot until its
//! response body ends; when one ends, the queue's next request goes ([`Gate::pump`]). A
//! request that waits past its level's timeout, finds its level full, or is shed for a more
//! urgent one is answered 429.
//!
//! With `max_prefill_tokens`, each tenant present may also hold only its weighted share of the
//! pool's prefill budget (that limit times the backends) in prompts without a first byte
//! ([`PrefillShares`]): a tenant past its share waits even when a backend has room, and the
//! queue lets the others go first. Its share comes back at its response's first byte
//! ([`Gate::prefilled`]).
//!
//! Requests wait on a oneshot channel; the queue lock is never held across an `.await`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use switchyard_core::admission::{
    AdmissionQueue, PrefillShares, Priority, QueueSettings, Refused, TenantId, Waiting,
};
use tokio::sync::oneshot;

use crate::fleet::{Backend, Pool};

/// How often a request that waits only because of engines' scraped queues looks again on
/// its own. Each scrape round lets waiting requests go too ([`Gate::follows_scrapes`]), and
/// so do slots freed through the gateway; this covers signals that only grow stale.
const ENGINE_RECHECK: Duration = Duration::from_millis(200);

/// What a waiting request is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Go now.
    Go,
    /// Shed for a more urgent request.
    Shed,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// It waited its level's timeout.
    Timeout(Duration),
    /// Its level (or the queue, with nothing less urgent to shed) was full, or it was shed.
    Full,
}

#[derive(Debug)]
struct State {
    queue: AdmissionQueue,
    waiters: HashMap<u64, oneshot::Sender<Verdict>>,
    next_id: u64,
    /// Tenants' shares of the pool's prefill, when kept.
    shares: Option<PrefillShares>,
}

impl State {
    /// Whether a request of `t` is within its tenant's prefill share (always without shares).
    fn within_share(&self, t: TenantId) -> bool {
        PrefillShares::allow(self.shares.as_ref(), t)
    }

    /// A request of `t` with `tokens` of prompt goes.
    fn dispatch(&mut self, t: TenantId, tokens: u32) {
        if let Some(s) = &mut self.shares {
            s.dispatch(t, u64::from(tokens));
        }
    }

    /// A request of `t` is over, with `prefill` of its prompt tokens still counted.
    fn leave(&mut self, t: TenantId, prefill: u32) {
        if let Some(s) = &mut self.shares {
            s.prefilled(t, u64::from(prefill));
            s.leave(t);
        }
    }
}

/// When a backend counts as full for admission, besides its `max_concurrency`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FullWhen {
    /// Its engine reports more waiting requests than this (scraped, so lagged).
    pub engine_queue_threshold: Option<u32>,
    /// The prompt tokens of its requests still waiting for their first byte are at least this
    /// (the gateway's own count): a burst of long prompts then waits in the queue, where
    /// fairness orders it, instead of in the engine, where it delays every later request.
    pub max_prefill_tokens: Option<u64>,
    /// Of each backend's `max_concurrency`, requests only critical ones may take (all but one
    /// at most), so a critical request finds room while lower levels fill the rest.
    pub critical_reserve: u32,
    /// Each request's level reaches vLLM engines as its `priority`, so they run the most
    /// urgent first: a critical request then needs only a free `max_concurrency` slot, not an
    /// engine queue or pending prefill under the limits (it goes ahead of both).
    pub engine_priority: bool,
    /// With `max_prefill_tokens`: each tenant present may hold only its weighted share of
    /// the pool's prefill budget (`max_prefill_tokens` times its backends).
    pub tenant_share: bool,
}

impl FullWhen {
    /// Whether fullness can end without a request ending (a scrape, a first byte), so
    /// waiters recheck now and then instead of only on a release.
    fn changes_alone(&self) -> bool {
        self.engine_queue_threshold.is_some() || self.max_prefill_tokens.is_some()
    }
}

/// One pool's waiting room.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    /// What makes a backend full besides `max_concurrency`.
    full_when: FullWhen,
    /// Tenants' prefill shares are kept (`State::shares` is set).
    shares: bool,
    /// Requests waiting, as of the last change (read without the lock).
    waiting_now: std::sync::atomic::AtomicUsize,
    /// `switchyard_admission_waiting` of this model, per level.
    gauges: [prometheus::IntGauge; 5],
}

/// What one request needs from the pool to be admitted.
pub struct Ask<'a> {
    /// The pool.
    pub pool: &'a Pool,
    /// Its level.
    pub priority: Priority,
    /// Its tenant.
    pub tenant: TenantId,
    /// Estimated prompt tokens.
    pub input_tokens: u32,
    /// Expected output tokens.
    pub output_tokens: u32,
    /// How old an engine report may be and still count.
    pub max_age: Duration,
}

impl Gate {
    /// An empty waiting room for a pool of `backends` backends.
    pub fn new(
        settings: QueueSettings,
        weights: &[f64],
        (full_when, backends): (FullWhen, usize),
        gauges: [prometheus::IntGauge; 5],
    ) -> Self {
        let shares = full_when
            .max_prefill_tokens
            .filter(|_| full_when.tenant_share)
            .map(|per| PrefillShares::new(per.saturating_mul(backends.max(1) as u64), weights));
        Self {
            shares: shares.is_some(),
            waiting_now: std::sync::atomic::AtomicUsize::new(0),
            state: Mutex::new(State {
                queue: AdmissionQueue::new(settings, weights),
                waiters: HashMap::new(),
                next_id: 0,
                shares,
            }),
            full_when,
            gauges,
        }
    }

    /// Sets the waiting gauges from the queue (after every change, under the lock).
    fn publish(&self, s: &State) {
        self.waiting_now
            .store(s.queue.len(), std::sync::atomic::Ordering::Relaxed);
        for (g, p) in self.gauges.iter().zip(Priority::ALL) {
            g.set(s.queue.len_at(p) as i64);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `b`'s engine reports a queue past the threshold, or its prompts waiting for a
    /// first byte reach the prefill limit.
    fn engine_busy(&self, b: &Backend, now: Duration, max_age: Duration) -> bool {
        let signals = &b.state.signals;
        let queued = self
            .full_when
            .engine_queue_threshold
            .is_some_and(|t| signals.engine(now, max_age).is_some_and(|e| e.waiting > t));
        queued
            || self
                .full_when
                .max_prefill_tokens
                .is_some_and(|max| signals.prefill_tokens() >= max)
    }

    /// Whether a request can go to `pool` now: some backend has room, or none is merely
    /// full (all are out for other reasons, which routing answers as it does without a queue).
    /// A request below critical may not use the last `critical_reserve` of a backend's
    /// `max_concurrency` (all but one at most).
    fn room(&self, pool: &Pool, now: Duration, max_age: Duration, priority: Priority) -> bool {
        let reserve = if priority == Priority::Critical {
            0
        } else {
            self.full_when.critical_reserve
        };
        let ahead = priority == Priority::Critical && self.full_when.engine_priority;
        let mut full = false;
        for b in &pool.backends {
            let busy = !ahead && self.engine_busy(b, now, max_age);
            let capped = b
                .config
                .max_concurrency
                .is_some_and(|c| b.state.in_flight() >= c.saturating_sub(reserve).max(1));
            if b.usable(now) && !busy && !capped {
                return true;
            }
            full |= busy || capped;
        }
        !full
    }

    /// Requests waiting at `p`.
    pub fn waiting(&self, p: Priority) -> usize {
        self.lock().queue.len_at(p)
    }

    /// Admits `ask` now or after waiting; `Ok(waited)` once it may go.
    pub async fn admit(
        &self,
        ask: &Ask<'_>,
        now: impl Fn() -> Duration,
    ) -> Result<Duration, NotAdmitted> {
        if self.never_holds(ask.pool) {
            return Ok(Duration::ZERO);
        }
        let arrived = now();
        let (id, rx, timeout) = {
            let mut s = self.lock();
            if let Some(shares) = &mut s.shares {
                shares.arrive(ask.tenant);
            }
            if s.queue.is_empty()
                && s.within_share(ask.tenant)
                && self.room(ask.pool, arrived, ask.max_age, ask.priority)
            {
                s.dispatch(ask.tenant, ask.input_tokens);
                return Ok(Duration::ZERO);
            }
            let id = s.next_id;
            s.next_id += 1;
            let w = Waiting {
                id,
                priority: ask.priority,
                tenant: ask.tenant,
                input_tokens: ask.input_tokens,
                output_tokens: ask.output_tokens,
                arrived,
            };
            match s.queue.push(w) {
                Err(Refused::Full) => {
                    s.leave(ask.tenant, 0);
                    return Err(NotAdmitted::Full);
                }
                Ok(entered) => {
                    if let Some(shed) = entered.shed {
                        if let Some(tx) = s.waiters.remove(&shed.id) {
                            let _ = tx.send(Verdict::Shed);
                        }
                    }
                }
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.insert(id, tx);
            // There may be room for it though not for those before it (a critical request
            // while lower levels wait for the reserve): let go whoever may go now.
            self.let_go(&mut s, ask.pool, arrived, ask.max_age);
            self.publish(&s);
            let timeout = s.queue.settings().levels[ask.priority.index()].timeout;
            (id, rx, timeout)
        };
        let mut guard = Leave {
            gate: self,
            id,
            ask,
            now: &now,
            settled: false,
        };
        let verdict = self.wait(ask, id, rx, arrived + timeout, &now).await;
        guard.settled = true;
        let refused = match verdict {
            Some(Verdict::Go) => return Ok(now().saturating_sub(arrived)),
            Some(Verdict::Shed) => NotAdmitted::Full,
            None => NotAdmitted::Timeout(timeout),
        };
        self.lock().leave(ask.tenant, 0);
        Err(refused)
    }

    /// Waits for the verdict on `rx` until `deadline` (gateway time); `None`: timed out.
    async fn wait(
        &self,
        ask: &Ask<'_>,
        id: u64,
        mut rx: oneshot::Receiver<Verdict>,
        deadline: Duration,
        now: &impl Fn() -> Duration,
    ) -> Option<Verdict> {
        loop {
            let left = deadline.saturating_sub(now());
            let step = if self.full_when.changes_alone() {
                left.min(ENGINE_RECHECK)
            } else {
                left
            };
            match tokio::time::timeout(step, &mut rx).await {
                Ok(Ok(v)) => return Some(v),
                Ok(Err(_)) => return Some(Verdict::Shed), // the gate went away (reload)
                Err(_) if step < left => {
                    self.pump(ask.pool, now(), ask.max_age);
                }
                Err(_) => {
                    // Timed out, unless it was let go (under the lock) in the meantime.
                    let mut s = self.lock();
                    if s.queue.remove(id).is_some() {
                        s.waiters.remove(&id);
                        self.publish(&s);
                        return None;
                    }
                    drop(s);
                    return rx.try_recv().ok();
                }
            }
        }
    }

    /// Whether a backend's fullness here depends on its engine's scraped queue, so that each
    /// scrape round may let a waiting request go.
    pub fn follows_scrapes(&self) -> bool {
        self.full_when.engine_queue_threshold.is_some()
    }

    /// A slot freed (or might have): lets the next waiting request go if there is room.
    pub fn pump(&self, pool: &Pool, now: Duration, max_age: Duration) {
        let mut s = self.lock();
        self.let_go(&mut s, pool, now, max_age);
        self.publish(&s);
    }

    /// A request of `tenant` admitted here got its response's first byte: the `tokens` of
    /// its prompt leave its tenant's prefill share, which may let a waiting one go.
    pub fn prefilled(
        &self,
        tenant: TenantId,
        tokens: u32,
        pool: &Pool,
        now: Duration,
        max_age: Duration,
    ) {
        let mut s = self.lock();
        let Some(shares) = &mut s.shares else { return };
        shares.prefilled(tenant, u64::from(tokens));
        self.let_go(&mut s, pool, now, max_age);
        self.publish(&s);
    }

    /// Whether nothing can fill `pool` (no `max_concurrency`, no engine or prefill limits),
    /// so the gate never holds a request there and nobody waits: admission then skips the
    /// lock.
    pub fn never_holds(&self, pool: &Pool) -> bool {
        !self.full_when.changes_alone()
            && pool
                .backends
                .iter()
                .all(|b| b.config.max_concurrency.is_none())
    }

    /// A request of `tenant` admitted here is over, `prefill` of its prompt tokens still
    /// counted as waiting for a first byte; the next waiting request may go.
    pub fn done(
        &self,
        tenant: TenantId,
        prefill: u32,
        pool: &Pool,
        now: Duration,
        max_age: Duration,
    ) {
        // Nobody to let go and nothing to count (a reload may have left waiters behind a
        // pool that can no longer fill: they are let go as usual).
        if self.quiet() && self.never_holds(pool) {
            return;
        }
        let mut s = self.lock();
        s.leave(tenant, prefill);
        self.let_go(&mut s, pool, now, max_age);
        self.publish(&s);
    }

    /// Nobody waits and no tenant's share is counted: a request that ends here has nobody
    /// to let go and nothing to give back when `pool` never holds one ([`Gate::done`]).
    pub fn quiet(&self) -> bool {
        !self.shares && self.waiting_now.load(std::sync::atomic::Ordering::Relaxed) == 0
    }

    /// Whether tenants' prefill shares are kept (a permit then reports first bytes).
    pub fn shares_kept(&self) -> bool {
        self.shares
    }

    /// Lets the next waiting request go while there is room for it (under the lock), among
    /// the tenants within their prefill shares; each one let go is counted as dispatched.
    fn let_go(&self, s: &mut State, pool: &Pool, now: Duration, max_age: Duration) {
        loop {
            let next = {
                let st = &*s;
                st.queue.peek_where(now, |t| st.within_share(t))
            };
            let Some(next) = next else { break };
            if !self.room(pool, now, max_age, next.priority) {
                break;
            }
            let State { queue, shares, .. } = &mut *s;
            let w = queue.pop_where(now, |t| PrefillShares::allow(shares.as_ref(), t));
            let Some(w) = w else { break };
            s.dispatch(w.tenant, w.input_tokens);
            if let Some(tx) = s.waiters.remove(&w.id) {
                if tx.send(Verdict::Go).is_ok() {
                    break;
                }
            }
        }
    }
}

/// Takes a waiting request out of line when it stops waiting for any reason (timeout,
/// client gone); if it had been let go but never went, passes its turn on.
struct Leave<'a, 'b, F: Fn() -> Duration> {
    gate: &'a Gate,
    id: u64,
    ask: &'a Ask<'b>,
    now: &'a F,
    settled: bool,
}

impl<F: Fn() -> Duration> Drop for Leave<'_, '_, F> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Its client left while it waited, or after it was let go but before it went.
        let mut s = self.gate.lock();
        let was_waiting = s.queue.remove(self.id).is_some();
        s.waiters.remove(&self.id);
        let t = self.ask.tenant;
        s.leave(
            t,
            if was_waiting {
                0
            } else {
                self.ask.input_tokens
            },
        );
        if was_waiting {
            self.gate.publish(&s);
            return;
        }
        drop(s);
        // The slot it was let go for is free again.
        self.gate
            .pump(self.ask.pool, (self.now)(), self.ask.max_age);
    }
}
