//! `consistent_hash`: session affinity on a hash ring, with bounded load.
//!
//! Each backend owns `virtual_nodes x weight` points on a 64-bit ring, placed by hashing its
//! name, so adding or removing a backend moves only the keys it owns. A request's session key
//! (the `x-session-id` header, else the body's `user`, else the client address) hashes to a
//! point; the first backend clockwise is its home. To stop a hot key from overloading its home,
//! each backend may hold at most `ceil(load_factor x (in_flight_total + 1) x weight / total
//! weight)` requests; a home at its bound passes the request to the next backend on the ring
//! (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2018).
//!
//! Use it to keep a conversation on the replica that holds its KV cache when no cache-aware
//! policy is available. Parameters: `load_factor` (default 1.25), `virtual_nodes` (default 160).

use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64;

use super::{Build, NoCandidate, Policy, PolicyParams, Registration};
use crate::{BackendId, Decision, Detail, FleetView, PoolMember, Reason, RequestProfile};

/// The name config uses.
const NAME: &str = "consistent_hash";

/// Default load bound: a node takes at most 1.25x the average.
pub const DEFAULT_HASH_LOAD_FACTOR: f64 = 1.25;
/// Default virtual nodes per unit of weight on the hash ring.
pub const DEFAULT_HASH_VIRTUAL_NODES: u32 = 160;
/// Most points a ring may hold (16 bytes each; built again on every reload or admin change):
/// 16 MiB, the default 160 virtual nodes for weights summing to 6,553.
pub const MAX_RING_POINTS: u64 = 1 << 20;

/// `consistent_hash`'s parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsistentHashParams {
    /// A node may take at most this multiple of the average load (> 1.0).
    pub load_factor: f64,
    /// Ring points per unit of backend weight (1 to 4096).
    pub virtual_nodes: u32,
}

impl Default for ConsistentHashParams {
    fn default() -> Self {
        Self {
            load_factor: DEFAULT_HASH_LOAD_FACTOR,
            virtual_nodes: DEFAULT_HASH_VIRTUAL_NODES,
        }
    }
}

impl PolicyParams for ConsistentHashParams {
    fn validate(&self) -> Result<(), String> {
        let (load_factor, virtual_nodes) = (self.load_factor, self.virtual_nodes);
        if !(load_factor.is_finite() && load_factor > 1.0) {
            return Err(format!(
                "load_factor must be a number above 1.0 (default {DEFAULT_HASH_LOAD_FACTOR}), got {load_factor}"
            ));
        }
        if !(1..=4096).contains(&virtual_nodes) {
            return Err(format!(
                "virtual_nodes must be between 1 and 4096 (default {DEFAULT_HASH_VIRTUAL_NODES}), got {virtual_nodes}"
            ));
        }
        Ok(())
    }

    /// A ring of `virtual_nodes x weight` points per backend must stay within
    /// [`MAX_RING_POINTS`]: weights up to 4e9 parse, and 4e9 x 160 points would exhaust memory.
    fn check_weights(&self, weights: &[u32]) -> Result<(), String> {
        let virtual_nodes = self.virtual_nodes;
        let weights: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
        let points = u64::from(virtual_nodes).saturating_mul(weights);
        if points <= MAX_RING_POINTS {
            return Ok(());
        }
        Err(format!(
            "consistent_hash would put {points} points on its hash ring (virtual_nodes {virtual_nodes} x weights summing to {weights}), more than the {MAX_RING_POINTS} it allows; weights are relative, so scale them down (e.g. 4 and 1 rather than 4000 and 1000), or lower virtual_nodes"
        ))
    }

    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(BoundedConsistentHash::new(
            pool.members,
            self.load_factor,
            self.virtual_nodes,
        ))
    }
}

/// `consistent_hash`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<ConsistentHashParams>(NAME);

/// The key's home was over its load bound; the next node on the ring took it.
fn spill(home: BackendId) -> Reason {
    Reason::new(
        NAME,
        Detail::new("home {} over load bound, spilled", &[u64::from(home.0)]),
    )
}

/// Bounded-load consistent hashing.
#[derive(Debug)]
pub struct BoundedConsistentHash {
    /// Ring points sorted by hash: (point, backend index).
    ring: Vec<(u64, u32)>,
    members: usize,
    load_factor: f64,
}

impl BoundedConsistentHash {
    /// Builds the ring for `members`.
    pub fn new(members: &[PoolMember], load_factor: f64, virtual_nodes: u32) -> Self {
        let mut ring = Vec::new();
        let mut key = Vec::new();
        for (i, m) in members.iter().enumerate() {
            for v in 0..virtual_nodes.saturating_mul(m.weight.max(1)) {
                key.clear();
                key.extend_from_slice(m.name.as_bytes());
                key.push(0);
                key.extend_from_slice(&v.to_le_bytes());
                ring.push((xxh3_64(&key), i as u32));
            }
        }
        ring.sort_unstable();
        Self {
            ring,
            members: members.len(),
            load_factor,
        }
    }
}

impl Policy for BoundedConsistentHash {
    fn name(&self) -> &'static str {
        NAME
    }

    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<Decision, NoCandidate> {
        if self.ring.is_empty() || fleet.backends.len() != self.members {
            return Err(NoCandidate);
        }
        let point = match &request.session_key {
            Some(k) => xxh3_64(k.as_bytes()),
            None => xxh3_64(request.prompt.as_bytes()),
        };
        let total_weight: u64 = fleet.usable().map(|b| u64::from(b.weight.max(1))).sum();
        if total_weight == 0 {
            return Err(NoCandidate);
        }
        let load = (fleet.total_in_flight() + 1) as f64 * self.load_factor;
        let bound = |w: u32| ((load * f64::from(w.max(1)) / total_weight as f64).ceil()) as u64;

        let start = self.ring.partition_point(|p| p.0 < point);
        let mut seen: smallvec::SmallVec<[u32; 8]> = smallvec::SmallVec::new();
        let mut home: Option<BackendId> = None;
        let mut chosen: Option<BackendId> = None;
        let mut fallbacks: smallvec::SmallVec<[BackendId; 8]> = smallvec::SmallVec::new();
        for k in 0..self.ring.len() {
            let idx = self.ring[(start + k) % self.ring.len()].1;
            if seen.contains(&idx) {
                continue;
            }
            seen.push(idx);
            let b = &fleet.backends[idx as usize];
            if !b.usable {
                if seen.len() == self.members {
                    break;
                }
                continue;
            }
            home.get_or_insert(b.id);
            if chosen.is_none() && u64::from(b.in_flight) < bound(b.weight) {
                chosen = Some(b.id);
            } else {
                fallbacks.push(b.id);
            }
            if seen.len() == self.members
                || (chosen.is_some() && fallbacks.len() >= crate::decision::MAX_FALLBACKS)
            {
                break;
            }
        }
        let home = home.ok_or(NoCandidate)?;
        // Every usable node at its bound cannot happen (the bounds sum above the total), but if
        // rounding ever allows it, the home takes the request.
        let primary = chosen.unwrap_or(home);
        let reason = if primary == home {
            Reason::text(NAME, "key's home node")
        } else {
            spill(home)
        };
        Ok(Decision::new(primary, reason).with_fallbacks(fallbacks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, members, request};
    use std::collections::HashMap;
    use std::time::Duration;

    fn owners(p: &BoundedConsistentHash, names: &[&str], keys: usize) -> HashMap<String, String> {
        let pool = idle(names.len());
        (0..keys)
            .map(|k| {
                let key = format!("session-{k}");
                let d = p
                    .decide(&request(Some(&key)), &FleetView::new(&pool, Duration::ZERO))
                    .unwrap();
                (key, names[d.primary.index()].to_string())
            })
            .collect()
    }

    #[test]
    fn same_key_same_backend_and_keys_spread() {
        let names = ["a", "b", "c"];
        let p = BoundedConsistentHash::new(&members(&names), 1.25, 160);
        let first = owners(&p, &names, 3000);
        assert_eq!(first, owners(&p, &names, 3000));
        for n in names {
            let share = first.values().filter(|v| *v == n).count();
            assert!((700..1300).contains(&share), "{n}: {share}");
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let p3 = BoundedConsistentHash::new(&members(&["a", "b", "c"]), 1.25, 160);
        let p2 = BoundedConsistentHash::new(&members(&["a", "c"]), 1.25, 160);
        let before = owners(&p3, &["a", "b", "c"], 2000);
        let after = owners(&p2, &["a", "c"], 2000);
        for (key, owner) in &before {
            if owner != "b" {
                assert_eq!(&after[key], owner, "{key} moved though its backend stayed");
            }
        }
    }

    #[test]
    fn hot_home_spills_to_next_node() {
        let names = ["a", "b", "c"];
        let p = BoundedConsistentHash::new(&members(&names), 1.25, 160);
        let r = request(Some("hot"));
        let mut pool = idle(3);
        let home = p
            .decide(&r, &FleetView::new(&pool, Duration::ZERO))
            .unwrap()
            .primary;
        // Home holds 4 of 4 in flight: bound = ceil(1.25 * 5 / 3) = 3, so it is over.
        pool[home.index()].in_flight = 4;
        let d = p
            .decide(&r, &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_ne!(d.primary, home);
        assert_eq!(d.reason, spill(home));
        assert!(d.fallbacks.contains(&home));
    }
}
