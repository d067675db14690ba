//! The resilience part of the config: timeouts, active health checks, the circuit breaker,
//! outlier detection and slow start, as written in the file (pool-level, with per-backend
//! overrides for timeouts and health checks) and as the server runs them.
//!
//! ```yaml
//! timeouts: {connect: 5s, first_byte: 300s, idle: 60s, total: 10m}   # top level: defaults
//! models:
//!   llama:
//!     timeouts: {first_byte: 30s}          # this pool's backends
//!     health_check: {path: /health, interval: 5s, timeout: 2s, unhealthy_threshold: 3, healthy_threshold: 2}
//!     breaker: {failures: 5, window: 10s, open_for: 5s, probes: 1, successes: 2}
//!     outlier_detection: {consecutive_failures: 5, base_ejection: 10s, max_ejection: 5m, max_ejected_share: 0.5}
//!     slow_start: 30s
//!     fallbacks: [other-model]
//!     backends:
//!       - url: http://10.0.0.1:8000
//!         timeouts: {first_byte: 60s}      # this backend only
//!         health_check: {path: /v1/models}
//! ```
//!
//! Every key is optional; unknown keys are rejected with the same located errors as the rest
//! of the file.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::time::Duration;
use switchyard_core::{breaker, outlier, BreakerConfig, OutlierConfig};

use super::values::Seconds;

/// Default time between two health checks of a backend.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Default time a health check may take before it counts as failed.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Default failed checks in a row that mark a backend down.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default passed checks in a row that mark a down backend up again.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default health check path (vLLM, SGLang, TGI and llama.cpp all answer it).
pub const DEFAULT_HEALTH_PATH: &str = "/health";
/// Default slow-start window.
pub const DEFAULT_SLOW_START: Duration = Duration::from_secs(30);
/// Default longest wait between two streamed chunks.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `timeouts:` at the top level, in a pool, or in a backend; each level overrides the one
/// above it key by key.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Connection establishment; above 0.
    #[serde(default, deserialize_with = "connect")]
    pub connect: Option<Seconds>,
    /// Request sent to the first byte of the response body (time to first token); above 0.
    #[serde(default, deserialize_with = "first_byte")]
    pub first_byte: Option<Seconds>,
    /// Longest silence between two chunks of a response body; `0` turns it off.
    pub idle: Option<Seconds>,
    /// Whole request, from arrival to the end of the response; `0` (the default) turns it off.
    pub total: Option<Seconds>,
}

impl TimeoutsFile {
    /// `self` with the keys `over` sets replaced.
    pub fn overridden_by(self, over: Option<TimeoutsFile>) -> TimeoutsFile {
        let Some(o) = over else { return self };
        TimeoutsFile {
            connect: o.connect.or(self.connect),
            first_byte: o.first_byte.or(self.first_byte),
            idle: o.idle.or(self.idle),
            total: o.total.or(self.total),
        }
    }

    /// The runtime form, defaults filled in.
    pub fn resolve(self) -> super::Timeouts {
        let off_if_zero = |d: Duration| (!d.is_zero()).then_some(d);
        super::Timeouts {
            connect: self.connect.map_or(super::DEFAULT_CONNECT_TIMEOUT, |s| s.0),
            first_byte: self
                .first_byte
                .map_or(super::DEFAULT_FIRST_BYTE_TIMEOUT, |s| s.0),
            idle: self
                .idle
                .map_or(Some(DEFAULT_IDLE_TIMEOUT), |s| off_if_zero(s.0)),
            total: self.total.and_then(|s| off_if_zero(s.0)),
        }
    }
}

/// How a backend is actively checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path requested with GET; any 2xx is a pass.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Failed checks in a row that mark the backend down.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that mark it up again.
    pub healthy_threshold: u32,
}

/// `health_check:` in a pool (turns checks on for its backends, `{}` for all defaults) or in
/// a backend (overrides the pool's keys; `enabled: false` exempts it).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// `false` turns checks off here.
    pub enabled: Option<bool>,
    /// Path to GET, starting with `/`.
    #[serde(default, deserialize_with = "path")]
    pub path: Option<String>,
    /// Time between checks, at least [`MIN_HEALTH_INTERVAL`].
    #[serde(default, deserialize_with = "health_interval")]
    pub interval: Option<Seconds>,
    /// Time a check may take; above 0.
    #[serde(default, deserialize_with = "health_timeout")]
    pub timeout: Option<Seconds>,
    /// Failed checks in a row that mark a backend down.
    #[serde(default, deserialize_with = "at_least_one")]
    pub unhealthy_threshold: Option<u32>,
    /// Passed checks in a row that mark it up again.
    #[serde(default, deserialize_with = "at_least_one")]
    pub healthy_threshold: Option<u32>,
}

/// The health check of a backend from its pool's and its own settings; `None` when off.
pub fn health_check(
    pool: Option<&HealthCheckFile>,
    backend: Option<&HealthCheckFile>,
) -> Option<HealthCheck> {
    if pool.is_none() && backend.is_none() {
        return None;
    }
    let (p, b) = (pool.cloned().unwrap_or_default(), backend.cloned());
    let pick = |f: fn(&HealthCheckFile) -> Option<Seconds>| {
        b.as_ref().and_then(f).or_else(|| f(&p)).map(|s| s.0)
    };
    let b_or_p_u32 = |f: fn(&HealthCheckFile) -> Option<u32>| b.as_ref().and_then(f).or(f(&p));
    let enabled = b
        .as_ref()
        .and_then(|b| b.enabled)
        .or(p.enabled)
        .unwrap_or(true);
    enabled.then(|| HealthCheck {
        path: b
            .as_ref()
            .and_then(|b| b.path.clone())
            .or(p.path.clone())
            .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_owned()),
        interval: pick(|h| h.interval).unwrap_or(DEFAULT_HEALTH_INTERVAL),
        timeout: pick(|h| h.timeout).unwrap_or(DEFAULT_HEALTH_TIMEOUT),
        unhealthy_threshold: b_or_p_u32(|h| h.unhealthy_threshold)
            .unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD),
        healthy_threshold: b_or_p_u32(|h| h.healthy_threshold).unwrap_or(DEFAULT_HEALTHY_THRESHOLD),
    })
}

/// Shortest time between two health checks of a backend: a shorter one hammers the backend
/// with checks (and zero cannot run at all).
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(10);

fn health_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Seconds>, D::Error> {
    super::values::at_least(
        d,
        MIN_HEALTH_INTERVAL,
        "health_check.interval must be at least 10ms (checks would run back to back); the default is 5s",
    )
}

fn health_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Seconds>, D::Error> {
    super::values::at_least(
        d,
        Duration::from_nanos(1),
        "health_check.timeout must be above 0 (every check would fail); the default is 2s",
    )
}

fn connect<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Seconds>, D::Error> {
    super::values::at_least(
        d,
        Duration::from_nanos(1),
        "timeouts.connect must be above 0 (no connection could open); the default is 5s",
    )
}

fn first_byte<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Seconds>, D::Error> {
    super::values::at_least(
        d,
        Duration::from_nanos(1),
        "timeouts.first_byte cannot be turned off, and 0 would time out every request; set a long one such as 10m (the default is 300s)",
    )
}

/// `breaker:` in a pool. On by default; `enabled: false` turns it off.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    /// `false` turns the breaker off.
    pub enabled: Option<bool>,
    /// Failures within `window` that open it, 1 to [`MAX_BREAKER_FAILURES`].
    #[serde(default, deserialize_with = "breaker_failures")]
    pub failures: Option<u32>,
    /// How far back failures count.
    pub window: Option<Seconds>,
    /// How long it stays open before probing.
    pub open_for: Option<Seconds>,
    /// Probes in flight at once while half-open.
    #[serde(default, deserialize_with = "at_least_one")]
    pub probes: Option<u32>,
    /// Successful probes that close it.
    #[serde(default, deserialize_with = "at_least_one")]
    pub successes: Option<u32>,
}

impl BreakerFile {
    /// The runtime form; `None` when turned off.
    pub fn resolve(f: Option<BreakerFile>) -> Option<BreakerConfig> {
        let f = f.unwrap_or_default();
        f.enabled.unwrap_or(true).then(|| BreakerConfig {
            failure_threshold: f.failures.unwrap_or(breaker::DEFAULT_FAILURE_THRESHOLD),
            window: f.window.map_or(breaker::DEFAULT_WINDOW, |s| s.0),
            open_for: f.open_for.map_or(breaker::DEFAULT_OPEN_FOR, |s| s.0),
            probes: f.probes.unwrap_or(breaker::DEFAULT_PROBES),
            success_threshold: f.successes.unwrap_or(breaker::DEFAULT_SUCCESS_THRESHOLD),
        })
    }
}

/// `outlier_detection:` in a pool. On by default; `enabled: false` turns it off.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierFile {
    /// `false` turns detection off.
    pub enabled: Option<bool>,
    /// Failures in a row that eject a backend.
    #[serde(default, deserialize_with = "at_least_one")]
    pub consecutive_failures: Option<u32>,
    /// First ejection's length; the n-th lasts n times as long.
    pub base_ejection: Option<Seconds>,
    /// Longest ejection.
    pub max_ejection: Option<Seconds>,
    /// Most of the pool ejected at once, 0 to 1 (one backend always stays in).
    #[serde(default, deserialize_with = "share")]
    pub max_ejected_share: Option<f64>,
}

impl OutlierFile {
    /// The runtime form; `None` when turned off.
    pub fn resolve(f: Option<OutlierFile>) -> Option<OutlierConfig> {
        let f = f.unwrap_or_default();
        f.enabled.unwrap_or(true).then(|| OutlierConfig {
            consecutive_failures: f
                .consecutive_failures
                .unwrap_or(outlier::DEFAULT_CONSECUTIVE_FAILURES),
            base_ejection: f
                .base_ejection
                .map_or(outlier::DEFAULT_BASE_EJECTION, |s| s.0),
            max_ejection: f
                .max_ejection
                .map_or(outlier::DEFAULT_MAX_EJECTION, |s| s.0),
            max_ejected_share: f.max_ejected_share,
        })
    }
}

/// Most failures a breaker may count before opening: it keeps the time of each one within
/// its window, so the count bounds its memory.
pub const MAX_BREAKER_FAILURES: u32 = 10_000;

fn breaker_failures<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = at_least_one(d)?;
    if n.is_some_and(|n| n > MAX_BREAKER_FAILURES) {
        return Err(de::Error::custom(format!(
            "breaker.failures must be at most {MAX_BREAKER_FAILURES} (the breaker keeps the time of each failure in its window); the default is 5, and `enabled: false` turns the breaker off"
        )));
    }
    Ok(n)
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = u32::deserialize(d)?;
    if n == 0 {
        return Err(de::Error::custom(
            "this count must be at least 1 (set `enabled: false` to turn the feature off)",
        ));
    }
    Ok(Some(n))
}

fn share<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let x = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&x) {
        return Err(de::Error::custom(format!(
            "max_ejected_share is a share of the pool between 0 and 1, got {x}"
        )));
    }
    Ok(Some(x))
}

fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let p = String::deserialize(d)?;
    if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(de::Error::custom(format!(
            "health check path '{p}' must be a path starting with '/', e.g. /health or /v1/models"
        )));
    }
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_health_settings_override_the_pool_key_by_key() {
        let pool = HealthCheckFile {
            interval: Some(Seconds(Duration::from_secs(1))),
            unhealthy_threshold: Some(4),
            ..Default::default()
        };
        let backend = HealthCheckFile {
            path: Some("/v1/models".into()),
            unhealthy_threshold: Some(1),
            ..Default::default()
        };
        let h = health_check(Some(&pool), Some(&backend)).unwrap();
        assert_eq!(h.path, "/v1/models");
        assert_eq!(h.interval, Duration::from_secs(1));
        assert_eq!((h.unhealthy_threshold, h.healthy_threshold), (1, 2));
        assert_eq!(health_check(None, None), None);
        let off = HealthCheckFile {
            enabled: Some(false),
            ..Default::default()
        };
        assert_eq!(health_check(Some(&pool), Some(&off)), None);
    }

    fn err(text: &str) -> super::super::ConfigError {
        super::super::parse(text, "c.yaml").unwrap_err()
    }

    #[test]
    fn bad_resilience_settings_are_located_and_explained() {
        let e = err("models:\n  m:\n    health_check: {intreval: 1s}\n    backends:\n      - url: http://a:1\n");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("did you mean `interval`?"), "{e}");
        let e = err("models:\n  m:\n    health_check: {path: health}\n    backends:\n      - url: http://a:1\n");
        assert!(
            e.message.contains("must be a path starting with '/'"),
            "{e}"
        );
        let e = err(
            "models:\n  m:\n    breaker: {failures: 0}\n    backends:\n      - url: http://a:1\n",
        );
        assert!(e.message.contains("at least 1"), "{e}");
        let e = err(
            "models:\n  m:\n    backends:\n      - url: http://a:1\n        timeouts: {ttft: 1s}\n",
        );
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("unknown field `ttft`"), "{e}");
        let e = err("models:\n  m:\n    outlier_detection: {max_ejected_share: 2}\n    backends:\n      - url: http://a:1\n");
        assert!(e.message.contains("between 0 and 1"), "{e}");
    }

    #[test]
    fn values_that_would_panic_spin_or_overflow_are_refused_with_the_key() {
        let pool = |extra: &str| {
            format!("models:\n  m:\n    {extra}\n    backends:\n      - url: http://a:1\n")
        };
        for (extra, says) in [
            (
                "health_check: {interval: 0}",
                "health_check.interval must be at least 10ms",
            ),
            (
                "health_check: {interval: 1ms}",
                "health_check.interval must be at least 10ms",
            ),
            (
                "health_check: {timeout: 0}",
                "health_check.timeout must be above 0",
            ),
            ("timeouts: {connect: 0}", "timeouts.connect must be above 0"),
            (
                "timeouts: {first_byte: 0}",
                "timeouts.first_byte cannot be turned off",
            ),
            (
                "timeouts: {first_byte: 1e19}",
                "longest duration the config takes",
            ),
            (
                "timeouts: {total: 1e19}",
                "longest duration the config takes",
            ),
            (
                "breaker: {failures: 4000000000}",
                "breaker.failures must be at most 10000",
            ),
            (
                "breaker: {open_for: 1e19}",
                "longest duration the config takes",
            ),
            (
                "outlier_detection: {max_ejection: 1e19}",
                "longest duration the config takes",
            ),
            ("slow_start: 1e19", "longest duration the config takes"),
        ] {
            let e = err(&pool(extra));
            assert_eq!(e.line, Some(3), "{extra}: {e}");
            assert!(e.message.contains(says), "{extra}: {e}");
        }
        let e = err("drain_timeout: 1e19\nmodels:\n  m:\n    backends:\n      - url: http://a:1\n");
        assert_eq!((e.line, e.column), (Some(1), Some(16)), "{e}");
        let e =
            err("scrape: {timeout: 0}\nmodels:\n  m:\n    backends:\n      - url: http://a:1\n");
        assert!(e.message.contains("scrape.timeout must be above 0"), "{e}");
        let e = err(
            "retry: {backoff_max: 9000h}\nmodels:\n  m:\n    backends:\n      - url: http://a:1\n",
        );
        assert!(e.message.contains("365 days"), "{e}");
        // The limits themselves are accepted.
        assert!(super::super::parse(
            &pool("health_check: {interval: 10ms, timeout: 8760h}\n    breaker: {failures: 10000}"),
            "c.yaml"
        )
        .is_ok());
    }

    #[test]
    fn timeouts_resolve_top_then_pool_then_backend() {
        let cfg = super::super::parse(
            "timeouts: {connect: 1s, first_byte: 9s}\nmodels:\n  m:\n    timeouts: {first_byte: 8s, idle: 0}\n    backends:\n      - url: http://a:1\n        timeouts: {total: 1m}\n      - url: http://b:1\n",
            "c.yaml",
        )
        .unwrap();
        let a = cfg.models[0].backends[0].timeouts;
        let b = cfg.models[0].backends[1].timeouts;
        assert_eq!(a.connect, Duration::from_secs(1));
        assert_eq!(
            (a.first_byte, a.idle, a.total),
            (Duration::from_secs(8), None, Some(Duration::from_secs(60)))
        );
        assert_eq!(b.total, None);
        assert_eq!(cfg.timeouts.idle, Some(DEFAULT_IDLE_TIMEOUT));
        // Resilience is on by default except active checks, which need `health_check:`.
        let pool = &cfg.models[0];
        assert!(pool.breaker.is_some() && pool.outlier.is_some());
        assert_eq!(pool.backends[0].health_check, None);
        assert_eq!(pool.slow_start, DEFAULT_SLOW_START);
    }

    #[test]
    fn zero_idle_and_total_mean_off() {
        let t = TimeoutsFile {
            idle: Some(Seconds(Duration::ZERO)),
            ..Default::default()
        }
        .resolve();
        assert_eq!((t.idle, t.total), (None, None));
        assert_eq!(
            TimeoutsFile::default().resolve().idle,
            Some(DEFAULT_IDLE_TIMEOUT)
        );
    }
}
