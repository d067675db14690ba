//! `tracing:` — OpenTelemetry spans exported over OTLP/HTTP (see [`crate::otel`]).
//!
//! ```yaml
//! tracing:
//!   otlp_endpoint: http://127.0.0.1:4318   # the collector; `/v1/traces` is added when absent
//!   service_name: switchyard               # `service.name` of every span
//!   sample: 1.0                            # share of new traces kept (a client's sampled flag stands)
//!   export_interval: 5s                    # how often the batch goes out
//! ```
//!
//! Off by default: without the section no span is made and no `traceparent` is added. The
//! exporter is set when the gateway starts; a reload does not change it.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::time::Duration;

use super::values::Seconds;

/// Spans batched between two exports when `export_interval` is not given.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The validated `tracing:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans are POSTed: the collector's OTLP/HTTP traces URL (`.../v1/traces`).
    pub endpoint: http::Uri,
    /// `service.name` of the resource every span belongs to.
    pub service_name: String,
    /// Share (0..=1) of traces started here that are recorded and exported.
    pub sample: f64,
    /// Longest a finished span waits in the queue before its batch is sent.
    pub export_interval: Duration,
}

/// `tracing:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    otlp_endpoint: String,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    sample: Option<f64>,
    #[serde(default)]
    export_interval: Option<Seconds>,
}

/// `written` as the traces URL: an `http(s)` URL, with `/v1/traces` added to a bare host.
fn traces_url(written: &str) -> Result<http::Uri, String> {
    let trimmed = written.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed.parse().map_err(|e| {
        format!("tracing.otlp_endpoint '{written}' is not a URL ({e}); write e.g. http://127.0.0.1:4318")
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "tracing.otlp_endpoint '{written}' needs http:// or https:// and a host, e.g. http://127.0.0.1:4318"
        ));
    }
    if uri.path().ends_with("/v1/traces") {
        return Ok(uri);
    }
    format!("{trimmed}/v1/traces")
        .parse()
        .map_err(|e| format!("tracing.otlp_endpoint '{written}': {e}"))
}

impl<'de> Deserialize<'de> for TracingConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(d)?;
        let endpoint = traces_url(&raw.otlp_endpoint).map_err(de::Error::custom)?;
        let sample = raw.sample.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample) {
            return Err(de::Error::custom(format!(
                "tracing.sample {sample} is not a share; write a number from 0 to 1, e.g. sample: 0.1"
            )));
        }
        let service_name = raw.service_name.unwrap_or_else(|| "switchyard".to_owned());
        if service_name.trim().is_empty() {
            return Err(de::Error::custom(
                "tracing.service_name is empty; leave it out for `switchyard`",
            ));
        }
        let export_interval = raw.export_interval.map_or(DEFAULT_EXPORT_INTERVAL, |s| s.0);
        if export_interval.is_zero() {
            return Err(de::Error::custom(
                "tracing.export_interval is 0; write how often batches go out, e.g. 5s",
            ));
        }
        Ok(Self {
            endpoint,
            service_name,
            sample,
            export_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = "models:\n  m:\n    backends:\n      - url: http://a:1\n";

    #[test]
    fn tracing_is_off_by_default_and_one_line_turns_it_on() {
        assert_eq!(parse(BASE, "c.yaml").unwrap().tracing, None);
        let on = parse(
            &format!("tracing: {{otlp_endpoint: http://127.0.0.1:4318}}\n{BASE}"),
            "c.yaml",
        )
        .unwrap()
        .tracing
        .unwrap();
        assert_eq!(on.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(on.service_name, "switchyard");
        assert_eq!(on.sample, 1.0);
        let full = parse(
            &format!("tracing: {{otlp_endpoint: \"https://otel:4318/v1/traces\", service_name: gw, sample: 0.25, export_interval: 200ms}}\n{BASE}"),
            "c.yaml",
        )
        .unwrap()
        .tracing
        .unwrap();
        assert_eq!(full.endpoint, "https://otel:4318/v1/traces");
        assert_eq!(full.service_name, "gw");
        assert_eq!(full.sample, 0.25);
        assert_eq!(full.export_interval.as_millis(), 200);
    }

    #[test]
    fn bad_tracing_sections_name_the_problem() {
        for (bad, says) in [
            ("{}", "otlp_endpoint"),
            ("{otlp_endpoint: 127.0.0.1:4318}", "http://"),
            ("{otlp_endpoint: \"ftp://x:1\"}", "http://"),
            ("{otlp_endpoint: http://x:1, sample: 2}", "from 0 to 1"),
            ("{otlp_endpoint: http://x:1, service_name: \" \"}", "empty"),
            ("{otlp_endpoint: http://x:1, export_interval: 0s}", "is 0"),
            ("{otlp_endpoint: http://x:1, smaple: 1}", "smaple"),
        ] {
            let e = parse(&format!("tracing: {bad}\n{BASE}"), "c.yaml").unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
            assert_eq!(e.line, Some(1), "{bad}: {e}");
        }
    }
}
