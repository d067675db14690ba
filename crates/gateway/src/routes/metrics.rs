//! Route metrics: requests by the rule that routed them, and mirrored copies by outcome.
//! Labels come from the config (rule and model names), so their number is bounded.

use prometheus::{IntCounterVec, Opts, Registry};

/// The route metric families (one set per gateway, shared by every config version).
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// `switchyard_routed_total{rule, model}`: requests an alias (`rule="alias"`) or a rule
    /// sent to a model other than, or as well as, the one they named.
    pub routed: IntCounterVec,
    /// `switchyard_mirrored_total{model, outcome}`: copies sent to a shadow model, `ok` or
    /// `error`.
    pub mirrored: IntCounterVec,
}

impl RouteMetrics {
    /// Registers the families in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            routed: IntCounterVec::new(
                Opts::new(
                    "switchyard_routed_total",
                    "Requests routed by an alias or a routes rule, by rule and the model that served them.",
                ),
                &["rule", "model"],
            )
            .expect("valid metric"),
            mirrored: IntCounterVec::new(
                Opts::new(
                    "switchyard_mirrored_total",
                    "Copies of requests sent to a shadow model by a mirror rule, by outcome.",
                ),
                &["model", "outcome"],
            )
            .expect("valid metric"),
        };
        for c in [m.routed.clone(), m.mirrored.clone()] {
            registry
                .register(Box::new(c))
                .expect("metric names are unique");
        }
        m
    }
}
