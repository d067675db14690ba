//! An engine's parameters: scheduler limits, KV cache size, the step-time model and the GPU
//! gauge model. [`crate::profile`] derives them for real GPU and model pairs.

use serde::Serialize;

use crate::slots::SlotMode;

/// How long one engine step takes: `base_s + per_token_s * tokens + per_context_token_s *
/// context`, where `tokens` are the tokens computed in the step (prefill chunks plus one per
/// decoding sequence) and `context` is the attention context of every sequence in the step
/// (its tokens computed so far, this step's included).
///
/// The three terms stand for the three costs of a transformer forward pass: a fixed cost per
/// step (reading every weight from memory once, kernel launches, the scheduler), a cost per
/// token (the matrix multiplications), and a cost per context token (attention reading the KV
/// cache). Decoding one sequence is dominated by `base_s`; a large prefill by `per_token_s`;
/// a large batch of long contexts by `per_context_token_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepTime {
    /// Seconds per step whatever its size.
    pub base_s: f64,
    /// Seconds per token computed in the step.
    pub per_token_s: f64,
    /// Seconds per token of attention context over the step's sequences.
    pub per_context_token_s: f64,
}

impl StepTime {
    /// The duration of a step computing `tokens` tokens over `context` context tokens.
    pub fn seconds(&self, tokens: u64, context: u64) -> f64 {
        self.base_s + self.per_token_s * tokens as f64 + self.per_context_token_s * context as f64
    }
}

/// What the engine reports as GPU gauges (what `nvidia-smi` or DCGM would show), from a simple
/// model: see [`crate::metrics::GpuGauges`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GpuModel {
    /// Framebuffer size of one GPU, MiB (as `nvidia-smi` reports it).
    pub memory_total_mib: u32,
    /// Framebuffer the engine holds on one GPU, MiB. vLLM allocates weights, activations and the
    /// whole KV cache at start-up, so this does not move with load.
    pub memory_used_mib: u32,
    /// Temperature with the GPU idle, °C.
    pub idle_temp_c: f64,
    /// Temperature the GPU settles at when busy all the time, °C.
    pub load_temp_c: f64,
    /// How fast temperature follows load: the time constant of its first-order response, s.
    pub thermal_time_constant_s: f64,
    /// The window utilization is averaged over (time constant of an exponential average), s.
    /// `nvidia-smi` samples over 1/6 to 1 s.
    pub util_window_s: f64,
}

/// An engine's parameters. Field names follow vLLM's engine arguments where there is one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineConfig {
    /// A name for reports, e.g. the profile's (`h100-llama3-8b`).
    pub name: String,
    /// Tokens per KV block (vLLM `--block-size`, default 16).
    pub block_size: u32,
    /// KV blocks on the GPU(s): the cache's capacity is `num_gpu_blocks * block_size` tokens.
    pub num_gpu_blocks: u32,
    /// Most sequences running at once (vLLM `--max-num-seqs`).
    pub max_num_seqs: u32,
    /// Most tokens computed in one step (vLLM `--max-num-batched-tokens`): the step's token
    /// budget, shared by decodes and prefill chunks.
    pub max_num_batched_tokens: u32,
    /// Longest sequence (prompt plus output) accepted (vLLM `--max-model-len`).
    pub max_model_len: u32,
    /// Reuse cached blocks of a request's longest cached prefix (vLLM
    /// `--enable-prefix-caching`, on by default in V1).
    pub enable_prefix_caching: bool,
    /// Split a long prefill over several steps so decodes keep running (vLLM
    /// `--enable-chunked-prefill`, on by default in V1). Without it a prompt's prefill happens
    /// in one step and must fit the token budget.
    pub enable_chunked_prefill: bool,
    /// llama.cpp-like slot mode ([`crate::slots`]): `Some` caches one prompt per slot instead
    /// of the paged prefix cache (`enable_prefix_caching` is then ignored) and runs at most
    /// `slots` requests at once.
    pub slots: Option<SlotMode>,
    /// Admit waiting requests by their `priority` (lower first, then arrival) instead of in
    /// arrival order (vLLM `--scheduling-policy priority`).
    pub priority_scheduling: bool,
    /// How long a step takes.
    pub step_time: StepTime,
    /// The GPU gauge model.
    pub gpu: GpuModel,
}

/// An engine configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A count that must be positive is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The longest sequence does not fit the KV cache, so it could never be scheduled.
    #[error("max_model_len {max_model_len} exceeds the KV cache ({capacity} tokens = num_gpu_blocks * block_size)")]
    ModelLenOverCapacity {
        /// The configured longest sequence.
        max_model_len: u32,
        /// Tokens the cache holds.
        capacity: u64,
    },
    /// Without chunked prefill, a prompt must fit one step's token budget.
    #[error("without chunked prefill, max_model_len {max_model_len} must not exceed max_num_batched_tokens {budget}")]
    ModelLenOverBudget {
        /// The configured longest sequence.
        max_model_len: u32,
        /// The step token budget.
        budget: u32,
    },
    /// A step-time coefficient is negative or not a number, or the base is not positive.
    #[error("step_time coefficients must be finite, base_s > 0 and the others >= 0")]
    BadStepTime,
}

impl EngineConfig {
    /// Tokens the KV cache holds.
    pub fn capacity_tokens(&self) -> u64 {
        u64::from(self.num_gpu_blocks) * u64::from(self.block_size)
    }

    /// Checks that an engine with this configuration can make progress on every request it
    /// accepts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, v) in [
            ("block_size", self.block_size),
            ("num_gpu_blocks", self.num_gpu_blocks),
            ("max_num_seqs", self.max_num_seqs),
            ("max_num_batched_tokens", self.max_num_batched_tokens),
            ("max_model_len", self.max_model_len),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if u64::from(self.max_model_len) > self.capacity_tokens() {
            return Err(ConfigError::ModelLenOverCapacity {
                max_model_len: self.max_model_len,
                capacity: self.capacity_tokens(),
            });
        }
        if !self.enable_chunked_prefill && self.max_model_len > self.max_num_batched_tokens {
            return Err(ConfigError::ModelLenOverBudget {
                max_model_len: self.max_model_len,
                budget: self.max_num_batched_tokens,
            });
        }
        let t = &self.step_time;
        let ok = [t.base_s, t.per_token_s, t.per_context_token_s]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
            && t.base_s > 0.0;
        if !ok {
            return Err(ConfigError::BadStepTime);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::profile;

    #[test]
    fn profiles_validate_and_bad_configs_do_not() {
        for name in profile::NAMES {
            profile::by_name(name)
                .unwrap()
                .engine_config()
                .validate()
                .unwrap();
        }
        let mut c = profile::h100_llama3_8b().engine_config();
        c.num_gpu_blocks = 10;
        assert!(c.validate().is_err());
        let mut c = profile::h100_llama3_8b().engine_config();
        c.enable_chunked_prefill = false;
        c.max_num_batched_tokens = 1024;
        assert!(c.validate().is_err());
        let mut c = profile::h100_llama3_8b().engine_config();
        c.step_time.base_s = 0.0;
        assert!(c.validate().is_err());
        let mut c = profile::h100_llama3_8b().engine_config();
        c.max_num_seqs = 0;
        assert!(c.validate().is_err());
    }
}
