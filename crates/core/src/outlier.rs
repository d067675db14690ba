//! Passive outlier detection for one pool: ejects a backend that keeps failing real requests,
//! for a time that grows with each repeated ejection, without ever ejecting more than a share
//! of the pool.
//!
//! This is the pool-aware counterpart of the per-backend [`crate::breaker`]: the breaker
//! protects callers from one backend, outlier detection keeps a pool serving by removing its
//! worst members while always leaving some in. The scheme follows Envoy's consecutive-5xx
//! detector: `consecutive_failures` connect errors, timeouts or 5xx answers in a row eject a
//! backend for `base_ejection x n` (n = its ejections so far, capped at `max_ejection`); a
//! backend that stays clear of ejection for `max_ejection` starts again at n = 0.
//!
//! The gateway keeps one [`OutlierDetector`] per pool behind a short lock and reports every
//! outcome with [`OutlierDetector::record`]. Time is a parameter.

use std::time::Duration;

use crate::fleet::BackendId;

/// Default failures in a row that eject a backend.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Default ejection time for a first ejection.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(10);
/// Default longest ejection.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);

/// The detector's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// Failures in a row that eject a backend (at least 1).
    pub consecutive_failures: u32,
    /// Ejection time of a first ejection; the n-th lasts n times as long.
    pub base_ejection: Duration,
    /// Cap on one ejection's length.
    pub max_ejection: Duration,
    /// Most of the pool that may be ejected at once, as a share in 0..=1; `None` keeps at
    /// least one backend in. Whatever the share, one backend always stays in.
    pub max_ejected_share: Option<f64>,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            max_ejected_share: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Member {
    consecutive: u32,
    ejections: u32,
    ejected_until: Duration,
}

/// An ejection just decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Which backend.
    pub id: BackendId,
    /// Until when (same epoch as `now`).
    pub until: Duration,
    /// How many times it has been ejected in a row, this one included.
    pub count: u32,
}

/// Outlier state of every member of one pool.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    cfg: OutlierConfig,
    members: Vec<Member>,
}

impl OutlierDetector {
    /// A detector for a pool of `size` members, none ejected.
    pub fn new(cfg: OutlierConfig, size: usize) -> Self {
        Self {
            cfg: OutlierConfig {
                consecutive_failures: cfg.consecutive_failures.max(1),
                ..cfg
            },
            members: vec![Member::default(); size],
        }
    }

    /// Whether `id` is ejected at `now`.
    pub fn ejected(&self, id: BackendId, now: Duration) -> bool {
        self.members
            .get(id.index())
            .is_some_and(|m| now < m.ejected_until)
    }

    /// How many members may be ejected at once.
    pub fn max_ejected(&self) -> usize {
        let n = self.members.len();
        let keep_one = n.saturating_sub(1);
        match self.cfg.max_ejected_share {
            Some(share) => ((share.clamp(0.0, 1.0) * n as f64).floor() as usize).min(keep_one),
            None => keep_one,
        }
    }

    /// Carries member `from_id` of `previous` (the same backend in the pool version a reload
    /// replaced) over to `id` here: its failure run, ejection count and any ejection under
    /// way, so the new detector's cap counts ejections that started before the reload.
    pub fn carry_over(&mut self, id: BackendId, previous: &OutlierDetector, from_id: BackendId) {
        if let (Some(to), Some(from)) = (
            self.members.get_mut(id.index()),
            previous.members.get(from_id.index()),
        ) {
            *to = *from;
        }
    }

    /// Records one outcome of a request sent to `id`; returns the ejection it caused, if any.
    /// A failure that would eject past the pool's limit leaves the backend in (its count of
    /// failures keeps growing, so it is ejected as soon as room frees up).
    pub fn record(&mut self, id: BackendId, now: Duration, success: bool) -> Option<Ejection> {
        let ejected_now = self
            .members
            .iter()
            .filter(|m| now < m.ejected_until)
            .count();
        let limit = self.max_ejected();
        let cfg = self.cfg;
        let m = self.members.get_mut(id.index())?;
        if success {
            m.consecutive = 0;
            return None;
        }
        if now < m.ejected_until {
            return None;
        }
        m.consecutive = m.consecutive.saturating_add(1);
        if m.consecutive < cfg.consecutive_failures || ejected_now >= limit {
            return None;
        }
        if m.ejections > 0 && now >= m.ejected_until + cfg.max_ejection {
            m.ejections = 0;
        }
        m.ejections = m.ejections.saturating_add(1);
        m.consecutive = 0;
        let length = cfg
            .base_ejection
            .saturating_mul(m.ejections)
            .min(cfg.max_ejection);
        m.ejected_until = now + length;
        Some(Ejection {
            id,
            until: m.ejected_until,
            count: m.ejections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    fn cfg(share: Option<f64>) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection: s(10),
            max_ejection: s(25),
            max_ejected_share: share,
        }
    }

    fn fail(d: &mut OutlierDetector, id: u32, now: Duration, n: u32) -> Option<Ejection> {
        let mut last = None;
        for _ in 0..n {
            last = d.record(BackendId(id), now, false).or(last);
        }
        last
    }

    #[test]
    fn a_carried_over_ejection_counts_against_the_new_detectors_cap() {
        let mut old = OutlierDetector::new(cfg(None), 2);
        assert!(fail(&mut old, 0, s(0), 3).is_some());
        // The reload keeps both backends, in swapped order.
        let mut new = OutlierDetector::new(cfg(None), 2);
        new.carry_over(BackendId(1), &old, BackendId(0));
        new.carry_over(BackendId(0), &old, BackendId(1));
        assert!(new.ejected(BackendId(1), s(5)));
        // One backend always stays in: the other cannot be ejected while it is out.
        assert_eq!(fail(&mut new, 0, s(5), 5), None);
        assert!(fail(&mut new, 0, s(11), 3).is_some(), "room again at 10 s");
        // Without the carry-over, the new detector would have ejected both.
        let mut fresh = OutlierDetector::new(cfg(None), 2);
        assert!(fail(&mut fresh, 0, s(5), 3).is_some());
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_run() {
        let mut d = OutlierDetector::new(cfg(None), 3);
        assert_eq!(fail(&mut d, 0, s(0), 2), None);
        d.record(BackendId(0), s(0), true);
        assert_eq!(fail(&mut d, 0, s(0), 2), None);
        let e = fail(&mut d, 0, s(1), 1).expect("third in a row ejects");
        assert_eq!((e.until, e.count), (s(11), 1));
        assert!(d.ejected(BackendId(0), s(10)));
        assert!(!d.ejected(BackendId(0), s(11)));
    }

    #[test]
    fn repeated_ejections_grow_up_to_the_cap_and_decay_after_a_quiet_spell() {
        let mut d = OutlierDetector::new(cfg(None), 2);
        assert_eq!(fail(&mut d, 0, s(0), 3).unwrap().until, s(10));
        assert_eq!(fail(&mut d, 0, s(10), 3).unwrap().until, s(30));
        assert_eq!(
            fail(&mut d, 0, s(30), 3).unwrap().until,
            s(55),
            "capped at 25 s"
        );
        // Clear of ejection for longer than max_ejection: back to the base time.
        assert_eq!(fail(&mut d, 0, s(81), 3).unwrap().until, s(91));
    }

    #[test]
    fn never_ejects_the_last_backend_nor_past_the_share() {
        let mut d = OutlierDetector::new(cfg(None), 2);
        assert!(fail(&mut d, 0, s(0), 3).is_some());
        assert_eq!(fail(&mut d, 1, s(0), 10), None, "the last one stays in");
        // Once room frees up, the failing backend goes at its next failure.
        assert!(fail(&mut d, 1, s(10), 1).is_some());

        let mut d = OutlierDetector::new(cfg(Some(0.5)), 4);
        assert_eq!(d.max_ejected(), 2);
        assert!(fail(&mut d, 0, s(0), 3).is_some());
        assert!(fail(&mut d, 1, s(0), 3).is_some());
        assert_eq!(fail(&mut d, 2, s(0), 3), None);
        assert_eq!(OutlierDetector::new(cfg(Some(1.0)), 1).max_ejected(), 0);
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let mut d = OutlierDetector::new(cfg(None), 1);
        assert_eq!(fail(&mut d, 7, s(0), 5), None);
        assert!(!d.ejected(BackendId(7), s(0)));
    }
}
