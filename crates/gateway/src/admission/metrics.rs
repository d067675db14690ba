//! Admission metrics: per priority (waiting, wait time, refusals) and per configured tenant
//! (requests, tokens, spend, throttles). Tenant labels come only from the config's tenants
//! (requests without auth count under no tenant label at all), so cardinality stays bounded.

use switchyard_core::admission::Priority;

use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Buckets of queue wait, in seconds.
const WAIT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The admission metric families (one set per gateway, shared by every config version).
#[derive(Debug, Clone)]
pub struct AdmissionMetrics {
    /// `switchyard_admission_waiting{model, priority}`.
    pub waiting: IntGaugeVec,
    /// `switchyard_admission_wait_seconds{priority}`: time admitted requests waited.
    pub wait: HistogramVec,
    /// `switchyard_admission_refused_total{priority, code}`: 429s by code.
    pub refused: IntCounterVec,
    /// `switchyard_tenant_requests_total{tenant}`: requests admitted.
    pub tenant_requests: IntCounterVec,
    /// `switchyard_tenant_tokens_total{tenant, kind}`: `prompt` and `completion` tokens used.
    pub tenant_tokens: IntCounterVec,
    /// `switchyard_tenant_spend_total{tenant}`: cost by the backends' `price:`.
    pub tenant_spend: CounterVec,
    /// `switchyard_tenant_throttled_total{tenant, code}`: refusals by limits and budgets.
    pub tenant_throttled: IntCounterVec,
}

/// One configured tenant's series, resolved once when the key table is built, so a request
/// counts without looking labels up.
#[derive(Debug, Clone)]
pub struct TenantSeries {
    /// `switchyard_tenant_requests_total{tenant}`.
    pub requests: prometheus::IntCounter,
    /// `switchyard_tenant_tokens_total{tenant, kind="prompt"}`.
    pub prompt_tokens: prometheus::IntCounter,
    /// `switchyard_tenant_tokens_total{tenant, kind="completion"}`.
    pub completion_tokens: prometheus::IntCounter,
    /// `switchyard_tenant_spend_total{tenant}`.
    pub spend: prometheus::Counter,
}

impl AdmissionMetrics {
    /// `tenant`'s series.
    pub fn tenant(&self, tenant: &str) -> TenantSeries {
        TenantSeries {
            requests: self.tenant_requests.with_label_values(&[tenant]),
            prompt_tokens: self.tenant_tokens.with_label_values(&[tenant, "prompt"]),
            completion_tokens: self
                .tenant_tokens
                .with_label_values(&[tenant, "completion"]),
            spend: self.tenant_spend.with_label_values(&[tenant]),
        }
    }

    /// `switchyard_admission_wait_seconds` of each level, in [`Priority::ALL`] order.
    pub fn waits(&self) -> [prometheus::Histogram; 5] {
        Priority::ALL.map(|p| self.wait.with_label_values(&[p.name()]))
    }

    /// Registers the families in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            waiting: IntGaugeVec::new(
                Opts::new(
                    "switchyard_admission_waiting",
                    "Requests waiting in a model's admission queue, by priority.",
                ),
                &["model", "priority"],
            )
            .expect("valid metric"),
            wait: HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_admission_wait_seconds",
                    "Time admitted requests waited in the admission queue.",
                )
                .buckets(WAIT_BUCKETS.to_vec()),
                &["priority"],
            )
            .expect("valid metric"),
            refused: IntCounterVec::new(
                Opts::new(
                    "switchyard_admission_refused_total",
                    "Requests refused by admission, by priority and code.",
                ),
                &["priority", "code"],
            )
            .expect("valid metric"),
            tenant_requests: IntCounterVec::new(
                Opts::new(
                    "switchyard_tenant_requests_total",
                    "Requests admitted per configured tenant.",
                ),
                &["tenant"],
            )
            .expect("valid metric"),
            tenant_tokens: IntCounterVec::new(
                Opts::new(
                    "switchyard_tenant_tokens_total",
                    "Tokens used per configured tenant (from responses' usage).",
                ),
                &["tenant", "kind"],
            )
            .expect("valid metric"),
            tenant_spend: CounterVec::new(
                Opts::new(
                    "switchyard_tenant_spend_total",
                    "Spend per configured tenant, by the backends' price.",
                ),
                &["tenant"],
            )
            .expect("valid metric"),
            tenant_throttled: IntCounterVec::new(
                Opts::new(
                    "switchyard_tenant_throttled_total",
                    "Requests of a configured tenant refused by its limits or budgets.",
                ),
                &["tenant", "code"],
            )
            .expect("valid metric"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 7] = [
            Box::new(m.waiting.clone()),
            Box::new(m.wait.clone()),
            Box::new(m.refused.clone()),
            Box::new(m.tenant_requests.clone()),
            Box::new(m.tenant_tokens.clone()),
            Box::new(m.tenant_spend.clone()),
            Box::new(m.tenant_throttled.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        m
    }
}
