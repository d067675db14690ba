//! [`RequestProfile`]: what a request is, computed once from its body and a few headers.
//!
//! The gateway reads the body once and calls [`RequestProfile::parse`]; everything downstream
//! (routing, forwarding, metrics) reads the profile. The body itself is forwarded as the original
//! bytes: the profile records where the `model` value sits so that only that span is rewritten
//! when a backend expects another name.
//!
//! Parsing costs work and memory in proportion to the body, whatever its shape: the fields the
//! gateway reads are borrowed from the body, the prompt is rendered by visiting messages and
//! prompt items one at a time (`render`), and only the first [`ParseLimits::max_prompt_bytes`]
//! of rendered prompt are kept and hashed into blocks; the rest is counted for the token
//! estimate and forwarded untouched with the body.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::Range;

use crate::prefix::block_hashes;

mod render;

/// Average bytes per token assumed when estimating token counts from text. English BPE
/// tokenizers average about four bytes per token; the simulator's tokenizer stand-in uses the
/// same figure so estimates and simulated engines agree.
pub const BYTES_PER_TOKEN: usize = 4;

/// Rendered prompt bytes a profile keeps for prefix hashing unless configured otherwise:
/// 512 KiB, about 131,000 tokens (8,192 blocks), past the context window of most models served
/// today. Longer prompts are routed on their first 512 KiB.
pub const DEFAULT_MAX_PROMPT_BYTES: usize = 512 * 1024;

/// Bounds on what parsing keeps of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Rendered prompt bytes kept in [`RequestProfile::prompt`] and hashed into
    /// [`RequestProfile::prompt_blocks`]; the rest of the prompt is only counted.
    pub max_prompt_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_prompt_bytes: DEFAULT_MAX_PROMPT_BYTES,
        }
    }
}

/// Which OpenAI endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/embeddings`
    Embeddings,
}

impl EndpointKind {
    /// The path of this endpoint, as forwarded upstream.
    pub fn path(self) -> &'static str {
        match self {
            EndpointKind::ChatCompletions => "/v1/chat/completions",
            EndpointKind::Completions => "/v1/completions",
            EndpointKind::Embeddings => "/v1/embeddings",
        }
    }
}

/// Where a request's session key came from, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionSource {
    /// The `x-session-id` header.
    Header,
    /// The body's `user` field.
    User,
    /// The client's address.
    ClientAddr,
}

/// What the gateway knows of a request besides its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestMeta<'a> {
    /// The `x-session-id` header, if sent.
    pub session_header: Option<&'a str>,
    /// The client's address, if known.
    pub client_addr: Option<IpAddr>,
}

/// What a request is, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestProfile {
    /// The endpoint it came in on.
    pub kind: EndpointKind,
    /// The requested model name: selects the pool.
    pub model: String,
    /// Byte range of the `model` value (the JSON string, quotes included) in the body, so it
    /// can be replaced without re-serializing anything else.
    pub model_span: Range<usize>,
    /// Whether the client asked for a streamed (SSE) response.
    pub stream: bool,
    /// Whether `stream_options.include_usage` was set.
    pub include_usage: bool,
    /// The body's `user` field.
    pub user: Option<String>,
    /// The key that pins a session to a backend for affinity policies.
    pub session_key: Option<String>,
    /// Where `session_key` came from.
    pub session_source: Option<SessionSource>,
    /// The prompt as the engine will see it, for prefix hashing: chat messages in order with
    /// their roles, a completion prompt, or embedding input. Token-id prompts contribute no text.
    /// At most [`ParseLimits::max_prompt_bytes`] of it (cut on a character boundary).
    pub prompt: String,
    /// The chained hashes of `prompt`'s full blocks ([`block_hashes`]), computed once here so
    /// that no policy hashes the prompt again.
    pub prompt_blocks: Vec<u64>,
    /// Estimated prompt tokens, of the whole prompt (not only the part kept).
    pub estimated_input_tokens: u32,
    /// `max_completion_tokens` or `max_tokens`, when given.
    pub max_output_tokens: Option<u32>,
}

/// Why a body could not be profiled. Each maps to a 400 with a stable code at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The body is not JSON, or a known field has the wrong type.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// No `model` field.
    #[error("request body has no 'model' field; set it to one of the names GET /v1/models lists")]
    MissingModel,
    /// `model` is not a non-empty string.
    #[error("'model' must be a non-empty string")]
    BadModel,
}

impl ProfileError {
    /// A stable machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            ProfileError::InvalidJson(_) | ProfileError::NotAnObject => "invalid_json",
            ProfileError::MissingModel => "missing_model",
            ProfileError::BadModel => "invalid_model",
        }
    }
}

/// The few fields of an OpenAI request body the gateway reads; everything else is ignored here
/// and forwarded untouched.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    stream: Option<bool>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl RequestProfile {
    /// Profiles a request body with the default [`ParseLimits`]. Never panics, whatever the
    /// bytes.
    pub fn parse(
        kind: EndpointKind,
        body: &[u8],
        meta: RequestMeta<'_>,
    ) -> Result<Self, ProfileError> {
        Self::parse_with(kind, body, meta, ParseLimits::default())
    }

    /// Profiles a request body, keeping at most what `limits` allow. Never panics, whatever
    /// the bytes; work and memory grow with the body's size, not with how many elements it
    /// holds.
    pub fn parse_with(
        kind: EndpointKind,
        body: &[u8],
        meta: RequestMeta<'_>,
        limits: ParseLimits,
    ) -> Result<Self, ProfileError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        match first {
            None => return Err(ProfileError::InvalidJson("the body is empty".into())),
            Some(b'{') => {}
            Some(_) => {
                // Tell "not JSON" apart from "JSON but not an object".
                return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => Err(ProfileError::NotAnObject),
                    Err(e) => Err(ProfileError::InvalidJson(e.to_string())),
                };
            }
        }
        let wire: Wire<'_> =
            serde_json::from_slice(body).map_err(|e| ProfileError::InvalidJson(e.to_string()))?;
        let raw_model = wire.model.ok_or(ProfileError::MissingModel)?;
        let model: Cow<'_, str> =
            serde_json::from_str(raw_model.get()).map_err(|_| ProfileError::BadModel)?;
        if model.trim().is_empty() {
            return Err(ProfileError::BadModel);
        }
        let model_span = span_of(body, raw_model.get());

        let mut rendered = render::Renderer::new(limits.max_prompt_bytes);
        if let Some(messages) = wire.messages {
            rendered
                .push_messages(messages)
                .map_err(|e| ProfileError::InvalidJson(format!("'messages': {e}")))?;
        }
        for raw in [wire.prompt, wire.input].into_iter().flatten() {
            rendered.push_prompt_value(raw);
        }
        let estimated = rendered
            .total
            .div_ceil(BYTES_PER_TOKEN)
            .saturating_add(rendered.token_ids);
        let prompt = rendered.text;

        let user = wire.user.map(Cow::into_owned);
        let (session_key, session_source) = match (meta.session_header, &user, meta.client_addr) {
            (Some(h), _, _) if !h.is_empty() => (Some(h.to_owned()), Some(SessionSource::Header)),
            (_, Some(u), _) if !u.is_empty() => (Some(u.clone()), Some(SessionSource::User)),
            (_, _, Some(addr)) => (Some(ip_key(addr)), Some(SessionSource::ClientAddr)),
            _ => (None, None),
        };

        Ok(RequestProfile {
            kind,
            model: model.into_owned(),
            model_span,
            stream: wire.stream.unwrap_or(false),
            include_usage: wire
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            user,
            session_key,
            session_source,
            prompt_blocks: block_hashes(&prompt),
            prompt,
            estimated_input_tokens: u32::try_from(estimated).unwrap_or(u32::MAX),
            max_output_tokens: wire.max_completion_tokens.or(wire.max_tokens),
        })
    }

    /// The text of the last user message of a chat request (as far as the prompt was kept),
    /// or the whole prompt of a completions or embeddings request: what content rules and
    /// intent classes read. Empty when a chat request has no user message.
    pub fn last_user_text(&self) -> &str {
        if self.kind != EndpointKind::ChatCompletions {
            return &self.prompt;
        }
        const MARK: &str = "<|user|>\n";
        let Some(at) = self.prompt.rfind(MARK) else {
            return "";
        };
        let rest = &self.prompt[at + MARK.len()..];
        // The message ends where the next one starts, or with the newline after it.
        let end = rest.find("\n<|").unwrap_or(rest.len());
        let text = &rest[..end];
        text.strip_suffix('\n').unwrap_or(text)
    }

    /// The body with the `model` value replaced by `name`, every other byte as it was.
    pub fn rewrite_model(&self, body: &[u8], name: &str) -> Vec<u8> {
        let quoted = serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\""));
        let mut out = Vec::with_capacity(body.len() + quoted.len());
        out.extend_from_slice(&body[..self.model_span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[self.model_span.end..]);
        out
    }
}

/// `addr` as text, the session key of a client without one (written without `format!`,
/// see [`crate::ip_text`]).
fn ip_key(addr: IpAddr) -> String {
    let mut s = String::with_capacity(15);
    crate::ip_text::push_ip(&mut s, addr);
    s
}

/// The byte range that `inner`, a sub-slice borrowed from `outer`, occupies in `outer`.
fn span_of(outer: &[u8], inner: &str) -> Range<usize> {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    let start = start.min(outer.len());
    let end = (start + inner.len()).min(outer.len());
    start..end
}

#[cfg(test)]
mod tests;
