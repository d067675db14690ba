//! Tests of [`PolicySpec`]: every name builds a working policy, bad parameters are refused.

use std::time::Duration;

use super::test_support::{idle, request};
use super::*;
use crate::FleetView;

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

#[test]
fn bad_parameters_are_refused_with_the_default_named() {
    let bad = [
        PolicySpec::LeastLoaded {
            queue_weight: -1.0,
            kv_weight: 1.0,
            max_report_age: DEFAULT_MAX_REPORT_AGE,
        },
        PolicySpec::PrefixAware {
            prefill_weight: 0.0,
            decode_weight: 0.1,
            copy_weight: 0.25,
            max_report_age: DEFAULT_MAX_REPORT_AGE,
        },
        PolicySpec::PrefixAware {
            prefill_weight: 2.0,
            decode_weight: f64::NAN,
            copy_weight: 0.25,
            max_report_age: DEFAULT_MAX_REPORT_AGE,
        },
        PolicySpec::PrefixAware {
            prefill_weight: 2.0,
            decode_weight: 0.1,
            copy_weight: -1.0,
            max_report_age: DEFAULT_MAX_REPORT_AGE,
        },
        PolicySpec::PrefixAware {
            prefill_weight: 2.0,
            decode_weight: 0.1,
            copy_weight: 0.25,
            max_report_age: Duration::ZERO,
        },
        PolicySpec::GpuAware {
            limits: GpuLimits {
                max_temperature_c: 500.0,
                ..GpuLimits::default()
            },
        },
        PolicySpec::GpuAware {
            limits: GpuLimits {
                max_utilization: 1.5,
                ..GpuLimits::default()
            },
        },
        PolicySpec::Cost {
            quality_floor: Some(f32::INFINITY),
        },
        PolicySpec::Composite {
            weights: CompositeWeights {
                prefix: 0.0,
                queue: 0.0,
                kv: 0.0,
                latency: 0.0,
                cost: 0.0,
                gpu: 0.0,
            },
            max_report_age: DEFAULT_MAX_REPORT_AGE,
        },
        PolicySpec::Composite {
            weights: CompositeWeights {
                cost: -2.0,
                ..CompositeWeights::default()
            },
            max_report_age: DEFAULT_MAX_REPORT_AGE,
        },
    ];
    for spec in bad {
        match spec.validate() {
            Err(PolicySpecError::BadParameter(msg)) => assert!(!msg.is_empty(), "{spec:?}"),
            other => panic!("{spec:?} gave {other:?}"),
        }
    }
}
