//! Provider kinds over real sockets: a chat client served by a mock Anthropic upstream (JSON,
//! and a streamed tool call), a `/v1/messages` client served by a mock OpenAI-compatible
//! upstream (JSON and stream) or passed through to a mock Anthropic one, errors in the
//! caller's own shape, an Azure backend's request shape, and a pool that fails over from an
//! OpenAI-compatible replica to an Anthropic backend. The mock Anthropic answers are written
//! from the Messages API's documented shapes.

use crate::support::conf::{Conf, Pool};
use crate::support::sim::attempts;
use crate::support::*;
use http::StatusCode;
use serde_json::{json, Value};

const ANTHROPIC_MESSAGE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":7}}"#;

/// A streamed answer with text then a tool call, cut across chunks in awkward places.
const ANTHROPIC_STREAM: [&str; 5] = [
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_bl",
    "ock_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"check.\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"weather\",\"input\":{}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":17}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

const CHAT_TOOL_ANSWER: &str = r#"{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":"llama","choices":[{"index":0,"message":{"role":"assistant","content":"Checking.","tool_calls":[{"id":"call_9","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Rome\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":30,"completion_tokens":9,"total_tokens":39}}"#;

const CHAT_TOOL_STREAM: [&str; 3] = [
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"llama\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Checking.\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Rome\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":9,\"total_tokens\":39}}\n\ndata: [DONE]\n\n",
];

const CHAT_WITH_TOOLS: &str = r#"{"model":"m","max_tokens":64,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Weather in Paris?"}],"tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#;

const MESSAGES_WITH_TOOLS: &str = r#"{"model":"m","max_tokens":64,"system":"Be brief.","messages":[{"role":"user","content":"Weather in Rome?"}],"tools":[{"name":"weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}]}"#;

/// Model `m` over one mock Anthropic backend named `claude` that expects `claude-x`, its key
/// from the environment.
fn anthropic_conf(url: &str) -> Conf {
    std::env::set_var("SWITCHYARD_TEST_ANTHROPIC_KEY", "sk-ant-test");
    Conf::new().model(
        "m",
        Pool::default().backend(json!({
            "url": url, "name": "claude", "provider": "anthropic", "model": "claude-x",
            "api_key": "${SWITCHYARD_TEST_ANTHROPIC_KEY}",
        })),
    )
}

/// Each `data:` payload of an SSE body with its `event:` name ("" when none).
fn events(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_owned()));
                }
            }
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn mock_anthropic_backend_answers_a_chat_client_in_chat_shape_with_its_own_key() {
    let up = Mock::start(Reply::Json(StatusCode::OK, ANTHROPIC_MESSAGE)).await;
    let gw = Gw::with(anthropic_conf(&up.url())).await;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        CHAT_WITH_TOOLS,
        &[("authorization", "Bearer client-key")],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let c = a.json();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c["choices"][0]["message"]["content"], "Checking.");
    let call = &c["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(
        (call["id"].as_str(), call["function"]["name"].as_str()),
        (Some("toolu_1"), Some("weather"))
    );
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(c["usage"]["prompt_tokens"], 12);
    assert_eq!(c["usage"]["completion_tokens"], 7);
    assert_eq!(a.backend(), "claude");

    let seen = up.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-test");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(
        seen.headers.get("authorization").is_none(),
        "the client's key stays home"
    );
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["model"], "claude-x");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}])
    );
    assert_eq!(
        sent["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
}

#[tokio::test]
async fn mock_anthropic_stream_with_a_tool_call_becomes_chat_chunks_ending_with_done() {
    let up = Mock::start(Reply::Sse {
        chunks: ANTHROPIC_STREAM.to_vec(),
        gate: None,
    })
    .await;
    let gw = Gw::with(anthropic_conf(&up.url())).await;
    let body = CHAT_WITH_TOOLS.replace(
        "\"max_tokens\":64,",
        "\"max_tokens\":64,\"stream\":true,\"stream_options\":{\"include_usage\":true},",
    );
    let a = post(&client(), &gw.url("/v1/chat/completions"), &body, &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let ev = events(&a.body);
    assert!(
        ev.iter().all(|(name, _)| name.is_empty()),
        "chat chunks are plain data events"
    );
    let chunks: Vec<&Value> = ev.iter().map(|(_, v)| v).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check.");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(
        (
            calls[0]["id"].as_str(),
            calls[0]["function"]["name"].as_str()
        ),
        (Some("toolu_2"), Some("weather"))
    );
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    let usage = chunks[chunks.len() - 2];
    assert_eq!(
        (
            usage["usage"]["prompt_tokens"].as_u64(),
            usage["usage"]["completion_tokens"].as_u64()
        ),
        (Some(25), Some(17))
    );
    assert_eq!(*chunks[chunks.len() - 1], Value::String("[DONE]".into()));
    let sent: Value = serde_json::from_slice(&up.last().body).unwrap();
    assert_eq!(sent["stream"], true);
}

#[tokio::test]
async fn mock_openai_backend_serves_a_messages_client_in_messages_shape() {
    let up = Mock::start(Reply::Json(StatusCode::OK, CHAT_TOOL_ANSWER)).await;
    let gw = Gw::with(Conf::over(&[up.url()])).await;
    let a = post(
        &client(),
        &gw.url("/v1/messages"),
        MESSAGES_WITH_TOOLS,
        &[("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let m = a.json();
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(
        m["content"][0],
        json!({"type": "text", "text": "Checking."})
    );
    assert_eq!(
        m["content"][1],
        json!({"type": "tool_use", "id": "call_9", "name": "weather", "input": {"city": "Rome"}})
    );
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["usage"], json!({"input_tokens": 30, "output_tokens": 9}));

    let seen = up.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        sent["messages"][1],
        json!({"role": "user", "content": "Weather in Rome?"})
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "weather");
    assert_eq!(sent["max_tokens"], 64);
}

#[tokio::test]
async fn mock_openai_stream_becomes_messages_events_for_a_messages_client() {
    let up = Mock::start(Reply::Sse {
        chunks: CHAT_TOOL_STREAM.to_vec(),
        gate: None,
    })
    .await;
    let gw = Gw::with(Conf::over(&[up.url()])).await;
    let body =
        MESSAGES_WITH_TOOLS.replace("\"max_tokens\":64,", "\"max_tokens\":64,\"stream\":true,");
    let a = post(&client(), &gw.url("/v1/messages"), &body, &[]).await;
    assert_eq!(a.status, 200);
    let ev = events(&a.body);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        ev[2].1["delta"],
        json!({"type": "text_delta", "text": "Checking."})
    );
    assert_eq!(
        ev[4].1["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {}})
    );
    assert_eq!(
        ev[5].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"city\":\"Rome\"}"})
    );
    assert_eq!(ev[7].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(ev[7].1["usage"]["output_tokens"], 9);
    let sent: Value = serde_json::from_slice(&up.last().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn mock_anthropic_backend_gets_a_messages_clients_body_as_it_was_sent() {
    let up = Mock::start(Reply::Json(StatusCode::OK, ANTHROPIC_MESSAGE)).await;
    std::env::set_var("SWITCHYARD_TEST_ANTHROPIC_KEY", "sk-ant-test");
    let conf = Conf::new().model(
        "m",
        Pool::default().backend(
            json!({"url": up.url(), "name": "claude", "provider": "anthropic",
            "api_key": "${SWITCHYARD_TEST_ANTHROPIC_KEY}"}),
        ),
    );
    let gw = Gw::with(conf).await;
    let a = post(
        &client(),
        &gw.url("/v1/messages"),
        MESSAGES_WITH_TOOLS,
        &[
            ("x-api-key", "client-key"),
            ("anthropic-version", "2023-01-01"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        ANTHROPIC_MESSAGE.as_bytes(),
        "passed through untouched"
    );
    let seen = up.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.body, MESSAGES_WITH_TOOLS.as_bytes());
    assert_eq!(seen.headers["x-api-key"], "sk-ant-test");
    assert_eq!(
        seen.headers["anthropic-version"], "2023-01-01",
        "the client's version stands"
    );
}

#[tokio::test]
async fn errors_come_back_in_the_callers_shape() {
    // The gateway's own error, to a Messages client.
    let up = Mock::start(Reply::Json(
        StatusCode::BAD_REQUEST,
        r#"{"error":{"message":"bad temperature","type":"invalid_request_error","code":null}}"#,
    ))
    .await;
    let gw = Gw::with(Conf::over(&[up.url()])).await;
    let a = post(
        &client(),
        &gw.url("/v1/messages"),
        r#"{"model":"nope","max_tokens":1,"messages":[]}"#,
        &[],
    )
    .await;
    assert_eq!(a.status, 404);
    let e = a.json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "not_found_error");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("'nope'"),
        "{e}"
    );
    let a = post(&client(), &gw.url("/v1/messages"), "not json", &[]).await;
    assert_eq!(
        (a.status.as_u16(), a.json()["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );

    // An OpenAI-compatible backend's error, to a Messages client.
    let a = post(&client(), &gw.url("/v1/messages"), MESSAGES_WITH_TOOLS, &[]).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json(),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad temperature"}})
    );

    // An Anthropic backend's error, to a chat client.
    let up = Mock::start(Reply::Json(
        StatusCode::BAD_REQUEST,
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}"#,
    ))
    .await;
    let gw = Gw::with(anthropic_conf(&up.url())).await;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        CHAT_WITH_TOOLS,
        &[],
    )
    .await;
    assert_eq!(a.status, 400);
    let e = a.json();
    assert_eq!(e["error"]["message"], "max_tokens: too large");
    assert_eq!(e["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn a_pool_fails_over_from_an_openai_replica_to_an_anthropic_backend_in_each_clients_shape() {
    let hosted = Mock::start(Reply::Json(StatusCode::OK, ANTHROPIC_MESSAGE)).await;
    let local = Mock::start(Reply::Json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"error":{"message":"overloaded"}}"#,
    ))
    .await;
    std::env::set_var("SWITCHYARD_TEST_ANTHROPIC_KEY", "sk-ant-test");
    let conf = Conf::new()
        .set("retry", json!({"budget_ratio": 1.0, "min_per_second": 100}))
        .model(
            "m",
            Pool::default()
                .set("breaker", json!({"enabled": false}))
                .set("outlier_detection", json!({"enabled": false}))
                .backend(json!({"url": local.url(), "name": "local"}))
                .backend(
                    json!({"url": hosted.url(), "name": "hosted", "provider": "anthropic",
                    "api_key": "${SWITCHYARD_TEST_ANTHROPIC_KEY}", "model": "claude-x"}),
                ),
        );
    let gw = Gw::with(conf).await;
    let c = client();
    let mut failed_over = 0;
    for _ in 0..2 {
        let a = post(&c, &gw.url("/v1/chat/completions"), CHAT_WITH_TOOLS, &[]).await;
        assert_eq!((a.status.as_u16(), a.backend().as_str()), (200, "hosted"));
        assert_eq!(a.json()["object"], "chat.completion");
        failed_over += u32::from(attempts(&a) == 2);
        let a = post(&c, &gw.url("/v1/messages"), MESSAGES_WITH_TOOLS, &[]).await;
        assert_eq!((a.status.as_u16(), a.backend().as_str()), (200, "hosted"));
        assert_eq!(a.json()["type"], "message");
        failed_over += u32::from(attempts(&a) == 2);
    }
    assert!(
        failed_over >= 2,
        "round robin sent some requests to the replica first"
    );
    assert!(local.count() >= 2);
}

#[tokio::test]
async fn mock_azure_backend_gets_its_deployment_path_version_and_key_header() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    std::env::set_var("SWITCHYARD_TEST_AZURE_KEY", "az-key");
    let conf = Conf::new().model(
        "m",
        Pool::default().backend(json!({
            "url": format!("{}/openai/deployments/gpt4o", up.url()), "name": "azure",
            "provider": "azure", "api_version": "2024-10-21", "api_key": "${SWITCHYARD_TEST_AZURE_KEY}",
        })),
    );
    let gw = Gw::with(conf).await;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        body,
        &[("authorization", "Bearer client")],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, OK_BODY.as_bytes());
    let seen = up.last();
    assert_eq!(
        seen.path,
        "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.headers["api-key"], "az-key");
    assert!(seen.headers.get("authorization").is_none());
}

#[test]
fn provider_settings_are_checked_with_their_line() {
    let e = switchyard_gateway::config::parse(
        "models:\n  m:\n    backends:\n      - url: http://a:1\n        provider: antropic\n",
        "c.yaml",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(5), "{e}");
    assert!(
        e.message.contains("openai, anthropic, azure") || e.message.contains("`anthropic`"),
        "{e}"
    );
    let e = switchyard_gateway::config::parse(
        "models:\n  m:\n    backends:\n      - url: http://a:1\n        api_version: 2024-10-21\n",
        "c.yaml",
    )
    .unwrap_err();
    assert!(e.message.contains("not `provider: azure`"), "{e}");
}
