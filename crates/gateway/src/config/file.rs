//! The config file as written: serde structs that mirror the YAML. Unknown keys are rejected;
//! values check themselves (see [`super::values`]); pools check they are non-empty and that
//! backend names are unique as they are read, so every error has a line and column.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use switchyard_core::admission::RateLimitSpec;

pub use super::resilience::TimeoutsFile;
use super::resilience::{self, BreakerFile, HealthCheckFile, OutlierFile};
use super::routing::{default_metrics_uri, MetricsUrl, PriceFile, ScrapeFile};
use super::values::{BackendUrl, ByteSize, EnvString, PolicyValue, Seconds};
use super::{BackendConfig, Config, PoolConfig};
use crate::providers::{Provider, ProviderKind};
use switchyard_core::{backoff, retry_budget, PolicySpec};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `host:port` to listen on.
    #[serde(default)]
    pub listen: Option<ListenAddr>,
    /// Request body limit.
    #[serde(default, deserialize_with = "super::limits::body_bytes")]
    pub max_body_bytes: Option<ByteSize>,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: Option<TimeoutsFile>,
    /// Grace period for in-flight requests on shutdown.
    #[serde(default)]
    pub drain_timeout: Option<Seconds>,
    /// Not-ready period between SIGTERM and closing the listener.
    #[serde(default)]
    pub drain_delay: Option<Seconds>,
    /// Client connection limits.
    #[serde(default)]
    pub limits: Option<super::limits::LimitsFile>,
    /// Failover settings.
    #[serde(default)]
    pub retry: Option<RetryFile>,
    /// Engine metric scraping.
    #[serde(default)]
    pub scrape: Option<ScrapeFile>,
    /// Debug response headers.
    #[serde(default)]
    pub debug_headers: Option<bool>,
    /// Admin API access; no admin API when absent.
    #[serde(default)]
    pub admin: Option<super::Admin>,
    /// API keys and tenants; open API when absent.
    #[serde(default)]
    pub auth: Option<super::auth::Auth>,
    /// Admission queue; none when absent.
    #[serde(default)]
    pub admission: Option<super::auth::Admission>,
    /// Per-request routing records; only in memory when absent.
    #[serde(default)]
    pub decision_log: Option<super::DecisionLogConfig>,
    /// Aliases, rules, splits and mirrors; requests go to the pool they name when absent.
    #[serde(default)]
    pub routes: Option<super::routes::Routes>,
    /// OpenTelemetry export; off when absent.
    #[serde(default)]
    pub tracing: Option<super::TracingConfig>,
    /// Model name -> pool.
    pub models: BTreeMap<String, PoolFile>,
}

/// `retry:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Attempts per request, 1 to 10.
    #[serde(default, deserialize_with = "attempts")]
    pub max_attempts: Option<u32>,
    /// Share of requests that may be retried, 0 to 1.
    #[serde(default, deserialize_with = "share")]
    pub budget_ratio: Option<f64>,
    /// Retries per second always allowed.
    #[serde(default, deserialize_with = "non_negative")]
    pub min_per_second: Option<f64>,
    /// How long to wait for a cooling-down pool.
    #[serde(default)]
    pub cooldown_wait: Option<Seconds>,
    /// Base of the backoff between attempts.
    #[serde(default)]
    pub backoff_base: Option<Seconds>,
    /// Longest wait between attempts.
    #[serde(default)]
    pub backoff_max: Option<Seconds>,
}

fn share<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let x = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&x) {
        return Err(de::Error::custom(format!(
            "budget_ratio is a share of requests between 0 and 1 (default 0.2), got {x}"
        )));
    }
    Ok(Some(x))
}

fn non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let x = f64::deserialize(d)?;
    if !(x.is_finite() && x >= 0.0) {
        return Err(de::Error::custom(format!(
            "min_per_second must be a number >= 0 (default 10), got {x}"
        )));
    }
    Ok(Some(x))
}

fn attempts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = u32::deserialize(d)?;
    if !(1..=10).contains(&n) {
        return Err(de::Error::custom(format!(
            "max_attempts must be between 1 (no failover) and 10, got {n}"
        )));
    }
    Ok(Some(n))
}

/// One model's pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    /// Balancing policy; `round_robin` when absent.
    #[serde(default)]
    pub policy: Option<PolicyValue>,
    /// The backends.
    pub backends: Backends,
    /// Timeouts for this pool's backends, over the top-level ones.
    #[serde(default)]
    pub timeouts: Option<TimeoutsFile>,
    /// Active health checks for this pool's backends; absent: not checked.
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
    /// Circuit breaker per backend.
    #[serde(default)]
    pub breaker: Option<BreakerFile>,
    /// Passive outlier detection.
    #[serde(default)]
    pub outlier_detection: Option<OutlierFile>,
    /// Slow-start window; `0` turns it off.
    #[serde(default)]
    pub slow_start: Option<Seconds>,
    /// Models to try when this one's backends all failed.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// One backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// Where it is.
    pub url: BackendUrl,
    /// Name in headers and metrics; `host:port` of the url when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Share of traffic; 1 when absent.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Cap on requests in flight; none when absent.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Requests per minute it accepts (a hosted provider's own limit); none when absent.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens (prompt plus expected output) per minute it accepts; none when absent.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Model name the backend expects, when not the pool's.
    #[serde(default)]
    pub model: Option<String>,
    /// API key, usually `${ENV_VAR}`; must fit in a header.
    #[serde(default, deserialize_with = "super::values::api_key")]
    pub api_key: Option<EnvString>,
    /// Engine metrics URL, or `none`.
    #[serde(default)]
    pub metrics_url: Option<MetricsUrl>,
    /// GPU exporter URL, or `none`.
    #[serde(default)]
    pub gpu_metrics_url: Option<MetricsUrl>,
    /// Price per million tokens.
    #[serde(default)]
    pub price: Option<PriceFile>,
    /// Context window in tokens.
    #[serde(default)]
    pub context_window: Option<u32>,
    /// Relative quality score.
    #[serde(default, deserialize_with = "super::routing::quality")]
    pub quality: Option<f64>,
    /// Timeouts for this backend, over the pool's.
    #[serde(default)]
    pub timeouts: Option<TimeoutsFile>,
    /// Health check settings over the pool's (`enabled: false` exempts this backend).
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
    /// The engine (`vllm`, `sglang`, `llamacpp`, `tgi`, `hosted`) when it should not be
    /// detected.
    #[serde(default)]
    pub engine: Option<crate::engine_kind::EngineKind>,
    /// The API it speaks: `openai` (default), `anthropic` or `azure`.
    #[serde(default)]
    pub provider: Option<ProviderKind>,
    /// Azure's `api-version` query value (only with `provider: azure`).
    #[serde(default)]
    pub api_version: Option<String>,
}

impl BackendFile {
    fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.url.authority.to_string())
    }

    /// The runtime form of `provider:` (and `api_version:`).
    fn provider(&self) -> Provider {
        match self.provider.unwrap_or_default() {
            ProviderKind::Openai => Provider::OpenAi,
            ProviderKind::Anthropic => Provider::Anthropic,
            ProviderKind::Azure => Provider::Azure {
                api_version: self
                    .api_version
                    .clone()
                    .unwrap_or_else(|| crate::providers::DEFAULT_AZURE_API_VERSION.to_owned()),
            },
        }
    }

    /// A problem with `provider:` and `api_version:` together, if any.
    fn provider_problem(&self) -> Option<String> {
        let kind = self.provider.unwrap_or_default();
        let version = self.api_version.as_deref()?;
        if kind != ProviderKind::Azure {
            return Some(format!(
                "backend '{}' has api_version but is not `provider: azure`; remove api_version or set the provider",
                self.name()
            ));
        }
        let ok = !version.is_empty()
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        (!ok).then(|| {
            format!(
                "backend '{}' has api_version '{version}'; write a version like 2024-10-21 (letters, digits, '-' and '.')",
                self.name()
            )
        })
    }

    /// The runtime form: this backend's settings over its pool's `defaults`.
    pub fn into_backend_config(self, defaults: &BackendDefaults) -> BackendConfig {
        let provider = self.provider();
        // A hosted API has no engine to detect and no metrics page: unless the config says
        // otherwise, it is neither probed nor scraped.
        let hosted = provider != Provider::OpenAi;
        let metrics_url = match self.metrics_url.clone() {
            None if hosted => Some(MetricsUrl::Off),
            other => other,
        };
        let engine = match self.engine {
            None if hosted => Some(crate::engine_kind::EngineKind::Hosted),
            other => other,
        };
        BackendConfig {
            provider,
            timeouts: defaults.timeouts.overridden_by(self.timeouts).resolve(),
            health_check: resilience::health_check(
                defaults.health_check.as_ref(),
                self.health_check.as_ref(),
            ),
            name: self.name(),
            metrics_uri: default_metrics_uri(
                metrics_url.as_ref(),
                &self.url.scheme,
                &self.url.authority,
                &self.url.base_path,
            ),
            gpu_metrics_uri: match self.gpu_metrics_url {
                Some(MetricsUrl::At(u)) => Some(u),
                _ => None,
            },
            price: self.price.map(|p| switchyard_core::Price {
                input_per_mtok: p.input,
                output_per_mtok: p.output,
            }),
            context_window: self.context_window,
            quality: self.quality,
            scheme: self.url.scheme,
            authority: self.url.authority,
            base_path: self.url.base_path,
            weight: self.weight.unwrap_or(1),
            max_concurrency: self.max_concurrency,
            limits: RateLimitSpec {
                rpm: self.rpm,
                tpm: self.tpm,
                max_concurrent: None,
            },
            upstream_model: self.model,
            api_key: self.api_key.map(|k| k.0),
            engine,
            probe: !matches!(metrics_url, Some(MetricsUrl::Off)),
        }
    }
}

/// What a pool's backends inherit unless they set it themselves: the timeouts (top level, then
/// pool) and the pool's health check. Kept in the runtime config so that a backend added
/// through the admin API inherits the same.
#[derive(Debug, Clone, Default)]
pub struct BackendDefaults {
    /// Top-level timeouts with the pool's keys over them.
    pub timeouts: TimeoutsFile,
    /// The pool's `health_check:`, if any.
    pub health_check: Option<HealthCheckFile>,
}

/// A pool's backends: at least one, names unique.
#[derive(Debug)]
pub struct Backends(pub Vec<BackendFile>);

impl<'de> Deserialize<'de> for Backends {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Backends;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of backends, each with at least a `url`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Backends, A::Error> {
                let mut out: Vec<BackendFile> = Vec::new();
                while let Some(b) = seq.next_element::<BackendFile>()? {
                    if let Some(w) = b.weight.filter(|w| *w == 0) {
                        return Err(de::Error::custom(format!(
                            "backend '{}' has weight {w}; weights start at 1 (remove the backend to send it nothing)",
                            b.name()
                        )));
                    }
                    if b.rpm == Some(0) || b.tpm == Some(0) {
                        return Err(de::Error::custom(format!(
                            "backend '{}' has rpm or tpm 0, so it could never take a request; remove the key for no limit",
                            b.name()
                        )));
                    }
                    if b.max_concurrency == Some(0) {
                        return Err(de::Error::custom(format!(
                            "backend '{}' has max_concurrency 0, so it could never take a request; remove the key for no cap",
                            b.name()
                        )));
                    }
                    if let Some(problem) = b.provider_problem() {
                        return Err(de::Error::custom(problem));
                    }
                    let name = b.name();
                    if let Some(i) = out.iter().position(|o| o.name() == name) {
                        return Err(de::Error::custom(format!(
                            "duplicate backend '{name}' (backends #{} and #{} have the same name{}); give one a distinct `name:` or remove it",
                            i + 1,
                            out.len() + 1,
                            if b.name.is_none() { ", taken from the url" } else { "" }
                        )));
                    }
                    out.push(b);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "the pool has no backends; list at least one `- url: http://host:port`",
                    ));
                }
                Ok(Backends(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// `listen:` as a socket address.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddr(pub std::net::SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(ListenAddr).map_err(|_| {
            de::Error::custom(format!(
                "'{s}' is not a listen address; write ip:port, e.g. 0.0.0.0:8080 or 127.0.0.1:8080"
            ))
        })
    }
}

impl ConfigFile {
    /// The runtime config, defaults filled in.
    pub fn into_config(self) -> Config {
        let timeouts = self.timeouts.unwrap_or_default();
        Config {
            listen: self.listen.map(|l| l.0).unwrap_or_else(|| {
                super::DEFAULT_LISTEN
                    .parse()
                    .expect("default listen address parses")
            }),
            max_body_bytes: self
                .max_body_bytes
                .map_or(super::DEFAULT_MAX_BODY_BYTES, |b| b.0),
            timeouts: timeouts.resolve(),
            admin: self.admin,
            auth: self.auth,
            admission: self.admission,
            decision_log: self.decision_log.unwrap_or_default(),
            routes: self.routes,
            tracing: self.tracing,
            drain_timeout: self
                .drain_timeout
                .map_or(super::DEFAULT_DRAIN_TIMEOUT, |s| s.0),
            drain_delay: self.drain_delay.map_or(super::DEFAULT_DRAIN_DELAY, |s| s.0),
            limits: self.limits.unwrap_or_default().resolve(),
            retry: {
                let r = self.retry.unwrap_or_default();
                super::Retry {
                    max_attempts: r.max_attempts.unwrap_or(super::DEFAULT_MAX_ATTEMPTS),
                    budget_ratio: r.budget_ratio.unwrap_or(retry_budget::DEFAULT_RATIO),
                    min_per_second: r
                        .min_per_second
                        .unwrap_or(retry_budget::DEFAULT_MIN_PER_SECOND),
                    cooldown_wait: r
                        .cooldown_wait
                        .map_or(super::DEFAULT_COOLDOWN_WAIT, |s| s.0),
                    backoff_base: r.backoff_base.map_or(backoff::DEFAULT_BASE, |s| s.0),
                    backoff_max: r.backoff_max.map_or(backoff::DEFAULT_MAX, |s| s.0),
                }
            },
            scrape: self.scrape.unwrap_or_default().resolve(),
            debug_headers: self.debug_headers.unwrap_or(false),
            models: self
                .models
                .into_iter()
                .map(|(name, pool)| {
                    let defaults = BackendDefaults {
                        timeouts: timeouts.overridden_by(pool.timeouts),
                        health_check: pool.health_check.clone(),
                    };
                    PoolConfig {
                        name,
                        policy: pool.policy.map_or_else(PolicySpec::default, |p| p.0),
                        fallbacks: pool.fallbacks,
                        breaker: BreakerFile::resolve(pool.breaker),
                        outlier: OutlierFile::resolve(pool.outlier_detection),
                        slow_start: pool
                            .slow_start
                            .map_or(resilience::DEFAULT_SLOW_START, |s| s.0),
                        backends: pool
                            .backends
                            .0
                            .into_iter()
                            .map(|b| b.into_backend_config(&defaults))
                            .collect(),
                        backend_defaults: defaults,
                    }
                })
                .collect(),
        }
    }
}
