//! Tests of [`PolicySpec`]: every name builds a working policy, bad parameters are refused.

use std::time::Duration;

use super::test_support::{idle, request};
use super::*;
use crate::{FleetView, PoolMember};

#[test]
fn every_name_builds_a_policy_that_decides_and_names_itself() {
    let members: Vec<PoolMember> = (0..3)
        .map(|i| PoolMember {
            name: format!("b{i}"),
            weight: 1,
            ..PoolMember::default()
        })
        .collect();
    let mut pool = idle(3);
    pool[1].usable = false;
    for name in PolicySpec::NAMES {
        let spec = PolicySpec::from_name(name).unwrap();
        assert_eq!(spec.name(), *name);
        spec.validate().unwrap();
        let policy = spec.build(&members, 1);
        assert_eq!(policy.name(), *name);
        for _ in 0..10 {
            let d = policy
                .decide(&request(None), &FleetView::new(&pool, Duration::ZERO))
                .unwrap();
            assert!(
                d.attempts().all(|id| id.0 != 1),
                "{name} chose an unusable backend"
            );
            assert_eq!(d.attempts().count(), 2, "{name}: primary and one fallback");
        }
    }
    assert!(matches!(
        PolicySpec::from_name("prefix_awar"),
        Err(PolicySpecError::Unknown(_))
    ));
}

/// A spec for `name` with these parameters (JSON, as config gives them).
fn spec(name: &str, params: serde_json::Value) -> Result<PolicySpec, PolicySpecError> {
    let serde_json::Value::Object(map) = params else {
        panic!("params must be an object");
    };
    PolicySpec::with_params(name, &map)
}

#[test]
fn bad_parameters_are_refused_with_the_default_named() {
    use serde_json::json;
    let bad = [
        (
            "least_loaded",
            json!({"queue_weight": -1.0}),
            "queue_weight",
        ),
        (
            "prefix_aware",
            json!({"prefill_weight": 0.0}),
            "prefill_weight",
        ),
        ("prefix_aware", json!({"copy_weight": -1.0}), "copy_weight"),
        (
            "prefix_aware",
            json!({"max_report_age": 0}),
            "max_report_age",
        ),
        (
            "gpu_aware",
            json!({"max_temperature_c": 500.0}),
            "max_temperature_c",
        ),
        (
            "gpu_aware",
            json!({"max_utilization": 1.5}),
            "max_utilization",
        ),
        (
            "consistent_hash",
            json!({"load_factor": 1.0}),
            "load_factor",
        ),
        (
            "consistent_hash",
            json!({"virtual_nodes": 0}),
            "virtual_nodes",
        ),
        (
            "composite",
            json!({"weights": {"prefix": 0, "queue": 0, "kv": 0, "latency": 0}}),
            "at least one scorer",
        ),
        ("composite", json!({"weights": {"cost": -2.0}}), "cost"),
    ];
    for (name, params, named) in bad {
        match spec(name, params.clone()) {
            Err(PolicySpecError::BadParameter(msg)) => {
                assert!(msg.contains(named), "{name} {params}: {msg}")
            }
            other => panic!("{name} {params} gave {other:?}"),
        }
    }
    // A NaN cannot be written in config; the range check still refuses it.
    let nan = PrefixAwareParams {
        decode_weight: f64::NAN,
        ..PrefixAwareParams::default()
    };
    assert!(nan.validate().unwrap_err().contains("decode_weight"));
    let floor = CostParams {
        quality_floor: Some(f32::INFINITY),
    };
    assert!(floor.validate().is_err());
}

#[test]
fn an_unknown_policy_name_lists_the_known_ones() {
    let e = PolicySpec::from_name("prefix_awar").unwrap_err();
    assert_eq!(e, PolicySpecError::Unknown("prefix_awar".into()));
    let msg = e.to_string();
    for name in PolicySpec::NAMES {
        assert!(msg.contains(name), "{msg}");
    }
    assert_eq!(PolicySpec::NAMES.len(), REGISTRY.len());
    assert_eq!(PolicySpec::NAMES[0], "round_robin");
    assert_eq!(PolicySpec::default().name(), "round_robin");
}

#[test]
fn an_unknown_or_mistyped_parameter_is_named() {
    use serde_json::json;
    match spec("prefix_aware", json!({"decode_wieght": 1.0})) {
        Err(PolicySpecError::UnknownParameter { policy, key, known }) => {
            assert_eq!((policy, key.as_str()), ("prefix_aware", "decode_wieght"));
            assert_eq!(
                known,
                [
                    "prefill_weight",
                    "decode_weight",
                    "copy_weight",
                    "max_report_age",
                    "slot_wait"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    let e = spec("round_robin", json!({"load_factor": 2})).unwrap_err();
    assert!(e.to_string().ends_with("it takes no parameters"), "{e}");
    let e = spec("least_loaded", json!({"kv_weight": "lots"})).unwrap_err();
    assert!(e.to_string().contains("kv_weight must be a number"), "{e}");
    let e = spec("consistent_hash", json!({"virtual_nodes": 1.5})).unwrap_err();
    assert!(
        e.to_string()
            .contains("virtual_nodes must be a whole number"),
        "{e}"
    );
    let e = spec("composite", json!({"weights": {"prefx": 1}})).unwrap_err();
    assert!(e.to_string().contains("unknown field `prefx`"), "{e}");
    let e = spec("gpu_aware", json!({"max_report_age": "soon"})).unwrap_err();
    assert!(e.to_string().starts_with("max_report_age: "), "{e}");
}

#[test]
fn parameters_take_their_values_and_keep_defaults_for_the_rest() {
    use serde_json::json;
    let s = spec(
        "prefix_aware",
        json!({"decode_weight": 0.2, "max_report_age": "500ms"}),
    )
    .unwrap();
    let p = s.params::<PrefixAwareParams>().unwrap();
    assert_eq!(p.decode_weight, 0.2);
    assert_eq!(p.max_report_age, Duration::from_millis(500));
    assert_eq!(p.prefill_weight, DEFAULT_PREFILL_WEIGHT);
    let s = spec("composite", json!({"weights": {"prefix": 2, "cost": 1}})).unwrap();
    let w = s.params::<CompositeParams>().unwrap().weights;
    assert_eq!((w.prefix, w.cost, w.queue), (2.0, 1.0, 1.0));
    assert_eq!(
        spec("consistent_hash", json!({"load_factor": 1.25})).unwrap(),
        PolicySpec::from_name("consistent_hash").unwrap(),
        "a default written out is the default"
    );
    assert_ne!(
        spec("consistent_hash", json!({"load_factor": 1.5})).unwrap(),
        PolicySpec::from_name("consistent_hash").unwrap()
    );
}

#[test]
fn a_ring_too_large_is_refused_before_building() {
    let s = PolicySpec::from_name("consistent_hash").unwrap();
    assert!(s.check_weights(&[6552, 1]).is_ok());
    let e = s.check_weights(&[6553, 1]).unwrap_err();
    assert!(e.contains("more than the 1048576 it allows"), "{e}");
    assert!(PolicySpec::default().check_weights(&[u32::MAX]).is_ok());
}
