//! Configuration: the YAML file a user writes, and the validated runtime form the server runs.
//!
//! Parsing happens in two steps, as ripgrep does with its arguments: [`file`] holds serde
//! structs that mirror the YAML (unknown keys rejected, each value checked as it is read so
//! that errors carry the YAML path, line and column); [`load`] turns them into a [`Config`]
//! whose values are ready to use (parsed URLs, durations, built policy specs). A five-line file
//! is enough:
//!
//! ```yaml
//! models:
//!   llama:
//!     backends:
//!       - url: http://127.0.0.1:8001
//!       - url: http://127.0.0.1:8002
//! ```

mod admin;
pub mod auth;
pub mod decision_log;
mod error;
pub mod file;
pub mod limits;
pub mod policy;
pub mod resilience;
pub mod routes;
pub mod routing;
pub mod traces;
mod values;

pub use admin::{Access, Admin, Secret};
pub use decision_log::DecisionLogConfig;
pub use error::ConfigError;
pub use limits::Limits;
pub use resilience::HealthCheck;
pub use routing::Scrape;
pub use traces::TracingConfig;
pub use values::{ByteSize, Seconds};

use http::uri::{Authority, Scheme};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use switchyard_core::{BreakerConfig, OutlierConfig, PolicySpec};

/// Default listen address: loopback, so a fresh install exposes nothing by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default request body limit: 32 MiB, room for a 128k-token context with images inline.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
/// Default time to open a TCP (and TLS) connection to a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time from sending a request to receiving the response headers. Long prompts on a
/// busy engine can take minutes to prefill, so this is generous.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time to let in-flight requests finish after SIGTERM.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time between SIGTERM and closing the listener, while `/ready` answers 503 so that
/// a load balancer in front (a Kubernetes Service) stops sending new connections first.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// The validated configuration the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the OpenAI-compatible API listens.
    pub listen: SocketAddr,
    /// Requests with a larger body get 413.
    pub max_body_bytes: u64,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// How long in-flight requests may run after a shutdown signal.
    pub drain_timeout: Duration,
    /// After SIGTERM, how long `/ready` answers 503 while the listener still accepts, before
    /// it closes and draining starts. Zero: close at once.
    pub drain_delay: Duration,
    /// What one client connection may cost: client-side timeouts, head size, connection cap.
    pub limits: Limits,
    /// Failover before the first response byte.
    pub retry: Retry,
    /// How engines' metrics are scraped.
    pub scrape: Scrape,
    /// Add `x-switchyard-route` (policy, reason, every candidate's score) to responses.
    pub debug_headers: bool,
    /// Who may use the admin API, and on which listener; `None`: no admin API.
    pub admin: Option<Admin>,
    /// API keys, tenants and their limits; `None`: the API is open to anyone (as before).
    pub auth: Option<auth::Auth>,
    /// The per-pool waiting room; `None`: requests go straight to routing (as before).
    pub admission: Option<auth::Admission>,
    /// Where each request's routing record goes, and how many stay in memory.
    pub decision_log: DecisionLogConfig,
    /// Aliases, rules, splits and mirrors; `None`: a request goes to the pool it names.
    pub routes: Option<routes::Routes>,
    /// OpenTelemetry export; `None`: no spans, no `traceparent` added (set at start only).
    pub tracing: Option<TracingConfig>,
    /// One pool per model name, sorted by name.
    pub models: Vec<PoolConfig>,
}

/// Upstream timeouts: the top-level defaults, and each backend's resolved set (pool and
/// backend `timeouts:` override the top level key by key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection; past it the backend counts as unreachable (502).
    pub connect: Duration,
    /// From request sent to the first byte of the response body (the first token when
    /// streaming); past it the request fails over, or the client gets 504.
    pub first_byte: Duration,
    /// Longest silence between two chunks of a response body once it started; past it a
    /// stream ends with an `upstream_idle_timeout` error event. `None`: no limit.
    pub idle: Option<Duration>,
    /// Longest a whole request may take, arrival to last byte; `None`: no limit.
    pub total: Option<Duration>,
}

/// Failover: how many backends one request may try before the client gets an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Attempts per request, the first included (1 turns failover off).
    pub max_attempts: u32,
    /// Share of a pool's requests that may be retried over a 10 s window.
    pub budget_ratio: f64,
    /// Retries per second a pool may always make, whatever its traffic.
    pub min_per_second: f64,
    /// When every backend of a pool is cooling down (429, ejected, breaker open), how long a
    /// request waits for the first to come back instead of failing at once.
    pub cooldown_wait: Duration,
    /// Base of the jittered exponential backoff between attempts.
    pub backoff_base: Duration,
    /// Longest wait between two attempts, `Retry-After` included.
    pub backoff_max: Duration,
}

/// Default [`Retry::cooldown_wait`].
pub const DEFAULT_COOLDOWN_WAIT: Duration = Duration::from_secs(3);

/// Default attempts per request: the primary and two fallbacks.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// A model name and the backends that serve it.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The model name clients ask for.
    pub name: String,
    /// How to choose among the backends.
    pub policy: PolicySpec,
    /// The backends, in file order.
    pub backends: Vec<BackendConfig>,
    /// Other models to try, in order, when every backend of this one failed.
    pub fallbacks: Vec<String>,
    /// Circuit breaker settings for each backend; `None` when turned off.
    pub breaker: Option<BreakerConfig>,
    /// Passive outlier detection; `None` when turned off.
    pub outlier: Option<OutlierConfig>,
    /// How long a backend that comes back takes to ramp up to a full share; zero: no ramp.
    pub slow_start: Duration,
    /// What its backends inherit (also those added at run time through the admin API).
    pub backend_defaults: file::BackendDefaults,
}

/// One upstream endpoint of a pool.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Unique within the pool; shown in `x-switchyard-backend` and metrics labels.
    pub name: String,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// Path prefix of the backend's OpenAI API with no trailing slash, e.g. `""` for
    /// `http://host:8000` or `""` for `https://api.openai.com/v1` (a trailing `/v1` is folded
    /// into the request path).
    pub base_path: String,
    /// Relative share of traffic.
    pub weight: u32,
    /// Most requests in flight at once; `None` for no cap.
    pub max_concurrency: Option<u32>,
    /// Its own requests and tokens per minute (a hosted provider's limits); unset: none.
    pub limits: switchyard_core::admission::RateLimitSpec,
    /// The model name the backend expects, when it differs from the pool name.
    pub upstream_model: Option<String>,
    /// Sent instead of the client's key, in the header its provider takes
    /// (`Authorization: Bearer`, `x-api-key`, `api-key`).
    pub api_key: Option<String>,
    /// The API it speaks (`provider:`): how requests are sent to it and answers read back.
    pub provider: crate::providers::Provider,
    /// Where the engine's Prometheus metrics are scraped; `None` for not at all.
    pub metrics_uri: Option<http::Uri>,
    /// Where a GPU exporter (DCGM) for this backend is scraped, if anywhere.
    pub gpu_metrics_uri: Option<http::Uri>,
    /// Price per million tokens, for cost-aware policies.
    pub price: Option<switchyard_core::Price>,
    /// Longest prompt plus output the backend accepts.
    pub context_window: Option<u32>,
    /// Relative quality for a cost policy's floor (higher is better).
    pub quality: Option<f64>,
    /// Its timeouts (top level, then pool, then backend settings).
    pub timeouts: Timeouts,
    /// Its active health check; `None` when not checked.
    pub health_check: Option<HealthCheck>,
    /// Its engine as config names it; `None`: detected.
    pub engine: Option<crate::engine_kind::EngineKind>,
    /// Whether the gateway may probe it to detect its engine: not when its `metrics_url` is
    /// `none` (the operator asked that it not be polled).
    pub probe: bool,
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let file: file::ConfigFile =
        serde_norway::from_str(text).map_err(|e| ConfigError::from_yaml(origin, text, &e))?;
    let config = file.into_config();
    check_fallbacks(&config, origin, text)?;
    check_routes(&config, origin, text)?;
    policy::check_rings(&config, origin, text)?;
    Ok(config)
}

/// Every `fallbacks:` entry names another configured model.
fn check_fallbacks(config: &Config, origin: &str, text: &str) -> Result<(), ConfigError> {
    let names: Vec<&str> = config.models.iter().map(|p| p.name.as_str()).collect();
    for pool in &config.models {
        for f in &pool.fallbacks {
            let problem = if *f == pool.name {
                "a model cannot fall back to itself".to_owned()
            } else if !names.contains(&f.as_str()) {
                let mut m = format!("unknown model '{f}'");
                if let Some(near) = error::nearest(f, &names) {
                    m.push_str(&format!("; did you mean '{near}'?"));
                }
                format!("{m} Known models: {}", names.join(", "))
            } else {
                continue;
            };
            return Err(ConfigError::at_text(
                origin,
                text,
                f,
                format!("models.{}.fallbacks: {problem}", pool.name),
            ));
        }
    }
    Ok(())
}

/// Every pool `routes:` names is configured, and no alias hides a pool.
fn check_routes(config: &Config, origin: &str, text: &str) -> Result<(), ConfigError> {
    let Some(routes) = &config.routes else {
        return Ok(());
    };
    let names: Vec<&str> = config.models.iter().map(|p| p.name.as_str()).collect();
    for alias in routes.aliases.keys() {
        if names.contains(&alias.as_str()) {
            return Err(ConfigError::at_text_after(
                origin,
                text,
                "routes",
                alias,
                format!("routes.aliases.{alias}: '{alias}' is already a model in `models:`; an alias cannot hide it (rename the alias or the model)"),
            ));
        }
    }
    for (at, pool) in routes.pools_named() {
        if names.contains(&pool) {
            continue;
        }
        let mut m = format!("{at}: unknown model '{pool}'");
        if let Some(near) = error::nearest(pool, &names) {
            m.push_str(&format!("; did you mean '{near}'?"));
        }
        m.push_str(&format!(" Known models: {}", names.join(", ")));
        return Err(ConfigError::at_text_after(origin, text, "routes", pool, m));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn five_line_config_gets_every_default() {
        let cfg = parse(
            "models:\n  llama:\n    backends:\n      - url: http://127.0.0.1:8001\n      - url: http://127.0.0.1:8002\n",
            "min.yaml",
        )
        .unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(cfg.timeouts.first_byte, DEFAULT_FIRST_BYTE_TIMEOUT);
        let pool = &cfg.models[0];
        assert_eq!(
            (pool.name.as_str(), pool.policy.name()),
            ("llama", "round_robin")
        );
        assert_eq!(pool.backends[1].name, "127.0.0.1:8002");
        assert_eq!(pool.backends[1].weight, 1);
    }

    fn err(text: &str) -> ConfigError {
        parse(text, "c.yaml").unwrap_err()
    }

    #[test]
    fn errors_name_file_line_column_and_fix() {
        let e = err("models:\n  m:\n    backends:\n      - url: http://a:1\n        wieght: 2\n");
        assert_eq!((e.line, e.column), (Some(5), Some(9)));
        assert!(e
            .to_string()
            .starts_with("c.yaml:5:9: models.m.backends[0]: unknown field `wieght`"));
        assert!(e.message.contains("did you mean `weight`?"), "{e}");

        let e = err(
            "models:\n  m:\n    policy: round_robbin\n    backends:\n      - url: http://a:1\n",
        );
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("did you mean 'round_robin'?"), "{e}");

        let e =
            err("models:\n  m:\n    backends:\n      - url: http://a:1\n      - url: http://a:1\n");
        assert!(e.message.contains("duplicate backend 'a:1'"), "{e}");
        assert!(e.message.contains("distinct `name:`"), "{e}");

        let e = err("models:\n  m:\n    backends: []\n");
        assert!(e.message.contains("no backends"), "{e}");

        let e = err("models:\n  m:\n    backends:\n      - url: localhost:8000\n");
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("http://host:port"), "{e}");

        let e = err("models:\n  m:\n    policy: {name: consistent_hash, load_factor: 0.5}\n    backends:\n      - url: http://a:1\n");
        assert!(
            e.message.contains("load_factor must be a number above 1.0"),
            "{e}"
        );

        for size in ["2GiB", "0"] {
            let e = err(&format!(
                "max_body_bytes: {size}\nmodels:\n  m:\n    backends:\n      - url: http://a:1\n"
            ));
            assert_eq!(e.line, Some(1), "{e}");
            assert!(e.message.contains("at most 1GiB"), "{e}");
        }

        let e = err("listen: nowhere\nmodels: {}\n");
        assert!(e.message.contains("ip:port"), "{e}");
        assert!(err("").message.contains("empty"));
    }

    #[test]
    fn decision_log_is_off_by_default_and_validated() {
        let base = "models:\n  m:\n    backends:\n      - url: http://a:1\n";
        let off = parse(base, "c.yaml").unwrap().decision_log;
        assert_eq!(off.sink, None);
        assert_eq!(off.ring, decision_log::DEFAULT_RING);
        let on = parse(
            &format!("decision_log: {{sample: 0.1, path: /tmp/d.jsonl, max_bytes: 1MB, keep: 3, ring: 50}}\n{base}"),
            "c.yaml",
        )
        .unwrap()
        .decision_log;
        assert_eq!(on.sample, 0.1);
        assert_eq!(on.ring, 50);
        assert_eq!(
            on.sink,
            Some(decision_log::Sink::File {
                path: "/tmp/d.jsonl".into(),
                max_bytes: 1_000_000,
                keep: 3
            })
        );
        let out = parse(&format!("decision_log: {{path: stdout}}\n{base}"), "c.yaml").unwrap();
        assert_eq!(out.decision_log.sink, Some(decision_log::Sink::Stdout));
        for (bad, says) in [
            ("{sample: 1.5}", "from 0 to 1"),
            ("{ring: 0}", "out of range"),
            ("{path: \"\"}", "path is empty"),
            ("{path: /tmp/x, keep: 0}", "keep is 0"),
            ("{path: /tmp/x, max_bytes: 10}", "at least 1KB"),
            ("{keep: 2}", "add `path:`"),
            ("{smaple: 0.1}", "smaple"),
        ] {
            let e = err(&format!("decision_log: {bad}\n{base}"));
            assert!(e.message.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn admin_section_is_safe_by_default() {
        let base = "models:\n  m:\n    backends:\n      - url: http://a:1\n";
        assert_eq!(parse(base, "c.yaml").unwrap().admin, None);
        let ok = parse(&format!("admin:\n  token: t0k\n{base}"), "c.yaml").unwrap();
        let admin = ok.admin.unwrap();
        assert_eq!(admin.listen, None);
        assert!(admin.token.is_some_and(|t| t.matches(b"t0k")));
        let ok = parse(
            &format!("admin: {{listen: 127.0.0.1:9090}}\n{base}"),
            "c.yaml",
        )
        .unwrap();
        assert!(ok.admin.is_some_and(|a| a.token.is_none()));

        let e = err(&format!("admin: {{}}\n{base}"));
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("needs a `token:`"), "{e}");
        let e = err(&format!("admin: {{listen: 0.0.0.0:9090}}\n{base}"));
        assert!(e.message.contains("needs a `token:`"), "{e}");
        let e = err(&format!("admin: {{token: \"\"}}\n{base}"));
        assert!(e.message.contains("admin.token is empty"), "{e}");
        let e = err(&format!("admin:\n  tokne: x\n{base}"));
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("did you mean `token`?"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn random_bytes_never_panic_the_loader(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&String::from_utf8_lossy(&bytes), "fuzz.yaml");
        }

        #[test]
        fn random_yaml_shapes_never_panic_the_loader(
            keys in prop::collection::vec(prop_oneof![
                Just("models"), Just("backends"), Just("url"), Just("policy"), Just("weight"),
                Just("name"), Just("listen"), Just("timeouts"), Just("max_body_bytes"), Just("m"),
                Just("load_factor"), Just("max_concurrency"), Just("api_key"), Just("- url"),
            ], 1..12),
            values in prop::collection::vec(prop_oneof![
                Just("http://a:1"), Just("1"), Just("-3"), Just("[]"), Just("{}"), Just(""),
                Just("consistent_hash"), Just("${NOPE}"), Just("1e400"), Just("ftp://x"), Just("null"),
            ], 1..12),
            indents in prop::collection::vec(0usize..4, 1..12),
        ) {
            let mut text = String::new();
            for ((k, v), i) in keys.iter().zip(values.iter().cycle()).zip(indents.iter().cycle()) {
                text.push_str(&format!("{}{k}: {v}\n", "  ".repeat(*i)));
            }
            let _ = parse(&text, "fuzz.yaml");
        }
    }
}
