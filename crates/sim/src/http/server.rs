//! One simulated replica on a socket: the listener (which a `crash` fault takes down and brings
//! back on the same port), the router, and the [`Replica`] handle that owns them.
//!
//! Each connection is served by hyper (HTTP/1.1, as vLLM's uvicorn does); the router sends
//! `/v1/...` generation to [`super::openai`], `/metrics` to [`super::metrics`] and
//! `/admin/faults` to [`super::faults`]. The engine lives in the driver task
//! ([`super::driver`]); everything here shares it through [`Shared`].

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::cancel::{CancelLog, Cancellations};
use super::driver::{DriverHandle, Snapshot};
use super::extras;
use super::faults::{FaultState, Faults, FaultsError};
use super::llamacpp;
use super::metrics::{self, Labels};
use super::openai::{self, error, json_response, Kind};
use super::stream::StreamBody;
use super::ReplicaConfig;
use crate::RequestId;

/// Response bodies: whole JSON, or a stream of SSE chunks that a fault may cut.
pub type SimBody = Either<Full<Bytes>, StreamBody>;

/// Largest request body read.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// After `POST /admin/faults` sets `crash`, the replica goes down this long after answering.
const CRASH_DELAY: Duration = Duration::from_millis(50);
/// Most token pieces `/detokenize` remembers.
const VOCAB_CAP: usize = 1 << 16;

/// What every connection of a replica shares.
#[derive(Debug)]
pub struct Shared {
    /// The served model name (`model` in requests and answers).
    pub model: String,
    /// `model` as a JSON string, for hand-written chunks.
    pub model_json: String,
    /// The engine's limit on prompt plus output.
    pub max_model_len: u32,
    /// Slot mode: the replica answers as llama.cpp's server (`/props`, `llamacpp:` metrics).
    pub slots: Option<crate::SlotMode>,
    /// Output length when a request sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// GPU name for the DCGM labels.
    pub gpu_name: String,
    /// Seed for output text and ids.
    pub seed: u64,
    /// The engine.
    pub driver: DriverHandle,
    /// Live faults.
    pub faults: FaultState,
    /// Pieces of text seen by `/tokenize`, for `/detokenize`.
    pub vocab: Vocab,
    /// Requests whose client left before the end.
    pub cancels: CancelLog,
    /// Where the replica listens.
    pub addr: SocketAddr,
    /// Unix time at start, for `/v1/models`.
    started_unix: u64,
    /// `true` while crashed; the listener task follows it.
    crashed: watch::Sender<bool>,
    next_id: AtomicU64,
}

impl Shared {
    /// A fresh request id.
    pub fn next_request_id(&self) -> RequestId {
        RequestId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether the replica is down (a `crash` fault).
    pub fn is_crashed(&self) -> bool {
        *self.crashed.borrow()
    }

    /// Installs validated faults and starts or ends a crash to match.
    fn apply(self: &Arc<Self>, next: Faults, delay_crash: bool) {
        let crash = next.crash;
        self.faults.set(next);
        if crash && delay_crash {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CRASH_DELAY).await;
                if me.faults.get().crash {
                    me.crashed.send_replace(true);
                }
            });
        } else {
            self.crashed.send_replace(crash);
        }
    }
}

/// Token pieces seen by `/tokenize`: the stand-in tokenizer hashes text, so this is the only
/// way back from ids to text. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct Vocab(Mutex<HashMap<u32, Vec<u8>>>);

impl Vocab {
    /// Remembers the pieces of `text`, whose tokens are `tokens`.
    pub fn learn(&self, text: &str, tokens: &[u32]) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() + tokens.len() > VOCAB_CAP {
            map.clear();
        }
        let chunks = text
            .as_bytes()
            .chunks(switchyard_core::profile::BYTES_PER_TOKEN);
        for (t, piece) in tokens.iter().zip(chunks) {
            map.entry(*t).or_insert_with(|| piece.to_vec());
        }
    }

    /// The text of `tokens`; unknown ids read `<|id|>`.
    pub fn text(&self, tokens: &[u32]) -> String {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = Vec::new();
        for t in tokens {
            match map.get(t) {
                Some(p) => bytes.extend_from_slice(p),
                None => bytes.extend_from_slice(format!("<|{t}|>").as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine configuration is invalid.
    #[error("invalid engine config: {0}")]
    Config(#[from] crate::ConfigError),
    /// The faults are invalid.
    #[error("invalid faults: {0}")]
    Faults(#[from] FaultsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
}

/// A running replica. Dropping it stops the listener, its connections and its engine.
#[derive(Debug)]
pub struct Replica {
    shared: Arc<Shared>,
    listener_task: JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.listener_task.abort();
    }
}

/// Binds `addr` with `SO_REUSEADDR`, so a crashed replica can listen on its port again.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Replica {
    /// Starts a replica listening on `addr` (port 0 picks a free one). Must run inside a tokio
    /// runtime.
    pub async fn start(cfg: ReplicaConfig, addr: SocketAddr) -> Result<Replica, StartError> {
        cfg.faults.validate()?;
        let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let driver = DriverHandle::spawn(cfg.engine.clone(), cfg.time_scale)?;
        let crashed = cfg.faults.crash;
        let shared = Arc::new(Shared {
            model_json: serde_json::to_string(&cfg.model).unwrap_or_else(|_| "\"\"".into()),
            model: cfg.model,
            max_model_len: cfg.engine.max_model_len,
            slots: cfg.engine.slots,
            default_max_tokens: cfg.default_max_tokens.max(1),
            gpu_name: cfg.gpu_name,
            seed: cfg.seed,
            driver,
            faults: FaultState::new(cfg.faults, cfg.seed),
            vocab: Vocab::default(),
            cancels: CancelLog::default(),
            addr,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            crashed: watch::Sender::new(crashed),
            next_id: AtomicU64::new(1),
        });
        let listener = (!crashed).then_some(listener);
        let listener_task = tokio::spawn(listen(shared.clone(), listener));
        Ok(Replica {
            shared,
            listener_task,
        })
    }

    /// Where the replica listens.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The served model name.
    pub fn model(&self) -> &str {
        &self.shared.model
    }

    /// The engine's numbers now.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        self.shared.driver.snapshot().await
    }

    /// Requests whose client left before their answer was complete (the engine aborted
    /// them), and the keys ([`super::output::Expected::output_seed`]) of the latest.
    pub fn cancellations(&self) -> Cancellations {
        self.shared.cancels.read()
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        self.shared.faults.get()
    }

    /// Replaces the faults at once (a `crash` takes effect immediately; `crash: false`
    /// listens again).
    pub fn set_faults(&self, faults: Faults) -> Result<(), FaultsError> {
        faults.validate()?;
        self.shared.apply(faults, false);
        Ok(())
    }
}

/// Accepts connections while up; while crashed, waits to be restored (by a fault change or
/// after `crash_for_s`), then listens on the same address again.
async fn listen(shared: Arc<Shared>, mut listener: Option<TcpListener>) {
    let mut crashed = shared.crashed.subscribe();
    let mut conns = JoinSet::new();
    loop {
        match &listener {
            Some(l) => tokio::select! {
                accepted = l.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let shared = shared.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                let shared = shared.clone();
                                async move { Ok::<_, Infallible>(route(shared, req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sim accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                res = async { crashed.wait_for(|c| *c).await.map(|_| ()) } => {
                    if res.is_err() { return; }
                    tracing::info!(addr = %shared.addr, "sim replica crashed (fault)");
                    listener = None;
                    conns.abort_all();
                    shared.driver.reset();
                }
            },
            None => {
                let crash_for = shared.faults.get().crash_for_s;
                let restore_after = async {
                    match crash_for {
                        Some(s) => tokio::time::sleep(Duration::from_secs_f64(s)).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    res = async { crashed.wait_for(|c| !*c).await.map(|_| ()) } => if res.is_err() { return; },
                    () = restore_after => {
                        let mut f = shared.faults.get();
                        f.crash = false;
                        shared.faults.set(f);
                        shared.crashed.send_replace(false);
                    }
                }
                // The port may linger for a moment; retry until it binds or we crash again.
                loop {
                    match bind(shared.addr) {
                        Ok(l) => {
                            listener = Some(l);
                            shared.faults.restart_warmup();
                            tracing::info!(addr = %shared.addr, "sim replica restored");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, addr = %shared.addr, "sim rebind failed; retrying");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if *crashed.borrow() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Reads a request body, bounded.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, openai::SimError> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(openai::SimError::bad(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Dispatches one request.
async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<SimBody> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == "/admin/faults" {
        return admin_faults(&shared, req).await;
    }
    if shared.faults.hang() {
        return std::future::pending().await;
    }
    let post = method == Method::POST;
    let get = method == Method::GET || method == Method::HEAD;
    match path.as_str() {
        "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/embeddings"
        | "/tokenize"
        | "/detokenize"
            if post =>
        {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return e.response(),
            };
            match path.as_str() {
                "/v1/chat/completions" => openai::generate(shared, Kind::Chat, body).await,
                "/v1/completions" => openai::generate(shared, Kind::Completion, body).await,
                "/v1/embeddings" => extras::embeddings(&shared, &body),
                "/tokenize" => extras::tokenize(&shared, &body),
                _ => extras::detokenize(&shared, &body),
            }
        }
        "/health" if get => {
            if shared.faults.not_ready() {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableError",
                    "simulated fault: the engine is not ready",
                )
            } else {
                json_response(StatusCode::OK, Bytes::new())
            }
        }
        "/v1/models" if get => models(&shared),
        "/version" if get => json_response(
            StatusCode::OK,
            format!(
                "{{\"version\":\"{}-switchyard-sim\"}}",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        "/metrics" if get => metrics_text(&shared).await,
        "/props" if get => match shared.slots {
            Some(mode) => llamacpp::props(&shared, mode),
            None => error(StatusCode::NOT_FOUND, "NotFoundError", "Not Found"),
        },
        "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/embeddings"
        | "/tokenize"
        | "/detokenize"
        | "/health"
        | "/v1/models"
        | "/version"
        | "/metrics" => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Method Not Allowed",
        ),
        _ => error(StatusCode::NOT_FOUND, "NotFoundError", "Not Found"),
    }
}

fn models(shared: &Shared) -> Response<SimBody> {
    let body = serde_json::json!({
        "object": "list",
        "data": [{
            "id": shared.model,
            "object": "model",
            "created": shared.started_unix,
            "owned_by": "vllm",
            "root": shared.model,
            "parent": null,
            "max_model_len": shared.max_model_len,
            "permission": [],
        }],
    });
    json_response(StatusCode::OK, body.to_string())
}

async fn metrics_text(shared: &Shared) -> Response<SimBody> {
    let Some(snap) = shared.driver.snapshot().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            "the engine is not running",
        );
    };
    if shared.slots.is_some() {
        return llamacpp::metrics_response(&snap);
    }
    let host = shared.addr.to_string();
    let text = metrics::render(
        &snap,
        &Labels {
            model: &shared.model,
            gpu_name: &shared.gpu_name,
            hostname: &host,
        },
        shared.cancels.total(),
    );
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(text))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /admin/faults` (the current set) and `POST /admin/faults` (replace named fields).
async fn admin_faults(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<SimBody> {
    let current = shared.faults.get();
    match *req.method() {
        Method::GET => json_response(
            StatusCode::OK,
            serde_json::to_string(&current).unwrap_or_default(),
        ),
        Method::POST => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return e.response(),
            };
            let patch: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return openai::bad_request(&format!("invalid JSON: {e}")),
            };
            match current.patched(&patch) {
                Ok(next) => {
                    let text = serde_json::to_string(&next).unwrap_or_default();
                    shared.apply(next, true);
                    json_response(StatusCode::OK, text)
                }
                Err(e) => openai::bad_request(&e.0),
            }
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Method Not Allowed",
        ),
    }
}
