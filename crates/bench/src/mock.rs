//! The fast upstream of `switchyard bench overhead`: an HTTP/1.1 server that answers every
//! POST with a fixed OpenAI chat completion, or, when the request asks `"stream": true`, with
//! a short SSE stream (a first chunk at once, then a few more, then `[DONE]`), so that what a
//! proxy adds is not hidden behind upstream work.
//!
//! A request body may carry `"mock_hold_ms": N` (unknown fields pass through proxies): the
//! stream then stays open N ms after its first chunk, which is how the benchmark holds
//! thousands of streams open to measure a proxy's memory. `GET /health` answers 200.
//!
//! `POST /v1/messages` answers in Anthropic's Messages shapes instead (a message, or its event
//! stream), so the same run can time a path through an `anthropic` backend, translation
//! included, beside the OpenAI one.

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

/// The non-streaming Messages answer.
pub const MESSAGE: &str = r#"{"id":"msg_mock","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}"#;

const MESSAGE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const MESSAGE_DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n";
const MESSAGE_END: &str = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// What one API's answers look like: the whole answer, and a stream's first event, each
/// later chunk and its end.
struct Shapes {
    whole: &'static str,
    first: &'static str,
    chunk: &'static str,
    last: &'static str,
}

const OPENAI: Shapes = Shapes {
    whole: COMPLETION,
    first: CHUNK,
    chunk: CHUNK,
    last: LAST,
};

const ANTHROPIC: Shapes = Shapes {
    whole: MESSAGE,
    first: MESSAGE_START,
    chunk: MESSAGE_DELTA,
    last: MESSAGE_END,
};

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
    let shapes = if req.uri().path() == "/v1/messages" {
        &ANTHROPIC
    } else {
        &OPENAI
    };
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
            shapes.whole.as_bytes(),
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
            .send_data(Bytes::from_static(shapes.first.as_bytes()))
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
                .send_data(Bytes::from_static(shapes.chunk.as_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx
            .send_data(Bytes::from_static(shapes.last.as_bytes()))
            .await;
    });
    let mut r = Response::new(Either::Right(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    Ok(r)
}
