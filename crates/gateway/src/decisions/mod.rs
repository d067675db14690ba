//! The decision log: one record per request (model, policy, chosen backend, scores, attempts,
//! status, tokens, timings), kept in a ring for `GET /admin/decisions` and, sampled, written
//! as JSON lines by a background thread.
//!
//! Never on the request's critical path: [`DecisionLog::record`] pushes into a short-held
//! ring and `try_send`s to a bounded channel; a full channel drops the line and counts it in
//! `switchyard_decision_log_dropped_total`. Failed requests (status >= 400) are always written;
//! successful ones with probability `sample`.

use serde::Serialize;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::config::decision_log::{DecisionLogConfig, Sink};

mod pending;
pub use pending::{attach, Pending, Routed, Start};

/// Lines that may wait for the writer; past this, records are dropped and counted.
pub const CHANNEL_CAPACITY: usize = 8192;

/// One candidate's score, as the policy explained it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Score {
    /// Backend name.
    pub backend: String,
    /// The policy's score (lower or higher is better depending on the policy).
    pub score: f64,
}

/// One upstream attempt and how it ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    /// Backend name (shared with the backend).
    pub backend: Arc<str>,
    /// How it ended: `ok` or `error` for the answer relayed (by its status); before it,
    /// `status` (a retryable answer passed over), `refused` (the backend was full, cooling
    /// down or at its own limits), the error's code (`upstream_unreachable`,
    /// `upstream_timeout`, ...), or `gone` (removed by a reload mid-request).
    pub outcome: &'static str,
    /// Upstream status, when one came back.
    pub status: Option<u16>,
}

/// Everything known about one request once its response ended.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Record {
    /// The request id (`x-request-id`).
    pub id: String,
    /// Unix time of the request's start, in milliseconds.
    pub at_ms: u64,
    /// Requested model. (Shared text: most requests name their pool, whose name is kept
    /// once; see [`Start::pool`].)
    pub model: Arc<str>,
    /// The route taken: the serving model's name, or how a `routes:` alias or rule chose it
    /// (`route: rule=<name> [arm=<i>] pool=<model> ...`).
    pub route: Arc<str>,
    /// Routing policy name.
    pub policy: &'static str,
    /// Backend that answered (or the last one tried); `None` when none was chosen.
    pub backend: Option<Arc<str>>,
    /// The policy's one-line reason, when explained: its parts, written out as
    /// `policy: detail` only when the record is serialized.
    #[serde(serialize_with = "reason_text")]
    pub reason: Option<switchyard_core::Reason>,
    /// Every candidate's score, when the policy explained them (sampled records only).
    pub scores: Vec<Score>,
    /// Upstream attempts in order (most requests make one: kept inline).
    #[serde(serialize_with = "attempts_list")]
    pub attempts: Attempts,
    /// Status sent to the client.
    pub status: u16,
    /// Prompt tokens, when the upstream reported usage.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, when the upstream reported usage.
    pub completion_tokens: Option<u64>,
    /// Time to the first response byte, in milliseconds.
    pub ttft_ms: Option<f64>,
    /// Whole request, in milliseconds.
    pub duration_ms: f64,
    /// Cost, when prices are known.
    pub cost: Option<f64>,
}

/// A record's attempts.
pub type Attempts = smallvec::SmallVec<[Attempt; 1]>;

/// Writes a record's attempts as a list.
fn attempts_list<S: serde::Serializer>(attempts: &Attempts, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(attempts.iter())
}

/// Writes a record's reason as its one-line text.
fn reason_text<S: serde::Serializer>(
    reason: &Option<switchyard_core::Reason>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match reason {
        Some(r) => s.collect_str(r),
        None => s.serialize_none(),
    }
}

/// The log: ring, sampler and (when configured) the writer's channel.
#[derive(Debug)]
pub struct DecisionLog {
    /// Share of successful requests written.
    sample: f64,
    /// The most recent records, oldest first.
    ring: Mutex<VecDeque<Arc<Record>>>,
    /// How many records the ring keeps.
    ring_cap: usize,
    /// To the writer thread; `None` when there is no sink.
    tx: Option<SyncSender<Arc<Record>>>,
    /// Counts records the full channel refused.
    dropped: prometheus::IntCounter,
    /// State of the sampler's xorshift generator.
    rng: AtomicU64,
    /// The writer thread, joined by [`DecisionLog::close`].
    writer: Option<std::thread::JoinHandle<()>>,
}

impl DecisionLog {
    /// A log as `config` says; starts the writer thread when there is a sink. A sink that
    /// cannot be opened is reported and the log stays in memory only.
    pub fn start(config: &DecisionLogConfig, dropped: prometheus::IntCounter, seed: u64) -> Self {
        Self::with_capacity(config, dropped, seed, CHANNEL_CAPACITY)
    }

    /// As [`DecisionLog::start`], with a chosen channel capacity (tests use a tiny one).
    pub fn with_capacity(
        config: &DecisionLogConfig,
        dropped: prometheus::IntCounter,
        seed: u64,
        capacity: usize,
    ) -> Self {
        let (tx, writer) = config
            .sink
            .as_ref()
            .and_then(|sink| {
                let writer = match Writer::open(sink) {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::error!(
                            "decision log: cannot open its sink: {e}; records stay in memory only"
                        );
                        return None;
                    }
                };
                let (tx, rx) = mpsc::sync_channel(capacity);
                let spawned = std::thread::Builder::new()
                    .name("decision-log".into())
                    .spawn(move || writer.run(rx));
                match spawned {
                    Ok(handle) => Some((tx, handle)),
                    Err(e) => {
                        tracing::error!("decision log: cannot start its writer: {e}");
                        None
                    }
                }
            })
            .unzip();
        Self {
            writer,
            sample: config.sample,
            ring: Mutex::new(VecDeque::with_capacity(config.ring.min(1024))),
            ring_cap: config.ring,
            tx,
            dropped,
            rng: AtomicU64::new(seed | 1),
        }
    }

    /// Whether a successful request should be written: decided when it starts, so that the
    /// policy explains its scores only for records that will be written.
    pub fn sampled(&self) -> bool {
        if self.tx.is_none() || self.sample <= 0.0 {
            return false;
        }
        if self.sample >= 1.0 {
            return true;
        }
        // xorshift64: cheap, lock-free; a lost update between threads only repeats a draw.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64 <= self.sample
    }

    /// Keeps `record` in the ring and, when `sampled` or failed, hands it to the writer.
    /// Never blocks on the writer.
    pub fn record(&self, record: Record, sampled: bool) {
        let failed = record.status >= 400;
        let record = Arc::new(record);
        if let Ok(mut ring) = self.ring.lock() {
            if ring.len() == self.ring_cap {
                ring.pop_front();
            }
            ring.push_back(record.clone());
        }
        if let Some(tx) = &self.tx {
            if sampled || failed {
                match tx.try_send(record) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        self.dropped.inc()
                    }
                }
            }
        }
    }

    /// Stops taking lines and waits until the writer has written and flushed the queued ones.
    pub fn close(mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }

    /// The last `n` records, oldest first.
    pub fn last(&self, n: usize) -> Vec<Arc<Record>> {
        let Ok(ring) = self.ring.lock() else {
            return Vec::new();
        };
        let skip = ring.len().saturating_sub(n);
        ring.iter().skip(skip).cloned().collect()
    }
}

/// The writer thread's end: a file with rotation, or stdout.
enum Writer {
    Stdout,
    File {
        path: PathBuf,
        file: io::BufWriter<File>,
        size: u64,
        max_bytes: u64,
        keep: u32,
    },
}

impl Writer {
    fn open(sink: &Sink) -> io::Result<Self> {
        Ok(match sink {
            Sink::Stdout => Writer::Stdout,
            Sink::File {
                path,
                max_bytes,
                keep,
            } => {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                let size = file.metadata()?.len();
                Writer::File {
                    path: path.clone(),
                    file: io::BufWriter::new(file),
                    size,
                    max_bytes: *max_bytes,
                    keep: *keep,
                }
            }
        })
    }

    /// Writes lines until every sender is gone; flushes whenever the channel runs empty.
    fn run(mut self, rx: Receiver<Arc<Record>>) {
        let mut line = Vec::with_capacity(512);
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(rec) = next {
                line.clear();
                if serde_json::to_writer(&mut line, &*rec).is_ok() {
                    line.push(b'\n');
                    if let Err(e) = self.write(&line) {
                        tracing::warn!("decision log: write failed: {e}");
                    }
                }
                next = rx.try_recv().ok();
            }
            if let Err(e) = self.flush() {
                tracing::warn!("decision log: flush failed: {e}");
            }
        }
        let _ = self.flush();
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Writer::Stdout => io::stdout().lock().write_all(line),
            Writer::File {
                path,
                file,
                size,
                max_bytes,
                keep,
            } => {
                if *size > 0 && *size + line.len() as u64 > *max_bytes {
                    file.flush()?;
                    rotate(path, *keep)?;
                    *file = io::BufWriter::new(
                        OpenOptions::new().create(true).append(true).open(&*path)?,
                    );
                    *size = 0;
                }
                file.write_all(line)?;
                *size += line.len() as u64;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Writer::Stdout => io::stdout().lock().flush(),
            Writer::File { file, .. } => file.flush(),
        }
    }
}

/// `path.keep` is dropped, `path.i` becomes `path.i+1`, `path` becomes `path.1`.
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    let numbered = |i: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{i}"));
        PathBuf::from(p)
    };
    let _ = fs::remove_file(numbered(keep));
    for i in (1..keep).rev() {
        let from = numbered(i);
        if from.exists() {
            fs::rename(&from, numbered(i + 1))?;
        }
    }
    fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests;
