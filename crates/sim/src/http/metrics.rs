//! `GET /metrics` of a simulated replica: Prometheus text with vLLM's metric names and labels
//! (`model_name="..."`), plus the DCGM exporter's GPU gauges, so a gateway (or a Grafana board)
//! built for real vLLM replicas scrapes a simulated one unchanged.
//!
//! Latencies (TTFT, end-to-end) are in *simulated* seconds: what the modelled GPU would take,
//! whatever `time_scale` the replica runs at.

use std::fmt::Write;

use super::driver::Snapshot;

/// vLLM's `time_to_first_token_seconds` buckets.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's `e2e_request_latency_seconds` buckets.
pub const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// A cumulative-on-render histogram with fixed upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one value.
    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// The mean, or `None` before any observation.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// Labels that describe the replica on every line.
pub struct Labels<'a> {
    /// The served model name (`model_name`).
    pub model: &'a str,
    /// GPU marketing name (DCGM's `modelName`).
    pub gpu_name: &'a str,
    /// The replica's host:port (DCGM's `Hostname`).
    pub hostname: &'a str,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, model: &str, h: &Histogram) {
    family(out, name, "histogram", help);
    let mut cum = 0;
    for (i, b) in h.bounds.iter().enumerate() {
        cum += h.counts[i];
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{b:?}\",model_name=\"{model}\"}} {cum}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\",model_name=\"{model}\"}} {}",
        h.count
    );
    let _ = writeln!(out, "{name}_sum{{model_name=\"{model}\"}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{model_name=\"{model}\"}} {}", h.count);
}

/// Escapes a label value for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders a snapshot in the Prometheus text format (version 0.0.4); `cancelled` is the
/// replica's count of requests its clients abandoned (vLLM's `finished_reason="abort"`).
pub fn render(s: &Snapshot, labels: &Labels<'_>, cancelled: u64) -> String {
    let m = &s.engine;
    let model = escape(labels.model);
    let model = model.as_str();
    let mut out = String::with_capacity(8 * 1024);
    let gauges: [(&str, &str, f64); 3] = [
        (
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            f64::from(m.num_running),
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            f64::from(m.num_waiting),
        ),
        (
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            m.kv_usage,
        ),
    ];
    for (name, help, v) in gauges {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name}{{model_name=\"{model}\"}} {v}");
    }
    let counters: [(&str, &str, u64); 5] = [
        (
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            m.prefix_cache_queries,
        ),
        (
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            m.prefix_cache_hits,
        ),
        (
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            m.preemptions_total,
        ),
        (
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            m.prompt_tokens_total,
        ),
        (
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            m.generation_tokens_total,
        ),
    ];
    for (name, help, v) in counters {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name}_total{{model_name=\"{model}\"}} {v}");
    }
    family(
        &mut out,
        "vllm:request_success",
        "counter",
        "Count of successfully processed requests.",
    );
    let _ = writeln!(
        out,
        "vllm:request_success_total{{finished_reason=\"length\",model_name=\"{model}\"}} {}",
        m.requests_finished_total
    );
    let _ = writeln!(
        out,
        "vllm:request_success_total{{finished_reason=\"abort\",model_name=\"{model}\"}} {cancelled}"
    );
    family(
        &mut out,
        "vllm:cache_config_info",
        "gauge",
        "Information of the LLMEngine CacheConfig",
    );
    let _ = writeln!(
        out,
        "vllm:cache_config_info{{block_size=\"{}\",cache_dtype=\"auto\",enable_prefix_caching=\"{}\",num_gpu_blocks=\"{}\"}} 1",
        m.block_size, s.prefix_caching, m.num_gpu_blocks
    );
    histogram(
        &mut out,
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        model,
        &s.ttft,
    );
    histogram(
        &mut out,
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        model,
        &s.e2e,
    );
    let gpu = escape(labels.gpu_name);
    let host = escape(labels.hostname);
    let dcgm: [(&str, &str, f64); 4] = [
        (
            "DCGM_FI_DEV_GPU_UTIL",
            "GPU utilization (in %).",
            m.gpu.utilization_pct.round(),
        ),
        (
            "DCGM_FI_DEV_FB_USED",
            "Framebuffer memory used (in MiB).",
            f64::from(m.gpu.memory_used_mib),
        ),
        (
            "DCGM_FI_DEV_FB_FREE",
            "Framebuffer memory free (in MiB).",
            f64::from(m.gpu.memory_free_mib),
        ),
        (
            "DCGM_FI_DEV_GPU_TEMP",
            "GPU temperature (in C).",
            m.gpu.temperature_c.round(),
        ),
    ];
    for (name, help, v) in dcgm {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(
            out,
            "{name}{{gpu=\"0\",device=\"nvidia0\",modelName=\"{gpu}\",Hostname=\"{host}\"}} {v}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_inclusive() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert_eq!(h.count, 4);
        assert_eq!(h.mean(), Some(1.5));
    }
}
