//! The listener: accepts connections (HTTP/1.1 and cleartext HTTP/2), serves each with
//! [`crate::api::handle`], and on shutdown stops accepting, lets in-flight requests finish
//! within the drain timeout, then returns. [`serve_admin`] does the same for the admin API's
//! own listener (`admin.listen`). Both are started through [`crate::startup::Server`]. While the main listener serves, active health checks
//! ([`crate::health`]) and engine scrapes ([`crate::scrape`]) run in the background.

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::api;
use crate::conn::{self, ConnTimeouts, ConnWatch, OpenConnections, WatchedIo};
use crate::gateway::Gateway;
use crate::health::HealthChecker;
use crate::workers::Workers;

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

/// Serves `listener` until `shutdown` resolves, then drains. A shutdown that resolves to
/// [`Stop::Drain`] first answers `/ready` with 503 for the config's `drain_delay` while still
/// accepting.
///
/// With `workers`, connections are served on its threads; without, on the caller's runtime.
pub(crate) async fn serve<S: Into<Stop>>(
    gw: Arc<Gateway>,
    listener: TcpListener,
    workers: Option<Arc<Workers>>,
    shutdown: impl Future<Output = S>,
) -> std::io::Result<Drained> {
    serve_face(gw, listener, workers, shutdown, Face::Main).await
}

/// Serves the admin API alone on `listener` (bound to `admin.listen`) until `shutdown`
/// resolves, then drains.
pub(crate) async fn serve_admin<S: Into<Stop>>(
    gw: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = S>,
) -> std::io::Result<Drained> {
    serve_face(gw, listener, None, shutdown, Face::Admin).await
}

async fn serve_face<S: Into<Stop>>(
    gw: Arc<Gateway>,
    listener: TcpListener,
    workers: Option<Arc<Workers>>,
    shutdown: impl Future<Output = S>,
    face: Face,
) -> std::io::Result<Drained> {
    let graceful = GracefulShutdown::new();
    // Health checks and engine scrapes run while the main listener serves; both follow
    // reloads, and stop when their handles drop.
    let _background = (face == Face::Main).then(|| {
        (
            HealthChecker::start(&gw),
            crate::scrape::spawn(&gw),
            AbortOnDrop(tokio::spawn(crate::dashboard::hub::run(Arc::downgrade(
                &gw,
            )))),
            AbortOnDrop(tokio::spawn(crate::upstream::sweep_every(gw.subscribe()))),
        )
    });
    let limits = gw.snapshot().config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The connection wrapper enforces the head and idle timeouts for both protocols; a head
    // larger than the read buffer is refused with 431. Answers are written flattened (head
    // and body copied into one buffer, one `write`): answers are mostly small, and queuing
    // them for a vectored write cost 0.7k more instructions a request
    // (`bench/results/instructions-2026-11-29-direct-s22.md`).
    builder
        .http1()
        .max_buf_size(usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX))
        .writev(false);
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let open = Arc::new(OpenConnections::default());
    tokio::pin!(shutdown);
    let mut stop = None;
    let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
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
                let limits = gw.snapshot().config.limits;
                let Some(slot) = open.try_open(limits.max_connections) else {
                    gw.metrics.connections_rejected.inc();
                    tokio::spawn(conn::reject(stream));
                    continue;
                };
                let conn = Accepted {
                    gw: gw.clone(),
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                    peer,
                    face,
                    limits,
                    slot,
                };
                match &workers {
                    // Handed over as a plain socket: it registers with the worker's own
                    // reactor there. Either failing drops the connection, and its slot with it.
                    Some(w) => match stream.into_std() {
                        Ok(s) => w.spawn(async move {
                            match tokio::net::TcpStream::from_std(s) {
                                Ok(stream) => conn.serve(stream).await,
                                Err(e) => {
                                    tracing::warn!(error = %e, "a worker cannot take a connection");
                                }
                            }
                        }),
                        Err(e) => {
                            tracing::debug!(error = %e, %peer, "gone before a worker took it");
                        }
                    },
                    None => {
                        tokio::spawn(conn.serve(stream));
                    }
                }
            }
            how = &mut shutdown, if stop.is_none() => {
                let how = how.into();
                stop = Some(how);
                let delay = gw.snapshot().config.drain_delay;
                if face == Face::Admin || how == Stop::Now || delay.is_zero() {
                    break;
                }
                // Not ready from now on, but still accepting: a load balancer in front sees
                // the failed readiness and stops sending before the listener goes away.
                gw.start_draining();
                tracing::info!(drain_delay_s = delay.as_secs_f64(), "shutting down: /ready answers 503 while the listener stays open");
                closing = Some(Box::pin(tokio::time::sleep(delay)));
            }
            () = async { closing.as_mut().expect("guarded").await }, if closing.is_some() => break,
        }
    }
    drop(listener);
    gw.start_draining();
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

/// An accepted connection and what serving it needs, so that it can be served where it was
/// accepted or on a [`Workers`] thread.
struct Accepted {
    gw: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
    face: Face,
    limits: crate::config::Limits,
    /// Counts it among the open connections until it ends.
    slot: conn::ConnSlot,
}

impl Accepted {
    /// Serves the connection's requests until it closes (or the drain cuts it).
    async fn serve(self, stream: tokio::net::TcpStream) {
        let Self {
            gw,
            builder,
            watcher,
            peer,
            face,
            limits,
            slot,
        } = self;
        let _slot = slot;
        let _ = stream.set_nodelay(true);
        let watch = Arc::new(ConnWatch::default());
        let io = WatchedIo::new(
            stream,
            watch.clone(),
            ConnTimeouts {
                header_read: limits.header_read_timeout,
                keepalive: limits.keepalive_timeout,
            },
        );
        let service = service_fn(move |req| {
            let gw = gw.clone();
            let watch = watch.clone();
            async move {
                let resp = match face {
                    Face::Main => {
                        let conn = api::Conn {
                            peer,
                            keys: &watch.keys,
                        };
                        api::handle(gw, conn, req).await
                    }
                    Face::Admin => crate::admin::handle(&gw, req).await,
                };
                Ok::<_, Infallible>(resp.map(|b| watch.begin(b)))
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    }
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a shutdown was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting at once and drain (SIGINT: someone at a terminal).
    Now,
    /// Answer `/ready` with 503 for `drain_delay` while still accepting, then stop accepting
    /// and drain (SIGTERM: an orchestrator rolling the gateway).
    Drain,
}

impl From<()> for Stop {
    fn from((): ()) -> Self {
        Stop::Now
    }
}

/// Resolves on SIGINT ([`Stop::Now`]) or SIGTERM ([`Stop::Drain`]).
pub async fn shutdown_signal() -> Stop {
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
        () = ctrl_c => Stop::Now,
        () = term => Stop::Drain,
    }
}
