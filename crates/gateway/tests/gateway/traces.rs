//! OpenTelemetry traces: a test OTLP/HTTP receiver on a real socket decodes the gateway's
//! export requests; a mock upstream shows the `traceparent` each attempt carries.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::support::conf::Conf;
use crate::support::{client, post, Gw, Mock, Reply, CHAT};
use serde_json::json;

/// A collector over a real socket: every span of every export request it received.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    /// `service.name` of the resources seen.
    services: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let services = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (spans.clone(), services.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, r) = (s.clone(), r.clone());
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).unwrap();
                            for rs in export.resource_spans {
                                for kv in rs.resource.iter().flat_map(|r| &r.attributes) {
                                    if kv.key == "service.name" {
                                        r.lock().unwrap().push(text(kv.value.as_ref()));
                                    }
                                }
                                for ss in rs.scope_spans {
                                    s.lock().unwrap().extend(ss.spans);
                                }
                            }
                            let mut ok = Response::new(Full::new(Bytes::new()));
                            ok.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("application/x-protobuf"),
                            );
                            Ok::<_, Infallible>(ok)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            url,
            spans,
            services,
        }
    }

    fn named(&self, name: &str) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }

    /// Waits (real time: the exporter runs on its own thread) for `n` spans named `name`.
    async fn wait_for(&self, name: &str, n: usize) -> Vec<Span> {
        for _ in 0..1000 {
            let found = self.named(name);
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} `{name}` span(s) not exported within 10s");
    }
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(span: &Span, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
        .unwrap_or_else(|| panic!("span `{}` has no {key}: {:?}", span.name, span.attributes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `urls` as backends of model `m`, exporting traces to `receiver`, sampling `sample` of
/// requests that start a trace.
fn tracing_on(receiver: &Receiver, urls: &[String], sample: f64) -> Conf {
    Conf::over(urls).set(
        "tracing",
        json!({
            "otlp_endpoint": receiver.url,
            "service_name": "gw-test",
            "export_interval": "20ms",
            "sample": sample,
        }),
    )
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn one_request_exports_linked_spans_and_the_upstream_joins_the_clients_trace() {
    let receiver = Receiver::start().await;
    let mock = Mock::start(Reply::Json(StatusCode::OK, crate::support::OK_BODY)).await;
    let gw = Gw::with(tracing_on(&receiver, &[mock.url()], 1.0)).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        CHAT,
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
            ("x-request-id", "req-traced"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);

    let request = receiver.wait_for("POST /v1/chat/completions", 1).await;
    let request = &request[0];
    assert_eq!(
        hex(&request.trace_id),
        CLIENT_TRACE,
        "continues the client's trace"
    );
    assert_eq!(hex(&request.parent_span_id), CLIENT_PARENT);
    assert_eq!(request.trace_state, "vendor=opaque");
    assert_eq!(attr(request, "http.request.method"), "POST");
    assert_eq!(attr(request, "http.response.status_code"), "200");
    assert_eq!(attr(request, "switchyard.request_id"), "req-traced");
    assert_eq!(attr(request, "switchyard.model"), "m");
    assert_eq!(attr(request, "switchyard.backend"), "b0");
    let events: Vec<&str> = request.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["first_byte", "end_of_stream"]);

    let mut attempt = None;
    for name in ["admission", "route", "upstream"] {
        let spans = receiver.wait_for(name, 1).await;
        assert_eq!(spans.len(), 1, "one {name} span");
        let child = &spans[0];
        assert_eq!(child.trace_id, request.trace_id, "{name} is in the trace");
        assert_eq!(
            child.parent_span_id, request.span_id,
            "{name} is the request's child"
        );
        assert!(child.start_time_unix_nano >= request.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= request.end_time_unix_nano);
        if name == "upstream" {
            attempt = Some(child.clone());
        }
    }
    let attempt = attempt.unwrap();
    assert_eq!(attr(&attempt, "switchyard.backend"), "b0");
    assert_eq!(attr(&attempt, "switchyard.outcome"), "ok");
    assert_eq!(attr(&attempt, "http.response.status_code"), "200");
    assert_eq!(attr(&attempt, "server.address"), "127.0.0.1");
    assert_eq!(
        attr(&receiver.named("route")[0], "switchyard.backend"),
        "b0"
    );
    assert_eq!(
        *receiver.services.lock().unwrap().first().unwrap(),
        "gw-test"
    );

    // The upstream saw the request's trace, with the attempt's span as its parent.
    let seen = mock.last();
    assert_eq!(
        seen.headers["traceparent"],
        format!("00-{CLIENT_TRACE}-{}-01", hex(&attempt.span_id)).as_str()
    );
    assert_eq!(seen.headers["tracestate"], "vendor=opaque");
}

#[tokio::test]
async fn a_request_without_traceparent_starts_a_trace_and_each_attempt_is_a_span() {
    let receiver = Receiver::start().await;
    let down = crate::support::closed_port();
    let up = Mock::start(Reply::Json(StatusCode::OK, crate::support::OK_BODY)).await;
    // Round robin from b0: the refused connection first, then the answer.
    let gw =
        Gw::with(tracing_on(&receiver, &[down, up.url()], 1.0).pool("policy", "round_robin")).await;
    let a = post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(a.status, StatusCode::OK);

    let request = receiver.wait_for("POST /v1/chat/completions", 1).await;
    let request = &request[0];
    assert!(request.parent_span_id.is_empty(), "a root span");
    let mut attempts = receiver.wait_for("upstream", 2).await;
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    let outcomes: Vec<(String, String)> = attempts
        .iter()
        .map(|s| (attr(s, "switchyard.backend"), attr(s, "switchyard.outcome")))
        .collect();
    assert_eq!(
        outcomes,
        [("b0".into(), "error".into()), ("b1".into(), "ok".into())]
    );
    assert_eq!(attr(&attempts[0], "error.type"), "upstream_unreachable");
    for s in &attempts {
        assert_eq!(s.parent_span_id, request.span_id);
    }
    assert_eq!(attr(request, "switchyard.attempts"), "2");
    let seen = up.last();
    assert_eq!(
        seen.headers["traceparent"],
        format!(
            "00-{}-{}-01",
            hex(&request.trace_id),
            hex(&attempts[1].span_id)
        )
        .as_str()
    );
}

#[tokio::test]
async fn the_request_span_ends_with_the_stream_not_when_the_handler_returns() {
    let receiver = Receiver::start().await;
    let gate = Arc::new(Notify::new());
    let mock = Mock::start(Reply::Sse {
        chunks: vec!["data: {\"choices\":[]}\n\n", "data: [DONE]\n\n"],
        gate: Some(gate.clone()),
    })
    .await;
    let gw = Gw::with(tracing_on(&receiver, &[mock.url()], 1.0)).await;
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    // The attempt's span has ended and gone out; the request's is still open.
    receiver.wait_for("upstream", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        receiver.named("POST /v1/chat/completions").is_empty(),
        "the request span ended before its stream did"
    );
    gate.notify_one();
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }
    let request = receiver.wait_for("POST /v1/chat/completions", 1).await;
    let events: Vec<&str> = request[0].events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["first_byte", "end_of_stream"]);
}

#[tokio::test]
async fn with_tracing_off_no_traceparent_is_added_and_the_clients_passes_unchanged() {
    let mock = Mock::start(Reply::Json(StatusCode::OK, crate::support::OK_BODY)).await;
    let gw = Gw::with(Conf::over(&[mock.url()])).await;
    let c = client();
    post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    let seen = mock.last();
    assert!(seen.headers.get("traceparent").is_none());
    assert!(seen.headers.get("tracestate").is_none());
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");
    post(
        &c,
        &gw.url("/v1/chat/completions"),
        CHAT,
        &[("traceparent", &traceparent), ("tracestate", "k=v")],
    )
    .await;
    let seen = mock.last();
    assert_eq!(seen.headers["traceparent"], traceparent.as_str());
    assert_eq!(seen.headers["tracestate"], "k=v");
}

#[tokio::test]
async fn an_unsampled_trace_still_hands_its_context_upstream() {
    let receiver = Receiver::start().await;
    let mock = Mock::start(Reply::Json(StatusCode::OK, crate::support::OK_BODY)).await;
    let gw = Gw::with(tracing_on(&receiver, &[mock.url()], 0.0)).await;
    // The client's trace, not sampled: the gateway follows its flag.
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-00");
    post(
        &client(),
        &gw.url("/v1/chat/completions"),
        CHAT,
        &[("traceparent", &traceparent)],
    )
    .await;
    let seen = mock.last();
    let sent = seen.headers["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], CLIENT_TRACE);
    assert_ne!(parts[2], CLIENT_PARENT, "the attempt's span is the parent");
    assert_eq!(parts[3], "00", "not sampled");
    // A new trace under `sample: 0`: a fresh trace id, not sampled either.
    post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    let seen = mock.last();
    let sent = seen.headers["traceparent"].to_str().unwrap();
    assert!(
        sent.ends_with("-00") && !sent.contains(CLIENT_TRACE),
        "{sent}"
    );
}
