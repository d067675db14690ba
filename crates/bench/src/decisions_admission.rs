//! The admission stage of `bench decisions --admission`: backend caps, and each request's
//! priority and tenant from the scenario's tags, for core's admission queue in the
//! virtual-time fleet.
//!
//! Tags map as a key would: `critical` to [`Priority::Critical`], `standard` to
//! [`Priority::Normal`], `batch` to [`Priority::Batch`], untagged to `normal`; tenants to
//! [`TenantId`]s in name order, all weighing 1. The queue has the gateway's default settings.

use switchyard_core::admission::{Priority, QueueSettings, TenantId};
use switchyard_sim::fleet::{Admission, Class, FleetConfig};

use crate::scenarios::Scenario;

/// The cap the admission stage gives each backend unless told otherwise: as many requests as
/// its KV cache holds at the workload's mean size (prompt plus output budget), at least 1.
/// Past that an engine would queue or preempt; the gateway holds the rest back instead.
pub fn default_cap(sc: &Scenario) -> u32 {
    let n = sc.workload.requests.len().max(1) as f64;
    let mean = sc
        .workload
        .requests
        .iter()
        .map(|r| f64::from(r.prompt.tokens()) + f64::from(r.max_output_tokens))
        .sum::<f64>()
        / n;
    let kv = sc
        .backends
        .iter()
        .map(|b| u64::from(b.engine.num_gpu_blocks) * u64::from(b.engine.block_size))
        .min()
        .unwrap_or(0) as f64;
    if mean > 0.0 {
        ((kv / mean).floor() as u32).max(1)
    } else {
        1
    }
}

/// A tag's priority label as a level.
fn level(label: Option<&str>) -> Priority {
    match label {
        Some("critical") => Priority::Critical,
        Some("batch") => Priority::Batch,
        _ => Priority::Normal,
    }
}

/// `config` with every backend capped at `max_in_flight` (or [`default_cap`]) and, with a
/// `queue_threshold`, counted full while its scraped engine queue holds more than that many
/// (the gateway's `engine_queue_threshold`), or with `prefill_tokens` while its prompts
/// awaiting a first token hold that many (`max_prefill_tokens`); and the admission stage for
/// `sc`'s requests, keeping `critical_reserve` of each cap for critical ones, and with
/// `prefill_tokens` and `tenant_share` each tenant to its share of the fleet's prefill budget
/// (`tenant_prefill_share`).
pub fn setup(
    sc: &Scenario,
    mut config: FleetConfig,
    max_in_flight: Option<u32>,
    (queue_threshold, prefill_tokens, critical_reserve, engine_priority, tenant_share): (
        Option<u32>,
        Option<u64>,
        u32,
        bool,
        bool,
    ),
) -> (FleetConfig, Admission) {
    let cap = max_in_flight.unwrap_or_else(|| default_cap(sc)).max(1);
    for b in &mut config.backends {
        b.max_in_flight = Some(cap);
        b.max_waiting = queue_threshold.map(|t| t.saturating_add(1));
        b.max_prefill_tokens = prefill_tokens;
        // The gateway passes levels on only to engines started with priority scheduling.
        b.engine.priority_scheduling = engine_priority;
    }
    let mut names: Vec<&str> = sc.tags.iter().filter_map(|t| t.tenant.as_deref()).collect();
    names.sort_unstable();
    names.dedup();
    let classes = sc
        .tags
        .iter()
        .map(|t| Class {
            priority: level(t.priority),
            tenant: TenantId(
                t.tenant
                    .as_deref()
                    .and_then(|n| names.binary_search(&n).ok())
                    .unwrap_or(0) as u32,
            ),
        })
        .collect();
    let gate = Admission {
        settings: QueueSettings::default(),
        tenant_weights: vec![1.0; names.len()],
        classes,
        critical_reserve,
        engine_priority,
        tenant_prefill_budget: prefill_tokens
            .filter(|_| tenant_share)
            .map(|p| p.saturating_mul(config.backends.len() as u64)),
    };
    (config, gate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::{build, Size};

    #[test]
    fn tags_become_levels_and_tenants_and_every_backend_is_capped() {
        let sc = build("tenants", Size::Quick, 1).unwrap();
        let base = FleetConfig::uniform(
            &switchyard_sim::profile::l4_llama3_8b(),
            4,
            switchyard_core::PolicySpec::default(),
            1,
        );
        let (config, gate) = setup(&sc, base, Some(7), (Some(0), Some(4096), 2, false, true));
        assert!(config.backends.iter().all(|b| b.max_in_flight == Some(7)));
        assert!(config
            .backends
            .iter()
            .all(|b| (b.max_waiting, b.max_prefill_tokens) == (Some(1), Some(4096))));
        assert_eq!(gate.classes.len(), sc.workload.len());
        assert_eq!(gate.critical_reserve, 2);
        assert_eq!(
            gate.tenant_prefill_budget,
            Some(4 * 4096),
            "4 backends' limits"
        );
        let tenants: std::collections::BTreeSet<u32> =
            gate.classes.iter().map(|c| c.tenant.0).collect();
        assert_eq!(tenants.len(), 6);
        let p = build("priority", Size::Quick, 1).unwrap();
        let (_, gate) = setup(
            &p,
            FleetConfig::uniform(
                &switchyard_sim::profile::l4_llama3_8b(),
                2,
                switchyard_core::PolicySpec::default(),
                1,
            ),
            None,
            (None, None, 0, false, true),
        );
        assert_eq!(
            gate.tenant_prefill_budget, None,
            "no prefill limit, no shares"
        );
        for (c, t) in gate.classes.iter().zip(&p.tags) {
            assert_eq!(c.priority, level(t.priority));
        }
        assert!(gate
            .classes
            .iter()
            .any(|c| c.priority == Priority::Critical));
        assert!(default_cap(&p) > 1);
    }
}
