//! `prefix_aware`: send a request where its prompt is cheapest to serve, counting both the
//! prefill its prompt would need there and the work already queued there, in tokens.
//!
//! Use it for LLM pools where prompts share prefixes (system prompts, documents, chat
//! histories, agents' tool schemas) and the engines cache them (vLLM automatic prefix caching,
//! SGLang's radix cache). One cost model, no thresholds:
//!
//! ```text
//! cost(b) = ( (prefill_weight + requests waiting at b) x uncached prompt tokens b would prefill
//!               x (1 + KV-cache use at b)
//!           + copy_weight x requests running at b x prompt tokens another backend holds
//!               but b does not / times the prefix was reused
//!           + uncached prefill tokens queued at b
//!           + decode_weight x tokens in flight at b )
//!           / (weight x ramp)
//! ```
//!
//! - *uncached prompt tokens*: the prompt's tokens past the longest prefix of 16-token blocks
//!   the pool's [`PrefixIndex`] says `b` was recently sent;
//! - *queued*: prefill waiting at `b` ahead of this request. The gateway counts it in whole
//!   prompts not yet past their first token, but a request sent for its cached prefix
//!   prefills only its tail: a ledger of this policy's recent decisions turns the pending
//!   prompt tokens into the uncached tokens it expected for them (`prefill_ledger`), so a warm
//!   replica is not mistaken for a busy one. A fresh engine report showing a longer queue
//!   (other gateways' requests) adds the difference;
//! - *the weight on this request's own prefill*: it delays this request, and every request
//!   that arrives behind it while it runs, about as many as wait there now. So when queues
//!   are short the cost is this request's time to first token, and as they grow, saving
//!   prefill (capacity for everyone) outweighs a shorter queue elsewhere;
//! - *KV-cache use* (the engine's fresh report, else 0): a token prefilled where the cache is
//!   fuller costs more. It pins a block there and evicts cached prefixes others will ask for,
//!   and when the cache runs out the engine stops admitting requests and preempts running
//!   ones (recomputing them later), so even requests whose prefix is cached there wait
//!   seconds. A cache hit, with few uncached tokens, barely feels the factor; a cold request
//!   or a copied prefix goes where the cache has room, so distinct prefixes spread over the
//!   caches instead of overflowing one (SGLang's router gets the same effect by sending new
//!   text to the worker with the smallest tree). Without it, on the simulator's shared-prefix
//!   workload with other seeds or popularity skews, replicas collected more long prefixes
//!   than their caches hold and preempted requests, and p90 TTFT reached 1.4 to 4.3 s where
//!   the SGLang-style baseline had 0.32 to 0.40 s;
//! - *copying a prefix*: prefilling at `b` tokens another backend already holds costs the
//!   requests running at `b` too (each of their steps waits for the copy), and the capacity
//!   is spent again for nothing unless the copy is reused. So the copy is charged per running
//!   request and divided by how many times the prefix was sent before (the index's reuse
//!   count of the deepest block held anywhere). A hot system prompt or document, sent
//!   hundreds of times, is copied as freely as before; a chat or agent session's history,
//!   whose deepest block only its own previous turn sent, stays where it is cached unless the
//!   home's queue is long enough to pay for recomputing it. Without it, on a saturated
//!   closed-loop chat (H100 fleet, 256 users) 9% of later turns left their cached history for
//!   a momentarily shorter queue, the hit rate fell from 0.68 to 0.64 and output throughput
//!   was 5% below the SGLang-style baseline's;
//! - *tokens in flight* (the gateway's own, or the engine's when it reports more): decoding
//!   sequences slow every step a prefill runs in.
//!
//! What a backend holds comes from its engine's cache model ([`crate::cache_model`]): the
//! index for paged caches (vLLM, SGLang), the slot model for llama.cpp (which also adds the
//! tokens of a prompt only that slot held and the request would overwrite), nothing for
//! hosted APIs.
//!
//! The cheapest usable backend wins; equal costs rotate, so a request no backend has cached
//! (a cold one) goes to the least loaded and cold requests spread instead of piling onto one
//! replica; a hot prefix is copied to a second replica as soon as its home's queue costs more
//! than prefilling it elsewhere. After the decision the prompt's blocks are recorded for the
//! chosen backend in the index, whose per-backend size follows the engine's reported KV-cache
//! size. Engine reports older than `max_report_age` stop counting.
//!
//! Parameters and defaults: `prefill_weight` 2 (this request's own prefill delays it and at
//! least the next request to arrive there), `decode_weight` 0.1 (a token in flight slows a new
//! request's first token about a tenth as much as a token to prefill: decoding shares every
//! step, prefill takes the step's token budget), `copy_weight` 0.25 (a running sequence is
//! slowed by a copied prefix about a quarter as much as a waiting request), `max_report_age`
//! 2 s. Defaults were chosen on
//! the simulator's workloads (`crates/sim/tests/routing_quality.rs`). Source: the
//! prefix-affinity idea of SGLang's cache-aware router and llm-d's precise prefix-cache
//! scorer, rebuilt as a single cost in tokens instead of their match-ratio and imbalance
//! thresholds.

use std::time::Duration;

use serde::Deserialize;
use smallvec::SmallVec;

use super::prefill_ledger::Pending;
use super::registry::{duration, non_negative, positive_age};
use super::signals::{
    expected_latency, fresh_engine, own_tokens, queued_prefill, rank, share, total_tokens, Terms,
};
use super::{rotation_start, Build, NoCandidate, Policy, PolicyParams, PoolState, Registration};
use crate::fleet::BackendView;
use crate::prefix::{PrefixIndex, BLOCK_TOKENS, DEFAULT_BACKEND_BLOCKS, MAX_POOL_BLOCKS};
use crate::{Decision, Detail, FleetView, Reason, RequestProfile};

/// The name config uses.
const NAME: &str = "prefix_aware";

/// Default weight of this request's own uncached prefill against queued prefill.
pub const DEFAULT_PREFILL_WEIGHT: f64 = 2.0;
/// Default weight of a token in flight against a token to prefill.
pub const DEFAULT_DECODE_WEIGHT: f64 = 0.1;
/// Weight of a prompt token a llama.cpp slot would forget (see [`crate::cache_model`]).
const EVICT_WEIGHT: f64 = 1.0;
/// Default weight, per request running at the target, of a copied prefix token.
pub const DEFAULT_COPY_WEIGHT: f64 = 0.25;

/// `prefix_aware`'s parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefixAwareParams {
    /// Weight of the request's own uncached prefill against queued prefill (> 0).
    pub prefill_weight: f64,
    /// Weight of a token in flight against a token to prefill (>= 0).
    pub decode_weight: f64,
    /// Weight, per request running at the target, of copying a prefix another backend
    /// holds, divided by how often that prefix was reused (>= 0).
    pub copy_weight: f64,
    /// Engine reports older than this stop counting.
    #[serde(deserialize_with = "duration")]
    pub max_report_age: Duration,
    /// On llama.cpp backends, how long a request may wait for the busy slot holding its
    /// prompt rather than take another slot and overwrite the prompt that one holds; the
    /// gateway then names the slot (`id_slot`). 0 (the default): the server picks its slot
    /// as it would alone. About one cold prefill of the shared prompts is a good value.
    #[serde(deserialize_with = "duration")]
    pub slot_wait: Duration,
}

impl Default for PrefixAwareParams {
    fn default() -> Self {
        Self {
            prefill_weight: DEFAULT_PREFILL_WEIGHT,
            decode_weight: DEFAULT_DECODE_WEIGHT,
            copy_weight: DEFAULT_COPY_WEIGHT,
            max_report_age: super::DEFAULT_MAX_REPORT_AGE,
            slot_wait: Duration::ZERO,
        }
    }
}

impl PolicyParams for PrefixAwareParams {
    fn validate(&self) -> Result<(), String> {
        let prefill_weight = self.prefill_weight;
        if !(prefill_weight.is_finite() && prefill_weight > 0.0) {
            return Err(format!(
                "prefill_weight must be a number above 0 (default {DEFAULT_PREFILL_WEIGHT}), got {prefill_weight}"
            ));
        }
        non_negative("decode_weight", self.decode_weight, DEFAULT_DECODE_WEIGHT)?;
        non_negative("copy_weight", self.copy_weight, DEFAULT_COPY_WEIGHT)?;
        positive_age(self.max_report_age)
    }

    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(
            PrefixAware::new(self.prefill_weight, self.decode_weight, self.max_report_age)
                .with_copy_weight(self.copy_weight)
                .with_slot_wait(self.slot_wait)
                .with_state(pool.state),
        )
    }
}

/// `prefix_aware`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<PrefixAwareParams>(NAME);

/// Prefix-cache-aware routing on one cost in tokens.
#[derive(Debug)]
pub struct PrefixAware {
    /// The pool's state: its prefix index, the slot model of llama.cpp backends (paged ones
    /// use the index), the prefill ledger, and the rotation counter that breaks ties.
    state: PoolState,
    prefill_weight: f64,
    decode_weight: f64,
    copy_weight: f64,
    max_report_age: Duration,
    /// [`PrefixAwareParams::slot_wait`]; `None`: llama.cpp picks slots itself.
    slot_wait: Option<Duration>,
}

impl PrefixAware {
    /// A policy with an empty prefix index.
    pub fn new(prefill_weight: f64, decode_weight: f64, max_report_age: Duration) -> Self {
        Self {
            state: PoolState::default(),
            prefill_weight,
            decode_weight,
            copy_weight: DEFAULT_COPY_WEIGHT,
            max_report_age,
            slot_wait: None,
        }
    }

    /// The same policy on `state` (a rebuilt pool's): its prefix index, slot model and
    /// ledger stay warm for kept backends.
    pub fn with_state(mut self, state: PoolState) -> Self {
        self.state = state;
        self
    }

    /// The same policy with `copy_weight` instead of the default.
    pub fn with_copy_weight(mut self, copy_weight: f64) -> Self {
        self.copy_weight = copy_weight;
        self
    }

    /// The same policy steering llama.cpp requests to the slot holding their prompt when it
    /// frees within `wait` (zero: never; see [`PrefixAwareParams::slot_wait`]).
    pub fn with_slot_wait(mut self, wait: Duration) -> Self {
        self.slot_wait = (!wait.is_zero()).then_some(wait);
        self
    }

    /// The pool's prefix index (for inspection and tests).
    pub fn index(&self) -> &PrefixIndex {
        &self.state.prefix_index
    }
}

/// Blocks a backend's cache holds: its engine's report (however old: the size does not
/// change), else the default; at most its even share of the pool's index cap.
pub(crate) fn capacity_blocks(b: &BackendView, pool_size: usize) -> u32 {
    let share = MAX_POOL_BLOCKS / u32::try_from(pool_size.max(1)).unwrap_or(u32::MAX);
    b.engine
        .and_then(|e| e.kv_capacity_tokens)
        .map_or(DEFAULT_BACKEND_BLOCKS, |t| t / BLOCK_TOKENS as u32)
        .min(share)
}

/// Prompt tokens of a request: the estimate, or at least what its full blocks hold.
pub(crate) fn prompt_tokens(request: &RequestProfile, blocks: usize) -> u64 {
    u64::from(request.estimated_input_tokens).max((blocks * BLOCK_TOKENS) as u64)
}

/// Tokens of the prompt cached at a backend holding `matched` leading blocks.
pub(crate) fn cached_tokens(prompt: u64, matched: u32) -> u64 {
    (u64::from(matched) * BLOCK_TOKENS as u64).min(prompt)
}

impl Policy for PrefixAware {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state(&self) -> Option<&PoolState> {
        Some(&self.state)
    }

    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<Decision, NoCandidate> {
        let n = fleet.backends.len();
        if n == 0 {
            return Err(NoCandidate);
        }
        let start = rotation_start(&self.state.rotation, n);
        let blocks = &request.prompt_blocks;
        let prompt = prompt_tokens(request, blocks.len());
        let mut matched: SmallVec<[u32; 64]> = SmallVec::from_elem(0, n);
        let mut pending: SmallVec<[Pending; 64]> = SmallVec::from_elem(Pending::default(), n);
        self.state.ledger.uncached_pending(
            fleet.backends.iter().map(|b| b.prefill_tokens),
            prompt.max(1) as f64,
            &mut pending,
        );
        let mut outcome = None;
        // Each backend's matched blocks by its engine's cache model, when not all are paged.
        let mut modelled = None;
        self.state.prefix_index
            .match_and_record(blocks, &mut matched, |matched, reuse| {
                modelled = self.state.slots.matched(fleet, blocks, matched, self.slot_wait);
                let by_model: Option<SmallVec<[u32; 64]>> = modelled
                    .as_ref()
                    .map(|m| m.iter().map(|o| o.matched_blocks).collect());
                let matched = by_model.as_deref().unwrap_or(matched);
                let evicted = |b: &BackendView| {
                    modelled.as_ref().map_or(0.0, |m| {
                        m.get(b.id.index()).map_or(0.0, |o| {
                            (u64::from(o.evicted_blocks) * BLOCK_TOKENS as u64) as f64
                        })
                    })
                };
                let best = matched.iter().copied().max().unwrap_or(0);
                let best_cached = cached_tokens(prompt, best);
                let ranked = rank(fleet, start, |b, terms| {
                    let engine = fresh_engine(b, self.max_report_age);
                    let cached = cached_tokens(prompt, matched[b.id.index()]);
                    let uncached = (prompt - cached) as f64;
                    // Requests the engine queues beyond the gateway's own count (other
                    // gateways'), whole; the gateway's own, as the ledger expects them.
                    let extra = (queued_prefill(b, engine) - b.prefill_tokens as f64).max(0.0);
                    let p = pending[b.id.index()];
                    let queued = p.uncached_tokens + extra;
                    // Requests that will queue behind this one's prefill, as many as wait now.
                    let behind = p.requests + extra / prompt.max(1) as f64;
                    let in_flight = total_tokens(b, engine);
                    let kv = engine.map_or(0.0, |e| f64::from(e.kv_usage.clamp(0.0, 1.0)));
                    let copied = (best_cached - cached) as f64;
                    let running = engine
                        .map_or(0.0, |e| f64::from(e.running))
                        .max(f64::from(b.in_flight) - p.requests);
                    let detour = self.copy_weight * running * copied / f64::from(reuse.max(1));
                    let cost = ((self.prefill_weight + behind) * uncached * (1.0 + kv)
                        + detour
                        + EVICT_WEIGHT * evicted(b)
                        + queued
                        + self.decode_weight * in_flight)
                        / share(b);
                    if let Some(t) = terms {
                        let counts = (cached, uncached, queued, behind, in_flight, kv);
                        push_terms(t, b, counts, engine.is_some());
                        t.push(("copied_prefix_tokens", copied));
                        t.push(("prefix_reuse", f64::from(reuse)));
                    }
                    Some((cost, 0.0))
                });
                let primary = ranked.top.first().map(|&(_, id)| id);
                outcome = Some(ranked);
                let b = &fleet.backends[primary?.index()];
                Some((b.id.0, capacity_blocks(b, n)))
            });
        let ranked: super::signals::Ranked = outcome.ok_or(NoCandidate)?;
        if let Some(m) = modelled {
            matched = m.iter().map(|o| o.matched_blocks).collect();
        }
        let mut slot = None;
        if let Some(&(_, id)) = ranked.top.first() {
            let latency = fleet
                .backends
                .get(id.index())
                .and_then(|b| expected_latency(b, request))
                .map(|s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)));
            slot = self
                .state
                .slots
                .record_decision(fleet, id, blocks, latency, self.slot_wait);
            let cached = cached_tokens(prompt, matched[id.index()]);
            self.state.ledger.record(id.index(), prompt, prompt - cached);
        }
        ranked
            .decision(|id| {
                let cached = cached_tokens(prompt, matched[id.index()]);
                Reason::new(
                    NAME,
                    Detail::new(
                        "{} prompt tokens cached, {} to prefill",
                        &[cached, prompt - cached],
                    ),
                )
            })
            .map(|d| d.with_slot(slot))
            .ok_or(NoCandidate)
    }
}

fn push_terms(
    t: &mut Terms,
    b: &BackendView,
    (cached, uncached, queued, behind, in_flight, kv): (u64, f64, f64, f64, f64, f64),
    fresh: bool,
) {
    t.push(("cached_tokens", cached as f64));
    t.push(("uncached_tokens", uncached));
    t.push(("kv_usage", kv));
    t.push(("queued_uncached_prefill_tokens", queued));
    t.push(("requests_waiting", behind));
    t.push(("tokens_in_flight", in_flight));
    t.push(("own_tokens_in_flight", own_tokens(b)));
    if !fresh {
        t.push(("engine_report_stale_or_absent", 1.0));
    }
    t.push(("share", share(b)));
}

#[cfg(test)]
mod tests;
