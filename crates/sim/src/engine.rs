//! The simulated engine: a waiting queue, a running batch, a KV block pool with prefix caching,
//! and a scheduler that works like vLLM's (V1) continuous batching.
//!
//! Each call to [`Engine::step`] runs one scheduler iteration at time `now`:
//!
//! 1. **Running requests**, oldest first, each get the tokens they need next — the rest of
//!    their prompt (a chunk of at most the remaining token budget) or one decode token — and the
//!    KV blocks to hold them. When no block is free, the newest running request is *preempted*
//!    (its blocks are freed, it goes back to the front of the waiting queue and will recompute)
//!    until the block fits; if the request itself is the newest, it is the one preempted.
//! 2. **Waiting requests**, first come first served (only if nothing was preempted), while the
//!    batch has fewer than `max_num_seqs` requests and token budget remains: each looks up its
//!    longest cached prefix, takes those blocks, and is admitted if blocks for the tokens it
//!    computes in this step are free; otherwise it and everyone behind it waits.
//! 3. The step takes `base + per_token * tokens + per_context_token * context` seconds (see
//!    [`StepTime`](crate::StepTime)). Blocks that became full are registered in the prefix cache.
//!    A request whose whole known sequence has been computed samples a token; the first one is
//!    its time to first token; the last one finishes it and releases its blocks.
//!
//! Time is a parameter, in seconds on the caller's epoch (`f64`). The engine applies a step's
//! effects when the step is computed and stamps its events with the step's `end`; the caller
//! delivers them at `end` and calls `step` again no earlier than that (a call with an earlier
//! `now` starts the step at `end`). This fits a discrete-event loop ([`crate::fleet`]) and a
//! real-time loop alike: `step(now)`, sleep until `stats.end`, release the events, repeat.

use std::collections::VecDeque;

use crate::config::{ConfigError, EngineConfig};
use crate::kv::{hash_block, BlockId, BlockPool, ROOT_HASH};
use crate::metrics::{EngineMetrics, GpuState};
use crate::request::{EngineEvent, RequestId, SimRequest, StepOutcome, StepStats, SubmitError};
use crate::slots::SlotTable;
use crate::tokenizer::synthetic_token;

/// One request inside the engine.
#[derive(Debug, Clone)]
struct Seq {
    id: RequestId,
    /// Its scheduling priority (lower first), read with priority scheduling only.
    priority: i32,
    /// Prompt then output so far; the last output token has not been computed yet.
    tokens: Vec<u32>,
    prompt_len: u32,
    max_output: u32,
    generated: u32,
    /// Tokens whose KV is in `blocks`.
    num_computed: u32,
    blocks: Vec<BlockId>,
    /// Chained hashes of the full blocks of `tokens`, computed as needed.
    hashes: Vec<u64>,
    /// `blocks[..registered]` are registered in the prefix cache.
    registered: usize,
    output_seed: u64,
    /// Admitted at least once (so `prompt_tokens_total` counts it once).
    admitted_before: bool,
    /// Produced its last token this step.
    done: bool,
    /// Its llama.cpp slot, in slot mode, from admission to its end.
    llama_slot: Option<usize>,
}

/// Counters behind [`EngineMetrics`].
#[derive(Debug, Clone, Default)]
struct Counters {
    prefix_queries: u64,
    prefix_hits: u64,
    preemptions: u64,
    prompt_tokens: u64,
    generation_tokens: u64,
    finished: u64,
    steps: u64,
    busy_seconds: f64,
}

/// A simulated inference engine. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    pool: BlockPool,
    /// Requests by slot; `None` slots are listed in `free_slots`.
    slots: Vec<Option<Seq>>,
    free_slots: Vec<usize>,
    /// Slots of running requests, oldest admission first.
    running: Vec<usize>,
    /// Slots of waiting requests, next to admit first.
    waiting: VecDeque<usize>,
    /// End of the last step.
    busy_until: f64,
    gpu: GpuState,
    counters: Counters,
    /// Reused buffers, so a step allocates nothing once warm.
    scratch: Vec<u8>,
    scheduled: Vec<(usize, u32)>,
    hits: Vec<BlockId>,
    /// Slot mode's slots ([`crate::slots`]); `None`: the paged prefix cache.
    slot_table: Option<SlotTable>,
}

/// Blocks needed to hold `tokens` tokens.
fn blocks_for(tokens: u32, block_size: usize) -> usize {
    (tokens as usize).div_ceil(block_size)
}

/// Computes the chained hashes of `seq`'s first `upto` full blocks.
fn extend_hashes(seq: &mut Seq, upto: usize, bs: usize, scratch: &mut Vec<u8>) {
    while seq.hashes.len() < upto {
        let i = seq.hashes.len();
        let parent = if i == 0 { ROOT_HASH } else { seq.hashes[i - 1] };
        let h = hash_block(parent, &seq.tokens[i * bs..(i + 1) * bs], scratch);
        seq.hashes.push(h);
    }
}

impl Engine {
    /// An idle engine with an empty cache, at time 0.
    pub fn new(config: EngineConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            slot_table: config.slots.map(SlotTable::new),
            pool: BlockPool::new(config.num_gpu_blocks),
            gpu: GpuState::new(config.gpu),
            config,
            slots: Vec::new(),
            free_slots: Vec::new(),
            running: Vec::new(),
            waiting: VecDeque::new(),
            busy_until: 0.0,
            counters: Counters::default(),
            scratch: Vec::new(),
            scheduled: Vec::new(),
            hits: Vec::new(),
        })
    }

    /// Whether blocks are cached by hash (vLLM's prefix caching), not per slot.
    fn paged_caching(&self) -> bool {
        self.config.enable_prefix_caching && self.slot_table.is_none()
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Whether [`submit`](Self::submit) would accept a request of this shape, without giving
    /// it up.
    pub fn check(&self, prompt_tokens: u32, max_output_tokens: u32) -> Result<(), SubmitError> {
        if prompt_tokens == 0 {
            return Err(SubmitError::EmptyPrompt);
        }
        if max_output_tokens == 0 {
            return Err(SubmitError::NoOutput);
        }
        if u64::from(prompt_tokens) + u64::from(max_output_tokens)
            > u64::from(self.config.max_model_len)
        {
            return Err(SubmitError::TooLong {
                prompt: prompt_tokens,
                output: max_output_tokens,
                max_model_len: self.config.max_model_len,
            });
        }
        Ok(())
    }

    /// Queues a request. It is considered from the next step on.
    pub fn submit(&mut self, req: SimRequest) -> Result<(), SubmitError> {
        let prompt = u32::try_from(req.prompt_tokens.len()).unwrap_or(u32::MAX);
        self.check(prompt, req.max_output_tokens)?;
        let mut tokens = req.prompt_tokens;
        tokens.reserve_exact(req.max_output_tokens as usize);
        let seq = Seq {
            id: req.id,
            priority: req.priority,
            tokens,
            prompt_len: prompt,
            max_output: req.max_output_tokens,
            generated: 0,
            num_computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            registered: 0,
            output_seed: req.output_seed,
            admitted_before: false,
            done: false,
            llama_slot: None,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(seq);
                s
            }
            None => {
                self.slots.push(Some(seq));
                self.slots.len() - 1
            }
        };
        if self.config.priority_scheduling {
            // Behind every waiting request of its priority or a more urgent one.
            let p = req.priority;
            let slots = &self.slots;
            let at = self
                .waiting
                .iter()
                .position(|&s| slots[s].as_ref().is_some_and(|q| q.priority > p))
                .unwrap_or(self.waiting.len());
            self.waiting.insert(at, slot);
        } else {
            self.waiting.push_back(slot);
        }
        Ok(())
    }

    /// Drops a request wherever it is (a client went away), releasing its blocks. `false` if
    /// no such request is queued or running.
    pub fn abort(&mut self, id: RequestId) -> bool {
        let is = |slots: &[Option<Seq>], s: usize| slots[s].as_ref().is_some_and(|q| q.id == id);
        let slot = if let Some(i) = self.running.iter().position(|&s| is(&self.slots, s)) {
            self.running.remove(i)
        } else if let Some(i) = self.waiting.iter().position(|&s| is(&self.slots, s)) {
            match self.waiting.remove(i) {
                Some(s) => s,
                None => return false,
            }
        } else {
            return false;
        };
        self.free_slot(slot);
        true
    }

    /// Whether a step would do anything: some request is running or waiting.
    pub fn has_work(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    /// When the last step ends (0 before the first): the earliest a next step may start.
    pub fn busy_until(&self) -> f64 {
        self.busy_until
    }

    /// When a step called at `now` would start, or `None` with nothing to do.
    pub fn next_step_at(&self, now: f64) -> Option<f64> {
        self.has_work().then(|| now.max(self.busy_until))
    }

    /// Requests running now.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Requests waiting now.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Runs one step at `now` (or at the end of the previous step, if later). `None` with
    /// nothing to do.
    pub fn step(&mut self, now: f64) -> Option<StepOutcome> {
        let mut events = Vec::new();
        let stats = self.step_into(now, &mut events)?;
        Some(StepOutcome { stats, events })
    }

    /// Runs steps while there is work and the next one would start before `until`; returns
    /// them in order. The last step may end after `until`.
    pub fn advance_until(&mut self, now: f64, until: f64) -> Vec<StepOutcome> {
        let mut out = Vec::new();
        while let Some(start) = self.next_step_at(now) {
            if start >= until {
                break;
            }
            match self.step(start) {
                Some(o) => out.push(o),
                None => break,
            }
        }
        out
    }

    /// [`step`](Self::step) without allocating: appends the step's events to `events`.
    pub fn step_into(&mut self, now: f64, events: &mut Vec<EngineEvent>) -> Option<StepStats> {
        if !self.has_work() {
            return None;
        }
        let start = now.max(self.busy_until);
        let bs = self.config.block_size as usize;
        let mut budget = self.config.max_num_batched_tokens;
        let mut scheduled = std::mem::take(&mut self.scheduled);
        scheduled.clear();
        let preempted = self.schedule_running(&mut budget, &mut scheduled, events);
        if !preempted || self.running.is_empty() {
            self.schedule_waiting(&mut budget, &mut scheduled, events);
        }
        if scheduled.is_empty() {
            self.scheduled = scheduled;
            return None;
        }

        let mut stats = StepStats {
            start,
            end: start,
            num_seqs: scheduled.len() as u32,
            prefill_tokens: 0,
            decode_seqs: 0,
            context_tokens: 0,
        };
        for &(slot, n) in &scheduled {
            let seq = self.slots[slot]
                .as_ref()
                .expect("scheduled slot holds a request");
            stats.context_tokens += u64::from(seq.num_computed + n);
            if seq.generated > 0 && seq.tokens.len() as u32 - seq.num_computed == 1 {
                stats.decode_seqs += 1;
            } else {
                stats.prefill_tokens += n;
            }
        }
        stats.end = start
            + self
                .config
                .step_time
                .seconds(u64::from(stats.tokens()), stats.context_tokens);

        let mut any_done = false;
        let paged_caching = self.paged_caching();
        for &(slot, n) in &scheduled {
            let seq = self.slots[slot]
                .as_mut()
                .expect("scheduled slot holds a request");
            seq.num_computed += n;
            if paged_caching {
                let full = seq.num_computed as usize / bs;
                extend_hashes(seq, full, bs, &mut self.scratch);
                while seq.registered < full {
                    self.pool
                        .register(seq.blocks[seq.registered], seq.hashes[seq.registered]);
                    seq.registered += 1;
                }
            }
            if seq.num_computed as usize == seq.tokens.len() {
                let index = seq.generated;
                let token = synthetic_token(seq.output_seed, index);
                seq.tokens.push(token);
                seq.generated += 1;
                self.counters.generation_tokens += 1;
                events.push(EngineEvent::Token {
                    id: seq.id,
                    index,
                    token,
                });
                if seq.generated == seq.max_output {
                    seq.done = true;
                    any_done = true;
                    events.push(EngineEvent::Finished {
                        id: seq.id,
                        output_tokens: seq.generated,
                    });
                }
            }
        }
        if any_done {
            for &(slot, _) in &scheduled {
                if self.slots[slot].as_ref().is_some_and(|s| s.done) {
                    self.free_slot(slot);
                    self.counters.finished += 1;
                }
            }
            let slots = &self.slots;
            self.running.retain(|&s| slots[s].is_some());
        }
        self.scheduled = scheduled;

        self.busy_until = stats.end;
        self.gpu.on_step(start, stats.end);
        self.counters.steps += 1;
        self.counters.busy_seconds += stats.duration();
        Some(stats)
    }

    /// Phase 1: gives every running request its next tokens and blocks, preempting the newest
    /// ones when blocks run out. Returns whether anything was preempted.
    fn schedule_running(
        &mut self,
        budget: &mut u32,
        scheduled: &mut Vec<(usize, u32)>,
        events: &mut Vec<EngineEvent>,
    ) -> bool {
        let bs = self.config.block_size as usize;
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let slot = self.running[i];
            let seq = self.slots[slot]
                .as_ref()
                .expect("running slot holds a request");
            let want = (seq.tokens.len() as u32 - seq.num_computed).min(*budget);
            let need = blocks_for(seq.num_computed + want, bs) - seq.blocks.len();
            let mut fits = true;
            while need > self.pool.num_free() as usize {
                let victim = self.running.pop().expect("the current request is running");
                self.preempt(victim, events);
                preempted = true;
                if victim == slot {
                    fits = false;
                    break;
                }
            }
            if !fits {
                break;
            }
            let seq = self.slots[slot]
                .as_mut()
                .expect("running slot holds a request");
            for _ in 0..need {
                seq.blocks
                    .push(self.pool.allocate().expect("free blocks were counted"));
            }
            scheduled.push((slot, want));
            *budget -= want;
            i += 1;
        }
        preempted
    }

    /// Phase 2: admits waiting requests in order while the batch, the budget and the free
    /// blocks allow.
    fn schedule_waiting(
        &mut self,
        budget: &mut u32,
        scheduled: &mut Vec<(usize, u32)>,
        events: &mut Vec<EngineEvent>,
    ) {
        let bs = self.config.block_size as usize;
        let paged_caching = self.paged_caching();
        while *budget > 0 && (self.running.len() as u32) < self.config.max_num_seqs {
            let Some(&slot) = self.waiting.front() else {
                break;
            };
            let seq = self.slots[slot]
                .as_mut()
                .expect("waiting slot holds a request");
            let len = seq.tokens.len();
            // The longest cached prefix, leaving at least the last token to compute so the
            // step has something to sample from (as vLLM does).
            self.hits.clear();
            let mut llama = None;
            if let Some(table) = &self.slot_table {
                // Slot mode: the slot llama.cpp would give it, and the prefix it holds.
                let Some(pick) = table.choose(&seq.tokens) else {
                    break;
                };
                llama = Some(pick);
            } else if paged_caching {
                let max_hit = (len - 1) / bs;
                extend_hashes(seq, max_hit, bs, &mut self.scratch);
                for &h in &seq.hashes[..max_hit] {
                    match self.pool.lookup(h) {
                        Some(b) => self.hits.push(b),
                        None => break,
                    }
                }
            }
            let cached = llama.map_or((self.hits.len() * bs) as u32, |(_, kept)| kept);
            let remaining = len as u32 - cached;
            let want = if self.config.enable_chunked_prefill {
                remaining.min(*budget)
            } else if remaining <= *budget {
                remaining
            } else {
                break;
            };
            let pool = &self.pool;
            let revived = self.hits.iter().filter(|&&b| pool.is_free(b)).count();
            let need = blocks_for(cached + want, bs) - self.hits.len();
            if need + revived > self.pool.num_free() as usize {
                break;
            }
            self.waiting.pop_front();
            for &b in &self.hits {
                self.pool.touch(b);
            }
            seq.blocks.extend_from_slice(&self.hits);
            for _ in 0..need {
                seq.blocks
                    .push(self.pool.allocate().expect("free blocks were counted"));
            }
            seq.num_computed = cached;
            seq.registered = self.hits.len();
            if let (Some((at, kept)), Some(table)) = (llama, self.slot_table.as_mut()) {
                table.take(at, kept);
                seq.llama_slot = Some(at);
            }
            if self.config.enable_prefix_caching || llama.is_some() {
                self.counters.prefix_queries += len as u64;
                self.counters.prefix_hits += u64::from(cached);
            }
            if !seq.admitted_before {
                seq.admitted_before = true;
                self.counters.prompt_tokens += u64::from(seq.prompt_len);
            }
            events.push(EngineEvent::Admitted {
                id: seq.id,
                cached_tokens: cached,
            });
            self.running.push(slot);
            scheduled.push((slot, want));
            *budget -= want;
        }
    }

    /// Frees a running request's blocks (they stay cached) and puts it at the front of the
    /// waiting queue to recompute.
    fn preempt(&mut self, slot: usize, events: &mut Vec<EngineEvent>) {
        let seq = self.slots[slot]
            .as_mut()
            .expect("preempted slot holds a request");
        // Last block first, so a request's tail is evicted before its head.
        for &b in seq.blocks.iter().rev() {
            self.pool.release(b);
        }
        seq.blocks.clear();
        seq.num_computed = 0;
        seq.registered = 0;
        if let (Some(at), Some(table)) = (seq.llama_slot.take(), self.slot_table.as_mut()) {
            table.release(at, &[]);
        }
        events.push(EngineEvent::Preempted { id: seq.id });
        self.counters.preemptions += 1;
        self.waiting.push_front(slot);
    }

    /// Releases a request's blocks and its slot.
    fn free_slot(&mut self, slot: usize) {
        if let Some(seq) = self.slots[slot].take() {
            for &b in seq.blocks.iter().rev() {
                self.pool.release(b);
            }
            if let (Some(at), Some(table)) = (seq.llama_slot, self.slot_table.as_mut()) {
                table.release(at, &seq.tokens[..seq.num_computed as usize]);
            }
            self.free_slots.push(slot);
        }
    }

    /// A snapshot of the engine's metrics at `now`, as a scrape would see it.
    pub fn metrics(&self, now: f64) -> EngineMetrics {
        EngineMetrics {
            at: now,
            num_running: self.running.len() as u32,
            num_waiting: self.waiting.len() as u32,
            kv_usage: self.pool.usage(),
            prefix_cache_queries: self.counters.prefix_queries,
            prefix_cache_hits: self.counters.prefix_hits,
            num_gpu_blocks: self.config.num_gpu_blocks,
            block_size: self.config.block_size,
            preemptions_total: self.counters.preemptions,
            evicted_blocks_total: self.pool.evictions(),
            prompt_tokens_total: self.counters.prompt_tokens,
            generation_tokens_total: self.counters.generation_tokens,
            requests_finished_total: self.counters.finished,
            steps_total: self.counters.steps,
            busy_seconds_total: self.counters.busy_seconds,
            gpu: self.gpu.gauges(now),
        }
    }
}

#[cfg(test)]
mod tests;
