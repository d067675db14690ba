//! Streamed answers translated one SSE event at a time: [`ToChat`] turns Anthropic's
//! Messages events (`message_start`, `content_block_start`/`delta`/`stop`, `message_delta`,
//! `message_stop`, `ping`, `error`) into `chat.completion.chunk` events ending with
//! `data: [DONE]`; [`ToMessages`] turns chat chunks into Messages events. Each keeps only the
//! state the next event needs (ids, open block, usage), never the answer.

use serde_json::{json, Value};

/// Splits bytes into SSE events as they arrive, holding a partial event until its end.
#[derive(Debug, Default)]
pub struct EventReader {
    /// Bytes of an unfinished line.
    buf: Vec<u8>,
    /// The current event's `event:` name.
    name: String,
    /// The current event's `data:` lines, joined with `\n`.
    data: String,
    /// The current event has a `data:` line.
    has_data: bool,
}

impl EventReader {
    /// Takes `bytes`; returns the events (name, data) they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(n) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + n;
            let line = self.buf[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.buf[start..end]);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut events);
        }
        self.buf.drain(..start);
        events
    }

    /// The stream ended: a last event without its blank line.
    pub fn finish(&mut self) -> Vec<(String, String)> {
        let mut events = Vec::new();
        if !self.buf.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            self.line(line.trim_end_matches('\r'), &mut events);
        }
        self.line("", &mut events);
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<(String, String)>) {
        if line.is_empty() {
            if self.has_data {
                events.push((
                    std::mem::take(&mut self.name),
                    std::mem::take(&mut self.data),
                ));
            }
            self.name.clear();
            self.has_data = false;
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // comments, `id:`, `retry:`
        }
    }
}

/// Anthropic Messages events to chat chunks.
#[derive(Debug, Default)]
pub struct ToChat {
    reader: EventReader,
    /// `created` of every chunk.
    created: u64,
    /// Send a final usage chunk.
    include_usage: bool,
    /// From `message_start`.
    id: String,
    /// From `message_start`.
    model: String,
    /// From `message_start` and `message_delta`.
    usage: Value,
    /// Content block index -> tool call index, for the tool-use blocks seen.
    tools: Vec<(u64, u64)>,
    /// `[DONE]` was sent.
    done: bool,
}

impl ToChat {
    /// A translator for one stream.
    pub fn new(created: u64, include_usage: bool) -> Self {
        Self {
            created,
            include_usage,
            usage: json!({}),
            ..Self::default()
        }
    }

    /// Takes upstream bytes; returns the chunks they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in self.reader.push(bytes) {
            self.event(&name, &data, &mut out);
        }
        out
    }

    /// The upstream ended: the rest, with `[DONE]` if `message_stop` never came.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in self.reader.finish() {
            self.event(&name, &data, &mut out);
        }
        self.done(&mut out);
        out
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        data(&c, out);
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if self.include_usage {
            let c = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": super::anthropic::usage(Some(&self.usage)),
            });
            data(&c, out);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// One Anthropic event (its type from `data.type`, else the `event:` name).
    fn event(&mut self, name: &str, raw: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let Ok(ev) = serde_json::from_str::<Value>(raw) else {
            return;
        };
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or(name);
        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                let m = &ev["message"];
                self.id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                self.model = m
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                merge_usage(&mut self.usage, m.get("usage"));
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content_block_start" => {
                let b = &ev["content_block"];
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let n = self.tools.len() as u64;
                        self.tools.push((index, n));
                        let call = json!({"index": n, "id": b["id"], "type": "function",
                            "function": {"name": b["name"], "arguments": ""}});
                        self.chunk(json!({"tool_calls": [call]}), None, out);
                    }
                    Some("text") => {
                        if let Some(t) = b
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            self.chunk(json!({"content": t}), None, out);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &ev["delta"];
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        self.chunk(json!({"content": d["text"]}), None, out);
                    }
                    Some("input_json_delta") => {
                        let Some(&(_, n)) = self.tools.iter().find(|(b, _)| *b == index) else {
                            return;
                        };
                        let call =
                            json!({"index": n, "function": {"arguments": d["partial_json"]}});
                        self.chunk(json!({"tool_calls": [call]}), None, out);
                    }
                    _ => {} // thinking and signature deltas have no chat equivalent
                }
            }
            "message_delta" => {
                merge_usage(&mut self.usage, ev.get("usage"));
                if let Some(r) = ev["delta"].get("stop_reason").and_then(Value::as_str) {
                    self.chunk(json!({}), Some(super::anthropic::finish_reason(r)), out);
                }
            }
            "message_stop" => self.done(out),
            "error" => {
                let err = &ev["error"];
                let kind = err
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&super::openai_error(msg, "server_error", kind));
                out.extend_from_slice(b"\n\n");
                // The stream ends here: no usage, just the end marker.
                self.include_usage = false;
                self.done(out);
            }
            _ => {} // ping, content_block_stop, unknown events
        }
    }
}

/// Adds the counts in `from` to `usage` (later events carry the final figures).
fn merge_usage(usage: &mut Value, from: Option<&Value>) {
    if let (Some(Value::Object(to)), Some(Value::Object(from))) = (Some(&mut *usage), from) {
        for (k, v) in from {
            if v.is_u64() {
                to.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `data: <json>\n\n`.
fn data(v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// `event: <name>\ndata: <json>\n\n`.
fn event(name: &str, v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    data(v, out);
}

/// The content block open in a [`ToMessages`] stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// A text block at this index.
    Text(u64),
    /// A tool-use block at this index, for the chat tool call of `call`.
    Tool { block: u64, call: u64 },
}

/// Chat chunks to Anthropic Messages events.
#[derive(Debug, Default)]
pub struct ToMessages {
    reader: EventReader,
    /// `message_start` was sent.
    started: bool,
    /// The block being streamed.
    open: Option<Open>,
    /// Index of the next block.
    next_block: u64,
    /// From the last `finish_reason`.
    stop_reason: Option<&'static str>,
    /// From the usage chunk.
    usage: Option<Value>,
    /// `message_stop` (or an error) was sent.
    done: bool,
}

impl ToMessages {
    /// A translator for one stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes upstream bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, data) in self.reader.push(bytes) {
            self.data(&data, &mut out);
        }
        out
    }

    /// The upstream ended: the rest, closed with `message_stop` if `[DONE]` never came.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, data) in self.reader.finish() {
            self.data(&data, &mut out);
        }
        self.close(&mut out);
        out
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let m = json!({"type": "message_start", "message": {
            "id": chunk.get("id").cloned().unwrap_or_else(|| "".into()),
            "type": "message", "role": "assistant",
            "model": chunk.get("model").cloned().unwrap_or_else(|| "".into()),
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }});
        event("message_start", &m, out);
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(open) = self.open.take() {
            let index = match open {
                Open::Text(i) | Open::Tool { block: i, .. } => i,
            };
            event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
                out,
            );
        }
    }

    fn open_block(&mut self, open: Open, block: Value, out: &mut Vec<u8>) -> u64 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some(match open {
            Open::Text(_) => Open::Text(index),
            Open::Tool { call, .. } => Open::Tool { block: index, call },
        });
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
            out,
        );
        index
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.start(&Value::Null, out);
        self.close_block(out);
        let usage = super::messages::usage(self.usage.as_ref());
        event(
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
            "usage": usage}),
            out,
        );
        event("message_stop", &json!({"type": "message_stop"}), out);
    }

    /// One chat event's data.
    fn data(&mut self, raw: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if raw.trim() == "[DONE]" {
            self.close(out);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(raw) else {
            return;
        };
        if let Some(err) = chunk.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .or(err.as_str())
                .unwrap_or("the backend reported an error");
            out.extend_from_slice(&super::anthropic_stream_error(msg));
            self.done = true;
            return;
        }
        self.start(&chunk, out);
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let open = self.open;
            let index = match open {
                Some(Open::Text(i)) => i,
                _ => self.open_block(Open::Text(0), json!({"type": "text", "text": ""}), out),
            };
            event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": text}}),
                out,
            );
        }
        if let Some(Value::Array(calls)) = delta.get("tool_calls") {
            for c in calls {
                let call = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                let f = &c["function"];
                let open = self.open;
                let index = match open {
                    Some(Open::Tool { block, call: open }) if open == call => block,
                    _ => self.open_block(
                        Open::Tool { block: 0, call },
                        json!({"type": "tool_use", "id": c.get("id").cloned().unwrap_or_else(|| "".into()),
                            "name": f.get("name").cloned().unwrap_or_else(|| "".into()), "input": {}}),
                        out,
                    ),
                };
                if let Some(args) = f
                    .get("arguments")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": args}}),
                        out,
                    );
                }
            }
        }
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(super::messages::stop_reason(r));
            self.close_block(out);
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
