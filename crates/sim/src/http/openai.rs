//! The OpenAI-compatible endpoints of a simulated replica, shaped like vLLM's answers.
//!
//! `POST /v1/chat/completions` and `/v1/completions` turn the request into a [`SimRequest`]
//! (the chat messages rendered as `<|role|>\ncontent\n` lines, tokenized by the stand-in
//! [`tokenizer`]), submit it to the replica's engine driver and answer when the engine
//! finishes, or stream one SSE chunk per token as the engine produces it. The output text is
//! the engine's synthetic text (four characters per token). Bad input gets vLLM's error shape,
//! `{"object":"error","message":...,"type":"BadRequestError","param":null,"code":400}`.
//! `/v1/embeddings`, `/tokenize` and `/detokenize` ([`super::extras`]) answer at once, without
//! the engine.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{channel::Sender, Either, Full};
use serde_json::{json, Value};
use std::fmt::Write;
use std::io;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::driver::{DriveError, ReqEvent};
use super::faults::Verdict;
use super::server::{Shared, SimBody};
use crate::tokenizer::{self, mix64};
use crate::{RequestId, SimRequest};

/// Which generation endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Completion,
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<SimBody> {
    let mut r = Response::new(Either::Left(Full::new(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// vLLM's error response.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Response<SimBody> {
    let body = json!({
        "object": "error",
        "message": message,
        "type": kind,
        "param": null,
        "code": status.as_u16(),
    });
    json_response(status, body.to_string())
}

/// A 400 in vLLM's shape.
pub fn bad_request(message: &str) -> Response<SimBody> {
    error(StatusCode::BAD_REQUEST, "BadRequestError", message)
}

/// A refusal, turned into vLLM's error shape by [`SimError::response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    /// HTTP status (also the body's `code`).
    pub status: StatusCode,
    /// vLLM's error `type`, e.g. `BadRequestError`.
    pub kind: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SimError {
    /// A 400 `BadRequestError`.
    pub fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "BadRequestError",
            message: message.into(),
        }
    }

    /// The error response.
    pub fn response(&self) -> Response<SimBody> {
        error(self.status, self.kind, &self.message)
    }
}

/// Parses a request body as a JSON object.
pub(super) fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, SimError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(SimError::bad("the request body must be a JSON object")),
        Err(e) => Err(SimError::bad(format!("invalid JSON in request body: {e}"))),
    }
}

/// Checks the `model` field against the served name (absent is fine, as in recent vLLM).
pub(super) fn check_model(
    shared: &Shared,
    obj: &serde_json::Map<String, Value>,
) -> Result<(), SimError> {
    match obj.get("model") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(m)) if *m == shared.model => Ok(()),
        Some(Value::String(m)) => Err(SimError {
            status: StatusCode::NOT_FOUND,
            kind: "NotFoundError",
            message: format!("The model `{m}` does not exist."),
        }),
        Some(_) => Err(SimError::bad("`model` must be a string")),
    }
}

/// The text of a chat message's `content`: a string, `null`, or an array of parts whose
/// `text` fields are joined.
fn content_text(content: Option<&Value>, out: &mut String) -> Result<(), String> {
    match content {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) => {
            out.push_str(s);
            Ok(())
        }
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    out.push_str(t);
                }
            }
            Ok(())
        }
        Some(_) => Err("message `content` must be a string or an array of parts".into()),
    }
}

/// Renders chat messages into prompt text.
pub(super) fn render_chat(messages: Option<&Value>) -> Result<String, String> {
    let Some(Value::Array(msgs)) = messages else {
        return Err("`messages` must be a non-empty array".into());
    };
    if msgs.is_empty() {
        return Err("`messages` must be a non-empty array".into());
    }
    let mut text = String::new();
    for m in msgs {
        let Some(role) = m.get("role").and_then(Value::as_str) else {
            return Err("each message needs a string `role`".into());
        };
        let _ = writeln!(text, "<|{role}|>");
        content_text(m.get("content"), &mut text)?;
        text.push('\n');
    }
    text.push_str("<|assistant|>\n");
    Ok(text)
}

/// The prompt of a completion request as token ids: a string, a one-element array of strings,
/// or token ids (flat or a one-element array of arrays).
pub(super) fn completion_prompt(prompt: Option<&Value>) -> Result<Vec<u32>, String> {
    let one = |v: &Value| -> Result<Vec<u32>, String> {
        match v {
            Value::String(s) => Ok(tokenizer::tokenize(s)),
            Value::Array(ids) => ids
                .iter()
                .map(|t| {
                    t.as_u64()
                        .and_then(|t| u32::try_from(t).ok())
                        .ok_or_else(|| "prompt token ids must be non-negative integers".to_owned())
                })
                .collect(),
            _ => Err("`prompt` must be a string, an array of token ids, or a one-element array of either".into()),
        }
    };
    match prompt {
        Some(Value::Array(items)) if items.first().is_some_and(|v| !v.is_number()) => {
            match items.as_slice() {
                [single] => one(single),
                _ => Err("the simulator serves one prompt per request".into()),
            }
        }
        Some(v) => one(v),
        None => Err("`prompt` is required".into()),
    }
}

/// A positive integer field, if present.
fn opt_u32(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u32>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!("`{key}` must be a positive integer")),
        },
    }
}

/// What a generation request asks for.
struct Generation {
    prompt: Vec<u32>,
    max_tokens: u32,
    stream: bool,
    include_usage: bool,
}

fn parse_generation(
    shared: &Shared,
    kind: Kind,
    obj: &serde_json::Map<String, Value>,
) -> Result<Generation, String> {
    let prompt = match kind {
        Kind::Chat => tokenizer::tokenize(&render_chat(obj.get("messages"))?),
        Kind::Completion => completion_prompt(obj.get("prompt"))?,
    };
    if let Some(n) = opt_u32(obj, "n")? {
        if n != 1 {
            return Err("the simulator supports only n = 1".into());
        }
    }
    let requested = match opt_u32(obj, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => opt_u32(obj, "max_tokens")?,
    };
    let room = shared
        .max_model_len
        .saturating_sub(u32::try_from(prompt.len()).unwrap_or(u32::MAX));
    let max_tokens = requested.unwrap_or_else(|| shared.default_max_tokens.min(room).max(1));
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`stream` must be a boolean".into()),
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Generation {
        prompt,
        max_tokens,
        stream,
        include_usage,
    })
}

/// `POST /v1/chat/completions` and `/v1/completions`.
pub async fn generate(shared: Arc<Shared>, kind: Kind, body: Bytes) -> Response<SimBody> {
    let drop_after = match shared.faults.verdict() {
        Verdict::Hang => std::future::pending().await,
        Verdict::Error => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "simulated fault: the engine failed this request",
            )
        }
        Verdict::RateLimited(secs) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimitError",
                "simulated fault: too many requests",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            return r;
        }
        Verdict::Serve {
            delay,
            drop_after_tokens,
        } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            drop_after_tokens
        }
    };
    let obj = match parse_object(&body) {
        Ok(o) => o,
        Err(e) => return e.response(),
    };
    if let Err(e) = check_model(&shared, &obj) {
        return e.response();
    }
    let g = match parse_generation(&shared, kind, &obj) {
        Ok(g) => g,
        Err(msg) => return bad_request(&msg),
    };
    let id = shared.next_request_id();
    let output_seed = mix64(shared.seed ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let prompt_tokens = u32::try_from(g.prompt.len()).unwrap_or(u32::MAX);
    let req = SimRequest {
        id,
        prompt_tokens: g.prompt,
        max_output_tokens: g.max_tokens,
        output_seed,
    };
    let events = match shared.driver.submit(req).await {
        Ok(rx) => rx,
        Err(DriveError::Rejected(e)) => return bad_request(&e.to_string()),
        Err(DriveError::Stopped) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
                "the engine is not running",
            )
        }
    };
    let out = Output {
        shared: shared.clone(),
        kind,
        id,
        output_seed,
        prompt_tokens,
        created: unix_now(),
    };
    if g.stream {
        let (tx, body) = http_body_util::channel::Channel::new(16);
        tokio::spawn(out.stream(tx, events, g.include_usage, drop_after));
        let mut r = Response::new(Either::Right(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        r
    } else {
        out.whole(events).await
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One response being produced.
struct Output {
    shared: Arc<Shared>,
    kind: Kind,
    id: RequestId,
    output_seed: u64,
    prompt_tokens: u32,
    created: u64,
}

impl Output {
    fn response_id(&self) -> String {
        let prefix = match self.kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        format!("{prefix}-{:016x}", mix64(self.shared.seed ^ self.id.0))
    }

    fn piece(&self, index: u32) -> [u8; 4] {
        tokenizer::synthetic_piece(self.output_seed, index)
    }

    fn usage(&self, completion: u32, cached: u32) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    }

    /// Waits for the whole output and answers with one JSON body.
    async fn whole(self, mut events: mpsc::UnboundedReceiver<ReqEvent>) -> Response<SimBody> {
        let (mut cached, mut text, mut done) = (0, String::new(), None);
        while let Some(ev) = events.recv().await {
            match ev {
                ReqEvent::Admitted { cached_tokens } => cached = cached_tokens,
                ReqEvent::Token { index } => {
                    text.push_str(std::str::from_utf8(&self.piece(index)).unwrap_or("?"))
                }
                ReqEvent::Finished { output_tokens } => {
                    done = Some(output_tokens);
                    break;
                }
            }
        }
        let Some(n) = done else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
                "the engine stopped before the request finished",
            );
        };
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": null, "finish_reason": "length", "stop_reason": null,
            }),
            Kind::Completion => json!({
                "index": 0, "text": text, "logprobs": null,
                "finish_reason": "length", "stop_reason": null,
            }),
        };
        let object = match self.kind {
            Kind::Chat => "chat.completion",
            Kind::Completion => "text_completion",
        };
        let body = json!({
            "id": self.response_id(),
            "object": object,
            "created": self.created,
            "model": self.shared.model,
            "choices": [choice],
            "usage": self.usage(n, cached),
        });
        json_response(StatusCode::OK, body.to_string())
    }

    /// One SSE chunk with `choices` (raw JSON) and optional usage.
    fn chunk(&self, rid: &str, choices: &str, usage: Option<&Value>) -> Bytes {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        let mut s = format!(
            "data: {{\"id\":\"{rid}\",\"object\":\"{object}\",\"created\":{},\"model\":{},\"choices\":{choices}",
            self.created, self.shared.model_json
        );
        if let Some(u) = usage {
            let _ = write!(s, ",\"usage\":{u}");
        }
        s.push_str("}\n\n");
        Bytes::from(s)
    }

    /// Streams one chunk per token as the engine produces it.
    async fn stream(
        self,
        mut tx: Sender<Bytes, io::Error>,
        mut events: mpsc::UnboundedReceiver<ReqEvent>,
        include_usage: bool,
        drop_after: Option<u32>,
    ) {
        let rid = self.response_id();
        let driver = self.shared.driver.clone();
        let cut = |tx: Sender<Bytes, io::Error>| async move {
            // Let the connection flush what was sent, then cut it.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            tx.abort(io::Error::other("simulated fault: connection dropped"));
        };
        if self.kind == Kind::Chat {
            let first = self.chunk(
                &rid,
                r#"[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]"#,
                None,
            );
            if tx.send_data(first).await.is_err() {
                driver.abort(self.id);
                return;
            }
        }
        if drop_after == Some(0) {
            driver.abort(self.id);
            return cut(tx).await;
        }
        let (mut cached, mut sent) = (0, 0u32);
        while let Some(ev) = events.recv().await {
            match ev {
                ReqEvent::Admitted { cached_tokens } => cached = cached_tokens,
                ReqEvent::Token { index } => {
                    let piece = self.piece(index);
                    let text = std::str::from_utf8(&piece).unwrap_or("?");
                    let choices = match self.kind {
                        Kind::Chat => format!(
                            r#"[{{"index":0,"delta":{{"content":"{text}"}},"logprobs":null,"finish_reason":null}}]"#
                        ),
                        Kind::Completion => format!(
                            r#"[{{"index":0,"text":"{text}","logprobs":null,"finish_reason":null}}]"#
                        ),
                    };
                    if tx
                        .send_data(self.chunk(&rid, &choices, None))
                        .await
                        .is_err()
                    {
                        driver.abort(self.id);
                        return;
                    }
                    sent += 1;
                    if drop_after == Some(sent) {
                        driver.abort(self.id);
                        return cut(tx).await;
                    }
                }
                ReqEvent::Finished { output_tokens } => {
                    let last = match self.kind {
                        Kind::Chat => {
                            r#"[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"length","stop_reason":null}]"#
                        }
                        Kind::Completion => {
                            r#"[{"index":0,"text":"","logprobs":null,"finish_reason":"length","stop_reason":null}]"#
                        }
                    };
                    let _ = tx.send_data(self.chunk(&rid, last, None)).await;
                    if include_usage {
                        let usage = self.usage(output_tokens, cached);
                        let _ = tx.send_data(self.chunk(&rid, "[]", Some(&usage))).await;
                    }
                    let _ = tx.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
                    return;
                }
            }
        }
        // The engine dropped the request (a crash): the stream ends without `[DONE]`.
        tx.abort(io::Error::other("the engine stopped"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_rendering_shares_prefixes() {
        let a = render_chat(Some(&json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ])))
        .unwrap();
        assert_eq!(
            a,
            "<|system|>\nYou are terse.\n<|user|>\nhi\n<|assistant|>\n"
        );
        assert!(render_chat(Some(&json!([]))).is_err());
        assert!(render_chat(Some(&json!([{"content": "x"}]))).is_err());
        assert!(render_chat(Some(&json!([{"role": "user", "content": 3}]))).is_err());
    }

    #[test]
    fn completion_prompts_take_vllm_shapes() {
        assert_eq!(completion_prompt(Some(&json!([1, 2]))).unwrap(), vec![1, 2]);
        assert_eq!(
            completion_prompt(Some(&json!([[1, 2]]))).unwrap(),
            vec![1, 2]
        );
        assert_eq!(completion_prompt(Some(&json!(["abcd"]))).unwrap().len(), 1);
        assert!(completion_prompt(Some(&json!(["a", "b"]))).is_err());
        assert!(completion_prompt(Some(&json!([-1]))).is_err());
        assert!(completion_prompt(None).is_err());
    }
}
