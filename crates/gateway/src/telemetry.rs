//! Prometheus metrics, all prefixed `switchyard_`, in base units.
//!
//! Per-backend handles are resolved once when a pool is built, so the hot path touches only
//! atomics; the request counter is labelled by status and resolved per response.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: sub-millisecond for overhead up to minutes for long generations.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Gateway overhead buckets in seconds: 10 microseconds to 50 milliseconds.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
];

/// The gateway's metric families.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    tokens: IntCounterVec,
    duration: HistogramVec,
    ttfb: HistogramVec,
    in_flight: IntGaugeVec,
    stream_errors: IntCounterVec,
    retries: IntCounterVec,
    breaker_state: IntGaugeVec,
    healthy: IntGaugeVec,
    ejected: IntGaugeVec,
    transitions: IntCounterVec,
    /// Time spent inside the gateway per request, upstream time excluded.
    pub overhead: Histogram,
    /// `switchyard_connections_rejected_total`: client connections answered 503 because
    /// `limits.max_connections` were open.
    pub connections_rejected: IntCounter,
    /// `switchyard_local_errors_total`: upstream attempts that failed for want of a local
    /// resource (file descriptors, ports), not counted against any backend.
    pub local_errors: IntCounter,
    /// `switchyard_decision_log_dropped_total`: decision records not written because the
    /// writer's channel was full.
    pub decisions_dropped: IntCounter,
    /// `switchyard_config_reloads_total{result}`: reloads of the config file (SIGHUP or
    /// `POST /admin/reload`) by result: `applied`, `unchanged` (the text installed last, on
    /// the config it made: nothing to do) or `refused` (unreadable or invalid; the running
    /// config stays).
    pub reloads: IntCounterVec,
    /// Admission: per priority and per configured tenant.
    pub admission: crate::admission::metrics::AdmissionMetrics,
    /// Routes: requests per rule, mirrored copies.
    pub routes: crate::routes::metrics::RouteMetrics,
}

/// Handles for one backend, resolved once.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// `switchyard_request_duration_seconds{model,backend}`
    pub duration: Histogram,
    /// `switchyard_time_to_first_byte_seconds{model,backend}`
    pub ttfb: Histogram,
    /// `switchyard_backend_in_flight{model,backend}`
    pub in_flight: IntGauge,
    /// `switchyard_stream_errors_total{model,backend}`
    pub stream_errors: IntCounter,
    /// `switchyard_backend_breaker_state{model,backend}`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGauge,
    /// `switchyard_backend_healthy{model,backend}`: 1 while active health checks pass (or
    /// are off), 0 while the backend is marked down.
    pub healthy: IntGauge,
    /// `switchyard_backend_ejected{model,backend}`: 1 while outlier detection ejects it.
    pub ejected: IntGauge,
    /// `switchyard_tokens_total{model,backend,kind}`: `prompt` then `completion`.
    pub tokens: [IntCounter; 2],
    /// `switchyard_requests_total{model,backend,status="200"}`, resolved once because almost
    /// every answer counts there (other statuses are resolved per response).
    answered_ok: IntCounter,
    /// `switchyard_backend_transitions_total{model,backend,to}`, resolved per event (rare).
    transitions: IntCounterVec,
    labels: [String; 2],
}

impl BackendMetrics {
    /// The `model` and `backend` labels, for logs.
    pub fn labels(&self) -> &[String; 2] {
        &self.labels
    }

    /// Counts a resilience state change of this backend (`to`: `down`, `up`, `open`,
    /// `half_open`, `closed`, `ejected`).
    pub fn transition(&self, to: &str) {
        let [model, backend] = &self.labels;
        self.transitions
            .with_label_values(&[model.as_str(), backend.as_str(), to])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "switchyard_requests_total",
                "Requests answered, by model, backend and HTTP status.",
            ),
            &["model", "backend", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_request_duration_seconds",
                "Time from request received to response body finished.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "backend"],
        )
        .expect("valid metric");
        let ttfb = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_time_to_first_byte_seconds",
                "Time from request received to the first byte of the response body (first token when streaming).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "backend"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "switchyard_backend_in_flight",
                "Requests in flight per backend.",
            ),
            &["model", "backend"],
        )
        .expect("valid metric");
        let stream_errors = IntCounterVec::new(
            Opts::new(
                "switchyard_stream_errors_total",
                "Upstream response bodies that failed after the response had started.",
            ),
            &["model", "backend"],
        )
        .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "switchyard_retries_total",
                "Failover attempts asked of the retry budget, by model and whether it granted them.",
            ),
            &["model", "granted"],
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["model", "backend"]).expect("valid metric")
        };
        let breaker_state = gauge(
            "switchyard_backend_breaker_state",
            "Circuit breaker state per backend: 0 closed, 1 open, 2 half-open.",
        );
        let healthy = gauge(
            "switchyard_backend_healthy",
            "1 while a backend passes its active health checks (or has none), 0 while marked down.",
        );
        let ejected = gauge(
            "switchyard_backend_ejected",
            "1 while passive outlier detection keeps a backend out of rotation.",
        );
        let transitions = IntCounterVec::new(
            Opts::new(
                "switchyard_backend_transitions_total",
                "Health, breaker and ejection state changes per backend, by the state entered.",
            ),
            &["model", "backend", "to"],
        )
        .expect("valid metric");
        let tokens = IntCounterVec::new(
            Opts::new(
                "switchyard_tokens_total",
                "Tokens in the usage of answered requests, by model, backend and kind (prompt, completion).",
            ),
            &["model", "backend", "kind"],
        )
        .expect("valid metric");
        let overhead = Histogram::with_opts(
            HistogramOpts::new(
                "switchyard_overhead_seconds",
                "Time spent in the gateway per request, upstream time excluded.",
            )
            .buckets(OVERHEAD_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let connections_rejected = IntCounter::new(
            "switchyard_connections_rejected_total",
            "Client connections answered 503 and closed because limits.max_connections were open.",
        )
        .expect("valid metric");
        let decisions_dropped = IntCounter::new(
            "switchyard_decision_log_dropped_total",
            "Decision log records dropped because the writer's channel was full.",
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "switchyard_config_reloads_total",
                "Reloads of the config file by result: applied, unchanged or refused.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let local_errors = IntCounter::new(
            "switchyard_local_errors_total",
            "Upstream attempts that failed for want of a local resource (file descriptors, ports, memory); not counted against the backend.",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tokens.clone()),
            Box::new(connections_rejected.clone()),
            Box::new(local_errors.clone()),
            Box::new(decisions_dropped.clone()),
            Box::new(reloads.clone()),
            Box::new(duration.clone()),
            Box::new(ttfb.clone()),
            Box::new(in_flight.clone()),
            Box::new(stream_errors.clone()),
            Box::new(retries.clone()),
            Box::new(breaker_state.clone()),
            Box::new(healthy.clone()),
            Box::new(ejected.clone()),
            Box::new(transitions.clone()),
            Box::new(overhead.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let admission = crate::admission::metrics::AdmissionMetrics::new(&registry);
        let routes = crate::routes::metrics::RouteMetrics::new(&registry);
        Self {
            admission,
            routes,
            registry,
            requests,
            tokens,
            duration,
            ttfb,
            in_flight,
            stream_errors,
            retries,
            breaker_state,
            healthy,
            ejected,
            transitions,
            connections_rejected,
            local_errors,
            decisions_dropped,
            reloads,
            overhead,
        }
    }

    /// Handles for one backend of one pool.
    pub fn backend(&self, model: &str, backend: &str) -> BackendMetrics {
        BackendMetrics {
            duration: self.duration.with_label_values(&[model, backend]),
            ttfb: self.ttfb.with_label_values(&[model, backend]),
            in_flight: self.in_flight.with_label_values(&[model, backend]),
            stream_errors: self.stream_errors.with_label_values(&[model, backend]),
            breaker_state: self.breaker_state.with_label_values(&[model, backend]),
            healthy: self.healthy.with_label_values(&[model, backend]),
            ejected: self.ejected.with_label_values(&[model, backend]),
            tokens: ["prompt", "completion"]
                .map(|kind| self.tokens.with_label_values(&[model, backend, kind])),
            answered_ok: self.requests.with_label_values(&[model, backend, "200"]),
            transitions: self.transitions.clone(),
            labels: [model.to_owned(), backend.to_owned()],
        }
    }

    /// Drops a removed backend's in-flight series, so `/metrics` does not show a stale gauge
    /// for it. Its counters and histograms stay: they are history.
    pub fn forget_backend(&self, model: &str, backend: &str) {
        let _ = self.in_flight.remove_label_values(&[model, backend]);
    }

    /// Counts one answered request. `backend` is empty when the gateway answered itself.
    pub fn count(&self, model: &str, backend: &str, status: http::StatusCode) {
        self.requests
            .with_label_values(&[model, backend, status.as_str()])
            .inc();
    }

    /// Counts one answer relayed from the backend `b` reports for (its model and backend
    /// labels): a 200 through the handle resolved when the pool was built, others by label.
    pub fn count_answer(&self, b: &BackendMetrics, status: http::StatusCode) {
        if status == http::StatusCode::OK {
            b.answered_ok.inc();
        } else {
            let [model, backend] = &b.labels;
            self.count(model, backend, status);
        }
    }

    /// Counts one failover attempt asked of the retry budget.
    pub fn count_retry(&self, model: &str, granted: bool) {
        let label = if granted { "true" } else { "false" };
        self.retries.with_label_values(&[model, label]).inc();
    }

    /// Answers per backend so far, from `switchyard_requests_total`: `(model, backend)` to
    /// `(all, errors)`, where errors are 5xx statuses. Walks every series: for once-a-second
    /// readers (the dashboard), not the request path.
    pub fn answers_by_backend(&self) -> std::collections::HashMap<(String, String), (u64, u64)> {
        use prometheus::core::Collector;
        let mut out = std::collections::HashMap::new();
        for family in self.requests.collect() {
            for m in family.get_metric() {
                let (mut model, mut backend, mut error) = ("", "", false);
                for l in m.get_label() {
                    match l.name() {
                        "model" => model = l.value(),
                        "backend" => backend = l.value(),
                        "status" => error = l.value().starts_with('5'),
                        _ => {}
                    }
                }
                let n = m.get_counter().get_value() as u64;
                let e: &mut (u64, u64) = out
                    .entry((model.to_owned(), backend.to_owned()))
                    .or_default();
                e.0 += n;
                if error {
                    e.1 += n;
                }
            }
        }
        out
    }

    /// Every family in Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use http::StatusCode;

    fn line(m: &Metrics, status: &str) -> Option<String> {
        let text = String::from_utf8(m.render()).unwrap_or_default();
        let prefix =
            format!("switchyard_requests_total{{backend=\"b\",model=\"m\",status=\"{status}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
    }

    #[test]
    fn answers_count_under_their_backend_and_status_whether_cached_or_not() {
        let m = Metrics::new();
        let b = m.backend("m", "b");
        m.count_answer(&b, StatusCode::OK);
        m.count_answer(&b, StatusCode::OK);
        m.count("m", "b", StatusCode::OK);
        m.count_answer(&b, StatusCode::NOT_FOUND);
        assert_eq!(line(&m, "200").as_deref(), Some("3"));
        assert_eq!(line(&m, "404").as_deref(), Some("1"));
    }
}
