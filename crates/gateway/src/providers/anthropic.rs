//! A chat-completions request made an Anthropic Messages request, and the Messages answer
//! (JSON, or an error) made a chat completion again: what a chat client sent to an
//! `anthropic` backend goes through. The stream's events are translated by
//! [`super::stream::ToChat`].
//!
//! What maps: `system`/`developer` messages to `system`; `user`, `assistant` and `tool`
//! messages to alternating turns (tool results become `tool_result` blocks of a user turn);
//! text and image parts; assistant `tool_calls` to `tool_use` blocks; `max_tokens` (or
//! `max_completion_tokens`, else [`DEFAULT_MAX_TOKENS`]); `stop` to `stop_sequences`;
//! `temperature` (capped at Anthropic's 1.0); `top_p`; `stream`; `tools`, `tool_choice` and
//! `parallel_tool_calls`; `user` to `metadata.user_id`. Dropped (Anthropic has no equivalent):
//! `n`, `presence_penalty`, `frequency_penalty`, `logit_bias`, `logprobs`, `seed`,
//! `response_format`, audio and file parts.

use http::StatusCode;
use serde_json::{json, Map, Value};

/// `max_tokens` sent when a chat request names none: Anthropic requires one. 4096 is the
/// largest output every current Claude model accepts (Claude 3 Haiku's limit).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A translated request.
pub struct Translated {
    /// The Messages request body.
    pub body: Vec<u8>,
    /// The chat request asked for a usage chunk at the end of its stream.
    pub include_usage: bool,
}

/// The text of a chat message's `content`: a string, or the text parts of an array joined.
pub(crate) fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An image part's URL as an Anthropic image source: a `data:` URL as base64, else a URL.
fn image_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media, data)) = rest.split_once(";base64,") {
            return json!({"type": "base64", "media_type": media, "data": data});
        }
    }
    json!({"type": "url", "url": url})
}

/// A chat message's `content` as Anthropic content blocks (empty text left out: Anthropic
/// refuses empty text blocks).
fn content_blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) if !s.is_empty() => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(|t| json!({"type": "text", "text": t})),
                Some("image_url") => {
                    let url = p.get("image_url").and_then(|i| match i {
                        Value::String(s) => Some(s.as_str()),
                        other => other.get("url").and_then(Value::as_str),
                    })?;
                    Some(json!({"type": "image", "source": image_source(url)}))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// An assistant tool call as a `tool_use` block; arguments that are not a JSON object
/// become an empty input.
pub(crate) fn tool_use(call: &Value) -> Value {
    let function = call.get("function");
    let args = function
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str)
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    json!({
        "type": "tool_use",
        "id": call.get("id").cloned().unwrap_or_else(|| "".into()),
        "name": function.and_then(|f| f.get("name")).cloned().unwrap_or_else(|| "".into()),
        "input": args,
    })
}

/// Appends `blocks` as a `role` turn, joined to the previous turn when it has the same role
/// (Anthropic wants turns to alternate, and all of a turn's tool results in one user turn).
fn push_turn(turns: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut() {
        if last["role"] == role {
            if let Some(Value::Array(content)) = last.get_mut("content") {
                content.extend(blocks);
                return;
            }
        }
    }
    turns.push(json!({"role": role, "content": blocks}));
}

/// A tool's `name` and `description` with its JSON schema, read from `from`'s `schema` key
/// and written under `to` (an object schema with no properties when it has none): the one
/// shape difference between a chat `function` and a Messages tool.
pub(crate) fn tool_spec(from: &Value, schema: &str, to: &str) -> Map<String, Value> {
    let mut tool = Map::new();
    let name = from.get("name").cloned().unwrap_or_else(|| "".into());
    tool.insert("name".into(), name);
    if let Some(d) = from.get("description") {
        tool.insert("description".into(), d.clone());
    }
    let schema = from
        .get(schema)
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    tool.insert(to.into(), schema);
    tool
}

/// `tool_choice` and `parallel_tool_calls` as Anthropic's `tool_choice`.
fn tool_choice(choice: Option<&Value>, parallel: Option<bool>) -> Option<Value> {
    let mut out = match choice {
        Some(Value::String(s)) => match s.as_str() {
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => json!({"type": "auto"}),
        },
        Some(v @ Value::Object(_)) => {
            let name = v.get("function").and_then(|f| f.get("name")).cloned();
            match name {
                Some(name) => json!({"type": "tool", "name": name}),
                None => json!({"type": "auto"}),
            }
        }
        _ if parallel == Some(false) => json!({"type": "auto"}),
        _ => return None,
    };
    if parallel == Some(false) && out["type"] != "none" {
        out["disable_parallel_tool_use"] = true.into();
    }
    Some(out)
}

/// The Messages request for chat request `chat`, naming `model`.
pub fn request_to_messages(chat: &[u8], model: &str) -> Result<Translated, String> {
    let req: Map<String, Value> = match serde_json::from_slice(chat) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("the request body must be a JSON object".into()),
        Err(e) => return Err(format!("the request body is not valid JSON: {e}")),
    };
    let Some(Value::Array(list)) = req.get("messages") else {
        return Err("'messages' must be an array of messages".into());
    };
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    for m in list {
        match m.get("role").and_then(Value::as_str).unwrap_or("user") {
            "system" | "developer" => system.push(text_of(m.get("content"))),
            "tool" => {
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or_else(|| "".into()),
                    "content": text_of(m.get("content")),
                });
                push_turn(&mut turns, "user", vec![block]);
            }
            "assistant" => {
                let mut blocks = content_blocks(m.get("content"));
                if let Some(Value::Array(calls)) = m.get("tool_calls") {
                    blocks.extend(calls.iter().map(tool_use));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            _ => push_turn(&mut turns, "user", content_blocks(m.get("content"))),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    out.insert("messages".into(), Value::Array(turns));
    system.retain(|s| !s.is_empty());
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    let max = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), max.into());
    match req.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(t) = req.get("temperature").and_then(Value::as_f64) {
        out.insert("temperature".into(), t.clamp(0.0, 1.0).into());
    }
    if let Some(p) = req.get("top_p").filter(|p| p.is_number()) {
        out.insert("top_p".into(), p.clone());
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream {
        out.insert("stream".into(), true.into());
    }
    if let Some(Value::Array(tools)) = req.get("tools") {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| Value::Object(tool_spec(f, "parameters", "input_schema")))
            .collect();
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    let parallel = req.get("parallel_tool_calls").and_then(Value::as_bool);
    if out.contains_key("tools") {
        if let Some(c) = tool_choice(req.get("tool_choice"), parallel) {
            out.insert("tool_choice".into(), c);
        }
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    let include_usage = stream
        && req
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    Ok(Translated {
        body: Value::Object(out).to_string().into_bytes(),
        include_usage,
    })
}

/// A chat `assistant` message of `text` and tool `calls` (content null when it is only calls).
pub(crate) fn assistant_message(text: String, calls: Vec<Value>) -> Value {
    let content: Value = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        text.into()
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

/// Anthropic's `stop_reason` as a chat `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// Anthropic usage as chat usage.
pub(crate) fn usage(u: Option<&Value>) -> Value {
    let input = u
        .and_then(|u| u.get("input_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let cached = u
        .and_then(|u| u.get("cache_read_input_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let created = u
        .and_then(|u| u.get("cache_creation_input_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let output = u
        .and_then(|u| u.get("output_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    // Anthropic counts cached prompt tokens apart from `input_tokens`; OpenAI counts them in.
    let prompt = input + cached + created;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// A Messages answer as a chat completion; a body that is not one passes unchanged.
pub fn response_to_chat(body: &[u8], created: u64) -> Vec<u8> {
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    if msg.get("type").and_then(Value::as_str) != Some("message") {
        return body.to_vec();
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    if let Some(Value::Array(blocks)) = msg.get("content") {
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                Some("tool_use") => calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or_else(|| "".into()),
                    "type": "function",
                    "function": {
                        "name": b.get("name").cloned().unwrap_or_else(|| "".into()),
                        "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                    },
                })),
                _ => {} // thinking and server-tool blocks have no chat equivalent
            }
        }
    }
    let message = assistant_message(text, calls);
    let finish = msg
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or("stop", finish_reason);
    json!({
        "id": msg.get("id").cloned().unwrap_or_else(|| "".into()),
        "object": "chat.completion",
        "created": created,
        "model": msg.get("model").cloned().unwrap_or_else(|| "".into()),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage(msg.get("usage")),
    })
    .to_string()
    .into_bytes()
}

/// An Anthropic error answer (or any body sent with an error status) in OpenAI's shape: the
/// message kept, Anthropic's error type as the `code`.
pub fn error_to_openai(status: StatusCode, body: &[u8]) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let kind = err
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| super::anthropic_error_type(status));
    let message = match err.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned(),
    };
    let openai_type = if status.is_client_error() {
        match kind {
            "authentication_error"
            | "permission_error"
            | "not_found_error"
            | "rate_limit_error" => kind,
            _ => "invalid_request_error",
        }
    } else {
        "server_error"
    };
    super::openai_error(&message, openai_type, kind)
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
