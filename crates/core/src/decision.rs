//! The outcome of a routing decision.

use smallvec::SmallVec;
use std::fmt;

use crate::fleet::BackendId;

/// How many fallbacks a decision carries at most. Retries are bounded by a budget anyway; a few
/// ordered alternatives are all failover needs, and computing more costs time on every request.
pub const MAX_FALLBACKS: usize = 3;

/// Where a request goes: a primary backend, ordered fallbacks, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The backend to try first.
    pub primary: BackendId,
    /// Backends to try next, best first, none equal to `primary`.
    pub fallbacks: SmallVec<[BackendId; MAX_FALLBACKS]>,
    /// Why `primary` was chosen.
    pub reason: Reason,
    /// Every candidate's score, when the fleet view asked for it ([`FleetView::explain`]) and
    /// the policy scores candidates.
    ///
    /// [`FleetView::explain`]: crate::FleetView::explain
    pub explanation: Option<Box<Explanation>>,
    /// The slot of `primary` to ask for (llama.cpp's `id_slot`), when the policy steers the
    /// request to the slot holding its prompt ([`crate::cache_model::Steering`]).
    pub slot: Option<u32>,
}

/// How a scoring policy saw each candidate: lower `score` is better unless the policy says
/// otherwise in its docs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Explanation {
    /// One entry per backend considered, in pool order.
    pub candidates: Vec<CandidateScore>,
}

/// One candidate's score and the terms it was made of.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateScore {
    /// The backend.
    pub id: BackendId,
    /// Its total score.
    pub score: f64,
    /// Named parts of the score (e.g. `("uncached_tokens", 1200.0)`), or why it was excluded
    /// (`("excluded_gpu_temperature", 91.0)`).
    pub terms: Vec<(&'static str, f64)>,
}

/// Why a policy chose its primary backend, shown in debug headers and logs as
/// `policy: detail`. One shape for every policy, so a new policy needs no variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    /// The deciding policy's config name (`prefix_aware`), or a baseline's own name.
    pub policy: &'static str,
    /// What tipped the choice, in the policy's words.
    pub detail: Detail,
}

/// Most numbers a [`Detail`] carries.
pub const MAX_DETAIL_VALUES: usize = 2;

/// A policy's reason in words: a fixed text whose `{}` placeholders are filled, in order, by
/// up to [`MAX_DETAIL_VALUES`] numbers. Kept as text and numbers rather than formatted, so
/// a decision allocates nothing; only showing it formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detail {
    /// The text, with one `{}` per value.
    template: &'static str,
    /// The values, the first `len` of them used.
    values: [u64; MAX_DETAIL_VALUES],
    /// How many values are used.
    len: u8,
}

impl Detail {
    /// A detail without numbers.
    pub const fn text(text: &'static str) -> Self {
        Self {
            template: text,
            values: [0; MAX_DETAIL_VALUES],
            len: 0,
        }
    }

    /// A detail whose `{}` placeholders take `values` in order (at most
    /// [`MAX_DETAIL_VALUES`]; more are dropped).
    pub fn new(template: &'static str, values: &[u64]) -> Self {
        let len = values.len().min(MAX_DETAIL_VALUES);
        let mut v = [0; MAX_DETAIL_VALUES];
        v[..len].copy_from_slice(&values[..len]);
        Self {
            template,
            values: v,
            len: len as u8,
        }
    }

    /// The text before its placeholders are filled.
    pub fn template(&self) -> &'static str {
        self.template
    }

    /// The numbers, in placeholder order.
    pub fn values(&self) -> &[u64] {
        &self.values[..usize::from(self.len)]
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut values = self.values().iter();
        let mut parts = self.template.split("{}");
        if let Some(first) = parts.next() {
            f.write_str(first)?;
        }
        for part in parts {
            match values.next() {
                Some(v) => write!(f, "{v}")?,
                None => f.write_str("?")?,
            }
            f.write_str(part)?;
        }
        Ok(())
    }
}

impl Reason {
    /// `policy`'s reason.
    pub fn new(policy: &'static str, detail: Detail) -> Self {
        Self { policy, detail }
    }

    /// `policy`'s reason in fixed words.
    pub const fn text(policy: &'static str, text: &'static str) -> Self {
        Self {
            policy,
            detail: Detail::text(text),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.policy, self.detail)
    }
}

impl Decision {
    /// A decision with no fallbacks.
    pub fn new(primary: BackendId, reason: Reason) -> Self {
        Self {
            primary,
            fallbacks: SmallVec::new(),
            reason,
            explanation: None,
            slot: None,
        }
    }

    /// Fills fallbacks from `candidates` in order, skipping the primary and repeats, up to
    /// [`MAX_FALLBACKS`].
    pub fn with_fallbacks(mut self, candidates: impl IntoIterator<Item = BackendId>) -> Self {
        for id in candidates {
            if self.fallbacks.len() == MAX_FALLBACKS {
                break;
            }
            if id != self.primary && !self.fallbacks.contains(&id) {
                self.fallbacks.push(id);
            }
        }
        self
    }

    /// Attaches an explanation.
    pub fn with_explanation(mut self, explanation: Explanation) -> Self {
        self.explanation = Some(Box::new(explanation));
        self
    }

    /// Names the primary's slot to ask for (see [`Decision::slot`]).
    pub fn with_slot(mut self, slot: Option<u32>) -> Self {
        self.slot = slot;
        self
    }

    /// Primary then fallbacks: the order in which to try backends.
    pub fn attempts(&self) -> impl Iterator<Item = BackendId> + '_ {
        std::iter::once(self.primary).chain(self.fallbacks.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_fills_its_placeholders_in_order() {
        let r = Reason::new(
            "prefix_aware",
            Detail::new("{} prompt tokens cached, {} to prefill", &[32, 7]),
        );
        assert_eq!(
            r.to_string(),
            "prefix_aware: 32 prompt tokens cached, 7 to prefill"
        );
        assert_eq!(r.detail.values(), &[32, 7]);
        assert_eq!(
            Reason::text("round_robin", "next in rotation").to_string(),
            "round_robin: next in rotation"
        );
        // A missing value shows as `?` rather than failing.
        assert_eq!(Detail::new("{} and {}", &[1]).to_string(), "1 and ?");
    }
}
