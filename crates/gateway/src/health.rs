//! Active health checks: a background task per gateway GETs each checked backend's health
//! path at its interval and marks the backend down after `unhealthy_threshold` failed checks
//! in a row, up again after `healthy_threshold` passed ones (a pass is any 2xx within the
//! check's timeout). A backend that is down gets no traffic and does not count for `/ready`;
//! one that comes back ramps up over the pool's slow-start window.
//!
//! [`HealthChecker::start`] spawns the task; dropping the returned handle stops it
//! ([`crate::server::serve`] holds it for as long as it serves). Checks hold only the
//! backends' `Arc<BackendState>`, never the gateway, so they keep no gateway alive.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::config::HealthCheck;
use crate::fleet::BackendState;
use crate::forward::UpstreamClient;
use crate::gateway::Gateway;

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
    /// Starts checking every backend whose pool or own config asks for it. Must run inside a
    /// tokio runtime.
    pub fn start(gw: &Gateway) -> Self {
        let mut tasks = JoinSet::new();
        for pool in gw.pools.values() {
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
                    client: b.client(&gw.client).clone(),
                }));
            }
        }
        Self { tasks }
    }

    /// How many backends are being checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no backend is checked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
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
        // Read the (small) body so the connection can be reused.
        resp.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(t.check.timeout, exchange).await,
        Ok(Some(true))
    )
}
