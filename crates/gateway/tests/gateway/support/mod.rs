//! Shared test support: mock upstreams (in-process hyper servers on 127.0.0.1:0, so real
//! sockets), a gateway booted on port 0 from YAML text, and a small HTTP client.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A request as a mock upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a mock upstream answers.
#[derive(Clone)]
pub enum Reply {
    /// A JSON body with a status.
    Json(StatusCode, &'static str),
    /// SSE chunks; before each chunk after the first, wait for `gate` to be notified if given.
    Sse {
        chunks: Vec<&'static str>,
        gate: Option<Arc<Notify>>,
    },
    /// 429 with this `Retry-After` value.
    RateLimited(&'static str),
    /// Never answer.
    Hang,
    /// Answer 200 JSON after `release` is notified (holds the request in flight until then).
    HoldUntil(Arc<Notify>),
}

pub type Body = http_body_util::Either<Full<Bytes>, Channel<Bytes, Infallible>>;

/// A mock upstream over a real socket.
pub struct Mock {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted, to show that upstream connections are reused.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// `GET /metrics` requests (the gateway's engine scrapes), answered 404 like a server
    /// without metrics and kept out of `seen`, so counts of inference requests stay exact.
    pub scrapes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Mock {
    pub async fn start(reply: Reply) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let conns = connections.clone();
        let scrapes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let scrapes2 = scrapes.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = reply.clone();
                let seen = seen2.clone();
                let scrapes = scrapes2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let reply = reply.clone();
                        let seen = seen.clone();
                        let scrapes = scrapes.clone();
                        async move {
                            // Engine detection's probes and scrapes: answered as a server
                            // that has none of those endpoints does, kept out of `seen`.
                            // (Under the backend's base path, if it has one.)
                            let path = req.uri().path();
                            let probes = ["/props", "/get_server_info", "/info", "/version"];
                            if probes.iter().any(|p| path.ends_with(p)) {
                                return Ok(json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#));
                            }
                            if path.ends_with("/metrics") {
                                scrapes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                return Ok::<_, Infallible>(json(
                                    StatusCode::NOT_FOUND,
                                    r#"{"error":"no metrics"}"#,
                                ));
                            }
                            Ok::<_, Infallible>(answer(req, reply, seen).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Mock {
            addr,
            seen,
            connections,
            scrapes,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Engine scrapes received.
    pub fn scrapes(&self) -> usize {
        self.scrapes.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the mock")
    }
}

async fn answer(
    req: Request<Incoming>,
    reply: Reply,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        // With the query, if any (an Azure backend's `api-version`).
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: parts.headers,
        body,
    });
    match reply {
        Reply::Json(status, text) => json(status, text),
        Reply::RateLimited(after) => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":{"message":"rate limited"}}"#,
            );
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static(after));
            r
        }
        Reply::HoldUntil(release) => {
            release.notified().await;
            json(StatusCode::OK, OK_BODY)
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Sse { chunks, gate } => {
            let (tx, body): (Sender<Bytes, Infallible>, Channel<Bytes, Infallible>) =
                Channel::new(4);
            tokio::spawn(send_chunks(tx, chunks, gate));
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(http_body_util::Either::Right(body))
                .unwrap()
        }
    }
}

async fn send_chunks(
    mut tx: Sender<Bytes, Infallible>,
    chunks: Vec<&'static str>,
    gate: Option<Arc<Notify>>,
) {
    for (i, c) in chunks.into_iter().enumerate() {
        if i > 0 {
            if let Some(g) = &gate {
                g.notified().await;
            }
        }
        if tx
            .send_data(Bytes::from_static(c.as_bytes()))
            .await
            .is_err()
        {
            return;
        }
    }
}

pub const OK_BODY: &str = r#"{"id":"cmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

fn json(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(http_body_util::Either::Left(Full::new(Bytes::from_static(
            text.as_bytes(),
        ))))
        .unwrap()
}

/// A gateway running on 127.0.0.1:0, started with [`switchyard_gateway::Server`].
pub struct Gw {
    pub addr: SocketAddr,
    running: Option<switchyard_gateway::Running>,
}

impl Gw {
    /// Starts a gateway running the typed test config `conf`.
    pub async fn with(conf: conf::Conf) -> Gw {
        Gw::start_config(conf.build()).await
    }

    /// Starts a gateway running `conf` that serves connections on `n` worker threads.
    pub async fn with_workers(conf: conf::Conf, n: usize) -> Gw {
        Gw::start_server(switchyard_gateway::Server::from_config(conf.build()).workers(n)).await
    }

    /// Starts a gateway running `cfg`.
    pub async fn start_config(cfg: switchyard_gateway::Config) -> Gw {
        Gw::start_server(switchyard_gateway::Server::from_config(cfg)).await
    }

    async fn start_server(server: switchyard_gateway::Server) -> Gw {
        let running = server
            .listen(LOOPBACK)
            .start()
            .await
            .expect("the gateway starts");
        Gw {
            addr: running.addr(),
            running: Some(running),
        }
    }

    /// The running gateway, to read its state.
    pub fn gateway(&self) -> &std::sync::Arc<switchyard_gateway::Gateway> {
        self.running.as_ref().expect("running").gateway()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Shuts down (as SIGINT does); returns how the drain ended.
    pub async fn shutdown(&mut self) -> switchyard_gateway::Drained {
        self.running
            .take()
            .expect("running")
            .shutdown(switchyard_gateway::Stop::Now)
            .await
            .unwrap()
    }
}

/// Port 0 on loopback: the tests' listen address.
pub const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A YAML config with one model `m` over `urls`, with extra pool lines (`policy: ...`) and
/// extra top-level lines.
pub fn config(urls: &[String], pool_extra: &str, top_extra: &str) -> String {
    let mut s = format!("{top_extra}\nmodels:\n  m:\n    {pool_extra}\n    backends:\n");
    for (i, u) in urls.iter().enumerate() {
        s.push_str(&format!("      - {{url: \"{u}\", name: b{i}}}\n"));
    }
    s
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A finished response.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
    pub fn backend(&self) -> String {
        self.headers["x-switchyard-backend"]
            .to_str()
            .unwrap()
            .to_owned()
    }
}

pub async fn post(c: &Client, url: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(c, b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

pub async fn get(c: &Client, url: &str) -> Answer {
    send(c, Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

pub async fn send(c: &Client, req: Request<Full<Bytes>>) -> Answer {
    let exchange = async {
        let resp = c.request(req).await.expect("request reached the gateway");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("gateway answered in full within 20s")
}

/// The url of a loopback port nothing listens on: connections to it are refused.
pub fn closed_port() -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    format!("http://{addr}")
}

pub const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// Waits until `cond` holds, polling every millisecond; fails after 10 s (of tokio time, so
/// virtual under a paused clock). For state changes with no event to await (such as a
/// counter another task updates); the short interval keeps a test from idling for most of a
/// poll once the change has happened.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not met within 10s");
}

/// Waits (up to 5 s) until connecting to `addr` is refused: the listener has closed.
pub async fn assert_refused_soon(addr: SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("listener still accepting after shutdown");
}

pub mod sim;

/// An upstream at the socket level: for each connection it reads the request (until its JSON
/// body's closing `}`, so closing sends FIN, not RST), writes `reply` as given, raw HTTP
/// bytes, and closes. For answers a well-behaved server cannot give: cut streams, bodies that
/// end early. Returns its base url.
pub async fn raw_upstream(reply: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            // One task per connection: a probe or scrape that never sends a `}` (a GET) must
            // not hold up the requests behind it.
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.ends_with(b"}") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}
pub mod conf;
