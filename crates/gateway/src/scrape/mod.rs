//! Engine-metric scraping: a background task that reads every backend's Prometheus page (and
//! its GPU exporter's, when configured) every `scrape.interval`, and stores what it recognizes
//! ([`parse`]) in the backend's [`LiveSignals`](crate::signals::LiveSignals) with the time it
//! was taken. Policies see those reports in `BackendView::engine` / `gpu` while they are
//! younger than `scrape.max_age`; a backend whose scrapes fail is simply seen without them.
//!
//! A backend that keeps failing (no `/metrics`, a hosted API, a dead replica) is retried with
//! exponential backoff up to [`MAX_BACKOFF`], so a fleet of silent backends costs next to
//! nothing. The backoff belongs to the backend (its live state), not to its URL: a backend
//! removed is forgotten at the next round, and one added again starts afresh. Scrapes of one
//! round run concurrently, each bounded by `scrape.timeout`. The task stops when its
//! [`Scraper`] handle is dropped.

pub mod detect;
mod parse;

pub use parse::{parse, EngineSample, GpuSample};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock;
use crate::fleet::BackendState;
use crate::forward::UpstreamClient;
use crate::gateway::{Gateway, Snapshot};

/// Longest wait between two attempts on a backend whose scrapes fail.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest metrics page read; engines with many histograms stay far below it.
const MAX_PAGE_BYTES: usize = 4 << 20;

/// The running scrape and engine detection tasks; dropping it stops them.
#[derive(Debug)]
pub struct Scraper {
    task: tokio::task::JoinHandle<()>,
    detector: tokio::task::JoinHandle<()>,
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.task.abort();
        self.detector.abort();
    }
}

/// Starts scraping the gateway's backends and detecting their engines ([`detect`]). Must be
/// called inside a tokio runtime.
pub fn spawn(gw: &Gateway) -> Scraper {
    Scraper {
        task: tokio::spawn(run(gw.subscribe())),
        detector: tokio::spawn(detect::run(gw.subscribe())),
    }
}

/// Waits until `deadline` or a new snapshot, whichever comes first. False once the gateway
/// is gone (the loop should end).
pub(crate) async fn until_due_or_changed(
    deadline: tokio::time::Instant,
    snapshots: &mut watch::Receiver<Arc<Snapshot>>,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(deadline) => true,
        changed = snapshots.changed() => changed.is_ok(),
    }
}

/// What a `GET` of a backend's URL gave.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// `200 OK` and its body (at most [`MAX_PAGE_BYTES`]).
    Ok(Bytes),
    /// Another status.
    Status(StatusCode),
    /// No answer within the timeout, or no connection.
    Unreachable,
}

/// `GET uri`, bounded by `timeout` and [`MAX_PAGE_BYTES`], with `authorization` if given.
pub(crate) async fn fetch(
    client: &UpstreamClient,
    uri: &http::Uri,
    authorization: Option<&http::HeaderValue>,
    timeout: Duration,
) -> Fetched {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(uri.clone())
        .header(http::header::ACCEPT, "text/plain, application/json");
    if let Some(a) = authorization {
        req = req.header(http::header::AUTHORIZATION, a.clone());
    }
    let Ok(req) = req.body(Full::new(Bytes::new())) else {
        return Fetched::Unreachable;
    };
    let get = async {
        let resp = client.request(req).await.ok()?;
        if resp.status() != StatusCode::OK {
            return Some(Fetched::Status(resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_PAGE_BYTES)
            .collect()
            .await
            .ok()?;
        Some(Fetched::Ok(body.to_bytes()))
    };
    match tokio::time::timeout(timeout, get).await {
        Ok(Some(f)) => f,
        _ => Fetched::Unreachable,
    }
}

/// Failures of one URL of one backend, for backoff.
#[derive(Debug, Default, Clone)]
struct Backoff {
    failures: u32,
    next_try: Duration,
    /// The backend, held weakly and never read: while the entry holds it, the address in its
    /// [`Key`] cannot be reused by another backend's state.
    _holds: Weak<BackendState>,
}

/// One URL of one backend: its live state's address, the URL, which report it feeds.
type Key = (usize, http::Uri, Kind);

/// The backoff of every failing URL of the current backends.
#[derive(Debug, Default)]
struct Backoffs(HashMap<Key, Backoff>);

impl Backoffs {
    /// Whether `key` may be scraped at `now`.
    fn due(&self, key: &Key, now: Duration) -> bool {
        self.0.get(key).is_none_or(|b| b.next_try <= now)
    }

    /// Records a scrape of `key`'s URL: a success clears its backoff, a failure doubles it
    /// (from `interval`, up to [`MAX_BACKOFF`]).
    fn record(&mut self, key: Key, ok: bool, state: Weak<BackendState>, interval: Duration) {
        if ok {
            self.0.remove(&key);
            return;
        }
        let b = self.0.entry(key).or_insert_with(|| Backoff {
            _holds: state,
            ..Backoff::default()
        });
        b.failures = b.failures.saturating_add(1);
        let wait = interval
            .saturating_mul(1 << b.failures.min(16))
            .min(MAX_BACKOFF);
        b.next_try = clock::now() + wait;
    }

    /// Forgets every URL not in `current` (backends removed, URLs changed, scraping off).
    fn keep_only(&mut self, current: &HashSet<Key>) {
        self.0.retain(|k, _| current.contains(k));
    }
}

/// Which report a URL feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Engine,
    Gpu,
}

async fn run(mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    let mut backoff = Backoffs::default();
    let mut current = HashSet::new();
    loop {
        // Each round reads the current snapshot, and a new one starts a round at once, so a
        // reload's new backends and new settings take effect when it is installed.
        let snap = snapshots.borrow_and_update().clone();
        let settings = snap.config.scrape;
        let next_round = tokio::time::Instant::now() + settings.interval;
        let now = clock::now();
        let mut round = JoinSet::new();
        current.clear();
        let pools = snap.pools.values().filter(|_| settings.enabled);
        for pool in pools {
            for b in &pool.backends {
                let urls = [
                    (b.config.metrics_uri.as_ref(), Kind::Engine),
                    (b.config.gpu_metrics_uri.as_ref(), Kind::Gpu),
                ];
                for (uri, kind) in urls {
                    let Some(uri) = uri else { continue };
                    let key = (Arc::as_ptr(&b.state) as usize, uri.clone(), kind);
                    current.insert(key.clone());
                    if !backoff.due(&key, now) {
                        continue;
                    }
                    let (client, state) = (snap.client.clone(), b.state.clone());
                    round.spawn(async move {
                        let ok = scrape_one(&client, &key.1, key.2, &state, settings.timeout).await;
                        (key, ok, Arc::downgrade(&state))
                    });
                }
            }
        }
        drop(snap);
        backoff.keep_only(&current);
        while let Some(joined) = round.join_next().await {
            let Ok((key, ok, state)) = joined else {
                continue;
            };
            backoff.record(key, ok, state, settings.interval);
        }
        let latest = snapshots.borrow().clone();
        let_waiters_look(&latest, settings.max_age);
        drop(latest);
        if !until_due_or_changed(next_round, &mut snapshots).await {
            return;
        }
    }
}

/// A round's pages may show engines' queues short again: the pools whose waiting rooms count
/// scraped queues let their next requests go now, not at their next look.
fn let_waiters_look(snap: &Snapshot, max_age: Duration) {
    let Some(adm) = &snap.admission else { return };
    let now = clock::now();
    for (name, pool) in &snap.pools {
        if let Some(gate) = adm.gate(name).filter(|g| g.follows_scrapes()) {
            gate.pump(pool, now, max_age);
        }
    }
}

/// Fetches one page and records what it holds; false when the backend gave nothing usable.
async fn scrape_one(
    client: &UpstreamClient,
    uri: &http::Uri,
    kind: Kind,
    state: &BackendState,
    timeout: Duration,
) -> bool {
    let Fetched::Ok(page) = fetch(client, uri, None, timeout).await else {
        tracing::trace!(%uri, "scrape failed");
        return false;
    };
    let scraped = parse(&String::from_utf8_lossy(&page));
    let now = clock::now();
    match kind {
        Kind::Engine => {
            if let Some(e) = &scraped.engine {
                state.signals.set_engine(e, now);
            }
            // An engine page that bundles GPU gauges (as `switchyard sim` does) feeds both.
            if let Some(g) = &scraped.gpu {
                state.signals.set_gpu(g, now);
            }
            scraped.engine.is_some()
        }
        Kind::Gpu => {
            if let Some(g) = &scraped.gpu {
                state.signals.set_gpu(g, now);
            }
            scraped.gpu.is_some()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend_health::BackendHealth;
    use crate::telemetry::Metrics;
    use switchyard_core::BackendId;

    fn state(name: &str) -> Arc<BackendState> {
        let metrics = Metrics::new().backend("m", name);
        let health = BackendHealth::new(BackendId(0), None, None, Duration::ZERO, metrics.clone());
        Arc::new(BackendState::new(metrics, health))
    }

    #[test]
    fn backoff_is_per_backend_and_forgets_the_backends_that_are_gone() {
        let uri: http::Uri = "http://a:1/metrics".parse().unwrap();
        let (gone, kept) = (state("gone"), state("kept"));
        let key = |s: &Arc<BackendState>| (Arc::as_ptr(s) as usize, uri.clone(), Kind::Engine);
        let mut backoff = Backoffs::default();
        let interval = Duration::from_secs(1);
        for s in [&gone, &kept] {
            backoff.record(key(s), false, Arc::downgrade(s), interval);
            assert!(!backoff.due(&key(s), clock::now()));
        }
        // Another backend at the same url has its own backoff.
        let again = state("gone");
        assert!(backoff.due(&key(&again), clock::now()));

        backoff.keep_only(&[key(&kept), key(&again)].into_iter().collect());
        assert_eq!(backoff.0.len(), 1);
        assert!(!backoff.due(&key(&kept), clock::now()));
        backoff.record(key(&kept), true, Arc::downgrade(&kept), interval);
        assert!(backoff.0.is_empty());
    }
}
