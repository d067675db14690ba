//! What goes into an engine (a [`SimRequest`]) and what comes out of a step (a
//! [`StepOutcome`] of [`EngineEvent`]s).

use serde::Serialize;

use crate::tokenizer;

/// The caller's name for a request; events carry it back. The engine does not require ids to
/// be unique, but a caller that reuses one cannot tell its events apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RequestId(pub u64);

/// A request as the engine sees it: token ids, an output length and a seed for the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRequest {
    /// Carried back on every event of this request.
    pub id: RequestId,
    /// The rendered prompt's token ids (see [`crate::tokenizer`]). At least one.
    pub prompt_tokens: Vec<u32>,
    /// How many tokens the engine generates. The simulated model never stops early, as in
    /// benchmarks run with `ignore_eos`, so this is the output length. At least one.
    pub max_output_tokens: u32,
    /// Names the output text: the `i`-th output token is
    /// [`tokenizer::synthetic_token`]`(output_seed, i)`, so a workload can put the very same
    /// text into a later turn's history and hit the blocks the engine cached for it.
    pub output_seed: u64,
    /// Scheduling priority, lower first (vLLM's request `priority`); only an engine with
    /// [`crate::config::EngineConfig::priority_scheduling`] reads it.
    pub priority: i32,
}

impl SimRequest {
    /// A request for `text`, tokenized by the stand-in tokenizer, with an output seed derived
    /// from the id.
    pub fn from_text(id: RequestId, text: &str, max_output_tokens: u32) -> Self {
        Self {
            id,
            prompt_tokens: tokenizer::tokenize(text),
            max_output_tokens,
            output_seed: tokenizer::mix64(id.0 ^ 0x6f75_7470_7574),
            priority: 0,
        }
    }
}

/// Why [`crate::Engine::submit`] refused a request (vLLM answers these with a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The request asks for no output.
    #[error("max_output_tokens must be at least 1")]
    NoOutput,
    /// Prompt plus output exceed the engine's `max_model_len`.
    #[error("prompt ({prompt} tokens) plus max_output_tokens ({output}) exceed max_model_len {max_model_len}")]
    TooLong {
        /// Prompt tokens.
        prompt: u32,
        /// Requested output tokens.
        output: u32,
        /// The engine's limit.
        max_model_len: u32,
    },
}

/// Something that happened to a request in a step. Every event takes effect at the step's
/// `end`, except `Admitted` and `Preempted`, which the scheduler decided at its `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EngineEvent {
    /// The request left the waiting queue and got its KV blocks; `cached_tokens` of its prompt
    /// were found in the prefix cache and will not be computed. A preempted request is admitted
    /// again later (and its cached tokens then include what it had computed and is still cached).
    Admitted {
        /// Which request.
        id: RequestId,
        /// Prompt tokens served from the prefix cache.
        cached_tokens: u32,
    },
    /// An output token. `index` 0 is the first token: its time is the time to first token.
    Token {
        /// Which request.
        id: RequestId,
        /// Position in the output, from 0.
        index: u32,
        /// The token id.
        token: u32,
    },
    /// The request produced its last token and released its blocks (which stay cached).
    Finished {
        /// Which request.
        id: RequestId,
        /// Tokens generated.
        output_tokens: u32,
    },
    /// The request lost its KV blocks because a running request needed one; it went back to
    /// the front of the waiting queue and will recompute its prompt and output so far.
    Preempted {
        /// Which request.
        id: RequestId,
    },
}

/// The shape and timing of one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepStats {
    /// When the step started (seconds, the caller's epoch).
    pub start: f64,
    /// When it ends: `start` plus the step-time model's duration.
    pub end: f64,
    /// Sequences computed in the step.
    pub num_seqs: u32,
    /// Prompt (or recompute) tokens computed in the step.
    pub prefill_tokens: u32,
    /// Sequences that decoded one token in the step.
    pub decode_seqs: u32,
    /// Attention context over the step's sequences.
    pub context_tokens: u64,
}

impl StepStats {
    /// The step's duration in seconds.
    pub fn duration(&self) -> f64 {
        self.end - self.start
    }

    /// Tokens computed in the step (the step-time model's `tokens`).
    pub fn tokens(&self) -> u32 {
        self.prefill_tokens + self.decode_seqs
    }
}

/// One step: its stats and its events, in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepOutcome {
    /// Timing and shape.
    pub stats: StepStats,
    /// What happened to requests.
    pub events: Vec<EngineEvent>,
}
