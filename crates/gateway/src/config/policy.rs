//! A policy's parameters as written in `policy: {name: ..., key: value}`: which keys each
//! policy takes, their types, and the error that names the key, the policy and the keys it
//! does take. Values are range-checked by `PolicySpec::validate` in core.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_core::PolicySpec;

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
        ParamValue::Number(x) => Duration::try_from_secs_f64(*x)
            .map_err(|_| format!("{key} must be a duration such as 2s or 500ms, got {x}")),
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
