//! llama.cpp-like slot mode: the engine serves at most `slots` requests at once, each in a
//! slot that keeps the tokens of the last request it served, and a new request reuses only the
//! common prefix of the slot it is given, as llama.cpp's `llama-server` does with `-np N`.
//!
//! A waiting request takes an idle slot: among idle slots holding a prompt, the one whose
//! tokens share the largest fraction of the request's prompt, if that fraction is over
//! `similarity` (llama.cpp's `--slot-prompt-similarity`, 0.1 by default); otherwise the least
//! recently used idle slot. It then computes only the tokens past the common prefix (at least
//! one, to sample from). When it ends, its slot keeps its prompt and output.
//!
//! So a server holds at most `slots` prompts whatever its KV size: with two slots, two
//! documents. Not modelled: llama.cpp's host-memory prompt cache (`--cache-ram`), which saves
//! a slot's prompt before the slot is reused and restores the most similar saved prompt into
//! it; context shift; slot save and restore through the API.

use serde::Serialize;

/// llama.cpp's default `--slot-prompt-similarity`.
pub const DEFAULT_SIMILARITY: f64 = 0.1;

/// Slot mode's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SlotMode {
    /// Slots (llama.cpp `-np`): requests served at once, prompts kept.
    pub slots: u32,
    /// Fraction of a new prompt a slot's tokens must share for the slot to be preferred over
    /// the least recently used one.
    pub similarity: f64,
}

impl SlotMode {
    /// `slots` slots with llama.cpp's default similarity threshold.
    pub fn new(slots: u32) -> Self {
        Self {
            slots,
            similarity: DEFAULT_SIMILARITY,
        }
    }
}

impl crate::EngineConfig {
    /// This engine run the way llama.cpp's server runs with `-np slots`: `slots` requests at
    /// once, each slot keeping its last prompt instead of a paged prefix cache, and each slot
    /// given an equal share of the KV cache as its context (llama.cpp's `n_ctx / np`).
    pub fn in_slot_mode(mut self, slots: u32) -> Self {
        let slots = slots.max(1);
        let per_slot = self.capacity_tokens() / u64::from(slots);
        self.slots = Some(SlotMode::new(slots));
        self.max_num_seqs = slots;
        self.enable_prefix_caching = false;
        self.max_model_len = self
            .max_model_len
            .min(u32::try_from(per_slot).unwrap_or(u32::MAX))
            .max(1);
        self.name = format!("{}-llamacpp", self.name);
        self
    }
}

/// One slot.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// Tokens whose KV the slot keeps: its last request's prompt and output.
    tokens: Vec<u32>,
    /// Order of its last assignment (0: never).
    last_used: u64,
    /// Serving a request now.
    busy: bool,
}

/// The slots of one engine.
#[derive(Debug, Clone)]
pub(crate) struct SlotTable {
    slots: Vec<Slot>,
    similarity: f64,
    tick: u64,
}

/// Tokens `a` and `b` share from the start.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl SlotTable {
    /// Empty slots per `mode`.
    pub(crate) fn new(mode: SlotMode) -> Self {
        Self {
            slots: vec![Slot::default(); mode.slots.max(1) as usize],
            similarity: mode.similarity,
            tick: 0,
        }
    }

    /// The idle slot llama.cpp would give `prompt`, and the prompt tokens it already holds
    /// (at most all but the last); `None` when every slot is busy.
    pub(crate) fn choose(&self, prompt: &[u32]) -> Option<(usize, u32)> {
        let mut best: Option<(f64, usize)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            if s.busy || s.tokens.is_empty() || prompt.is_empty() {
                continue;
            }
            let sim = common_prefix(&s.tokens, prompt) as f64 / prompt.len() as f64;
            if sim > self.similarity && best.is_none_or(|(b, _)| sim > b) {
                best = Some((sim, i));
            }
        }
        let slot = match best {
            Some((_, i)) => i,
            None => {
                let idle = self.slots.iter().enumerate().filter(|(_, s)| !s.busy);
                idle.min_by_key(|(_, s)| s.last_used)?.0
            }
        };
        let reuse =
            common_prefix(&self.slots[slot].tokens, prompt).min(prompt.len().saturating_sub(1));
        Some((slot, u32::try_from(reuse).unwrap_or(u32::MAX)))
    }

    /// Marks `slot` busy with a new request; it keeps only the `kept` tokens it shares.
    pub(crate) fn take(&mut self, slot: usize, kept: u32) {
        self.tick += 1;
        let s = &mut self.slots[slot];
        s.busy = true;
        s.last_used = self.tick;
        s.tokens.truncate(kept as usize);
    }

    /// Frees `slot`, which now holds `tokens`.
    pub(crate) fn release(&mut self, slot: usize, tokens: &[u32]) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.busy = false;
            s.tokens.clear();
            s.tokens.extend_from_slice(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(d: u32, n: u32, tail: u32) -> Vec<u32> {
        (0..n).map(|i| d * 10_000 + i).chain([tail]).collect()
    }

    #[test]
    fn the_similar_idle_slot_is_reused_else_the_least_recently_used() {
        let mut t = SlotTable::new(SlotMode::new(2));
        let (a, cached) = t.choose(&doc(1, 50, 1)).unwrap();
        assert_eq!(cached, 0);
        t.take(a, cached);
        t.release(a, &doc(1, 50, 1));
        let (b, _) = t.choose(&doc(2, 50, 1)).unwrap();
        assert_ne!(a, b, "an empty slot is less recently used");
        t.take(b, 0);
        t.release(b, &doc(2, 50, 1));
        // Document 1 again: its slot, 50 tokens reused.
        assert_eq!(t.choose(&doc(1, 50, 7)).unwrap(), (a, 50));
        // A third document evicts the least recently used (document 1's slot).
        let (c, cached) = t.choose(&doc(3, 50, 1)).unwrap();
        assert_eq!((c, cached), (a, 0));
        t.take(c, cached);
        t.release(c, &doc(3, 50, 1));
        assert_eq!(t.choose(&doc(1, 50, 7)).unwrap().1, 0, "document 1 is gone");
        assert_eq!(t.choose(&doc(2, 50, 7)).unwrap(), (b, 50));
    }

    #[test]
    fn busy_slots_are_not_given_and_a_whole_prompt_match_leaves_one_token() {
        let mut t = SlotTable::new(SlotMode::new(1));
        t.take(0, 0);
        assert!(t.choose(&doc(1, 5, 1)).is_none());
        t.release(0, &doc(1, 5, 1));
        assert_eq!(t.choose(&doc(1, 5, 1)).unwrap(), (0, 5));
        assert_eq!(t.choose(&[]).unwrap(), (0, 0));
    }
}
