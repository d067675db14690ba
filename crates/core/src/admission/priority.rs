//! Priority levels. A request's level comes from its key; the client may lower it with an
//! `x-priority` header, never raise it.

use std::fmt;
use std::str::FromStr;

/// How urgent a request is; earlier variants go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Interactive traffic that must not wait (an on-call assistant, a user-facing product).
    Critical,
    /// Interactive traffic of important callers.
    High,
    /// The default.
    #[default]
    Normal,
    /// Background work that may wait.
    Low,
    /// Offline jobs: served when nothing else waits (aging keeps them from starving).
    Batch,
}

/// A priority name that is none of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority '{0}'; known: critical, high, normal, low, batch")]
pub struct PriorityError(pub String);

impl Priority {
    /// Every level, most urgent first.
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::Batch,
    ];

    /// The level's position in [`Priority::ALL`] (0 is the most urgent).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name as config and headers write it.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Batch => "batch",
        }
    }

    /// The level of a request whose key grants `self` and whose client asked for
    /// `requested` (an `x-priority` value): the less urgent of the two. An unknown or absent
    /// request leaves the key's level.
    pub fn lowered_by(self, requested: Option<&[u8]>) -> Priority {
        let asked = requested
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<Priority>().ok());
        match asked {
            Some(p) if p > self => p,
            _ => self,
        }
    }
}

impl FromStr for Priority {
    type Err = PriorityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| PriorityError(s.to_owned()))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_lowers_but_never_raises() {
        let p = Priority::High;
        assert_eq!(p.lowered_by(Some(b"batch")), Priority::Batch);
        assert_eq!(p.lowered_by(Some(b"critical")), Priority::High);
        assert_eq!(p.lowered_by(Some(b" Low ")), Priority::Low);
        assert_eq!(p.lowered_by(Some(b"urgent!!")), Priority::High);
        assert_eq!(p.lowered_by(Some(&[0xff, 0xfe])), Priority::High);
        assert_eq!(p.lowered_by(None), Priority::High);
    }

    #[test]
    fn names_round_trip_and_order_is_urgency() {
        for p in Priority::ALL {
            assert_eq!(p.name().parse::<Priority>(), Ok(p));
        }
        assert!(Priority::Critical < Priority::Batch);
        assert!("nope".parse::<Priority>().is_err());
    }
}
