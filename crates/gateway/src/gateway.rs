//! The gateway handle, shared by all connections through an `Arc`: the running config with its
//! pools behind an atomic swap ([`Snapshot`]), metrics, the clock every decision reads, and
//! where the config came from (for reloads, see [`crate::reload`]).
//!
//! Each new snapshot is also published on a `watch` channel ([`Gateway::subscribe`]): health
//! checks and scrapes wait on it to follow a change the moment it is installed, instead of
//! polling. Requests read the atomic swap, which costs no lock.
//!
//! A request loads the current [`Snapshot`] once when it starts and uses it to the end, so a
//! reload or an admin change never alters a request already running; backends that survive a
//! change keep their live state (the same `Arc<BackendState>`).

use arc_swap::ArcSwap;
use http::HeaderValue;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use crate::config::Config;
use crate::fleet::{Pool, PoolContext};
use crate::forward::{self, UpstreamClient};
use crate::telemetry::Metrics;

/// The gateway's clocks: monotonic gateway time ([`crate::clock::now`], shared with the
/// scraper and live signals) and the wall-clock start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix time at start, for `created` fields.
    pub started_unix: u64,
}

impl Clock {
    /// Gateway time: the `now` every decision sees.
    pub fn now(&self) -> Duration {
        crate::clock::now()
    }
}

/// One version of the running config and everything built from it. Immutable: a change
/// builds a new one and swaps it in.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config (the file's, plus any backends added or removed through the admin
    /// API since it was read).
    pub config: Config,
    /// Model name -> pool. Hashed with foldhash, not SipHash: every request looks its model
    /// up here, and only the config adds names.
    pub pools: foldhash::HashMap<String, Pool>,
    /// Model names, sorted, for `/v1/models` and error messages.
    pub model_names: Vec<String>,
    /// Pooled upstream connections (kept across versions while the connect timeout is
    /// unchanged, so a reload does not drop warm connections).
    pub client: UpstreamClient,
    /// Metric families (shared by every version).
    pub metrics: Metrics,
    /// Counts versions: 1 at start, +1 per reload or admin change.
    pub generation: u64,
    /// Keys, limits and waiting rooms; `None` when `auth:` and `admission:` are both off.
    pub admission: Option<std::sync::Arc<crate::admission::Admission>>,
    /// Recent routing records and their writer; started with the first version and kept by
    /// every later one (a reload does not change `decision_log:`).
    pub decisions: Arc<crate::decisions::DecisionLog>,
    /// Intent classes for `routes:` rules with `intent:` conditions; `None` without
    /// `routes.intents`. Kept by a reload that changes neither the classes nor their pool.
    pub classifier: Option<Arc<crate::routes::semantic::Classifier>>,
    /// The OpenTelemetry exporter when `tracing:` is on; like `decisions`, started with the
    /// first version and kept by every later one (a reload does not change `tracing:`).
    pub tracing: Option<Arc<crate::otel::Tracing>>,
    clock: Clock,
}

impl Snapshot {
    /// Builds pools, policies and (unless `previous` has a usable one) the client from a
    /// validated config. Backends and retry budgets that `previous` also has keep their state.
    pub(crate) fn build(
        config: Config,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        clock: Clock,
        seed: u64,
    ) -> Self {
        let generation = previous.map_or(1, |p| p.generation + 1);
        let seed = seed.wrapping_add(generation.wrapping_mul(0x9E37_79B9));
        let pools: foldhash::HashMap<String, Pool> = config
            .models
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let old = previous.and_then(|s| s.pools.get(&p.name));
                let ctx = PoolContext {
                    retry: &config.retry,
                    metrics,
                    seed: seed.wrapping_add(i as u64),
                    default_connect: config.timeouts.connect,
                };
                (p.name.clone(), Pool::build(p, &ctx, old))
            })
            .collect();
        let mut model_names: Vec<String> = pools.keys().cloned().collect();
        model_names.sort();
        let client = match previous {
            // The client holds only the connect timeout; the others are read per request.
            Some(p) if p.config.timeouts.connect == config.timeouts.connect => p.client.clone(),
            _ => forward::client(&config.timeouts),
        };
        let admission = crate::admission::Admission::build(
            &config,
            previous.and_then(|p| p.admission.as_ref()),
            clock.now(),
            &metrics.admission,
        );
        let decisions = match previous {
            Some(p) => p.decisions.clone(),
            None => Arc::new(crate::decisions::DecisionLog::start(
                &config.decision_log,
                metrics.decisions_dropped.clone(),
                seed,
            )),
        };
        let classifier = config
            .routes
            .as_ref()
            .and_then(|r| r.intents.as_ref())
            .and_then(|i| Some((i, pools.get(&i.model)?)))
            .map(|(i, pool)| {
                crate::routes::semantic::Classifier::start(
                    i,
                    pool,
                    &client,
                    previous.and_then(|p| p.classifier.as_ref()),
                )
            });
        let tracing = match previous {
            Some(p) => {
                if p.config.tracing != config.tracing {
                    tracing::warn!(
                        "tracing: changed; the exporter is set at start, restart to apply"
                    );
                }
                p.tracing.clone()
            }
            None => crate::otel::Tracing::from_config(config.tracing.as_ref()),
        };
        Self {
            decisions,
            classifier,
            tracing,
            config,
            pools,
            model_names,
            client,
            metrics: metrics.clone(),
            generation,
            admission,
            clock,
        }
    }

    /// Time since the gateway started: the `now` every decision sees.
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Unix time at start, for `created` fields.
    pub fn started_unix(&self) -> u64 {
        self.clock.started_unix
    }

    /// Whether some backend of some model can take a request.
    pub fn ready(&self) -> bool {
        let now = self.now();
        self.pools
            .values()
            .any(|p| p.backends.iter().any(|b| b.usable(now)))
    }
}

/// Everything a request needs, shared.
#[derive(Debug)]
pub struct Gateway {
    /// The current version of config and pools.
    live: ArcSwap<Snapshot>,
    /// The same snapshots, published for background tasks that wait on a change.
    published: watch::Sender<Arc<Snapshot>>,
    /// Metric families.
    pub metrics: Metrics,
    clock: Clock,
    /// The config file, when the gateway was started from one: what a reload re-reads.
    source: Option<PathBuf>,
    /// Held while a change (reload, add, remove) builds and swaps a new snapshot, so two
    /// changes cannot both start from the same version and lose one of them.
    pub(crate) changes: Mutex<()>,
    /// The file text the running config came from (read at start, or installed by the last
    /// reload) and the generation it made: a reload of the same text onto that same
    /// generation changes nothing and installs nothing.
    pub(crate) reloaded: Mutex<Option<(String, u64)>>,
    /// Source of request ids.
    id_seq: AtomicU64,
    id_salt: u64,
    /// A graceful shutdown has begun: `/ready` answers 503 so that load balancers stop
    /// sending new traffic while the listener still accepts (see `drain_delay`).
    draining: AtomicBool,
    /// The dashboard's history and live frames (see [`crate::dashboard`]).
    pub(crate) dashboard: crate::dashboard::Hub,
}

impl Gateway {
    /// A gateway running `config`, with no file to reload from.
    pub fn new(config: Config) -> Arc<Self> {
        Self::build(config, None)
    }

    /// A gateway running `config`, read from `path`: `POST /admin/reload` and SIGHUP re-read it.
    pub fn with_source(config: Config, path: &Path) -> Arc<Self> {
        Self::build(config, Some(path.to_owned()))
    }

    fn build(config: Config, source: Option<PathBuf>) -> Arc<Self> {
        let metrics = Metrics::new();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = unix.as_nanos() as u64 ^ u64::from(std::process::id());
        let clock = Clock {
            started_unix: unix.as_secs(),
        };
        let snapshot = Arc::new(Snapshot::build(config, None, &metrics, clock, seed));
        Arc::new(Self {
            live: ArcSwap::from(snapshot.clone()),
            published: watch::Sender::new(snapshot),
            metrics,
            clock,
            source,
            changes: Mutex::new(()),
            reloaded: Mutex::new(None),
            id_seq: AtomicU64::new(0),
            id_salt: seed,
            draining: AtomicBool::new(false),
            dashboard: crate::dashboard::Hub::default(),
        })
    }

    /// The current snapshot. A request calls this once and keeps the result to its end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Builds a snapshot of `config` on top of `current` (keeping the state of surviving
    /// backends) and makes it current. Callers hold [`Gateway::changes`].
    pub(crate) fn install(&self, config: Config, current: &Snapshot) -> Arc<Snapshot> {
        let next = Arc::new(Snapshot::build(
            config,
            Some(current),
            &self.metrics,
            self.clock,
            self.id_salt,
        ));
        // Forget the metric series of backends that are gone (in-flight requests still hold
        // their handles, which keep counting, detached).
        for (model, pool) in &current.pools {
            for b in &pool.backends {
                let kept = next
                    .pools
                    .get(model)
                    .is_some_and(|p| p.backends.iter().any(|n| n.name() == b.name()));
                if !kept {
                    self.metrics.forget_backend(model, b.name());
                }
            }
        }
        self.live.store(next.clone());
        self.published.send_replace(next.clone());
        next
    }

    /// A receiver of every snapshot installed from now on (it starts marked as seen, holding
    /// the current one). Its `changed()` ends with an error once the gateway is gone.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }

    /// The config file a reload re-reads, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Time since the gateway started: the `now` every decision sees.
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Marks the start of a graceful shutdown: `/ready` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.dashboard.close();
    }

    /// Whether a graceful shutdown has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A new request id, unique within this process and unlikely to collide across processes.
    pub fn new_request_id(&self) -> HeaderValue {
        let n = self.id_seq.fetch_add(1, Ordering::Relaxed);
        let mut z = n
            .wrapping_add(self.id_salt)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z ^= z >> 29;
        request_id_value(z, n)
    }

    /// Whether some backend of some model can take a request.
    pub fn ready(&self) -> bool {
        self.snapshot().ready()
    }
}

/// `sy-` + `z` as 16 hex digits + `n` in hex (no leading zeros): the request id, written
/// without going through `format!` (this runs once per request).
fn request_id_value(z: u64, n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 3 + 16 + 16];
    buf[..3].copy_from_slice(b"sy-");
    for (i, slot) in buf[3..19].iter_mut().enumerate() {
        *slot = HEX[((z >> (60 - 4 * i)) & 0xf) as usize];
    }
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        buf[19 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf[..19 + digits])
        .unwrap_or_else(|_| HeaderValue::from_static("sy-0"))
}

#[cfg(test)]
mod tests {
    use super::request_id_value;

    #[test]
    fn request_id_is_written_as_the_format_string_would() {
        for (z, n) in [
            (0u64, 0u64),
            (1, 1),
            (0xdead_beef, 0x10),
            (u64::MAX, u64::MAX),
            (0x0123_4567_89ab_cdef, 0xf),
            (42, 0x1_0000_0000),
        ] {
            let v = request_id_value(z, n);
            assert_eq!(v.to_str().ok(), Some(format!("sy-{z:016x}{n:x}").as_str()));
        }
    }
}
