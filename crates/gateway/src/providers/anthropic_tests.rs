//! Chat -> Messages request translation and Messages -> chat answers.

use super::*;

fn to_messages(chat: Value) -> (Value, bool) {
    let t = request_to_messages(chat.to_string().as_bytes(), "claude-x").unwrap();
    (serde_json::from_slice(&t.body).unwrap(), t.include_usage)
}

#[test]
fn system_roles_and_parameters_map_to_messages_fields() {
    let (m, usage) = to_messages(json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Salut"},
            {"role": "user", "content": "Again"},
        ],
        "max_completion_tokens": 100, "stop": "END", "temperature": 1.7, "top_p": 0.9,
        "stream": true, "stream_options": {"include_usage": true}, "user": "u-1",
        "n": 2, "presence_penalty": 0.5,
    }));
    assert_eq!(m["model"], "claude-x");
    assert_eq!(m["system"], "Be brief.\n\nUse French.");
    assert_eq!(m["messages"].as_array().unwrap().len(), 3);
    assert_eq!(
        m["messages"][0],
        json!({"role": "user", "content": [{"type": "text", "text": "Hi"}]})
    );
    assert_eq!(m["messages"][1]["role"], "assistant");
    assert_eq!(m["max_tokens"], 100);
    assert_eq!(m["stop_sequences"], json!(["END"]));
    assert_eq!(m["temperature"], 1.0, "capped at Anthropic's maximum");
    assert_eq!(m["top_p"], 0.9);
    assert_eq!(m["stream"], true);
    assert_eq!(m["metadata"]["user_id"], "u-1");
    assert!(m.get("n").is_none() && m.get("presence_penalty").is_none());
    assert!(usage);
}

#[test]
fn max_tokens_defaults_when_the_chat_request_names_none() {
    let (m, usage) = to_messages(json!({"messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(m["max_tokens"], DEFAULT_MAX_TOKENS);
    assert!(m.get("stream").is_none() && m.get("system").is_none());
    assert!(!usage);
    let (m, _) = to_messages(json!({"messages": [], "max_tokens": 7, "stop": ["a", "b"]}));
    assert_eq!(m["max_tokens"], 7);
    assert_eq!(m["stop_sequences"], json!(["a", "b"]));
}

#[test]
fn tools_tool_calls_and_tool_results_become_blocks() {
    let (m, _) = to_messages(json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "not json"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": false,
    }));
    let turns = m["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "both tool results in one user turn: {m}");
    assert_eq!(
        turns[1]["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}})
    );
    assert_eq!(turns[1]["content"][1]["input"], json!({}));
    assert_eq!(turns[2]["role"], "user");
    assert_eq!(
        turns[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"})
    );
    assert_eq!(turns[2]["content"][1]["content"], "rain");
    assert_eq!(m["tools"][0]["name"], "weather");
    assert_eq!(
        m["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(
        m["tool_choice"],
        json!({"type": "tool", "name": "weather", "disable_parallel_tool_use": true})
    );

    for (choice, want) in [("auto", "auto"), ("required", "any"), ("none", "none")] {
        let (m, _) = to_messages(json!({"messages": [], "tool_choice": choice,
            "tools": [{"type": "function", "function": {"name": "f"}}]}));
        assert_eq!(m["tool_choice"]["type"], want);
        assert_eq!(m["tools"][0]["input_schema"]["type"], "object");
    }
}

#[test]
fn image_parts_become_image_blocks() {
    let (m, _) = to_messages(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
        {"type": "input_audio", "input_audio": {}},
    ]}]}));
    let c = &m["messages"][0]["content"];
    assert_eq!(c.as_array().unwrap().len(), 3, "audio is dropped");
    assert_eq!(
        c[1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBOR"})
    );
    assert_eq!(
        c[2]["source"],
        json!({"type": "url", "url": "https://x.test/cat.jpg"})
    );
}

#[test]
fn requests_that_are_not_chat_are_refused_not_panicked_on() {
    assert!(request_to_messages(b"[1]", "m").is_err());
    assert!(request_to_messages(b"{\"messages\": 3}", "m").is_err());
    assert!(request_to_messages(b"\xff", "m").is_err());
}

#[test]
fn a_messages_answer_becomes_a_chat_completion() {
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 90},
    });
    let c: Value =
        serde_json::from_slice(&response_to_chat(body.to_string().as_bytes(), 7)).unwrap();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(
        (c["id"].as_str(), c["created"].as_u64()),
        (Some("msg_1"), Some(7))
    );
    let choice = &c["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check.");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_1");
    assert_eq!(call["function"]["name"], "weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(c["usage"]["prompt_tokens"], 100);
    assert_eq!(c["usage"]["completion_tokens"], 5);
    assert_eq!(c["usage"]["total_tokens"], 105);
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        assert_eq!(finish_reason(stop), finish);
    }
}

#[test]
fn anthropic_errors_become_openai_errors() {
    let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    let e: Value =
        serde_json::from_slice(&error_to_openai(StatusCode::TOO_MANY_REQUESTS, body)).unwrap();
    assert_eq!(e["error"]["message"], "slow down");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert_eq!(e["error"]["code"], "rate_limit_error");
    let e: Value =
        serde_json::from_slice(&error_to_openai(StatusCode::BAD_GATEWAY, b"upstream died"))
            .unwrap();
    assert_eq!(e["error"]["message"], "upstream died");
    assert_eq!(e["error"]["type"], "server_error");
    // A body that is not a Messages answer is left alone.
    assert_eq!(response_to_chat(b"{\"ok\":1}", 0), b"{\"ok\":1}");
}
