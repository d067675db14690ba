//! An Anthropic Messages request (`POST /v1/messages`) made a chat-completions request, and a
//! chat completion (or an error) made a Messages answer again: what a Messages client served
//! by an OpenAI-compatible backend goes through. The stream is translated by
//! [`super::stream::ToMessages`].
//!
//! What maps: `system` (a string or text blocks) to a first `system` message; text and image
//! blocks (base64 and URL sources) to content parts; `tool_use` blocks to assistant
//! `tool_calls`; `tool_result` blocks to `tool` messages; `max_tokens`; `stop_sequences` to
//! `stop`; `temperature`; `top_p`; `stream` (with `include_usage`, so the final usage is
//! known); `tools` and `tool_choice` (`disable_parallel_tool_use` to `parallel_tool_calls`);
//! `metadata.user_id` to `user`. Dropped: `top_k` (not an OpenAI parameter), `thinking`,
//! thinking and document blocks, `cache_control`.

use http::StatusCode;
use serde_json::{json, Map, Value};

/// A Messages content block's text, or a `tool_result`'s content (a string or text blocks).
fn block_text(content: Option<&Value>) -> String {
    super::anthropic::text_of(content)
}

/// An image block as a chat `image_url` part.
fn image_part(block: &Value) -> Option<Value> {
    let source = block.get("source")?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            source.get("data").and_then(Value::as_str).unwrap_or("")
        ),
        Some("url") => source.get("url").and_then(Value::as_str)?.to_owned(),
        _ => return None,
    };
    Some(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// One Messages turn as chat messages: a user turn's tool results become `tool` messages
/// (first, as they answer the previous assistant turn), its text and images one user
/// message; an assistant turn's text and `tool_use` blocks one assistant message.
fn turn(role: &str, content: Option<&Value>, out: &mut Vec<Value>) {
    let blocks = match content {
        Some(Value::Array(b)) => b,
        other => {
            out.push(json!({"role": role, "content": block_text(other)}));
            return;
        }
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or_else(|| "".into())})),
            Some("image") => parts.extend(image_part(b)),
            Some("tool_result") => out.push(json!({
                "role": "tool",
                "tool_call_id": b.get("tool_use_id").cloned().unwrap_or_else(|| "".into()),
                "content": block_text(b.get("content")),
            })),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or_else(|| "".into()),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or_else(|| "".into()),
                    "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    if role == "assistant" {
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        out.push(super::anthropic::assistant_message(text, calls));
    } else if !parts.is_empty() {
        // Text alone goes as a string: every chat server takes that form.
        let content: Value = if parts.iter().all(|p| p["type"] == "text") {
            block_text(Some(&Value::Array(parts))).into()
        } else {
            Value::Array(parts)
        };
        out.push(json!({"role": "user", "content": content}));
    }
}

/// The chat-completions request for Messages request `body` (its `model` kept).
pub fn request_to_chat(body: &[u8]) -> Result<Vec<u8>, String> {
    let req: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("the request body must be a JSON object".into()),
        Err(e) => return Err(format!("the request body is not valid JSON: {e}")),
    };
    let mut out = Map::new();
    if let Some(m) = req.get("model") {
        out.insert("model".into(), m.clone());
    }
    let mut msgs = Vec::new();
    if let Some(s @ (Value::String(_) | Value::Array(_))) = req.get("system") {
        let text = block_text(Some(s));
        if !text.is_empty() {
            msgs.push(json!({"role": "system", "content": text}));
        }
    }
    match req.get("messages") {
        Some(Value::Array(list)) => {
            for m in list {
                let role = match m.get("role").and_then(Value::as_str) {
                    Some("assistant") => "assistant",
                    _ => "user",
                };
                turn(role, m.get("content"), &mut msgs);
            }
        }
        Some(_) => return Err("'messages' must be an array of messages".into()),
        None => {}
    }
    out.insert("messages".into(), Value::Array(msgs));
    if let Some(n) = req.get("max_tokens").filter(|n| n.is_u64()) {
        out.insert("max_tokens".into(), n.clone());
    }
    if let Some(Value::Array(stops)) = req.get("stop_sequences") {
        if !stops.is_empty() {
            out.insert("stop".into(), Value::Array(stops.clone()));
        }
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key).filter(|v| v.is_number()) {
            out.insert(key.into(), v.clone());
        }
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(Value::Array(tools)) = req.get("tools") {
        let tools: Vec<Value> = tools
            .iter()
            .filter(|t| t.get("input_schema").is_some())
            .map(|t| {
                let f = super::anthropic::tool_spec(t, "input_schema", "parameters");
                json!({"type": "function", "function": f})
            })
            .collect();
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = req.get("tool_choice") {
        let c = match choice.get("type").and_then(Value::as_str) {
            Some("any") => Some(json!("required")),
            Some("none") => Some(json!("none")),
            Some("tool") => Some(
                json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or_else(|| "".into())}}),
            ),
            Some("auto") => Some(json!("auto")),
            _ => None,
        };
        if let (Some(c), true) = (c, out.contains_key("tools")) {
            out.insert("tool_choice".into(), c);
        }
        if choice
            .get("disable_parallel_tool_use")
            .and_then(Value::as_bool)
            == Some(true)
        {
            out.insert("parallel_tool_calls".into(), false.into());
        }
    }
    if let Some(u) = req.get("metadata").and_then(|m| m.get("user_id")) {
        out.insert("user".into(), u.clone());
    }
    Ok(Value::Object(out).to_string().into_bytes())
}

/// Messages request `body` with its `model` set to `model`.
pub fn with_model(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            m.insert("model".into(), model.into());
            Ok(Value::Object(m).to_string().into_bytes())
        }
        _ => Err("the request body must be a JSON object".into()),
    }
}

/// A chat `finish_reason` as Anthropic's `stop_reason`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Chat usage as Anthropic usage.
pub(crate) fn usage(u: Option<&Value>) -> Value {
    let get = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    json!({"input_tokens": get("prompt_tokens"), "output_tokens": get("completion_tokens")})
}

/// A chat completion as a Messages answer; a body that is not one passes unchanged.
pub fn response_to_messages(body: &[u8]) -> Vec<u8> {
    let Ok(chat) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    let Some(choice) = chat.get("choices").and_then(|c| c.get(0)) else {
        return body.to_vec();
    };
    let message = choice.get("message");
    let mut content = Vec::new();
    let text = super::anthropic::text_of(message.and_then(|m| m.get("content")));
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(Value::Array(calls)) = message.and_then(|m| m.get("tool_calls")) {
        content.extend(calls.iter().map(super::anthropic::tool_use));
    }
    let stop = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map_or("end_turn", stop_reason);
    json!({
        "id": chat.get("id").cloned().unwrap_or_else(|| "".into()),
        "type": "message",
        "role": "assistant",
        "model": chat.get("model").cloned().unwrap_or_else(|| "".into()),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage(chat.get("usage")),
    })
    .to_string()
    .into_bytes()
}

/// An OpenAI-shaped error answer (or any body sent with an error status) in Anthropic's
/// shape, its type from the status.
pub fn error_to_anthropic(status: StatusCode, body: &[u8]) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| match e {
            Value::String(s) => Some(s.clone()),
            e => e.get("message").and_then(Value::as_str).map(str::to_owned),
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned());
    super::anthropic_error(super::anthropic_error_type(status), &message)
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
