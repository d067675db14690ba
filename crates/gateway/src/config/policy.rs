//! A policy's parameters as written in `policy: {name: ..., key: value}`: which keys each
//! policy takes, their types, and the error that names the key, the policy and the keys it
//! does take. Values are range-checked by `PolicySpec::validate` in core; what depends on the
//! pool's backends too (the size of a hash ring) is checked here once the pool is known.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_core::PolicySpec;

use super::{Config, ConfigError, PoolConfig};

/// Most points a `consistent_hash` ring may hold (16 bytes each; built again on every reload
/// or admin change): 16 MiB, the default 160 virtual nodes for weights summing to 6,553.
pub const MAX_RING_POINTS: u64 = 1 << 20;

/// Why `pool`'s policy cannot be built over its backends, if it cannot: a `consistent_hash`
/// ring of `virtual_nodes x weight` points per backend past [`MAX_RING_POINTS`] (weights
/// up to 4e9 parse, and 4e9 x 160 points would exhaust memory). Returns the heaviest
/// backend's weight, where the error is best shown, with the message.
pub fn ring_problem(pool: &PoolConfig) -> Option<(u32, String)> {
    let PolicySpec::ConsistentHash { virtual_nodes, .. } = pool.policy else {
        return None;
    };
    let weights: u64 = pool
        .backends
        .iter()
        .map(|b| u64::from(b.weight.max(1)))
        .sum();
    let points = u64::from(virtual_nodes).saturating_mul(weights);
    if points <= MAX_RING_POINTS {
        return None;
    }
    let heaviest = pool.backends.iter().map(|b| b.weight).max().unwrap_or(1);
    Some((
        heaviest,
        format!(
            "models.{}: consistent_hash would put {points} points on its hash ring (virtual_nodes {virtual_nodes} x weights summing to {weights}), more than the {MAX_RING_POINTS} it allows; weights are relative, so scale them down (e.g. 4 and 1 rather than 4000 and 1000), or lower virtual_nodes",
            pool.name
        ),
    ))
}

/// Every `consistent_hash` pool's ring can be built (see [`ring_problem`]); the error is
/// located at the heaviest backend's `weight`.
pub fn check_rings(config: &Config, origin: &str, text: &str) -> Result<(), ConfigError> {
    for pool in &config.models {
        if let Some((heaviest, message)) = ring_problem(pool) {
            return Err(ConfigError::at_model_key(
                origin,
                text,
                &pool.name,
                "weight",
                &heaviest.to_string(),
                message,
            ));
        }
    }
    Ok(())
}

/// One parameter's value: a number, a duration or name (text), or a map of weights.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// `0.5`
    Number(f64),
    /// `2s`, `500ms`
    Text(String),
    /// `{prefix: 1, queue: 1}`
    Weights(BTreeMap<String, f64>),
}

/// The keys each policy takes, for error messages.
pub fn keys_of(spec: &PolicySpec) -> &'static [&'static str] {
    match spec {
        PolicySpec::ConsistentHash { .. } => &["load_factor", "virtual_nodes"],
        PolicySpec::LeastLoaded { .. } => &["queue_weight", "kv_weight", "max_report_age"],
        PolicySpec::PrefixAware { .. } => &[
            "prefill_weight",
            "decode_weight",
            "copy_weight",
            "max_report_age",
        ],
        PolicySpec::GpuAware { .. } => &[
            "max_utilization",
            "max_memory",
            "max_temperature_c",
            "max_report_age",
        ],
        PolicySpec::Cost { .. } => &["quality_floor"],
        PolicySpec::Composite { .. } => &["weights", "max_report_age"],
        _ => &[],
    }
}

fn number(key: &str, v: &ParamValue) -> Result<f64, String> {
    match v {
        ParamValue::Number(x) => Ok(*x),
        _ => Err(format!("{key} must be a number")),
    }
}

fn duration(key: &str, v: &ParamValue) -> Result<Duration, String> {
    match v {
        ParamValue::Number(x) => {
            super::values::seconds_f64(*x, x).map_err(|e| format!("{key}: {e}"))
        }
        ParamValue::Text(s) => super::values::parse_duration(s).map_err(|e| format!("{key}: {e}")),
        ParamValue::Weights(_) => Err(format!("{key} must be a duration such as 2s or 500ms")),
    }
}

/// Sets parameter `key` of `spec` to `v`.
pub fn apply(spec: &mut PolicySpec, key: &str, v: &ParamValue) -> Result<(), String> {
    let name = spec.name();
    let unknown = |spec: &PolicySpec| {
        let keys = keys_of(spec);
        let mut msg = format!("policy '{name}' has no parameter `{key}`");
        if let Some(near) = super::error::nearest(key, keys) {
            msg.push_str(&format!("; did you mean `{near}`?"));
        }
        if keys.is_empty() {
            msg.push_str("; it takes no parameters");
        } else {
            msg.push_str(&format!("; it takes {}", keys.join(", ")));
        }
        msg
    };
    match (&mut *spec, key) {
        (PolicySpec::ConsistentHash { load_factor, .. }, "load_factor") => {
            *load_factor = number(key, v)?
        }
        (PolicySpec::ConsistentHash { virtual_nodes, .. }, "virtual_nodes") => {
            let x = number(key, v)?;
            if x.fract() != 0.0 || !(0.0..=f64::from(u32::MAX)).contains(&x) {
                return Err(format!("virtual_nodes must be a whole number, got {x}"));
            }
            *virtual_nodes = x as u32;
        }
        (PolicySpec::LeastLoaded { queue_weight, .. }, "queue_weight") => {
            *queue_weight = number(key, v)?
        }
        (PolicySpec::LeastLoaded { kv_weight, .. }, "kv_weight") => *kv_weight = number(key, v)?,
        (PolicySpec::PrefixAware { prefill_weight, .. }, "prefill_weight") => {
            *prefill_weight = number(key, v)?
        }
        (PolicySpec::PrefixAware { decode_weight, .. }, "decode_weight") => {
            *decode_weight = number(key, v)?
        }
        (PolicySpec::PrefixAware { copy_weight, .. }, "copy_weight") => {
            *copy_weight = number(key, v)?
        }
        (PolicySpec::GpuAware { limits }, "max_utilization") => {
            limits.max_utilization = number(key, v)?
        }
        (PolicySpec::GpuAware { limits }, "max_memory") => limits.max_memory = number(key, v)?,
        (PolicySpec::GpuAware { limits }, "max_temperature_c") => {
            limits.max_temperature_c = number(key, v)?
        }
        (PolicySpec::GpuAware { limits }, "max_report_age") => {
            limits.max_report_age = duration(key, v)?
        }
        (PolicySpec::Cost { quality_floor }, "quality_floor") => {
            *quality_floor = Some(number(key, v)? as f32)
        }
        (
            PolicySpec::LeastLoaded { max_report_age, .. }
            | PolicySpec::PrefixAware { max_report_age, .. }
            | PolicySpec::Composite { max_report_age, .. },
            "max_report_age",
        ) => *max_report_age = duration(key, v)?,
        (PolicySpec::Composite { weights, .. }, "weights") => {
            let ParamValue::Weights(map) = v else {
                return Err(
                    "weights is a map of scorer to weight, e.g. {prefix: 1, queue: 1, kv: 0.5}"
                        .into(),
                );
            };
            const SCORERS: &[&str] = &["prefix", "queue", "kv", "latency", "cost", "gpu"];
            for (scorer, w) in map {
                let slot = match scorer.as_str() {
                    "prefix" => &mut weights.prefix,
                    "queue" => &mut weights.queue,
                    "kv" => &mut weights.kv,
                    "latency" => &mut weights.latency,
                    "cost" => &mut weights.cost,
                    "gpu" => &mut weights.gpu,
                    other => {
                        let mut msg = format!("unknown scorer `{other}` in weights");
                        if let Some(near) = super::error::nearest(other, SCORERS) {
                            msg.push_str(&format!("; did you mean `{near}`?"));
                        }
                        msg.push_str(&format!("; scorers are {}", SCORERS.join(", ")));
                        return Err(msg);
                    }
                };
                *slot = *w;
            }
        }
        (spec, _) => return Err(unknown(spec)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, params: &[(&str, ParamValue)]) -> Result<PolicySpec, String> {
        let mut s = PolicySpec::from_name(name).map_err(|e| e.to_string())?;
        for (k, v) in params {
            apply(&mut s, k, v)?;
        }
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn every_parameterised_policy_takes_its_keys() {
        use ParamValue::*;
        let s = spec(
            "prefix_aware",
            &[
                ("decode_weight", Number(0.2)),
                ("copy_weight", Number(0.5)),
                ("max_report_age", Text("3s".into())),
            ],
        )
        .unwrap();
        assert!(
            matches!(s, PolicySpec::PrefixAware { decode_weight, copy_weight, max_report_age, .. }
            if decode_weight == 0.2 && copy_weight == 0.5 && max_report_age == Duration::from_secs(3))
        );
        let w: BTreeMap<String, f64> = [("prefix".to_string(), 2.0), ("cost".to_string(), 1.0)]
            .into_iter()
            .collect();
        let s = spec("composite", &[("weights", Weights(w))]).unwrap();
        assert!(matches!(s, PolicySpec::Composite { weights, .. }
            if weights.prefix == 2.0 && weights.cost == 1.0 && weights.queue == 1.0));
        assert!(spec("gpu_aware", &[("max_temperature_c", Number(80.0))]).is_ok());
        assert!(spec("cost", &[("quality_floor", Number(0.5))]).is_ok());
        assert!(spec("least_loaded", &[("kv_weight", Number(2.0))]).is_ok());
    }

    #[test]
    fn a_hash_ring_too_large_to_build_is_refused_at_the_heaviest_weight() {
        let pool = |policy: &str, w: u64| {
            format!(
                "models:\n  small:\n    backends:\n      - url: http://a:1\n  m:\n    policy: {policy}\n    backends:\n      - url: http://a:1\n      - url: http://b:1\n        weight: {w}\n"
            )
        };
        let e =
            crate::config::parse(&pool("consistent_hash", 4_000_000_000), "c.yaml").unwrap_err();
        assert_eq!((e.line, e.column), (Some(10), Some(9)), "{e}");
        assert!(
            e.message
                .starts_with("models.m: consistent_hash would put 640000000160 points"),
            "{e}"
        );
        assert!(e.message.contains("scale them down"), "{e}");
        // 160 x (6553 + 1) fits; one more does not.
        assert!(crate::config::parse(&pool("consistent_hash", 6552), "c.yaml").is_ok());
        assert!(crate::config::parse(&pool("consistent_hash", 6553), "c.yaml").is_err());
        let fewer = "{name: consistent_hash, virtual_nodes: 1}";
        assert!(crate::config::parse(&pool(fewer, 1_000_000), "c.yaml").is_ok());
        // Other policies build nothing per unit of weight.
        assert!(crate::config::parse(&pool("weighted", 4_000_000_000), "c.yaml").is_ok());
    }

    #[test]
    fn wrong_keys_and_values_are_named_with_the_fix() {
        use ParamValue::*;
        let e = spec("prefix_aware", &[("decode_wieght", Number(1.0))]).unwrap_err();
        assert!(e.contains("did you mean `decode_weight`?"), "{e}");
        let e = spec("round_robin", &[("load_factor", Number(2.0))]).unwrap_err();
        assert!(e.contains("takes no parameters"), "{e}");
        let e = spec("least_loaded", &[("kv_weight", Text("lots".into()))]).unwrap_err();
        assert!(e.contains("must be a number"), "{e}");
        let e = spec(
            "composite",
            &[(
                "weights",
                Weights([("prefx".into(), 1.0)].into_iter().collect()),
            )],
        )
        .unwrap_err();
        assert!(e.contains("did you mean `prefix`?"), "{e}");
        let e = spec("least_loaded", &[("kv_weight", Number(-1.0))]).unwrap_err();
        assert!(e.contains("kv_weight"), "{e}");
    }
}
