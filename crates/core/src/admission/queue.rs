//! A pool's admission queue: where requests wait while every backend is full.
//!
//! Order: the most urgent level first, with aging: a request that has waited `aging` moves up
//! one level for the choice (not for its deadline), so batch work is not starved forever by
//! the levels between. Aging lifts a request to `high` at most, never to `critical`: under
//! overload every old request would otherwise reach the top and, being older, go before every
//! new critical one, and critical traffic would wait as long as batch.
//! Within a level, tenants share by the [`VirtualTokenCounter`]: the oldest request of the
//! waiting tenant that was served least goes first. Each level has its own queue timeout and
//! length limit, and the queue a total; when the total is reached a new request takes the
//! place of the newest one of the least urgent level below its own (that one is shed), or is
//! refused when there is none.

use std::collections::VecDeque;
use std::time::Duration;

use super::priority::Priority;
use super::vtc::{TenantId, VirtualTokenCounter};

/// One level's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelSettings {
    /// Longest a request of this level waits before it is answered `queue_timeout`.
    pub timeout: Duration,
    /// Most requests of this level waiting at once; more are answered `queue_full`.
    pub max_len: usize,
}

/// The queue's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// Per level, in [`Priority::ALL`] order.
    pub levels: [LevelSettings; 5],
    /// Most requests waiting at once, all levels together.
    pub max_total: usize,
    /// Waiting this long counts as one level more urgent when choosing; zero: no aging.
    pub aging: Duration,
}

impl Default for QueueSettings {
    /// Interactive levels wait little, batch long; 1,000 waiting per level, 2,000 in all;
    /// ten seconds of waiting is worth one level.
    fn default() -> Self {
        let level = |secs, max_len| LevelSettings {
            timeout: Duration::from_secs(secs),
            max_len,
        };
        Self {
            levels: [
                level(30, 1000),
                level(30, 1000),
                level(60, 1000),
                level(120, 1000),
                level(600, 1000),
            ],
            max_total: 2000,
            aging: Duration::from_secs(10),
        }
    }
}

/// A waiting request, as the queue knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// The caller's handle for it (unique among those waiting).
    pub id: u64,
    /// Its level.
    pub priority: Priority,
    /// Its tenant.
    pub tenant: TenantId,
    /// Estimated prompt tokens, charged to the tenant when it goes.
    pub input_tokens: u32,
    /// Expected output tokens, charged to the tenant when it goes.
    pub output_tokens: u32,
    /// When it started waiting.
    pub arrived: Duration,
}

/// Why a request cannot wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its level, or the whole queue with nothing less urgent to shed, is full.
    Full,
}

/// A request that entered the queue, and the one it displaced, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entered {
    /// A less urgent request shed to make room: answer it `queue_full`.
    pub shed: Option<Waiting>,
}

/// One level: per tenant, its requests in arrival order.
#[derive(Debug, Default)]
struct Level {
    /// (tenant, its waiting requests); few tenants, so a vector.
    tenants: Vec<(TenantId, VecDeque<Waiting>)>,
    len: usize,
    vtc: VirtualTokenCounter,
}

impl Level {
    /// The request the level would serve next: the oldest of the fair tenant among those
    /// `may_go` allows.
    fn head(&self, may_go: &impl Fn(TenantId) -> bool) -> Option<&Waiting> {
        let t = self.vtc.pick(
            self.tenants
                .iter()
                .filter(|(t, q)| !q.is_empty() && may_go(*t))
                .map(|(t, _)| *t),
        )?;
        self.tenants.iter().find(|(x, _)| *x == t)?.1.front()
    }

    fn queue(&mut self, t: TenantId) -> &mut VecDeque<Waiting> {
        let i = match self.tenants.iter().position(|(x, _)| *x == t) {
            Some(i) => i,
            None => {
                self.tenants.push((t, VecDeque::new()));
                self.tenants.len() - 1
            }
        };
        &mut self.tenants[i].1
    }

    fn remove(&mut self, id: u64) -> Option<Waiting> {
        for (_, q) in &mut self.tenants {
            if let Some(i) = q.iter().position(|w| w.id == id) {
                let w = q.remove(i)?;
                self.len -= 1;
                self.vtc.leave(w.tenant);
                return Some(w);
            }
        }
        None
    }

    /// The newest request of the level.
    fn newest(&self) -> Option<&Waiting> {
        self.tenants
            .iter()
            .filter_map(|(_, q)| q.back())
            .max_by_key(|w| (w.arrived, w.id))
    }
}

/// A pool's admission queue.
#[derive(Debug)]
pub struct AdmissionQueue {
    settings: QueueSettings,
    levels: [Level; 5],
    len: usize,
}

impl AdmissionQueue {
    /// An empty queue; `tenant_weights` (index = [`TenantId`]) weigh tenants' shares.
    pub fn new(settings: QueueSettings, tenant_weights: &[f64]) -> Self {
        let level = || Level {
            vtc: VirtualTokenCounter::with_weights(tenant_weights),
            ..Level::default()
        };
        Self {
            settings,
            levels: [level(), level(), level(), level(), level()],
            len: 0,
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Requests waiting, all levels.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Requests waiting at `p`.
    pub fn len_at(&self, p: Priority) -> usize {
        self.levels[p.index()].len
    }

    /// Puts `w` in line, shedding a less urgent request when the queue is full.
    pub fn push(&mut self, w: Waiting) -> Result<Entered, Refused> {
        let i = w.priority.index();
        if self.levels[i].len >= self.settings.levels[i].max_len {
            return Err(Refused::Full);
        }
        let mut shed = None;
        if self.len >= self.settings.max_total {
            let victim = (i + 1..5)
                .rev()
                .find_map(|j| self.levels[j].newest().map(|v| (j, v.id)));
            let Some((j, id)) = victim else {
                return Err(Refused::Full);
            };
            shed = self.levels[j].remove(id);
            self.len -= 1;
        }
        let level = &mut self.levels[i];
        level.vtc.arrive(w.tenant);
        level.queue(w.tenant).push_back(w);
        level.len += 1;
        self.len += 1;
        Ok(Entered { shed })
    }

    /// The request [`pop`](Self::pop) would take at `now`, left in line.
    pub fn peek(&self, now: Duration) -> Option<Waiting> {
        self.peek_where(now, |_| true)
    }

    /// Like [`peek`](Self::peek), among the tenants `may_go` allows (the others are skipped,
    /// as if they had nothing waiting).
    pub fn peek_where(&self, now: Duration, may_go: impl Fn(TenantId) -> bool) -> Option<Waiting> {
        let (id, i) = self.next(now, &may_go)?;
        let level = &self.levels[i];
        level
            .tenants
            .iter()
            .find_map(|(_, q)| q.front().filter(|w| w.id == id))
            .copied()
    }

    /// Takes the request to serve next at `now`, and charges its tenant.
    pub fn pop(&mut self, now: Duration) -> Option<Waiting> {
        self.pop_where(now, |_| true)
    }

    /// Like [`pop`](Self::pop), among the tenants `may_go` allows.
    pub fn pop_where(
        &mut self,
        now: Duration,
        may_go: impl Fn(TenantId) -> bool,
    ) -> Option<Waiting> {
        let (id, i) = self.next(now, &may_go)?;
        let level = &mut self.levels[i];
        let w = level.queue(level_tenant(level, id)?).pop_front()?;
        level.len -= 1;
        level.vtc.serve(w.tenant, w.input_tokens, w.output_tokens);
        self.len -= 1;
        Some(w)
    }

    /// The id and level index of the request to serve next at `now`.
    fn next(&self, now: Duration, may_go: &impl Fn(TenantId) -> bool) -> Option<(u64, usize)> {
        let aging = self.settings.aging;
        let rank = |w: &Waiting| {
            let lift = if aging.is_zero() {
                0
            } else {
                (now.saturating_sub(w.arrived).as_nanos() / aging.as_nanos()) as usize
            };
            let lifted = w.priority.index().saturating_sub(lift);
            if w.priority == Priority::Critical {
                lifted
            } else {
                lifted.max(Priority::High.index())
            }
        };
        let (_, id, i) = self
            .levels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.head(may_go).map(|w| ((rank(w), w.arrived, i), w.id, i)))
            .min_by_key(|(key, _, _)| *key)?;
        Some((id, i))
    }

    /// Takes `id` out of line (its client went away); `None` when it is not waiting.
    pub fn remove(&mut self, id: u64) -> Option<Waiting> {
        let w = self.levels.iter_mut().find_map(|l| l.remove(id))?;
        self.len -= 1;
        Some(w)
    }

    /// Takes out every request whose level's timeout has passed at `now`.
    pub fn expire(&mut self, now: Duration) -> Vec<Waiting> {
        let mut out = Vec::new();
        for (i, level) in self.levels.iter_mut().enumerate() {
            let timeout = self.settings.levels[i].timeout;
            for (_, q) in &mut level.tenants {
                while q
                    .front()
                    .is_some_and(|w| now.saturating_sub(w.arrived) >= timeout)
                {
                    out.extend(q.pop_front());
                }
            }
        }
        for w in &out {
            let level = &mut self.levels[w.priority.index()];
            level.len -= 1;
            level.vtc.leave(w.tenant);
        }
        self.len -= out.len();
        out
    }

    /// When the next waiting request times out, if any waits.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.levels
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                let timeout = self.settings.levels[i].timeout;
                l.tenants
                    .iter()
                    .filter_map(move |(_, q)| q.front().map(|w| w.arrived + timeout))
            })
            .min()
    }

    /// Adds a served request's real usage beyond what was charged when it went.
    pub fn reconcile(&mut self, p: Priority, t: TenantId, input_tokens: u32, output_tokens: u32) {
        self.levels[p.index()]
            .vtc
            .charge(t, input_tokens, output_tokens);
    }

    /// `t`'s service counter at level `p` (for tests and metrics).
    pub fn counter(&self, p: Priority, t: TenantId) -> f64 {
        self.levels[p.index()].vtc.counter(t)
    }
}

/// The tenant whose line holds `id` at the front.
fn level_tenant(level: &Level, id: u64) -> Option<TenantId> {
    level
        .tenants
        .iter()
        .find(|(_, q)| q.front().is_some_and(|w| w.id == id))
        .map(|(t, _)| *t)
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
