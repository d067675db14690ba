//! `decision_log:` — where each request's routing record goes (see [`crate::decisions`]).
//!
//! ```yaml
//! decision_log:
//!   sample: 0.1                                  # share of successful requests written; errors always
//!   path: /var/log/switchyard/decisions.jsonl    # or `stdout`
//!   max_bytes: 100MB                             # rotate past this size (file sink)
//!   keep: 5                                      # rotated files kept: path.1 .. path.5
//!   ring: 1000                                   # recent records served by /admin/decisions
//! ```
//!
//! Off by default: without the section nothing is written, but the last 1000 records are
//! still kept in memory for `GET /admin/decisions`.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::path::PathBuf;

use super::values::ByteSize;

/// Records kept in memory when the section does not say.
pub const DEFAULT_RING: usize = 1000;
/// Largest `ring:`: a record is a few hundred bytes, so this bounds memory to tens of MB.
pub const MAX_RING: usize = 100_000;
/// File size at which the log rotates when `max_bytes` is not given.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Rotated files kept when `keep` is not given.
pub const DEFAULT_KEEP: u32 = 5;

/// Where sampled records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// One JSON line per record on standard output.
    Stdout,
    /// A file, rotated by size.
    File {
        /// The live file; rotated ones are `path.1` (newest) to `path.keep`.
        path: PathBuf,
        /// Rotate before a line would take the file past this size.
        max_bytes: u64,
        /// How many rotated files are kept.
        keep: u32,
    },
}

/// The validated `decision_log:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionLogConfig {
    /// Share (0..=1) of successful requests written; failed ones are always written.
    pub sample: f64,
    /// Where lines go; `None` keeps records only in memory.
    pub sink: Option<Sink>,
    /// How many recent records `/admin/decisions` can serve.
    pub ring: usize,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            sample: 0.0,
            sink: None,
            ring: DEFAULT_RING,
        }
    }
}

/// `decision_log:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    sample: Option<f64>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    max_bytes: Option<ByteSize>,
    #[serde(default)]
    keep: Option<u32>,
    #[serde(default)]
    ring: Option<usize>,
}

impl<'de> Deserialize<'de> for DecisionLogConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(d)?;
        let sample = raw.sample.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample) {
            return Err(de::Error::custom(format!(
                "decision_log.sample {sample} is not a share; write a number from 0 to 1, e.g. sample: 0.1"
            )));
        }
        let ring = raw.ring.unwrap_or(DEFAULT_RING);
        if ring == 0 || ring > MAX_RING {
            return Err(de::Error::custom(format!(
                "decision_log.ring {ring} is out of range; keep between 1 and {MAX_RING} records"
            )));
        }
        let sink = match raw.path.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(de::Error::custom(
                    "decision_log.path is empty; write a file path or `stdout`",
                ))
            }
            Some("stdout") => Some(Sink::Stdout),
            Some(p) => {
                let max_bytes = raw.max_bytes.map_or(DEFAULT_MAX_BYTES, |b| b.0);
                if max_bytes < 1024 {
                    return Err(de::Error::custom(format!(
                        "decision_log.max_bytes {max_bytes} is too small to hold a few records; use at least 1KB"
                    )));
                }
                let keep = raw.keep.unwrap_or(DEFAULT_KEEP);
                if keep == 0 {
                    return Err(de::Error::custom(
                        "decision_log.keep is 0; keep at least 1 rotated file",
                    ));
                }
                Some(Sink::File {
                    path: PathBuf::from(p),
                    max_bytes,
                    keep,
                })
            }
        };
        if sink.is_none() && (raw.max_bytes.is_some() || raw.keep.is_some()) {
            return Err(de::Error::custom(
                "decision_log.max_bytes and keep apply to a file; add `path:`",
            ));
        }
        Ok(Self { sample, sink, ring })
    }
}
