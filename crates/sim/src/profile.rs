//! Engine profiles for real GPU and model pairs: KV cache size from memory arithmetic, step
//! time from hardware figures, scheduler limits from vLLM's defaults.
//!
//! | profile | GPU (MiB) | weights/GPU | KV/token/GPU | KV blocks (×16 tok) | a (ms) | b (µs/tok) | c (ns/ctx tok) | seqs / batched tokens |
//! |---|---|---|---|---|---|---|---|---|
//! | `h100-llama3-8b` | H100 SXM 80 GB, 81 559 | 15 316 MiB | 128 KiB | ≈ 27 500 (440 k tokens) | 6.5 | 40 | 44 | 1024 / 8192 |
//! | `a100-llama3-8b` | A100 SXM 80 GB, 81 920 | 15 316 MiB | 128 KiB | ≈ 27 950 (447 k tokens) | 10 | 100 | 80 | 256 / 2048 |
//! | `l4-llama3-8b` | L4 24 GB, 23 034 | 15 316 MiB | 128 KiB | ≈ 1 950 (31 k tokens) | 62 | 270 | 520 | 256 / 2048 |
//! | `h100x4-llama3-70b` | 4 × H100 SXM 80 GB, TP 4 | 33 665 MiB | 80 KiB | ≈ 28 600 (457 k tokens) | 15 | 90 | 27 | 1024 / 8192 |
//!
//! Where the numbers come from, and how approximate they are:
//!
//! - **Model shapes** (exact) are from the models' `config.json`: Llama-3-8B has 32 layers, 8 KV
//!   heads of dimension 128 and 8.03 B parameters; Llama-3-70B has 80 layers, 8 KV heads of
//!   dimension 128 and 70.6 B parameters. Weights are bf16 (2 bytes per parameter).
//! - **KV bytes per token** (exact for a bf16 cache): `2 (K and V) × layers × kv_heads ×
//!   head_dim × 2 bytes` = 128 KiB for 8B and 320 KiB for 70B; tensor parallelism splits the KV
//!   heads, so each of 4 GPUs holds 80 KiB per token of 70B.
//! - **GPU memory** (exact) is what `nvidia-smi` reports as the framebuffer total.
//! - **KV blocks** (arithmetic, ±10%): vLLM gives the KV cache
//!   `gpu_memory_utilization (0.9) × total − weights − activation peak and CUDA graphs`. The last
//!   term is an estimate ([`Profile::overhead_mib`]): it depends on the token budget, the vLLM
//!   version and CUDA graph capture. To match a real deployment, compare with the "GPU KV cache
//!   size" line vLLM logs at start-up and adjust `overhead_mib`.
//! - **Step time `a + b·tokens + c·context`** (calibrated, ±30%): `a` is about one read of one
//!   GPU's weights at the GPU's effective memory bandwidth (H100 ≈ 3.0 TB/s of 3.35, A100 ≈ 1.8 of
//!   2.0, L4 ≈ 0.25 of 0.3) plus ~1 ms of launch and scheduler overhead (plus all-reduces under
//!   TP); `b` is `2 × parameters` FLOPs per token at 40–50% of dense bf16 peak (H100 989, A100
//!   312, L4 121 TFLOPS, TP divides the work); `c` is the KV bytes per token per GPU read at the
//!   effective bandwidth. The resulting single-stream decode (≈ 150 tok/s on H100/8B, ≈ 100 on
//!   A100/8B, ≈ 16 on L4/8B, ≈ 65 on 4×H100/70B) and prefill rates (≈ 25 k, 10 k, 3.3 k, 11 k
//!   tok/s) are in the range of public vLLM benchmark reports; batch-size and sequence-length
//!   effects that a linear model cannot show (kernel efficiency, CUDA graph padding) are not
//!   modelled.
//! - **Scheduler limits** (exact, vLLM V1 OpenAI-server defaults in
//!   `EngineArgs.get_batch_defaults`): GPUs with ≥ 70 GiB other than A100 get
//!   `max_num_seqs = 1024` and `max_num_batched_tokens = 8192`; the others 256 and 2048.
//! - **Temperatures** (rough): typical idle and sustained-load die temperatures of air-cooled
//!   data-centre parts; they only make the gauges move plausibly.

use serde::Serialize;

use crate::config::{EngineConfig, GpuModel, StepTime};

/// A GPU as the arithmetic needs it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gpu {
    /// Marketing name, for reports.
    pub name: &'static str,
    /// Framebuffer total as `nvidia-smi` reports it, MiB.
    pub memory_mib: u32,
    /// Idle die temperature, °C.
    pub idle_temp_c: f64,
    /// Sustained full-load die temperature, °C.
    pub load_temp_c: f64,
}

/// A model as the arithmetic needs it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Model {
    /// Hugging Face name, for reports.
    pub name: &'static str,
    /// Parameters, billions: sets the weights' memory.
    pub params_billion: f64,
    /// Transformer layers: each keeps its own K and V per token.
    pub layers: u32,
    /// Key/value heads (grouped-query attention): fewer heads, smaller cache.
    pub kv_heads: u32,
    /// Dimension of one head.
    pub head_dim: u32,
    /// Bytes per weight and per cache element (2 for bf16).
    pub dtype_bytes: u32,
    /// Context length the model was trained for: the engine's `max_model_len`.
    pub max_context: u32,
}

impl Model {
    /// KV cache bytes one token takes over the whole model: `2 × layers × kv_heads × head_dim ×
    /// dtype_bytes`.
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * u64::from(self.layers)
            * u64::from(self.kv_heads)
            * u64::from(self.head_dim)
            * u64::from(self.dtype_bytes)
    }

    /// Bytes of the weights.
    pub fn weight_bytes(&self) -> u64 {
        (self.params_billion * 1e9) as u64 * u64::from(self.dtype_bytes)
    }
}

/// A GPU and model pair with the figures that turn into an [`EngineConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Profile {
    /// The profile's name, e.g. `h100-llama3-8b`.
    pub name: &'static str,
    /// The GPU (all tensor-parallel ranks are alike).
    pub gpu: Gpu,
    /// The model served.
    pub model: Model,
    /// GPUs the model is split over (tensor parallelism).
    pub tensor_parallel: u32,
    /// Fraction of each GPU's memory vLLM may take (`--gpu-memory-utilization`, default 0.9).
    pub gpu_memory_utilization: f64,
    /// Per GPU, memory vLLM keeps besides weights and KV cache: activation peak for the token
    /// budget, CUDA graphs, non-torch allocations. MiB; an estimate.
    pub overhead_mib: u32,
    /// The step-time model.
    pub step_time: StepTime,
    /// `--max-num-seqs`.
    pub max_num_seqs: u32,
    /// `--max-num-batched-tokens`.
    pub max_num_batched_tokens: u32,
}

const MIB: u64 = 1 << 20;

impl Profile {
    /// KV bytes one token takes on one GPU (KV heads are split across tensor-parallel ranks).
    pub fn kv_bytes_per_token_per_gpu(&self) -> u64 {
        let heads_per_gpu = (self.model.kv_heads / self.tensor_parallel.max(1)).max(1);
        let m = Model {
            kv_heads: heads_per_gpu,
            ..self.model
        };
        m.kv_bytes_per_token()
    }

    /// Weights on one GPU, MiB.
    pub fn weights_mib_per_gpu(&self) -> u64 {
        (self.model.weight_bytes() / u64::from(self.tensor_parallel.max(1))).div_ceil(MIB)
    }

    /// Memory vLLM takes on one GPU, MiB: `gpu_memory_utilization × total`.
    pub fn memory_used_mib(&self) -> u32 {
        (f64::from(self.gpu.memory_mib) * self.gpu_memory_utilization) as u32
    }

    /// KV cache on one GPU, MiB: what vLLM takes minus weights and overhead.
    pub fn kv_cache_mib_per_gpu(&self) -> u64 {
        u64::from(self.memory_used_mib())
            .saturating_sub(self.weights_mib_per_gpu())
            .saturating_sub(u64::from(self.overhead_mib))
    }

    /// KV blocks of `block_size` tokens that fit.
    pub fn num_gpu_blocks(&self, block_size: u32) -> u32 {
        let per_block = self.kv_bytes_per_token_per_gpu() * u64::from(block_size);
        u32::try_from(self.kv_cache_mib_per_gpu() * MIB / per_block.max(1)).unwrap_or(u32::MAX)
    }

    /// The engine configuration for this profile, with 16-token blocks, prefix caching and
    /// chunked prefill on (vLLM V1's defaults).
    pub fn engine_config(&self) -> EngineConfig {
        let block_size = 16;
        let num_gpu_blocks = self.num_gpu_blocks(block_size);
        let capacity = u64::from(num_gpu_blocks) * u64::from(block_size);
        EngineConfig {
            name: self.name.to_owned(),
            block_size,
            num_gpu_blocks,
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self.max_num_batched_tokens,
            max_model_len: self
                .model
                .max_context
                .min(u32::try_from(capacity).unwrap_or(u32::MAX)),
            enable_prefix_caching: true,
            enable_chunked_prefill: true,
            priority_scheduling: false,
            slots: None,
            step_time: self.step_time,
            gpu: GpuModel {
                memory_total_mib: self.gpu.memory_mib,
                memory_used_mib: self.memory_used_mib(),
                idle_temp_c: self.gpu.idle_temp_c,
                load_temp_c: self.gpu.load_temp_c,
                thermal_time_constant_s: 20.0,
                util_window_s: 1.0,
            },
        }
    }
}

/// NVIDIA H100 SXM 80 GB.
pub const H100_SXM: Gpu = Gpu {
    name: "NVIDIA H100 80GB HBM3",
    memory_mib: 81_559,
    idle_temp_c: 33.0,
    load_temp_c: 72.0,
};

/// NVIDIA A100 SXM4 80 GB.
pub const A100_SXM_80GB: Gpu = Gpu {
    name: "NVIDIA A100-SXM4-80GB",
    memory_mib: 81_920,
    idle_temp_c: 32.0,
    load_temp_c: 68.0,
};

/// NVIDIA L4 24 GB (passively cooled, runs warmer).
pub const L4: Gpu = Gpu {
    name: "NVIDIA L4",
    memory_mib: 23_034,
    idle_temp_c: 40.0,
    load_temp_c: 78.0,
};

/// Meta Llama 3 8B (Instruct has the same shape).
pub const LLAMA3_8B: Model = Model {
    name: "meta-llama/Meta-Llama-3-8B-Instruct",
    params_billion: 8.03,
    layers: 32,
    kv_heads: 8,
    head_dim: 128,
    dtype_bytes: 2,
    max_context: 8192,
};

/// Meta Llama 3 70B.
pub const LLAMA3_70B: Model = Model {
    name: "meta-llama/Meta-Llama-3-70B-Instruct",
    params_billion: 70.6,
    layers: 80,
    kv_heads: 8,
    head_dim: 128,
    dtype_bytes: 2,
    max_context: 8192,
};

/// Llama-3-8B on one H100.
pub fn h100_llama3_8b() -> Profile {
    Profile {
        name: "h100-llama3-8b",
        gpu: H100_SXM,
        model: LLAMA3_8B,
        tensor_parallel: 1,
        gpu_memory_utilization: 0.9,
        overhead_mib: 3_000,
        step_time: StepTime {
            base_s: 6.5e-3,
            per_token_s: 40e-6,
            per_context_token_s: 44e-9,
        },
        max_num_seqs: 1024,
        max_num_batched_tokens: 8192,
    }
}

/// Llama-3-8B on one A100 80 GB.
pub fn a100_llama3_8b() -> Profile {
    Profile {
        name: "a100-llama3-8b",
        gpu: A100_SXM_80GB,
        model: LLAMA3_8B,
        tensor_parallel: 1,
        gpu_memory_utilization: 0.9,
        overhead_mib: 2_500,
        step_time: StepTime {
            base_s: 10e-3,
            per_token_s: 100e-6,
            per_context_token_s: 80e-9,
        },
        max_num_seqs: 256,
        max_num_batched_tokens: 2048,
    }
}

/// Llama-3-8B on one L4: little room left for the KV cache.
pub fn l4_llama3_8b() -> Profile {
    Profile {
        name: "l4-llama3-8b",
        gpu: L4,
        model: LLAMA3_8B,
        tensor_parallel: 1,
        gpu_memory_utilization: 0.9,
        overhead_mib: 1_500,
        step_time: StepTime {
            base_s: 62e-3,
            per_token_s: 270e-6,
            per_context_token_s: 520e-9,
        },
        max_num_seqs: 256,
        max_num_batched_tokens: 2048,
    }
}

/// Llama-3-70B over four H100s with tensor parallelism.
pub fn h100x4_llama3_70b() -> Profile {
    Profile {
        name: "h100x4-llama3-70b",
        gpu: H100_SXM,
        model: LLAMA3_70B,
        tensor_parallel: 4,
        gpu_memory_utilization: 0.9,
        overhead_mib: 4_000,
        step_time: StepTime {
            base_s: 15e-3,
            per_token_s: 90e-6,
            per_context_token_s: 27e-9,
        },
        max_num_seqs: 1024,
        max_num_batched_tokens: 8192,
    }
}

/// Every profile name [`by_name`] knows.
pub const NAMES: &[&str] = &[
    "h100-llama3-8b",
    "a100-llama3-8b",
    "l4-llama3-8b",
    "h100x4-llama3-70b",
];

/// The profile with this name.
pub fn by_name(name: &str) -> Option<Profile> {
    Some(match name {
        "h100-llama3-8b" => h100_llama3_8b(),
        "a100-llama3-8b" => a100_llama3_8b(),
        "l4-llama3-8b" => l4_llama3_8b(),
        "h100x4-llama3-70b" => h100x4_llama3_70b(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_arithmetic_matches_the_table() {
        assert_eq!(LLAMA3_8B.kv_bytes_per_token(), 128 * 1024);
        assert_eq!(LLAMA3_70B.kv_bytes_per_token(), 320 * 1024);
        assert_eq!(h100x4_llama3_70b().kv_bytes_per_token_per_gpu(), 80 * 1024);
        let within = |v: u32, lo: u32, hi: u32| assert!((lo..=hi).contains(&v), "{v}");
        within(h100_llama3_8b().num_gpu_blocks(16), 27_000, 28_000);
        within(a100_llama3_8b().num_gpu_blocks(16), 27_200, 28_200);
        within(l4_llama3_8b().num_gpu_blocks(16), 1_900, 2_000);
        within(h100x4_llama3_70b().num_gpu_blocks(16), 28_100, 29_100);
    }

    #[test]
    fn names_resolve_and_rates_are_in_range() {
        for name in NAMES {
            let p = by_name(name).unwrap();
            assert_eq!(p.name, *name);
            let c = p.engine_config();
            assert_eq!(c.max_model_len, 8192);
            // Single-stream decode at a 1k context, and a full-budget prefill.
            let decode = 1.0 / c.step_time.seconds(1, 1024);
            let prefill = f64::from(c.max_num_batched_tokens)
                / c.step_time.seconds(
                    u64::from(c.max_num_batched_tokens),
                    u64::from(c.max_num_batched_tokens),
                );
            assert!((10.0..200.0).contains(&decode), "{name}: {decode}");
            assert!((2_000.0..40_000.0).contains(&prefill), "{name}: {prefill}");
        }
        assert!(by_name("tpu").is_none());
    }
}
