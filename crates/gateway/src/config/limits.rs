//! `limits:`: what one client connection may cost the gateway. Timeouts on the client side of
//! the gateway (reading a request's headers and body, an idle kept-alive connection), the
//! largest request head, how many client connections may be open at once, and how much of a
//! request's prompt is kept for prefix routing.
//!
//! Every limit has a default, so a file without the section is protected too. The server
//! ([`crate::server`]) enforces the connection-level ones, [`crate::api`] the body read.

use serde::Deserialize;
use std::time::Duration;

use super::values::{ByteSize, Seconds};

/// Default [`Limits::header_read_timeout`]: as hyper's and nginx's.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Limits::keepalive_timeout`]: as nginx's `keepalive_timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default [`Limits::body_read_timeout`]: as nginx's `client_body_timeout`.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`Limits::max_header_bytes`]: twice nginx's `large_client_header_buffers`.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Default [`Limits::max_connections`] when the file-descriptor limit cannot be read.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Default [`Limits::max_prompt_bytes`]: core's, 512 KiB (about 131k tokens).
pub const DEFAULT_MAX_PROMPT_BYTES: u64 = switchyard_core::profile::DEFAULT_MAX_PROMPT_BYTES as u64;
/// The largest prompt cap accepted: hashing more costs milliseconds per request.
const MAX_PROMPT_BYTES: u64 = 64 * 1024 * 1024;
/// Longest any of these timeouts may be: a day (a longer one is a typo, and would overflow
/// deadline arithmetic long before it mattered).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The smallest head size hyper can parse with (its read buffer's floor).
const MIN_HEADER_BYTES: u64 = 8 * 1024;
/// The largest head size accepted: a head this big is an attack, not a request.
const MAX_HEADER_BYTES: u64 = 16 * 1024 * 1024;

/// The validated limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's head (request line and headers) must arrive whole within this long from its
    /// first byte, and a new connection must start a request within it; past it the
    /// connection is closed. Stops clients that open connections and trickle or send nothing.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request in flight and no byte moving for this long is
    /// closed.
    pub keepalive_timeout: Duration,
    /// Longest wait for the next piece of a request body; past it the client gets 408.
    pub body_read_timeout: Duration,
    /// Largest request head; a larger one gets 431 (HTTP/1.1) or a stream reset (HTTP/2).
    pub max_header_bytes: u64,
    /// Most client connections open at once. A connection accepted beyond it is answered
    /// `503` with code `too_many_connections` and closed.
    pub max_connections: u32,
    /// Rendered prompt bytes kept per request for prefix routing (hashed into blocks once);
    /// the rest of the prompt is counted for the token estimate and forwarded untouched, but
    /// routed on as if it were not there. 0 keeps none: prefix-aware policies see every
    /// request as cold.
    pub max_prompt_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        LimitsFile::default().resolve()
    }
}

/// `limits:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// See [`Limits::header_read_timeout`].
    #[serde(default, deserialize_with = "timeout")]
    pub header_read_timeout: Option<Seconds>,
    /// See [`Limits::keepalive_timeout`].
    #[serde(default, deserialize_with = "timeout")]
    pub keepalive_timeout: Option<Seconds>,
    /// See [`Limits::body_read_timeout`].
    #[serde(default, deserialize_with = "timeout")]
    pub body_read_timeout: Option<Seconds>,
    /// See [`Limits::max_header_bytes`].
    #[serde(default, deserialize_with = "header_bytes")]
    pub max_header_bytes: Option<ByteSize>,
    /// See [`Limits::max_connections`].
    #[serde(default, deserialize_with = "connections")]
    pub max_connections: Option<u32>,
    /// See [`Limits::max_prompt_bytes`].
    #[serde(default, deserialize_with = "prompt_bytes")]
    pub max_prompt_bytes: Option<ByteSize>,
}

impl LimitsFile {
    /// Fills in the defaults.
    pub fn resolve(self) -> Limits {
        Limits {
            header_read_timeout: self
                .header_read_timeout
                .map_or(DEFAULT_HEADER_READ_TIMEOUT, |s| s.0),
            keepalive_timeout: self
                .keepalive_timeout
                .map_or(DEFAULT_KEEPALIVE_TIMEOUT, |s| s.0),
            body_read_timeout: self
                .body_read_timeout
                .map_or(DEFAULT_BODY_READ_TIMEOUT, |s| s.0),
            max_header_bytes: self
                .max_header_bytes
                .map_or(DEFAULT_MAX_HEADER_BYTES, |b| b.0),
            max_connections: self.max_connections.unwrap_or_else(default_max_connections),
            max_prompt_bytes: self
                .max_prompt_bytes
                .map_or(DEFAULT_MAX_PROMPT_BYTES, |b| b.0),
        }
    }
}

fn timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Seconds>, D::Error> {
    let s = Seconds::deserialize(d)?;
    if s.0.is_zero() || s.0 > MAX_TIMEOUT {
        return Err(serde::de::Error::custom(format!(
            "a client timeout must be above 0 and at most 24h, got {:?}",
            s.0
        )));
    }
    Ok(Some(s))
}

fn header_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    let b = ByteSize::deserialize(d)?;
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&b.0) {
        return Err(serde::de::Error::custom(format!(
            "max_header_bytes must be between 8KiB and 16MiB (default 64KiB), got {} bytes",
            b.0
        )));
    }
    Ok(Some(b))
}

/// The largest `max_body_bytes`: a body is read whole into memory before it is routed, so
/// the limit is what one request may make the gateway hold.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;

/// `max_body_bytes`: above zero (zero would refuse every request) and at most 1GiB.
pub(super) fn body_bytes<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ByteSize>, D::Error> {
    let b = ByteSize::deserialize(d)?;
    if b.0 == 0 || b.0 > MAX_BODY_BYTES {
        return Err(serde::de::Error::custom(format!(
            "max_body_bytes must be above 0 and at most 1GiB (default 32MiB): every request's body is held in memory up to it; got {} bytes",
            b.0
        )));
    }
    Ok(Some(b))
}

fn prompt_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    let b = ByteSize::deserialize(d)?;
    if b.0 > MAX_PROMPT_BYTES {
        return Err(serde::de::Error::custom(format!(
            "max_prompt_bytes must be at most 64MiB (default 512KiB), got {} bytes",
            b.0
        )));
    }
    Ok(Some(b))
}

fn connections<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = u32::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom(
            "max_connections must be at least 1 (default: half the open-file limit, at most 10000)",
        ));
    }
    Ok(Some(n))
}

/// Half the process's open-file limit (each client connection may need an upstream one too),
/// less a reserve for listeners, logs and the scraper; at most [`DEFAULT_MAX_CONNECTIONS`].
/// Read from `/proc/self/limits`; the fixed default where that is unavailable.
fn default_max_connections() -> u32 {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| soft_open_files(&text));
    match soft {
        Some(n) => u32::try_from(n.saturating_sub(64) / 2)
            .unwrap_or(u32::MAX)
            .clamp(1, DEFAULT_MAX_CONNECTIONS),
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

/// The soft "Max open files" value of a `/proc/<pid>/limits` text; `None` when unlimited or
/// absent.
fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             63459                63459                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(soft_open_files(text), Some(1024));
        assert_eq!(
            soft_open_files("Max open files  unlimited unlimited files"),
            None
        );
        assert_eq!(soft_open_files(""), None);
    }

    #[test]
    fn defaults_bound_every_client() {
        let l = Limits::default();
        assert_eq!(l.header_read_timeout, Duration::from_secs(30));
        assert!(l.keepalive_timeout > Duration::ZERO);
        assert!(l.body_read_timeout > Duration::ZERO);
        assert!((1..=DEFAULT_MAX_CONNECTIONS).contains(&l.max_connections));
        assert_eq!(l.max_prompt_bytes, 512 * 1024);
    }
}
