//! Active health checks: a background task per gateway GETs each checked backend's health
//! path at its interval and marks the backend down after `unhealthy_threshold` failed checks
//! in a row, up again after `healthy_threshold` passed ones (a pass is any 2xx within the
//! check's timeout; at most [`MAX_HEALTH_BODY`] of its body is read). A backend that is down gets no traffic and does not count for `/ready`;
//! one that comes back ramps up over the pool's slow-start window.
//!
//! [`HealthChecker::start`] spawns a supervisor that runs one check loop per checked backend of
//! the current config snapshot and restarts them when a reload or an admin change installs a
//! new one (a backend that survives keeps its state, so its up/down mark carries over);
//! dropping the returned handle stops it all ([`crate::server::serve`] holds it for as long
//! as it serves). The supervisor holds the gateway weakly, so it keeps no gateway alive.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use std::sync::{Arc, Weak};
use tokio::task::JoinSet;
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
    /// so across reloads and admin changes: a supervisor restarts the checks on the new
    /// snapshot within [`FOLLOW_INTERVAL`] of a change. Must run inside a tokio runtime.
    pub fn start(gw: &Arc<Gateway>) -> Self {
        let mut tasks = JoinSet::new();
        tasks.spawn(supervise(Arc::downgrade(gw)));
        Self { tasks }
    }
}

/// How often the supervisor looks for a new config snapshot.
pub const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs the checks of the current snapshot, restarting them when it changes. Holds the
/// gateway weakly: it stops when the gateway is gone.
async fn supervise(gw: Weak<Gateway>) {
    let mut generation = 0;
    let mut checks = JoinSet::new();
    loop {
        let Some(snap) = gw.upgrade().map(|g| g.snapshot()) else {
            return;
        };
        if snap.generation != generation {
            generation = snap.generation;
            checks.abort_all();
            checks = start_checks(&snap);
        }
        drop(snap);
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

/// One check loop per checked backend of `snap`.
fn start_checks(snap: &Snapshot) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
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
            tasks.spawn(run(Target {
                uri,
                authorization: b.authorization.clone(),
                check,
                state: b.state.clone(),
                client: b.client(&snap.client).clone(),
            }));
        }
    }
    tasks
}

/// Checks one backend forever.
async fn run(t: Target) {
    let mut tick = tokio::time::interval(t.check.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut passes, mut fails) = (0u32, 0u32);
    loop {
        tick.tick().await;
        let ok = probe(&t).await;
        if ok {
            passes = passes.saturating_add(1);
            fails = 0;
        } else {
            fails = fails.saturating_add(1);
            passes = 0;
        }
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
