//! Provider kinds: which API a backend speaks (`provider:` in its config), which API a client
//! speaks (the path it called), and what the gateway does between the two: the path and
//! credential headers of each kind, the request body sent upstream, and the [`Translate`]r
//! that turns the answer back into the client's shape as it streams.
//!
//! | client \ backend | `openai` / `azure` | `anthropic` |
//! |---|---|---|
//! | `POST /v1/chat/completions` | as is | [`anthropic`]: chat -> Messages, answer back |
//! | `POST /v1/messages` | [`messages`]: Messages -> chat, answer back | as is |
//!
//! Translation is pure (JSON in, JSON out); the streamed answer is translated one SSE event at
//! a time ([`stream`]), never buffered whole. A JSON answer is buffered (it must be whole to be
//! parsed), up to [`MAX_JSON_ANSWER`].

pub mod anthropic;
pub mod messages;
pub mod stream;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use serde::Deserialize;
use switchyard_core::EndpointKind;

/// The `anthropic-version` header sent to `anthropic` backends unless the client sent one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The `api-version` an `azure` backend gets when its config names none: the latest
/// generally available data-plane version when this was written.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// Largest JSON answer translated; a larger one is answered with an error instead (a chat
/// completion is a few kilobytes; this bounds what one request may hold in memory).
pub const MAX_JSON_ANSWER: usize = 16 * 1024 * 1024;

/// `provider:` as the config file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI, OpenAI, Groq, ...).
    #[default]
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Azure OpenAI: a deployment URL, `api-version` query, `api-key` header.
    Azure,
}

/// What a backend speaks, with what that needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Provider {
    /// OpenAI-compatible: the client's request as it is, key as `Authorization: Bearer`.
    #[default]
    OpenAi,
    /// Anthropic Messages: `/v1/messages`, key as `x-api-key`, `anthropic-version`.
    Anthropic,
    /// Azure OpenAI: `<deployment url>/chat/completions?api-version=...`, key as `api-key`.
    Azure {
        /// The `api-version` query value.
        api_version: String,
    },
}

impl Provider {
    /// The kind's name, as the config and the admin API write it.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Azure { .. } => "azure",
        }
    }

    /// The path (and query) of `kind`'s endpoint under the backend's `base_path` (its url's
    /// path, a trailing `/v1` already taken off). An `openai` backend whose url names another
    /// API version (Gemini's `/v1beta/openai`, `/api/paas/v4`) gets the endpoint under it, as
    /// an OpenAI SDK would (`<url>/chat/completions`); any other gets `/v1/...`. An
    /// `anthropic` backend serves chat at `/v1/messages`; its other endpoints keep their
    /// OpenAI paths (Anthropic has none, so they get its 404).
    pub fn path(&self, kind: EndpointKind, base_path: &str) -> String {
        match self {
            Provider::OpenAi if names_a_version(base_path) => {
                kind.path().trim_start_matches("/v1").to_owned()
            }
            Provider::OpenAi => kind.path().to_owned(),
            Provider::Anthropic if kind == EndpointKind::ChatCompletions => "/v1/messages".into(),
            Provider::Anthropic => kind.path().to_owned(),
            Provider::Azure { api_version } => {
                let tail = kind.path().trim_start_matches("/v1");
                format!("{tail}?api-version={api_version}")
            }
        }
    }

    /// The header that carries a backend's own key, with its value (marked sensitive so it is
    /// never printed).
    pub fn credential(&self, key: &str) -> Option<(HeaderName, HeaderValue)> {
        let (name, value) = match self {
            Provider::OpenAi => (http::header::AUTHORIZATION, format!("Bearer {key}")),
            Provider::Anthropic => (X_API_KEY, key.to_owned()),
            Provider::Azure { .. } => (API_KEY, key.to_owned()),
        };
        let mut value = HeaderValue::try_from(value).ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }

    /// Sets the headers this kind needs on a request going to it: its own key in place of
    /// every header a client key may come in (so the client's never reaches it), and
    /// `anthropic-version` for Anthropic unless the client chose one.
    pub fn set_headers(
        &self,
        headers: &mut crate::forward::HeaderPlan<'_>,
        credential: Option<&(HeaderName, HeaderValue)>,
    ) {
        if let Some((name, value)) = credential {
            headers.remove(http::header::AUTHORIZATION);
            headers.remove(X_API_KEY);
            headers.remove(API_KEY);
            headers.insert(name.clone(), value.clone());
        }
        if *self == Provider::Anthropic && !headers.contains(&ANTHROPIC_VERSION_HEADER) {
            headers.insert(
                ANTHROPIC_VERSION_HEADER,
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
    }
}

/// Whether a url path has an API version segment (`v` and a digit: `v1beta`, `v4`).
fn names_a_version(path: &str) -> bool {
    path.split('/')
        .any(|seg| seg.len() >= 2 && seg.starts_with('v') && seg.as_bytes()[1].is_ascii_digit())
}

/// `x-api-key`: Anthropic's key header (and one a client may send the gateway's key in).
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `api-key`: Azure's key header.
pub const API_KEY: HeaderName = HeaderName::from_static("api-key");
/// `anthropic-version`.
pub const ANTHROPIC_VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");

/// Which API a client called, so its answer (and every error) comes back in that shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientApi {
    /// The OpenAI endpoints.
    #[default]
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

/// Which way an answer is translated on its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// An Anthropic backend's answer to a chat-completions client; `include_usage`: the
    /// request asked for a usage chunk at the end of the stream.
    ToChat {
        /// Send the final usage chunk.
        include_usage: bool,
    },
    /// An OpenAI-compatible backend's answer to a Messages client.
    ToMessages,
}

/// How an answer from a backend of kind `provider` goes back to a `client`; `None`: as it is.
pub fn direction(client: ClientApi, provider: &Provider, include_usage: bool) -> Option<Direction> {
    match (client, provider) {
        (ClientApi::OpenAi, Provider::Anthropic) => Some(Direction::ToChat { include_usage }),
        (ClientApi::Anthropic, Provider::OpenAi | Provider::Azure { .. }) => {
            Some(Direction::ToMessages)
        }
        _ => None,
    }
}

/// The body for one attempt and how its answer comes back.
pub struct Outgoing {
    /// What goes upstream.
    pub body: Bytes,
    /// How the answer is translated; `None`: relayed as it is.
    pub direction: Option<Direction>,
}

/// The body sent to an `anthropic` backend that expects the name `model`: a chat client's
/// request `chat` translated, or a Messages client's own body `original` passed through with
/// only `model` set (copied only when the name differs from `client_model`, the one it sent).
pub fn to_anthropic(
    client: ClientApi,
    chat: &Bytes,
    original: &Bytes,
    model: &str,
    client_model: &str,
) -> Result<Outgoing, String> {
    match client {
        ClientApi::OpenAi => {
            let t = anthropic::request_to_messages(chat, model)?;
            Ok(Outgoing {
                body: Bytes::from(t.body),
                direction: Some(Direction::ToChat {
                    include_usage: t.include_usage,
                }),
            })
        }
        ClientApi::Anthropic => Ok(Outgoing {
            body: if model == client_model {
                original.clone()
            } else {
                Bytes::from(messages::with_model(original, model)?)
            },
            direction: None,
        }),
    }
}

/// An answer being translated back into the client's shape. SSE answers are translated
/// event by event as they pass; JSON answers are collected and translated at their end.
#[derive(Debug)]
pub enum Translate {
    /// A JSON answer (success or error) being collected.
    Json {
        /// Which way.
        direction: Direction,
        /// The upstream status, which tells an error answer from a success.
        status: StatusCode,
        /// The bytes so far.
        buf: Vec<u8>,
        /// The `created` time of a chat completion made from a Messages answer.
        created: u64,
    },
    /// An Anthropic event stream becoming chat chunks.
    ToChat(stream::ToChat),
    /// A chat chunk stream becoming Anthropic events.
    ToMessages(stream::ToMessages),
}

impl Translate {
    /// A translator for an answer with `status`, SSE when `sse`; `created` is now in Unix
    /// seconds (chat chunks carry it).
    pub fn new(direction: Direction, sse: bool, status: StatusCode, created: u64) -> Self {
        match (direction, sse && status.is_success()) {
            (Direction::ToChat { include_usage }, true) => {
                Translate::ToChat(stream::ToChat::new(created, include_usage))
            }
            (Direction::ToMessages, true) => Translate::ToMessages(stream::ToMessages::new()),
            (direction, false) => Translate::Json {
                direction,
                status,
                buf: Vec::new(),
                created,
            },
        }
    }

    /// Takes the next bytes of the answer; returns what the client gets now.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Translate::Json { buf, .. } => {
                if buf.len() <= MAX_JSON_ANSWER {
                    buf.extend_from_slice(bytes);
                }
                Vec::new()
            }
            Translate::ToChat(t) => t.push(bytes),
            Translate::ToMessages(t) => t.push(bytes),
        }
    }

    /// The answer ended: the rest of what the client gets.
    pub fn finish(&mut self) -> Vec<u8> {
        match self {
            Translate::Json {
                direction,
                status,
                buf,
                created,
            } => {
                let body = std::mem::take(buf);
                if body.len() > MAX_JSON_ANSWER {
                    let msg = "the backend's answer is too large to translate";
                    return match direction {
                        Direction::ToChat { .. } => {
                            openai_error(msg, "server_error", "answer_too_large")
                        }
                        Direction::ToMessages => anthropic_error("api_error", msg),
                    };
                }
                match (direction, status.is_success()) {
                    (Direction::ToChat { .. }, true) => {
                        anthropic::response_to_chat(&body, *created)
                    }
                    (Direction::ToChat { .. }, false) => anthropic::error_to_openai(*status, &body),
                    (Direction::ToMessages, true) => messages::response_to_messages(&body),
                    (Direction::ToMessages, false) => messages::error_to_anthropic(*status, &body),
                }
            }
            Translate::ToChat(t) => t.finish(),
            Translate::ToMessages(t) => t.finish(),
        }
    }
}

/// Anthropic's error `type` for an HTTP status (its documented list).
pub fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 408 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type":..,"message":..}}`: Anthropic's error body.
pub fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
        .to_string()
        .into_bytes()
}

/// `{"error":{"message","type","param","code"}}`: OpenAI's error body.
pub fn openai_error(message: &str, kind: &str, code: &str) -> Vec<u8> {
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        .to_string()
        .into_bytes()
}

/// The SSE events that end a Messages stream broken after it started (the counterpart of
/// [`crate::body::STREAM_BROKEN_EVENT`] and its siblings for a `/v1/messages` client).
pub fn anthropic_stream_error(message: &str) -> Bytes {
    let mut out = b"event: error\ndata: ".to_vec();
    out.extend_from_slice(&anthropic_error("api_error", message));
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderMap;

    #[test]
    fn each_kind_has_its_path_and_key_header() {
        let azure = Provider::Azure {
            api_version: "2024-10-21".into(),
        };
        let chat = EndpointKind::ChatCompletions;
        assert_eq!(Provider::Anthropic.path(chat, ""), "/v1/messages");
        assert_eq!(
            azure.path(chat, "/openai/deployments/gpt4o"),
            "/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            Provider::OpenAi.path(EndpointKind::Embeddings, ""),
            "/v1/embeddings"
        );
        // Groq's `/openai/v1` has its `/v1` folded away by the url parser: `/openai` + `/v1/..`.
        assert_eq!(
            Provider::OpenAi.path(chat, "/openai"),
            "/v1/chat/completions"
        );
        // Gemini's OpenAI endpoint lives under its own version.
        assert_eq!(
            Provider::OpenAi.path(chat, "/v1beta/openai"),
            "/chat/completions"
        );
        assert_eq!(
            Provider::OpenAi.path(chat, "/api/paas/v4"),
            "/chat/completions"
        );
        assert_eq!(Provider::OpenAi.path(chat, "/vllm"), "/v1/chat/completions");
        let (name, value) = Provider::Anthropic.credential("sk-ant").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-api-key", "sk-ant")
        );
        assert!(value.is_sensitive());
        let (name, _) = azure.credential("k").unwrap();
        assert_eq!(name.as_str(), "api-key");
        let (name, value) = Provider::OpenAi.credential("k").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer k")
        );
    }

    #[test]
    fn a_backend_key_replaces_every_client_key_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer client"));
        h.insert("x-api-key", HeaderValue::from_static("client"));
        let cred = Provider::Anthropic.credential("backend");
        let h = crate::forward::Prepared::from_map(h);
        let mut plan = crate::forward::HeaderPlan::new(&h);
        Provider::Anthropic.set_headers(&mut plan, cred.as_ref());
        let sent = plan.to_map();
        assert!(sent.get("authorization").is_none());
        assert_eq!(sent["x-api-key"], "backend");
        assert_eq!(sent["anthropic-version"], ANTHROPIC_VERSION);
        // What goes on the wire is the same as the map.
        let listed: Vec<_> = plan.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        assert_eq!(listed.len(), sent.len());
        assert!(listed
            .iter()
            .all(|(n, v)| sent.get_all(n).iter().any(|s| s == v)));

        let mut h = HeaderMap::new();
        h.insert("anthropic-version", HeaderValue::from_static("2099-01-01"));
        let h = crate::forward::Prepared::from_map(h);
        let mut plan = crate::forward::HeaderPlan::new(&h);
        Provider::Anthropic.set_headers(&mut plan, None);
        assert_eq!(
            plan.to_map()["anthropic-version"],
            "2099-01-01",
            "the client's version stands"
        );
    }

    #[test]
    fn only_mismatched_shapes_are_translated() {
        assert_eq!(direction(ClientApi::OpenAi, &Provider::OpenAi, true), None);
        assert_eq!(
            direction(ClientApi::Anthropic, &Provider::Anthropic, true),
            None
        );
        assert_eq!(
            direction(ClientApi::Anthropic, &Provider::OpenAi, true),
            Some(Direction::ToMessages)
        );
        assert_eq!(
            direction(ClientApi::OpenAi, &Provider::Anthropic, true),
            Some(Direction::ToChat {
                include_usage: true
            })
        );
    }

    #[test]
    fn error_types_follow_anthropics_list() {
        assert_eq!(
            anthropic_error_type(StatusCode::TOO_MANY_REQUESTS),
            "rate_limit_error"
        );
        assert_eq!(
            anthropic_error_type(StatusCode::UNAUTHORIZED),
            "authentication_error"
        );
        assert_eq!(anthropic_error_type(StatusCode::BAD_GATEWAY), "api_error");
        let e: serde_json::Value = serde_json::from_slice(&anthropic_error("x", "m")).unwrap();
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["message"], "m");
    }
}
