//! The listener: accepts connections (HTTP/1.1 and cleartext HTTP/2), serves each with
//! [`crate::api::handle`], and on shutdown stops accepting, lets in-flight requests finish
//! within the drain timeout, then returns. [`serve_admin`] does the same for the admin API's
//! own listener (`admin.listen`). While the main listener serves, active health checks
//! ([`crate::health`]) and engine scrapes ([`crate::scrape`]) run in the background.

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::api;
use crate::gateway::Gateway;
use crate::health::HealthChecker;

/// How the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request finished.
    Clean,
    /// The drain timeout passed with requests still running; they were cut.
    TimedOut,
}

/// Which API a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Face {
    /// The OpenAI-compatible API (and `/admin` when it has no listener of its own).
    Main,
    /// Only the admin API.
    Admin,
}

/// Serves `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Drained> {
    serve_face(gw, listener, shutdown, Face::Main).await
}

/// Serves the admin API alone on `listener` (bound to `admin.listen`) until `shutdown`
/// resolves, then drains.
pub async fn serve_admin(
    gw: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Drained> {
    serve_face(gw, listener, shutdown, Face::Admin).await
}

async fn serve_face(
    gw: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    face: Face,
) -> std::io::Result<Drained> {
    let graceful = GracefulShutdown::new();
    // Health checks and engine scrapes run while the main listener serves; both follow
    // reloads, and stop when their handles drop.
    let _background =
        (face == Face::Main).then(|| (HealthChecker::start(&gw), crate::scrape::spawn(gw.clone())));
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gw = gw.clone();
                let service = service_fn(move |req| {
                    let gw = gw.clone();
                    async move {
                        Ok::<_, Infallible>(match face {
                            Face::Main => api::handle(gw, peer, req).await,
                            Face::Admin => crate::admin::handle(&gw, req).await,
                        })
                    }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let drain = gw.snapshot().config.drain_timeout;
    tracing::info!(
        drain_timeout_s = drain.as_secs_f64(),
        "shutting down: draining in-flight requests"
    );
    Ok(
        match tokio::time::timeout(drain, graceful.shutdown()).await {
            Ok(()) => Drained::Clean,
            Err(_) => Drained::TimedOut,
        },
    )
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
