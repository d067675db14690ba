//! The config of what LLM-aware routing reads: how often engines are scraped and how old a
//! report may be (`scrape:`), and per backend where its metrics are, what it costs, how long
//! a context it takes and how good it is.
//!
//! ```yaml
//! scrape:
//!   enabled: true         # false: scrape nothing (policies use the gateway's own counters)
//!   interval: 500ms       # default 500ms
//!   timeout: 1s           # default: the interval, at least 250ms
//!   max_age: 2s           # reports older than this stop counting; default 4 x interval
//! models:
//!   llama:
//!     backends:
//!       - url: http://10.0.0.1:8000
//!         metrics_url: http://10.0.0.1:8000/metrics   # default <url>/metrics for http://, none for https://
//!         gpu_metrics_url: http://10.0.0.1:9400/metrics  # a DCGM exporter; default none
//!         price: { input: 0.15, output: 0.60 }          # per million tokens
//!         context_window: 8192
//!         quality: 0.7
//! ```

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::time::Duration;

use super::values::{EnvString, Seconds};

/// Default time between two scrapes of one backend.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_millis(500);
/// Shortest scrape timeout the default allows.
const MIN_DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_millis(250);

/// `scrape:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeFile {
    /// `false` turns scraping off for every backend.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Time between scrapes.
    #[serde(default)]
    pub interval: Option<Seconds>,
    /// Time one scrape may take; above 0.
    #[serde(default, deserialize_with = "scrape_timeout")]
    pub timeout: Option<Seconds>,
    /// Age past which a report stops counting.
    #[serde(default)]
    pub max_age: Option<Seconds>,
}

fn scrape_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Seconds>, D::Error> {
    super::values::at_least(
        d,
        Duration::from_nanos(1),
        "scrape.timeout must be above 0 (every scrape would fail); leave it out for the default (the interval, at least 250ms)",
    )
}

/// How engines are scraped, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrape {
    /// Whether any backend is scraped.
    pub enabled: bool,
    /// Time between two scrapes of one backend.
    pub interval: Duration,
    /// Time one scrape may take before it counts as failed.
    pub timeout: Duration,
    /// A report older than this is ignored: policies fall back to the gateway's own counters.
    pub max_age: Duration,
}

impl Default for Scrape {
    fn default() -> Self {
        ScrapeFile::default().resolve()
    }
}

impl ScrapeFile {
    /// Defaults filled in.
    pub fn resolve(&self) -> Scrape {
        let interval = self
            .interval
            .map_or(DEFAULT_SCRAPE_INTERVAL, |s| s.0)
            .max(Duration::from_millis(10));
        Scrape {
            enabled: self.enabled.unwrap_or(true),
            interval,
            timeout: self
                .timeout
                .map_or(interval.max(MIN_DEFAULT_SCRAPE_TIMEOUT), |s| s.0),
            max_age: self.max_age.map_or(interval * 4, |s| s.0),
        }
    }
}

/// `metrics_url:` / `gpu_metrics_url:`: a full URL, or `none` (or `false`) to not scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsUrl {
    /// Do not scrape.
    Off,
    /// Scrape this URL.
    At(http::Uri),
}

impl<'de> Deserialize<'de> for MetricsUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Text(EnvString),
        }
        match Raw::deserialize(d)? {
            Raw::Flag(false) => Ok(MetricsUrl::Off),
            Raw::Flag(true) => Err(de::Error::custom(
                "metrics_url takes a url (http://host:port/metrics) or `none`; leave it out for the default",
            )),
            Raw::Text(EnvString(s)) if s == "none" => Ok(MetricsUrl::Off),
            Raw::Text(EnvString(s)) => {
                let uri: http::Uri = s.parse().map_err(|e| {
                    de::Error::custom(format!(
                        "'{s}' is not a valid url ({e}); write http://host:port/metrics or `none`"
                    ))
                })?;
                match (uri.scheme_str(), uri.authority()) {
                    (Some("http" | "https"), Some(a)) if !a.host().is_empty() => {
                        Ok(MetricsUrl::At(uri))
                    }
                    _ => Err(de::Error::custom(format!(
                        "'{s}' is not an http(s) url with a host; write http://host:port/metrics or `none`"
                    ))),
                }
            }
        }
    }
}

/// `price:` per million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    /// Per million prompt tokens.
    #[serde(deserialize_with = "non_negative_price")]
    pub input: f64,
    /// Per million output tokens.
    #[serde(deserialize_with = "non_negative_price")]
    pub output: f64,
}

fn non_negative_price<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = f64::deserialize(d)?;
    if !(x.is_finite() && x >= 0.0) {
        return Err(de::Error::custom(format!(
            "a price is a number >= 0 per million tokens, got {x}"
        )));
    }
    Ok(x)
}

/// `quality:` a finite number (higher is better).
pub fn quality<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let x = f64::deserialize(d)?;
    if !x.is_finite() {
        return Err(de::Error::custom("quality must be a finite number"));
    }
    Ok(Some(x))
}

/// The URL to scrape for a backend: its explicit setting, else `<url>/metrics` for plain http
/// backends (self-hosted engines) and nothing for https ones (hosted providers expose none).
pub fn default_metrics_uri(
    setting: Option<&MetricsUrl>,
    scheme: &http::uri::Scheme,
    authority: &http::uri::Authority,
    base_path: &str,
) -> Option<http::Uri> {
    match setting {
        Some(MetricsUrl::Off) => None,
        Some(MetricsUrl::At(u)) => Some(u.clone()),
        None if *scheme == http::uri::Scheme::HTTP => http::Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(format!("{base_path}/metrics"))
            .build()
            .ok(),
        None => None,
    }
}
