//! Active health checks: a background task per gateway GETs each checked backend's health
//! path at its interval and marks the backend down after `unhealthy_threshold` failed checks
//! in a row, up again after `healthy_threshold` passed ones (a pass is any 2xx within the
//! check's timeout; at most [`MAX_HEALTH_BODY`] of its body is read). A backend that is down gets no traffic and does not count for `/ready`;
//! one that comes back ramps up over the pool's slow-start window.
//!
//! [`HealthChecker::start`] spawns a supervisor that runs one check loop per checked backend of
//! the current config snapshot and follows the changes a reload or an admin change installs:
//! a backend that survives keeps its loop, untouched, unless its check settings changed (then
//! the loop restarts with them); added backends get one, removed ones lose theirs. The run of
//! passed or failed checks lives in the backend's state, so it carries over either way, as
//! does its up/down mark: a reload that changes nothing changes no check. Dropping the
//! returned handle stops it all ([`crate::server::serve`] holds it for as long as it serves).
//! The supervisor holds only the gateway's snapshot channel, so it keeps no gateway alive.

use bytes::Bytes;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::MissedTickBehavior;

use crate::config::HealthCheck;
use crate::fleet::BackendState;
use crate::forward::UpstreamClient;
use crate::gateway::{Gateway, Snapshot};

/// The running health checks of one gateway; dropping it stops them.
#[derive(Debug)]
pub struct HealthChecker {
    tasks: JoinSet<()>,
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// What one backend's check loop needs.
struct Target {
    uri: Uri,
    /// The backend's own `Authorization` (servers started with an API key guard `/v1/models`).
    authorization: Option<http::HeaderValue>,
    check: HealthCheck,
    state: Arc<BackendState>,
    client: UpstreamClient,
}

impl HealthChecker {
    /// Starts checking every backend whose pool or own config asks for it, and keeps doing
    /// so across reloads and admin changes: a supervisor waits on the gateway's published
    /// snapshots ([`Gateway::subscribe`]) and moves the checks to each new one as it is
    /// installed. Must run inside a tokio runtime.
    pub fn start(gw: &Gateway) -> Self {
        let mut tasks = JoinSet::new();
        tasks.spawn(supervise(gw.subscribe()));
        Self { tasks }
    }
}

/// Runs the checks of the current snapshot, following its changes. Holds only the snapshot
/// channel: it stops when the gateway (the sender) is gone.
async fn supervise(mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    let mut checks = Checks::default();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        checks.follow(&snap);
        drop(snap);
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// What a running check loop was started with: a backend whose key is unchanged keeps its
/// loop (and the loop's timing) across a change.
#[derive(Debug, PartialEq)]
struct CheckKey {
    uri: Uri,
    authorization: Option<HeaderValue>,
    check: HealthCheck,
    /// The connect timeout of the client the loop holds (the only setting a client has).
    connect: Duration,
}

/// The running check loops, one per checked backend.
#[derive(Default)]
struct Checks {
    /// Owns the loops: dropping it (the supervisor's end) aborts them all.
    tasks: JoinSet<()>,
    /// By backend state (its address; the loop holds the `Arc`, so the address cannot be
    /// reused while the entry lives): what the loop runs and how to stop it.
    running: HashMap<usize, (CheckKey, AbortHandle)>,
}

impl Checks {
    /// Makes the loops those of `snap`: keeps those whose backend and settings are unchanged,
    /// starts the missing ones, stops the rest.
    fn follow(&mut self, snap: &Snapshot) {
        let mut next = HashMap::with_capacity(self.running.len());
        for pool in snap.pools.values() {
            for b in &pool.backends {
                let Some(check) = b.config.health_check.clone() else {
                    continue;
                };
                let uri = match b.uri(&check.path) {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::warn!(backend = %b.name(), error = %e, "cannot build the health check url; not checking");
                        continue;
                    }
                };
                let key = CheckKey {
                    uri,
                    authorization: b.authorization.clone(),
                    check,
                    connect: b.config.timeouts.connect,
                };
                let id = Arc::as_ptr(&b.state) as usize;
                match self.running.remove(&id) {
                    Some((k, task)) if k == key && !task.is_finished() => {
                        next.insert(id, (k, task));
                    }
                    old => {
                        if let Some((_, task)) = old {
                            task.abort();
                        }
                        let task = self.tasks.spawn(run(Target {
                            uri: key.uri.clone(),
                            authorization: key.authorization.clone(),
                            check: key.check.clone(),
                            state: b.state.clone(),
                            client: b.client(&snap.client).clone(),
                        }));
                        next.insert(id, (key, task));
                    }
                }
            }
        }
        for (_, (_, task)) in self.running.drain() {
            task.abort();
        }
        self.running = next;
        // Forget the loops that ended (aborted ones), so the set does not grow with changes.
        while self.tasks.try_join_next().is_some() {}
    }
}

/// Checks one backend forever.
async fn run(t: Target) {
    let mut tick = tokio::time::interval(t.check.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = probe(&t).await;
        let (passes, fails) = t.state.health.count_check(ok);
        let health = &t.state.health;
        let [model, backend] = t.state.metrics().labels();
        if health.is_up() && fails >= t.check.unhealthy_threshold {
            tracing::warn!(%model, %backend, failed_checks = fails, "health checks failing; backend marked down");
            health.set_up(false);
        } else if !health.is_up() && passes >= t.check.healthy_threshold {
            tracing::info!(%model, %backend, passed_checks = passes, "health checks passing; backend marked up");
            health.set_up(true);
        }
    }
}

/// Most of a health check's response body read: `/health` answers are empty or a few bytes,
/// `/v1/models` a few KiB. A backend streaming more cannot make a check hold memory.
pub const MAX_HEALTH_BODY: usize = 64 * 1024;

/// One check: a GET of the health path, passed by any 2xx within the timeout.
async fn probe(t: &Target) -> bool {
    let Ok(mut req) = Request::get(t.uri.clone())
        .header(http::header::USER_AGENT, "switchyard-health-check")
        .body(Full::new(Bytes::new()))
    else {
        return false;
    };
    if let Some(auth) = &t.authorization {
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, auth.clone());
    }
    let exchange = async {
        let resp = t.client.request(req).await.ok()?;
        let ok = resp.status().is_success();
        // Read the (small) body so the connection can be reused, but no more than
        // MAX_HEALTH_BODY of it: past that the rest is dropped with the connection, and the
        // status alone decides.
        let mut body = resp.into_body();
        let mut read = 0usize;
        while read <= MAX_HEALTH_BODY {
            match body.frame().await {
                None => break,
                Some(frame) => read += frame.ok()?.data_ref().map_or(0, Bytes::len),
            }
        }
        Some(ok)
    };
    matches!(
        tokio::time::timeout(t.check.timeout, exchange).await,
        Ok(Some(true))
    )
}
