//! The fast upstream of `switchyard bench overhead`: an HTTP/1.1 server that answers every
//! POST with a fixed OpenAI chat completion, or, when the request asks `"stream": true`, with
//! a short SSE stream (a first chunk at once, then a few more, then `[DONE]`), so that what a
//! proxy adds is not hidden behind upstream work.
//!
//! A request body may carry `"mock_hold_ms": N` (unknown fields pass through proxies): the
//! stream then stays open N ms after its first chunk, which is how the benchmark holds
//! thousands of streams open to measure a proxy's memory. `GET /health` answers 200.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{channel::Channel, BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The non-streaming answer.
pub const COMPLETION: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

const CHUNK: &str = "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":null}]}\n\n";
const LAST: &str = "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

/// Chunks after the first one in a stream.
const MORE_CHUNKS: u32 = 3;
/// Gap between stream chunks.
const CHUNK_GAP: Duration = Duration::from_millis(1);

type MockBody = Either<Full<Bytes>, Channel<Bytes, Infallible>>;

#[derive(Deserialize, Default)]
struct Ask {
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    mock_hold_ms: u64,
}

/// A running mock upstream; stops accepting when dropped.
#[derive(Debug)]
pub struct Mock {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Mock {
    /// Starts the mock on `listener` (inside a tokio runtime).
    pub fn start(listener: TcpListener) -> std::io::Result<Mock> {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept(listener));
        Ok(Mock { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

/// Serves the mock on `addr` until the process ends (what `switchyard bench mock` runs).
pub async fn serve_forever(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    accept(listener).await;
    Ok(())
}

async fn handle(req: Request<Incoming>) -> Result<Response<MockBody>, Infallible> {
    if req.method() != http::Method::POST {
        return Ok(Response::new(Either::Left(Full::new(Bytes::from_static(
            b"ok",
        )))));
    }
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(
                b"{\"error\":{\"message\":\"bad body\"}}",
            ))));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(r);
        }
    };
    let ask: Ask = serde_json::from_slice(&body).unwrap_or_default();
    if !ask.stream {
        let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(
            COMPLETION.as_bytes(),
        ))));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return Ok(r);
    }
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
    tokio::spawn(async move {
        if tx
            .send_data(Bytes::from_static(CHUNK.as_bytes()))
            .await
            .is_err()
        {
            return;
        }
        if ask.mock_hold_ms > 0 {
            tokio::time::sleep(Duration::from_millis(ask.mock_hold_ms.min(600_000))).await;
        }
        for _ in 0..MORE_CHUNKS {
            tokio::time::sleep(CHUNK_GAP).await;
            if tx
                .send_data(Bytes::from_static(CHUNK.as_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send_data(Bytes::from_static(LAST.as_bytes())).await;
    });
    let mut r = Response::new(Either::Right(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    Ok(r)
}
