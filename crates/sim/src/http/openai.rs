//! The OpenAI-compatible endpoints of a simulated replica, shaped like vLLM's answers.
//!
//! `POST /v1/chat/completions` and `/v1/completions` turn the request into a [`SimRequest`]
//! (the chat messages rendered as `<|role|>\ncontent\n` lines, tokenized by the stand-in
//! [`tokenizer`]), submit it to the replica's engine driver and answer when the engine
//! finishes, or stream one SSE chunk per token as the engine produces it ([`super::stream`]).
//! The output text is synthetic text (four characters per token), a pure function of the
//! request ([`super::output`]). A client that leaves before the end cancels the engine's
//! request ([`super::cancel`]). Bad input gets vLLM's error shape,
//! `{"object":"error","message":...,"type":"BadRequestError","param":null,"code":400}`.
//! `/v1/embeddings`, `/tokenize` and `/detokenize` ([`super::extras`]) answer at once, without
//! the engine.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::cancel::InFlight;
use super::driver::{DriveError, ReqEvent};
use super::faults::Verdict;
use super::server::{Shared, SimBody};
use super::{output, stream};
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
    check_model_name(&shared.model, obj)
}

/// Checks the `model` field against `served`.
pub(super) fn check_model_name(
    served: &str,
    obj: &serde_json::Map<String, Value>,
) -> Result<(), SimError> {
    match obj.get("model") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(m)) if *m == served => Ok(()),
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

/// The replica's limits that shape a request's output length.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Prompt plus output may not exceed it.
    pub max_model_len: u32,
    /// Output length when the request sets none.
    pub default_max_tokens: u32,
}

/// What a generation request asks for.
pub(super) struct Generation {
    /// The prompt's tokens.
    pub prompt: Vec<u32>,
    /// Tokens to generate.
    pub max_tokens: u32,
    /// Answer as SSE.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// The request's `seed` field: another seed, another output.
    pub seed: Option<u64>,
    /// vLLM's `priority` (lower first): read by a replica with priority scheduling.
    pub priority: i32,
}

/// Reads a generation request as a replica with `limits` would.
pub(super) fn parse_generation(
    limits: Limits,
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
    let room = limits
        .max_model_len
        .saturating_sub(u32::try_from(prompt.len()).unwrap_or(u32::MAX));
    let max_tokens = requested.unwrap_or_else(|| limits.default_max_tokens.min(room).max(1));
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
    // OpenAI's `seed` is a signed 64-bit integer; any integer names a seed.
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => match (v.as_u64(), v.as_i64()) {
            (Some(u), _) => Some(u),
            (None, Some(i)) => Some(i as u64),
            _ => return Err("`seed` must be an integer".into()),
        },
    };
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or("`priority` must be an integer")?,
    };
    Ok(Generation {
        prompt,
        max_tokens,
        stream,
        include_usage,
        seed,
        priority,
    })
}

/// `POST /v1/chat/completions` and `/v1/completions`.
pub async fn generate(shared: Arc<Shared>, kind: Kind, body: Bytes) -> Response<SimBody> {
    let stream_faults = match shared.faults.verdict() {
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
        Verdict::Serve { delay, stream } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            stream
        }
    };
    let obj = match parse_object(&body) {
        Ok(o) => o,
        Err(e) => return e.response(),
    };
    if let Err(e) = check_model(&shared, &obj) {
        return e.response();
    }
    let limits = Limits {
        max_model_len: shared.max_model_len,
        default_max_tokens: shared.default_max_tokens,
    };
    let g = match parse_generation(limits, kind, &obj) {
        Ok(g) => g,
        Err(msg) => return bad_request(&msg),
    };
    let id = shared.next_request_id();
    let output_seed = output::output_seed(&shared.model, &g.prompt, g.seed);
    let prompt_tokens = u32::try_from(g.prompt.len()).unwrap_or(u32::MAX);
    let req = SimRequest {
        id,
        prompt_tokens: g.prompt,
        max_output_tokens: g.max_tokens,
        output_seed,
        priority: g.priority,
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
    let in_flight = InFlight::new(shared.clone(), id, output_seed);
    let out = Output {
        shared: shared.clone(),
        kind,
        id,
        output_seed,
        prompt_tokens,
        max_tokens: g.max_tokens,
        created: unix_now(),
    };
    if g.stream {
        let (body, tx, gone) = stream::StreamBody::new();
        tokio::spawn(stream::run(
            out,
            stream::Sink::new(tx, gone, stream_faults),
            events,
            g.include_usage,
            in_flight,
        ));
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
        out.whole(events, in_flight).await
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One response being produced.
pub(super) struct Output {
    /// The replica.
    pub shared: Arc<Shared>,
    /// Chat or text completion.
    pub kind: Kind,
    /// The engine's id of the request.
    pub id: RequestId,
    /// Names the output text.
    pub output_seed: u64,
    /// Prompt length, for `usage`.
    pub prompt_tokens: u32,
    /// Tokens it will generate: the last one carries the `finish_reason`.
    pub max_tokens: u32,
    /// Unix time of the request, in every chunk.
    pub created: u64,
}

impl Output {
    pub(super) fn response_id(&self) -> String {
        let prefix = match self.kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        format!("{prefix}-{:016x}", mix64(self.shared.seed ^ self.id.0))
    }

    pub(super) fn piece(&self, index: u32) -> [u8; 4] {
        tokenizer::synthetic_piece(self.output_seed, index)
    }

    pub(super) fn usage(&self, completion: u32, cached: u32) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    }

    /// Waits for the whole output and answers with one JSON body. Dropped before the end (the
    /// client left), `in_flight` cancels the engine's request.
    async fn whole(
        self,
        mut events: mpsc::UnboundedReceiver<ReqEvent>,
        mut in_flight: InFlight,
    ) -> Response<SimBody> {
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
        in_flight.finished();
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
