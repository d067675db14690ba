//! The one way to start a gateway: [`Server`] takes a validated config (and, optionally, the
//! file it came from, for reloads), binds the main listener and the admin listener when
//! there is one, optionally installs the SIGHUP reloader, and starts serving; [`Running`] is
//! the handle with the bound addresses, the [`Gateway`] and the shutdown.
//!
//! `switchyard serve`, `switchyard demo` and the integration tests all start through it, so
//! the order of start-up (bind both listeners, install the reloader, then announce) and of
//! shutdown (the main listener drains, then the admin listener stops) is written once.
//!
//! ```no_run
//! # async fn f(config: switchyard_gateway::Config) -> std::io::Result<()> {
//! use switchyard_gateway::{Server, Stop};
//! let running = Server::from_config(config)
//!     .listen("127.0.0.1:0".parse().unwrap())
//!     .start()
//!     .await?;
//! println!("listening on {}", running.addr());
//! running.shutdown(Stop::Now).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{self, Config, ConfigError};
use crate::gateway::Gateway;
use crate::server::{serve, serve_admin, Drained, Stop};

/// A gateway about to start: its config and where it listens.
#[derive(Debug)]
#[must_use = "a server does nothing until `start` is awaited"]
pub struct Server {
    /// The validated config it runs.
    config: Config,
    /// The file the config came from: `POST /admin/reload` and SIGHUP re-read it.
    source: Option<PathBuf>,
    /// The text that file held when it was read at start: reloading the same text installs
    /// nothing.
    text: Option<String>,
    /// Binds the main listener here instead of the config's `listen` (the running config
    /// keeps the file's value, so a reload does not report `listen` as changed).
    listen: Option<SocketAddr>,
    /// Binds the admin listener here instead of the config's `admin.listen`.
    admin: Option<SocketAddr>,
    /// Re-read the config file on SIGHUP while running.
    sighup: bool,
    /// Serve client connections on this many threads of their own (0: on the caller's
    /// runtime).
    workers: usize,
}

impl Server {
    /// A server running `config`, with no file to reload from.
    pub fn from_config(config: Config) -> Self {
        Self {
            config,
            source: None,
            text: None,
            listen: None,
            admin: None,
            sighup: false,
            workers: 0,
        }
    }

    /// A server running the config file at `path` (validated as `switchyard check` does),
    /// which reloads re-read.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
        let config = config::parse(&text, &path.display().to_string())?;
        let mut server = Self::from_config(config).reloads_from(path);
        server.text = Some(text);
        Ok(server)
    }

    /// The config it will run.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reloads (`POST /admin/reload`, SIGHUP) re-read `path`, the file `config` came from.
    pub fn reloads_from(mut self, path: &Path) -> Self {
        if self.source.as_deref() != Some(path) {
            // Text read from another file (or none) says nothing about this one.
            self.text = None;
        }
        self.source = Some(path.to_owned());
        self
    }

    /// Listens on `addr` instead of the config's `listen` (port 0 picks a free port; see
    /// [`Running::addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Serves the admin API on `addr` instead of the config's `admin.listen`. Only a config
    /// that gives the admin API a listener of its own has one to move: for any other,
    /// [`Server::start`] fails.
    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.admin = Some(addr);
        self
    }

    /// Re-reads the config file on every SIGHUP while running (installed before
    /// [`Server::start`] returns, so a SIGHUP sent after start-up never kills the process).
    pub fn reload_on_sighup(mut self) -> Self {
        self.sighup = true;
        self
    }

    /// Serves client connections on `n` threads of their own, each with a single-threaded
    /// runtime, handing each accepted connection to the next (0, the default: on the runtime
    /// that runs [`Server::start`]). The accept loop, the admin API, health checks, scrapes and
    /// reloads stay on the caller's runtime.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The connection workers it will start (see [`Server::workers`]).
    pub fn worker_count(&self) -> usize {
        self.workers
    }

    /// Binds the listeners and starts serving in the background. Fails when a listener cannot
    /// be bound (the error names the address) or the SIGHUP handler cannot be installed. Must
    /// run inside a tokio runtime.
    pub async fn start(self) -> io::Result<Running> {
        let main_at = self.listen.unwrap_or(self.config.listen);
        let listener = bind(main_at, "").await?;
        let addr = listener.local_addr()?;
        let admin_at = match (
            self.config.admin.as_ref().and_then(|a| a.listen),
            self.admin,
        ) {
            (Some(configured), moved) => Some(moved.unwrap_or(configured)),
            (None, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an admin address was given, but the config has no `admin.listen`",
                ))
            }
            (None, None) => None,
        };
        let admin_listener = match admin_at {
            Some(a) => Some(bind(a, " (admin.listen)").await?),
            None => None,
        };
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let gateway = match &self.source {
            Some(path) => Gateway::with_source(self.config, path),
            None => Gateway::new(self.config),
        };
        if let Some(text) = self.text {
            gateway.loaded(text);
        }
        let reloader = if self.sighup {
            Some(
                crate::reload::spawn_sighup_reloader(gateway.clone()).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot install the SIGHUP handler: {e}"))
                })?,
            )
        } else {
            None
        };
        let workers = match self.workers {
            0 => None,
            n => Some(Arc::new(crate::workers::Workers::start(n).map_err(
                |e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot start {n} connection workers: {e}"),
                    )
                },
            )?)),
        };
        let (stop, stopped) = oneshot::channel::<Stop>();
        let task = tokio::spawn(run(
            gateway.clone(),
            (listener, workers),
            admin_listener,
            stopped,
            reloader,
        ));
        Ok(Running {
            gateway,
            addr,
            admin_addr,
            stop: Some(stop),
            task,
        })
    }
}

async fn bind(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}{what}: {e}")))
}

/// Serves until told to stop (or the handle is dropped: then as [`Stop::Now`]), drains, then
/// stops the admin listener (its requests are short) and the reloader.
async fn run(
    gateway: Arc<Gateway>,
    (listener, workers): (TcpListener, Option<Arc<crate::workers::Workers>>),
    admin_listener: Option<TcpListener>,
    stopped: oneshot::Receiver<Stop>,
    reloader: Option<JoinHandle<()>>,
) -> io::Result<Drained> {
    let (admin_stop, admin_stopped) = oneshot::channel::<()>();
    let admin = admin_listener.map(|l| {
        tokio::spawn(serve_admin(gateway.clone(), l, async move {
            let _ = admin_stopped.await;
        }))
    });
    let drained = serve(gateway, listener, workers, async move {
        stopped.await.unwrap_or(Stop::Now)
    })
    .await;
    if let Some(r) = reloader {
        r.abort();
    }
    let _ = admin_stop.send(());
    if let Some(a) = admin {
        let _ = a.await;
    }
    drained
}

/// A started gateway. Dropping it stops the gateway as [`Stop::Now`] would, without waiting.
#[derive(Debug)]
pub struct Running {
    /// The gateway it serves, for callers that read its state (the demo's table, tests).
    gateway: Arc<Gateway>,
    /// The main listener's bound address.
    addr: SocketAddr,
    /// The admin listener's bound address, when the admin API has its own.
    admin_addr: Option<SocketAddr>,
    /// Tells the serving task to stop; taken by the first shutdown.
    stop: Option<oneshot::Sender<Stop>>,
    /// The serving task: how the drain ended.
    task: JoinHandle<io::Result<Drained>>,
}

impl Running {
    /// Where the main listener is bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin listener is bound, when the admin API has one of its own.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The running gateway.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Shuts down as `how` asks and waits for the drain to end.
    pub async fn shutdown(mut self, how: Stop) -> io::Result<Drained> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        (&mut self.task).await.map_err(io::Error::other)?
    }

    /// Serves until `signal` resolves (e.g. [`crate::shutdown_signal`]), then shuts down as
    /// it asks and waits for the drain to end.
    pub async fn until<S: Into<Stop>>(
        self,
        signal: impl Future<Output = S>,
    ) -> io::Result<Drained> {
        let how = signal.await.into();
        self.shutdown(how).await
    }
}
