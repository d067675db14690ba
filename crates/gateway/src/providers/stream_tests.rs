//! Stream translation, one event at a time, over streams written from the documented event
//! shapes (text, tool use, stop reasons, errors), fed in awkward pieces.

use super::*;

/// An Anthropic stream with text then a tool call, as the Messages API documents it.
pub(crate) const ANTHROPIC_TOOL_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"check.\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":17}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

/// The `data:` payloads of an SSE text, parsed (`[DONE]` as a string).
fn datas(sse: &[u8]) -> Vec<(String, Value)> {
    let mut r = EventReader::default();
    let mut all = r.push(sse);
    all.extend(r.finish());
    all.into_iter()
        .map(|(name, d)| {
            let v = serde_json::from_str(&d).unwrap_or(Value::String(d));
            (name, v)
        })
        .collect()
}

/// Feeds `input` in pieces of `step` bytes.
fn feed(mut push: impl FnMut(&[u8]) -> Vec<u8>, input: &str, step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in input.as_bytes().chunks(step) {
        out.extend(push(piece));
    }
    out
}

#[test]
fn the_reader_splits_events_across_any_pieces_and_line_endings() {
    let mut r = EventReader::default();
    let mut got = r.push(b"event: a\r\ndata: 1\r\n\r\n: comment\n\ndata: x\ndata: y\n");
    assert_eq!(got, vec![("a".to_owned(), "1".to_owned())]);
    got = r.push(b"\n");
    assert_eq!(got, vec![(String::new(), "x\ny".to_owned())]);
    assert!(r.push(b"data: tail").is_empty());
    assert_eq!(r.finish(), vec![(String::new(), "tail".to_owned())]);
}

#[test]
fn an_anthropic_tool_stream_becomes_chat_chunks_ending_with_done() {
    for step in [1, 7, 64, 100_000] {
        let mut t = ToChat::new(42, true);
        let mut out = feed(|b| t.push(b), ANTHROPIC_TOOL_STREAM, step);
        out.extend(t.finish());
        let events = datas(&out);
        let chunks: Vec<&Value> = events.iter().map(|(_, v)| v).collect();
        assert_eq!(
            chunks[0]["choices"][0]["delta"]["role"], "assistant",
            "step {step}"
        );
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(
            (chunks[0]["id"].as_str(), chunks[0]["created"].as_u64()),
            (Some("msg_1"), Some(42))
        );
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Let me check.");
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(calls[0]["id"], "toolu_1");
        assert_eq!(calls[0]["function"]["name"], "weather");
        let args: String = calls
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        assert_eq!(args, "{\"city\": \"Paris\"}");
        assert!(calls.iter().all(|c| c["index"] == 0));
        let finish: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finish, ["tool_calls"]);
        let usage = &chunks[chunks.len() - 2];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], 25);
        assert_eq!(usage["usage"]["completion_tokens"], 17);
        assert_eq!(*chunks[chunks.len() - 1], Value::String("[DONE]".into()));
        assert!(
            events.iter().all(|(name, _)| name.is_empty()),
            "chat chunks have no event names"
        );
    }
}

#[test]
fn without_include_usage_no_usage_chunk_is_sent() {
    let mut t = ToChat::new(0, false);
    let mut out = t.push(ANTHROPIC_TOOL_STREAM.as_bytes());
    out.extend(t.finish());
    let events = datas(&out);
    assert!(events.iter().all(|(_, v)| v.get("usage").is_none()));
    assert_eq!(events.last().unwrap().1, Value::String("[DONE]".into()));
}

#[test]
fn an_error_event_ends_the_chat_stream_with_an_openai_error() {
    let stream = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n",
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"late\"}}\n\n",
    );
    let mut t = ToChat::new(0, true);
    let mut out = t.push(stream.as_bytes());
    out.extend(t.finish());
    let events = datas(&out);
    assert_eq!(events.len(), 3, "{}", String::from_utf8_lossy(&out));
    assert_eq!(events[1].1["error"]["message"], "Overloaded");
    assert_eq!(events[1].1["error"]["code"], "overloaded_error");
    assert_eq!(events[2].1, Value::String("[DONE]".into()));
}

#[test]
fn a_stream_cut_before_message_stop_still_ends_with_done() {
    let cut = ANTHROPIC_TOOL_STREAM
        .split("event: message_delta")
        .next()
        .unwrap();
    let mut t = ToChat::new(0, false);
    let mut out = t.push(cut.as_bytes());
    out.extend(t.finish());
    assert!(out.ends_with(b"data: [DONE]\n\n"));
}

/// A chat stream with text, then a tool call split over chunks, then usage and `[DONE]`.
const CHAT_TOOL_STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"llama\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Checking\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\".\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Rome\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":9,\"total_tokens\":39}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn a_chat_tool_stream_becomes_messages_events() {
    for step in [1, 13, 100_000] {
        let mut t = ToMessages::new();
        let mut out = feed(|b| t.push(b), CHAT_TOOL_STREAM, step);
        out.extend(t.finish());
        let events = datas(&out);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ],
            "step {step}"
        );
        for (name, v) in &events {
            assert_eq!(
                v["type"],
                name.as_str(),
                "every event's data names its type"
            );
        }
        assert_eq!(events[0].1["message"]["id"], "c1");
        assert_eq!(events[0].1["message"]["role"], "assistant");
        assert_eq!(events[1].1["content_block"]["type"], "text");
        assert_eq!(
            events[2].1["delta"],
            json!({"type": "text_delta", "text": "Checking"})
        );
        let tool = &events[5].1;
        assert_eq!(tool["index"], 1);
        assert_eq!(
            tool["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {}})
        );
        assert_eq!(events[6].1["delta"]["type"], "input_json_delta");
        assert_eq!(events[6].1["index"], 1);
        let delta = &events[9].1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            delta["usage"],
            json!({"input_tokens": 30, "output_tokens": 9})
        );
    }
}

#[test]
fn a_chat_stream_error_becomes_an_anthropic_error_event() {
    let stream = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
        "data: {\"error\":{\"message\":\"engine died\",\"type\":\"server_error\"}}\n\n",
        "data: [DONE]\n\n",
    );
    let mut t = ToMessages::new();
    let mut out = t.push(stream.as_bytes());
    out.extend(t.finish());
    let events = datas(&out);
    let last = events.last().unwrap();
    assert_eq!(last.0, "error");
    assert_eq!(
        last.1["error"],
        json!({"type": "api_error", "message": "engine died"})
    );
    assert!(events.iter().all(|(n, _)| n != "message_stop"));
}

#[test]
fn a_chat_stream_without_done_is_closed_on_finish() {
    let mut t = ToMessages::new();
    let mut out = t.push(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}\n\n");
    out.extend(t.finish());
    let events = datas(&out);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"message_stop"));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
}

#[test]
fn garbage_never_panics_either_translator() {
    for junk in [
        &b"data: {\n\n"[..],
        b"\xff\xfe\n\n",
        b"data: [1,2]\n\nevent: x\n\n",
        b"data: null\n\n",
    ] {
        let mut a = ToChat::new(0, true);
        let _ = a.push(junk);
        let _ = a.finish();
        let mut b = ToMessages::new();
        let _ = b.push(junk);
        let _ = b.finish();
    }
}
