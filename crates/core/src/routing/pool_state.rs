//! A pool's routing state: what its policy learned from traffic (prefix index, llama.cpp slot
//! model, prefill ledger, rotation and smooth-weighted counters), kept apart from the policy's
//! parameters so that a rebuild (a config reload, an admin add or remove) carries it over to
//! the new policy for the backends that stay.
//!
//! A pool's policy is rebuilt from config on every change, at the members' new positions. The
//! old policy hands its [`PoolState`] over ([`super::Policy::handover`]), renumbered by a
//! [`Moved`] map, dropping what belonged to backends that left; added backends start cold. The
//! new policy takes the whole state ([`super::PolicySpec::rebuild`]) and uses the parts it
//! reads; a part it does not use passes through unchanged, so routing is warm again after a
//! change of policy and back. Policies without learned state (`random`, `power_of_two`,
//! `peak_ewma`, `consistent_hash`) hand over nothing. `consistent_hash` needs nothing: its ring
//! is a function of the members' names and weights, so a kept backend keeps its points and
//! its keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cache_model::SlotCaches;
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

    /// Per-backend values indexed by old position, at the new positions: those of backends
    /// that left dropped, added backends' (and any gap) at their default.
    pub fn remap<T: Clone + Default>(&self, old: &[T]) -> Vec<T> {
        let mut out: Vec<T> = Vec::new();
        for (b, v) in old.iter().enumerate() {
            if let Some(n) = self.get(b) {
                if out.len() <= n {
                    out.resize_with(n + 1, T::default);
                }
                out[n] = v.clone();
            }
        }
        out
    }
}

/// Routing state of one pool, learned from traffic, owned by its policy. Every part is behind
/// a lock or an atomic: decisions take `&self`.
#[derive(Debug, Default)]
pub struct PoolState {
    /// Which prompt blocks each backend was recently sent (`prefix_aware`, `composite`).
    pub(crate) prefix_index: PrefixIndex,
    /// What llama.cpp backends' slots hold (`prefix_aware`).
    pub(crate) slots: SlotCaches,
    /// Recent decisions' prompt and expected uncached tokens per backend (`prefix_aware`).
    pub(crate) ledger: PrefillLedger,
    /// The rotation: `round_robin`'s next backend, and where scoring policies start their scan
    /// so that equal scores rotate.
    pub(crate) rotation: AtomicU64,
    /// Smooth weighted round robin's current weight per backend (`weighted`).
    pub(crate) current_weights: Mutex<Vec<i64>>,
}

impl PoolState {
    /// An empty state: a new pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool's prefix index (for inspection and tests).
    pub fn prefix_index(&self) -> &PrefixIndex {
        &self.prefix_index
    }

    /// The rotation counter's value.
    pub fn rotation(&self) -> u64 {
        self.rotation.load(Ordering::Relaxed)
    }

    /// A copy for the pool after its members changed: what kept backends learned, at their new
    /// positions; what belonged to backends that left, dropped.
    pub fn carried(&self, moved: &Moved) -> PoolState {
        let current = moved.remap(
            &self
                .current_weights
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        PoolState {
            prefix_index: self.prefix_index.remapped(|b| moved.get(b)),
            slots: self.slots.remapped(moved),
            ledger: self.ledger.remapped(moved),
            rotation: AtomicU64::new(self.rotation()),
            current_weights: Mutex::new(current),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::routing::test_support::{idle, members, prompt_request};
    use crate::{BackendView, CacheModel, FleetView, Policy, PolicySpec};

    fn primary_in(p: &dyn Policy, pool: &[BackendView], prompt: &str) -> usize {
        p.decide(
            &prompt_request(prompt),
            &FleetView::new(pool, Duration::ZERO),
        )
        .unwrap()
        .primary
        .index()
    }

    fn primary(p: &dyn Policy, pool_size: usize, prompt: &str) -> usize {
        primary_in(p, &idle(pool_size), prompt)
    }

    /// The policy `new` for members `after`, handed what `before` learned.
    fn rebuilt(before: &dyn Policy, new: &str, after: &[&str], moved: &Moved) -> Box<dyn Policy> {
        PolicySpec::from_name(new)
            .unwrap()
            .rebuild(&members(after), 2, before.handover(moved))
    }

    fn same_members(n: u32) -> Moved {
        Moved::new((0..n).map(|i| Some(BackendId(i))))
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
            let after = rebuilt(&*before, new, &["d", "x", "b", "c"], &moved);
            assert!(homes.iter().any(|&h| h > 0));
            // Those whose home left are cold anywhere: no assertion on them.
            for (prompt, home) in prompts.iter().zip(homes).filter(|(_, h)| *h > 0) {
                let next = primary(&*after, 4, &format!("{prompt}, again"));
                assert_eq!(next, home + 1, "{old} -> {new}: {prompt:.4}");
            }
        }
    }

    /// llama.cpp backends' slot model is carried too: a prompt goes back to the slot backend
    /// holding it, at that backend's new position.
    #[test]
    fn a_llamacpp_slot_keeps_its_prompt_when_its_backend_moves() {
        let slots = |n: usize| {
            let mut pool = idle(n);
            for b in &mut pool {
                b.cache = CacheModel::Slots {
                    slots: 1,
                    ctx_tokens: 65_536,
                };
            }
            pool
        };
        let prompts: Vec<String> = (0..3u8)
            .map(|i| char::from(b'a' + i).to_string().repeat(3000))
            .collect();
        let before = PolicySpec::from_name("prefix_aware")
            .unwrap()
            .build(&members(&["a", "b", "c"]), 1);
        let homes: Vec<usize> = prompts
            .iter()
            .map(|p| primary_in(&*before, &slots(3), p))
            .collect();
        assert_eq!(
            {
                let mut h = homes.clone();
                h.sort_unstable();
                h
            },
            [0, 1, 2],
            "one prompt per slot"
        );
        // "x" joins in front: every backend moves one up.
        let moved = Moved::new((1..4).map(|i| Some(BackendId(i))));
        let after = rebuilt(&*before, "prefix_aware", &["x", "a", "b", "c"], &moved);
        assert_eq!(
            after.state().unwrap().prefix_index().len(),
            before.state().unwrap().prefix_index().len()
        );
        for (prompt, home) in prompts.iter().zip(homes) {
            let next = primary_in(&*after, &slots(4), &format!("{prompt}, again"));
            assert_eq!(next, home + 1, "{prompt:.4}");
        }
    }

    #[test]
    fn weighted_keeps_its_interleaving_for_kept_backends() {
        let mut pool = idle(3);
        pool[0].weight = 5;
        let before = PolicySpec::from_name("weighted")
            .unwrap()
            .build(&members(&["a", "b", "c"]), 1);
        let r = prompt_request("q");
        for _ in 0..3 {
            before
                .decide(&r, &FleetView::new(&pool, Duration::ZERO))
                .unwrap();
        }
        let after = rebuilt(&*before, "weighted", &["a", "b", "c"], &same_members(3));
        let next = |p: &dyn Policy| {
            p.decide(&r, &FleetView::new(&pool, Duration::ZERO))
                .unwrap()
                .primary
        };
        for _ in 0..14 {
            assert_eq!(next(&*after), next(&*before));
        }
    }

    /// On an idle pool the scoring policies' tie-break rotation picks the primary: a rebuild
    /// goes on with the rotation where it was instead of starting again at the first backend.
    #[test]
    fn tie_break_rotations_go_on_across_a_rebuild() {
        for name in [
            "round_robin",
            "least_connections",
            "least_loaded",
            "gpu_aware",
            "cost",
            "prefix_aware",
            "composite",
        ] {
            let names = ["a", "b", "c"];
            let before = PolicySpec::from_name(name)
                .unwrap()
                .build(&members(&names), 1);
            let first = primary(&*before, 3, "q");
            primary(&*before, 3, "q");
            let after = rebuilt(&*before, name, &names, &same_members(3));
            for _ in 0..6 {
                assert_eq!(
                    primary(&*after, 3, "q"),
                    primary(&*before, 3, "q"),
                    "{name}"
                );
            }
            assert_ne!(
                primary(&*after, 3, "q"),
                first,
                "{name}: rotation restarted"
            );
        }
    }

    #[test]
    fn stateless_policies_hand_over_an_empty_state() {
        let before = PolicySpec::from_name("random")
            .unwrap()
            .build(&members(&["a"]), 1);
        assert!(before.state().is_none());
        assert_eq!(before.handover(&same_members(1)).rotation(), 0);
    }
}
