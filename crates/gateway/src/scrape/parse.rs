//! Reading an inference engine's (or a GPU exporter's) Prometheus text into the few numbers
//! routing uses.
//!
//! Engines name the same facts differently; each line is matched against this table and the
//! values of one fact are combined over label sets (ranks, GPUs) as the fact requires:
//!
//! | fact | vLLM | SGLang | TGI | llama.cpp |
//! |---|---|---|---|---|
//! | running | `vllm:num_requests_running` | `sglang:num_running_reqs` | `tgi_batch_current_size` | `llamacpp:requests_processing` |
//! | waiting | `vllm:num_requests_waiting` | `sglang:num_queue_reqs` | `tgi_queue_size` | `llamacpp:requests_deferred` |
//! | KV use 0-1 | `vllm:kv_cache_usage_perc` (`vllm:gpu_cache_usage_perc` before v0.10) | `sglang:token_usage` | — | `llamacpp:kv_cache_usage_ratio` |
//! | KV size, tokens | `vllm:cache_config_info` labels `num_gpu_blocks` x `block_size` | `sglang:max_total_num_tokens` | — | — |
//!
//! GPU gauges come from NVIDIA's DCGM exporter (on the engine's `/metrics` when it is bundled,
//! as `switchyard sim` does, or on its own URL): `DCGM_FI_DEV_GPU_UTIL` (percent, averaged over
//! GPUs), `DCGM_FI_DEV_FB_USED` and `DCGM_FI_DEV_FB_FREE` (MiB, summed), `DCGM_FI_DEV_GPU_TEMP`
//! (degrees, the hottest GPU).
//!
//! Only the text exposition format's sample lines are read (`name{labels} value [timestamp]`);
//! comments, histograms and unknown names are skipped. The parser is written here rather than
//! taken from a crate because it needs a dozen names out of a page of text, on a hot
//! background loop, without the regex and date-time dependencies general parsers bring.

/// What an engine reported of its load.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EngineSample {
    /// Sequences running in the batch.
    pub running: u32,
    /// Requests queued in the engine.
    pub waiting: u32,
    /// KV-cache use, 0.0 to 1.0, when reported.
    pub kv_usage: Option<f32>,
    /// KV-cache size in tokens, when reported.
    pub kv_capacity_tokens: Option<u32>,
}

/// What a GPU exporter reported, combined over the backend's GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GpuSample {
    /// Mean compute utilization, 0.0 to 1.0.
    pub utilization: f32,
    /// Framebuffer memory in use over all GPUs, 0.0 to 1.0.
    pub memory_used: f32,
    /// The hottest GPU, degrees Celsius.
    pub temperature_c: f32,
}

/// Everything recognized on one metrics page.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scraped {
    /// Engine load, when any engine's running or waiting gauge was present.
    pub engine: Option<EngineSample>,
    /// GPU gauges, when the DCGM utilization or memory gauges were present.
    pub gpu: Option<GpuSample>,
}

#[derive(Default)]
struct Acc {
    running: Option<f64>,
    waiting: Option<f64>,
    kv_usage: Option<f64>,
    kv_capacity: Option<f64>,
    util_sum: f64,
    util_n: u32,
    fb_used: Option<f64>,
    fb_free: Option<f64>,
    temp: Option<f64>,
}

fn add(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.unwrap_or(0.0) + v);
}

fn max(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.map_or(v, |x| x.max(v)));
}

/// Reads a metrics page. Never fails: what is not recognized is skipped.
pub fn parse(text: &str) -> Scraped {
    let mut a = Acc::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        match name {
            "vllm:num_requests_running"
            | "sglang:num_running_reqs"
            | "tgi_batch_current_size"
            | "llamacpp:requests_processing" => add(&mut a.running, value),
            "vllm:num_requests_waiting"
            | "sglang:num_queue_reqs"
            | "tgi_queue_size"
            | "llamacpp:requests_deferred" => add(&mut a.waiting, value),
            "vllm:kv_cache_usage_perc"
            | "vllm:gpu_cache_usage_perc"
            | "sglang:token_usage"
            | "llamacpp:kv_cache_usage_ratio" => max(&mut a.kv_usage, value),
            "sglang:max_total_num_tokens" => add(&mut a.kv_capacity, value),
            "vllm:cache_config_info" => {
                let blocks = label(labels, "num_gpu_blocks").and_then(|v| v.parse::<f64>().ok());
                let size = label(labels, "block_size").and_then(|v| v.parse::<f64>().ok());
                if let (Some(b), Some(s)) = (blocks, size) {
                    add(&mut a.kv_capacity, b * s);
                }
            }
            "DCGM_FI_DEV_GPU_UTIL" => {
                a.util_sum += value;
                a.util_n += 1;
            }
            "DCGM_FI_DEV_FB_USED" => add(&mut a.fb_used, value),
            "DCGM_FI_DEV_FB_FREE" => add(&mut a.fb_free, value),
            "DCGM_FI_DEV_GPU_TEMP" => max(&mut a.temp, value),
            _ => {}
        }
    }
    let engine = (a.running.is_some() || a.waiting.is_some()).then(|| EngineSample {
        running: to_u32(a.running.unwrap_or(0.0)),
        waiting: to_u32(a.waiting.unwrap_or(0.0)),
        kv_usage: a.kv_usage.map(|v| v.clamp(0.0, 1.0) as f32),
        kv_capacity_tokens: a.kv_capacity.map(to_u32).filter(|&c| c > 0),
    });
    let gpu = (a.util_n > 0 || a.fb_used.is_some()).then(|| {
        let used = a.fb_used.unwrap_or(0.0);
        let total = used + a.fb_free.unwrap_or(0.0);
        GpuSample {
            utilization: if a.util_n > 0 {
                (a.util_sum / f64::from(a.util_n) / 100.0).clamp(0.0, 1.0) as f32
            } else {
                0.0
            },
            memory_used: if total > 0.0 {
                (used / total) as f32
            } else {
                0.0
            },
            temperature_c: a.temp.unwrap_or(0.0) as f32,
        }
    });
    Scraped { engine, gpu }
}

fn to_u32(v: f64) -> u32 {
    if v <= 0.0 {
        0
    } else if v >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        v.round() as u32
    }
}

/// Splits `name{labels} value [timestamp]` into its parts; `labels` without braces.
fn sample(line: &str) -> Option<(&str, &str, f64)> {
    let (name, labels, rest) = match line.find(['{', ' ', '\t']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            let close = closing_brace(line, i)?;
            (&line[..i], &line[i + 1..close], &line[close + 1..])
        }
        Some(i) => (&line[..i], "", &line[i..]),
        None => return None,
    };
    let value = rest.split_ascii_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// The index of the `}` closing the label set opened at `open`, skipping quoted values.
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(open + i),
            _ => {}
        }
    }
    None
}

/// The value of label `key` in `k1="v1",k2="v2"` (escapes are not expected in the labels read).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = labels;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let k = rest[..eq].trim().trim_start_matches(',').trim();
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let end = after.find('"')?;
        if k == key {
            return Some(&after[..end]);
        }
        rest = &after[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_page_with_cache_config_and_two_engines() {
        let page = r#"
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="1",model_name="llama"} 2.0
vllm:num_requests_waiting{engine="0",model_name="llama"} 7.0
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.5
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="2048",prefix="a}b"} 1.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="llama"} 12
"#;
        let s = parse(page);
        assert_eq!(
            s.engine,
            Some(EngineSample {
                running: 5,
                waiting: 7,
                kv_usage: Some(0.5),
                kv_capacity_tokens: Some(32768),
            })
        );
        assert_eq!(s.gpu, None);
    }

    #[test]
    fn sglang_tgi_and_llamacpp_names() {
        let s = parse("sglang:num_running_reqs{model_name=\"m\"} 4\nsglang:num_queue_reqs 1\nsglang:token_usage 0.75\nsglang:max_total_num_tokens 100000\n");
        let e = s.engine.unwrap();
        assert_eq!(
            (e.running, e.waiting, e.kv_usage, e.kv_capacity_tokens),
            (4, 1, Some(0.75), Some(100000))
        );
        let e = parse("tgi_batch_current_size 8\ntgi_queue_size 2\n")
            .engine
            .unwrap();
        assert_eq!((e.running, e.waiting, e.kv_usage), (8, 2, None));
        let e = parse("llamacpp:requests_processing 1\nllamacpp:requests_deferred 3\nllamacpp:kv_cache_usage_ratio 0.1\n").engine.unwrap();
        assert_eq!((e.running, e.waiting), (1, 3));
        assert!((e.kv_usage.unwrap() - 0.1).abs() < 1e-6);
    }

    #[test]
    fn dcgm_gauges_combine_over_gpus() {
        let page = "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\"} 80\nDCGM_FI_DEV_GPU_UTIL{gpu=\"1\"} 40\nDCGM_FI_DEV_FB_USED{gpu=\"0\"} 30000\nDCGM_FI_DEV_FB_FREE{gpu=\"0\"} 10000\nDCGM_FI_DEV_FB_USED{gpu=\"1\"} 10000\nDCGM_FI_DEV_FB_FREE{gpu=\"1\"} 30000\nDCGM_FI_DEV_GPU_TEMP{gpu=\"0\"} 61\nDCGM_FI_DEV_GPU_TEMP{gpu=\"1\"} 77\n";
        let g = parse(page).gpu.unwrap();
        assert!((g.utilization - 0.6).abs() < 1e-6);
        assert!((g.memory_used - 0.5).abs() < 1e-6);
        assert_eq!(g.temperature_c, 77.0);
        assert_eq!(parse(page).engine, None);
    }

    #[test]
    fn garbage_and_odd_values_are_skipped_without_panicking() {
        let s = parse("vllm:num_requests_running{unclosed 3\nvllm:num_requests_waiting NaN\nvllm:num_requests_waiting -5\nnovalue\n{}\n\u{0}\u{7f} 1\n");
        assert_eq!(
            s.engine.map(|e| e.waiting),
            Some(0),
            "negative clamps to 0, NaN skipped"
        );
        for junk in ["", "}", "{", "a{b=\"", "a{b=\"c\"} x", "x 1e999"] {
            let _ = parse(junk);
        }
    }
}
