//! What a policy learned from traffic, handed to the policy that replaces it when its pool
//! changes (a config reload, an admin add or remove), so that routing stays warm for the
//! backends that stay.
//!
//! A pool's policy is rebuilt from config on every change, at the members' new positions. The
//! old policy lends what it learned as a [`Learned`]; the new one takes what it can use in
//! [`super::Policy::inherit`], renumbered by a [`Moved`] map, dropping what belonged to
//! backends that left. Added backends start cold. Carried over: the prefix index
//! (`prefix_aware` and `composite` take each other's as well as their own), `prefix_aware`'s
//! prefill ledger, `weighted`'s current weights and `round_robin`'s place in the rotation.
//! `consistent_hash` needs nothing: its ring is a function of the members' names and weights,
//! so a kept backend keeps its points and its keys.

use crate::prefix::PrefixIndex;
use crate::BackendId;

use super::prefill_ledger::PrefillLedger;

/// Where each backend of a pool's previous member list sits now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// Indexed by old position: the new position, `None` for a backend that left.
    to: Vec<Option<usize>>,
}

impl Moved {
    /// From the new position of each old member, in old order.
    pub fn new(to: impl IntoIterator<Item = Option<BackendId>>) -> Self {
        Self {
            to: to.into_iter().map(|b| b.map(BackendId::index)).collect(),
        }
    }

    /// The new position of the backend that was at `old`, if it stayed.
    pub fn get(&self, old: usize) -> Option<usize> {
        self.to.get(old).copied().flatten()
    }
}

/// Routing state a policy learned from traffic, lent to its successor.
#[derive(Debug, Default)]
pub struct Learned<'a> {
    pub(crate) prefix_index: Option<&'a PrefixIndex>,
    pub(crate) prefill_ledger: Option<&'a PrefillLedger>,
    /// Smooth weighted round robin's current weights, by old position.
    pub(crate) current_weights: Option<Vec<i64>>,
    /// A rotation counter.
    pub(crate) rotation: Option<u64>,
}

impl Learned<'_> {
    /// The prefix index renumbered for the new members, if one was learned.
    pub(crate) fn prefix_index(&self, moved: &Moved) -> Option<PrefixIndex> {
        self.prefix_index.map(|i| i.remapped(|b| moved.get(b)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::routing::test_support::{idle, members, prompt_request};
    use crate::{FleetView, Policy, PolicySpec};

    fn primary(p: &dyn Policy, pool_size: usize, prompt: &str) -> usize {
        let pool = idle(pool_size);
        p.decide(
            &prompt_request(prompt),
            &FleetView::new(&pool, Duration::ZERO),
        )
        .unwrap()
        .primary
        .index()
    }

    /// Prompts sent before a member change go where their prefix is cached after it, at the
    /// backend's new position, whichever prefix policy replaces which.
    #[test]
    fn a_prefix_stays_home_when_its_home_moves() {
        let prompts: Vec<String> = (0..6u8)
            .map(|i| format!("{}{i}", char::from(b'a' + i).to_string().repeat(3000)))
            .collect();
        for (old, new) in [
            ("prefix_aware", "prefix_aware"),
            ("prefix_aware", "composite"),
            ("composite", "prefix_aware"),
        ] {
            let before = PolicySpec::from_name(old)
                .unwrap()
                .build(&members(&["a", "b", "c"]), 1);
            let homes: Vec<usize> = prompts.iter().map(|p| primary(&*before, 3, p)).collect();
            // "a" leaves, "d" joins in front: b 1 -> 2, c 2 -> 3.
            let moved = Moved::new([None, Some(BackendId(2)), Some(BackendId(3))]);
            let mut after = PolicySpec::from_name(new)
                .unwrap()
                .build(&members(&["d", "x", "b", "c"]), 2);
            after.inherit(before.learned(), &moved);
            assert!(homes.iter().any(|&h| h > 0));
            // Those whose home left are cold anywhere: no assertion on them.
            for (prompt, home) in prompts.iter().zip(homes).filter(|(_, h)| *h > 0) {
                let next = primary(&*after, 4, &format!("{prompt}, again"));
                assert_eq!(next, home + 1, "{old} -> {new}: {prompt:.4}");
            }
        }
    }

    #[test]
    fn weighted_keeps_its_interleaving_for_kept_backends() {
        let mut pool = idle(3);
        pool[0].weight = 5;
        let spec = PolicySpec::Weighted;
        let before = spec.build(&members(&["a", "b", "c"]), 1);
        let r = prompt_request("q");
        for _ in 0..3 {
            before
                .decide(&r, &FleetView::new(&pool, Duration::ZERO))
                .unwrap();
        }
        let mut after = spec.build(&members(&["a", "b", "c"]), 1);
        after.inherit(
            before.learned(),
            &Moved::new((0..3).map(|i| Some(BackendId(i)))),
        );
        let next = |p: &dyn Policy| {
            p.decide(&r, &FleetView::new(&pool, Duration::ZERO))
                .unwrap()
                .primary
        };
        for _ in 0..14 {
            assert_eq!(next(&*after), next(&*before));
        }
    }
}
