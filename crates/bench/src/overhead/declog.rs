//! The decision log under load (`--peers switchyard-declog`): Switchyard with every request's
//! record written to a file (`decision_log: {sample: 1.0}`). After the path's load, every
//! line must parse as JSON, and lines plus the drops the gateway counted must account for
//! every request it answered.

use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The log's file name in the path's directory.
pub const FILE: &str = "decisions.jsonl";

/// What the log held after the load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionLogCheck {
    /// Lines written (the live file and its rotations).
    pub lines: u64,
    /// Lines that did not parse as a JSON object.
    pub unparsable: u64,
    /// `switchyard_decision_log_dropped_total`.
    pub dropped: u64,
    /// `switchyard_requests_total`, summed: requests the gateway answered.
    pub answered: u64,
}

impl DecisionLogCheck {
    /// Every line parsed, and every answered request is a line or a counted drop.
    pub fn holds(&self) -> bool {
        self.unparsable == 0 && self.lines + self.dropped == self.answered
    }
}

/// Reads the gateway's counters at `addr` and the log under `dir`, once the writer has had
/// time to flush.
pub async fn check(addr: SocketAddr, dir: &Path) -> Result<DecisionLogCheck, String> {
    // The writer flushes in the background; give it a moment after the last response.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = get_metrics(addr).await?;
    let sum = |name: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let mut lines = 0;
    let mut unparsable = 0;
    let live = dir.join(FILE);
    let rotated = (1..=9).map(|i| dir.join(format!("{FILE}.{i}")));
    for file in std::iter::once(live).chain(rotated) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            lines += 1;
            let ok = serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object());
            if !ok {
                unparsable += 1;
            }
        }
    }
    Ok(DecisionLogCheck {
        lines,
        unparsable,
        dropped: sum("switchyard_decision_log_dropped_total"),
        answered: sum("switchyard_requests_total{"),
    })
}

/// `GET /metrics` over a plain connection.
async fn get_metrics(addr: SocketAddr) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach {addr} for /metrics: {e}"))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("/metrics: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .map_err(|e| format!("/metrics: {e}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_drops_must_account_for_every_answer() {
        let c = DecisionLogCheck {
            lines: 90,
            unparsable: 0,
            dropped: 10,
            answered: 100,
        };
        assert!(c.holds());
        assert!(!DecisionLogCheck {
            dropped: 9,
            ..c.clone()
        }
        .holds());
        assert!(!DecisionLogCheck { unparsable: 1, ..c }.holds());
    }
}
