//! Messages -> chat request translation and chat -> Messages answers.

use super::*;

fn to_chat(req: Value) -> Value {
    serde_json::from_slice(&request_to_chat(req.to_string().as_bytes()).unwrap()).unwrap()
}

#[test]
fn system_turns_and_parameters_map_to_chat_fields() {
    let c = to_chat(json!({
        "model": "m", "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
        ],
        "stop_sequences": ["END"], "temperature": 0.3, "top_p": 0.8, "top_k": 5,
        "stream": true, "metadata": {"user_id": "u-1"},
    }));
    assert_eq!(c["model"], "m");
    assert_eq!(
        c["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(c["messages"][1], json!({"role": "user", "content": "Hi"}));
    assert_eq!(
        c["messages"][2],
        json!({"role": "assistant", "content": "Hello"})
    );
    assert_eq!(
        c["messages"][3],
        json!({"role": "user", "content": "Again"})
    );
    assert_eq!(c["max_tokens"], 64);
    assert_eq!(c["stop"], json!(["END"]));
    assert_eq!(
        (c["temperature"].as_f64(), c["top_p"].as_f64()),
        (Some(0.3), Some(0.8))
    );
    assert!(c.get("top_k").is_none());
    assert_eq!(c["stream"], true);
    assert_eq!(
        c["stream_options"]["include_usage"], true,
        "usage is needed for message_delta"
    );
    assert_eq!(c["user"], "u-1");
}

#[test]
fn tool_use_and_tool_results_become_tool_calls_and_tool_messages() {
    let c = to_chat(json!({
        "model": "m", "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "Thanks"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}},
            ]},
        ],
        "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
    }));
    let msgs = c["messages"].as_array().unwrap();
    let call = &msgs[1]["tool_calls"][0];
    assert_eq!(msgs[1]["content"], "Checking.");
    assert_eq!(call["id"], "toolu_1");
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(
        msgs[2],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
    );
    assert_eq!(msgs[3]["role"], "user");
    assert_eq!(
        msgs[3]["content"][1]["image_url"]["url"],
        "data:image/jpeg;base64,AAA"
    );
    assert_eq!(
        c["tools"][0]["function"]["parameters"],
        json!({"type": "object"})
    );
    assert_eq!(c["tool_choice"], "required");
    assert_eq!(c["parallel_tool_calls"], false);
}

#[test]
fn a_chat_completion_becomes_a_messages_answer() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "llama",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}],
        }}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    });
    let m: Value =
        serde_json::from_slice(&response_to_messages(body.to_string().as_bytes())).unwrap();
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(
        m["content"][0],
        json!({"type": "text", "text": "Checking."})
    );
    assert_eq!(
        m["content"][1],
        json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Rome"}})
    );
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["usage"], json!({"input_tokens": 12, "output_tokens": 3}));
    for (finish, stop) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
    ] {
        assert_eq!(stop_reason(finish), stop);
    }
}

#[test]
fn openai_errors_become_anthropic_errors() {
    let body = br#"{"error":{"message":"no such model","type":"invalid_request_error","code":"model_not_found"}}"#;
    let e: Value =
        serde_json::from_slice(&error_to_anthropic(StatusCode::NOT_FOUND, body)).unwrap();
    assert_eq!(
        e,
        json!({"type": "error", "error": {"type": "not_found_error", "message": "no such model"}})
    );
    let e: Value = serde_json::from_slice(&error_to_anthropic(
        StatusCode::SERVICE_UNAVAILABLE,
        b"busy",
    ))
    .unwrap();
    assert_eq!(e["error"]["type"], "overloaded_error");
    assert_eq!(e["error"]["message"], "busy");
}

#[test]
fn with_model_sets_only_the_model() {
    let b = with_model(br#"{"model":"a","max_tokens":3}"#, "b").unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v, json!({"model": "b", "max_tokens": 3}));
    assert!(with_model(b"[]", "b").is_err());
    assert!(request_to_chat(b"7").is_err());
}
