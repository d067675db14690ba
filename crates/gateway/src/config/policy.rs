//! A policy's parameters as written in `policy: {name: ..., key: value}`, read into the
//! policy's own parameters type (core's policy table owns the keys, types, defaults and
//! ranges), with errors that name the key, the policy, the keys it does take and the nearest
//! one; and what depends on the pool's backends too (the size of a hash ring), checked here
//! once the pool is known.

use serde::Deserialize;
use switchyard_core::{PolicySpec, PolicySpecError};

use super::{Config, ConfigError, PoolConfig};

/// Why `pool`'s policy cannot be built over its backends, if it cannot (e.g. a
/// `consistent_hash` ring past [`switchyard_core::routing::MAX_RING_POINTS`]). Returns the
/// heaviest backend's weight, where the error is best shown, with the message.
pub fn ring_problem(pool: &PoolConfig) -> Option<(u32, String)> {
    let weights: Vec<u32> = pool.backends.iter().map(|b| b.weight).collect();
    let problem = pool.policy.check_weights(&weights).err()?;
    let heaviest = weights.iter().copied().max().unwrap_or(1);
    Some((heaviest, format!("models.{}: {problem}", pool.name)))
}

/// Every pool's policy can be built over its backends (see [`ring_problem`]); the error is
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

/// One parameter's value as written (a number, a duration or name, a map of weights), handed
/// to the policy's parameters type to read.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct ParamValue(pub serde_json::Value);

/// Sets parameter `key` of `spec` to `v`; the error names the key, and for a misspelt one the
/// nearest key and every key the policy takes.
pub fn apply(spec: &mut PolicySpec, key: &str, v: &ParamValue) -> Result<(), String> {
    spec.set(key, v.0.clone()).map_err(|e| match e {
        PolicySpecError::UnknownParameter { policy, key, known } => {
            let mut msg = format!("policy '{policy}' has no parameter `{key}`");
            if let Some(near) = super::error::nearest(&key, known) {
                msg.push_str(&format!("; did you mean `{near}`?"));
            }
            msg.push_str("; ");
            msg.push_str(&switchyard_core::routing::takes(known));
            msg
        }
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;
    use switchyard_core::routing::{CompositeParams, PrefixAwareParams};

    fn num(x: f64) -> ParamValue {
        ParamValue(serde_json::json!(x))
    }
    fn text(s: &str) -> ParamValue {
        ParamValue(serde_json::json!(s))
    }
    fn weights(w: &[(&str, f64)]) -> ParamValue {
        let map: BTreeMap<&str, f64> = w.iter().copied().collect();
        ParamValue(serde_json::json!(map))
    }

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
        let s = spec(
            "prefix_aware",
            &[
                ("decode_weight", num(0.2)),
                ("copy_weight", num(0.5)),
                ("max_report_age", text("3s")),
            ],
        )
        .unwrap();
        let p = s.params::<PrefixAwareParams>().unwrap();
        assert_eq!(
            (p.decode_weight, p.copy_weight, p.max_report_age),
            (0.2, 0.5, Duration::from_secs(3))
        );
        let s = spec(
            "composite",
            &[("weights", weights(&[("prefix", 2.0), ("cost", 1.0)]))],
        )
        .unwrap();
        let w = s.params::<CompositeParams>().unwrap().weights;
        assert!(w.prefix == 2.0 && w.cost == 1.0 && w.queue == 1.0);
        assert!(spec("gpu_aware", &[("max_temperature_c", num(80.0))]).is_ok());
        assert!(spec("cost", &[("quality_floor", num(0.5))]).is_ok());
        assert!(spec("least_loaded", &[("kv_weight", num(2.0))]).is_ok());
        assert!(spec("consistent_hash", &[("virtual_nodes", num(1.0))]).is_ok());
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
        let e = spec("prefix_aware", &[("decode_wieght", num(1.0))]).unwrap_err();
        assert!(e.contains("did you mean `decode_weight`?"), "{e}");
        assert!(e.contains("it takes prefill_weight, decode_weight"), "{e}");
        let e = spec("round_robin", &[("load_factor", num(2.0))]).unwrap_err();
        assert!(e.contains("takes no parameters"), "{e}");
        let e = spec("least_loaded", &[("kv_weight", text("lots"))]).unwrap_err();
        assert!(e.contains("kv_weight must be a number"), "{e}");
        let e = spec("composite", &[("weights", weights(&[("prefx", 1.0)]))]).unwrap_err();
        assert!(
            e.contains("unknown field `prefx`, expected one of `prefix`"),
            "{e}"
        );
        let e = spec("least_loaded", &[("kv_weight", num(-1.0))]).unwrap_err();
        assert!(e.contains("kv_weight"), "{e}");
        let e = spec("consistent_hash", &[("virtual_nodes", num(1.5))]).unwrap_err();
        assert!(e.contains("virtual_nodes must be a whole number"), "{e}");
    }

    #[test]
    fn a_bad_parameter_in_a_file_is_located_and_named() {
        let yaml = "models:\n  m:\n    policy: {name: prefix_aware, decode_wieght: 1}\n    backends:\n      - url: http://a:1\n";
        let e = crate::config::parse(yaml, "c.yaml").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("did you mean `decode_weight`?"), "{e}");
        // A misspelt key inside a parameter gets the file's own suggestion, once.
        let yaml = "models:\n  m:\n    policy: {name: composite, weights: {prefx: 1}}\n    backends:\n      - url: http://a:1\n";
        let e = crate::config::parse(yaml, "c.yaml").unwrap_err();
        assert_eq!(
            e.message.matches("did you mean `prefix`?").count(),
            1,
            "{e}"
        );
    }
}
