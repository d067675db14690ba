//! The HTTP surface: routes a request to its endpoint, and runs the proxy path for the three
//! OpenAI inference endpoints: read the body once (bounded), profile it, pick a backend, send
//! the original bytes upstream, relay the response as it streams. `/admin/...` goes to
//! [`crate::admin`] when the admin API is served on this listener.
//!
//! Each request loads the current [`Snapshot`] once and uses it to the end, so a reload in
//! the middle of a request changes nothing for it.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use switchyard_core::{EndpointKind, RequestMeta, RequestProfile};

use crate::body::{GatewayBody, Relay};
use crate::error::ApiError;
use crate::fleet::{Backend, InFlightGuard, ViewBuf, DEFAULT_COOLDOWN};
use crate::forward;
use crate::gateway::{Gateway, Snapshot};
use crate::{explain, signals};

/// Longest client-sent `x-request-id` kept as is; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Answers one request. Never fails: every error becomes an OpenAI-shaped response.
pub async fn handle(
    gw: Arc<Gateway>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<GatewayBody> {
    let started = Instant::now();
    let request_id = match req.headers().get("x-request-id") {
        Some(v) if !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.to_str().is_ok() => {
            v.clone()
        }
        _ => gw.new_request_id(),
    };
    let kind = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => Some(EndpointKind::ChatCompletions),
        (&Method::POST, "/v1/completions") => Some(EndpointKind::Completions),
        (&Method::POST, "/v1/embeddings") => Some(EndpointKind::Embeddings),
        _ => None,
    };
    let snap = gw.snapshot();
    let mut resp = match kind {
        Some(kind) => match proxy(&snap, kind, peer, req, &request_id, started).await {
            Ok(resp) => resp,
            Err((model, e)) => {
                gw.metrics.count(&model, "", e.status());
                tracing::debug!(request_id = ?request_id, code = e.code(), "{e}");
                e.into_response()
            }
        },
        None if crate::admin::on_main_listener(&snap, req.uri().path()) => {
            crate::admin::handle(&gw, req).await
        }
        None => local(&snap, &req),
    };
    resp.headers_mut().insert("x-request-id", request_id);
    resp
}

/// The endpoints the gateway answers itself.
fn local(gw: &Snapshot, req: &Request<Incoming>) -> Response<GatewayBody> {
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        "/v1/models" | "/health" | "/ready" | "/metrics" if !get => ApiError::MethodNotAllowed {
            path: path.to_owned(),
            allowed: "GET",
        }
        .into_response(),
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" => {
            ApiError::MethodNotAllowed {
                path: path.to_owned(),
                allowed: "POST",
            }
            .into_response()
        }
        "/v1/models" => json(StatusCode::OK, models_body(gw)),
        "/health" => json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}")),
        "/ready" if gw.ready() => json(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ready\"}"),
        ),
        "/ready" => {
            let mut r = json(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(
                    b"{\"status\":\"not_ready\",\"reason\":\"no backend is usable\"}",
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        "/metrics" => {
            let mut r = Response::new(GatewayBody::full(gw.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => ApiError::NotFound {
            method: req.method().to_string(),
            path: path.to_owned(),
        }
        .into_response(),
    }
}

pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn models_body(gw: &Snapshot) -> Bytes {
    let data: Vec<serde_json::Value> = gw
        .model_names
        .iter()
        .map(|m| serde_json::json!({"id": m, "object": "model", "created": gw.started_unix(), "owned_by": "switchyard"}))
        .collect();
    Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
}

/// The proxy path. On error, returns the model name (for the metric label) with the error.
async fn proxy(
    gw: &Snapshot,
    kind: EndpointKind,
    peer: SocketAddr,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    started: Instant,
) -> Result<Response<GatewayBody>, (String, ApiError)> {
    let unknown = || String::new();
    let limit = gw.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err((unknown(), ApiError::BodyTooLarge { limit }));
    }
    let (parts, body) = req.into_parts();
    let body: Bytes = match Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err((unknown(), ApiError::BodyTooLarge { limit }))
        }
        Err(e) => return Err((unknown(), ApiError::BodyRead(e.to_string()))),
    };
    let body_read = Instant::now();

    let meta = RequestMeta {
        session_header: parts
            .headers
            .get("x-session-id")
            .and_then(|v| v.to_str().ok()),
        client_addr: Some(peer.ip()),
    };
    let profile = RequestProfile::parse(kind, &body, meta).map_err(|e| (unknown(), e.into()))?;
    let Some(pool) = gw.pools.get(&profile.model) else {
        let available = gw.model_names.join(", ");
        return Err((
            unknown(),
            ApiError::ModelNotFound {
                model: profile.model,
                available,
            },
        ));
    };

    let mut buf = ViewBuf::new();
    let debug = gw.config.debug_headers;
    let view = pool
        .view(&mut buf, gw.now(), gw.config.scrape.max_age)
        .explaining(debug);
    let decision = pool.policy.decide(&profile, &view).map_err(|_| {
        (
            pool.name.clone(),
            ApiError::NoBackend {
                model: pool.name.clone(),
            },
        )
    })?;
    // Try the decision's backends in order. Nothing has reached the client until a response is
    // returned, so a failed attempt (connect error, timeout, or a 429/502/503/504 answer) moves
    // on to the next fallback. The last upstream answer passes through if every attempt fails.
    let max_attempts = gw.config.retry.max_attempts;
    pool.retry_budget.deposit(gw.now());
    let mut attempts = 0u32;
    let tokens = signals::expected_tokens(&profile);
    let mut dispatched: Option<Instant> = None;
    let mut failure: Option<ApiError> = None;
    let mut held: Option<(hyper::Response<Incoming>, &Backend, InFlightGuard)> = None;
    for id in decision.attempts() {
        let Some(backend) = pool.backend(id) else {
            continue;
        };
        if attempts == max_attempts {
            break;
        }
        if attempts > 0 && !backend.usable(gw.now()) {
            continue;
        }
        if attempts > 0 {
            let granted = pool.retry_budget.try_withdraw(gw.now());
            gw.metrics.count_retry(&pool.name, granted);
            if !granted {
                tracing::warn!(request_id = ?request_id, model = %pool.name, "retry budget exhausted; not failing over");
                break;
            }
        }
        attempts += 1;
        let upstream =
            match forward::upstream_request(backend, &profile, &body, &parts.headers, request_id) {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(unreachable(backend, e.to_string()));
                    continue;
                }
            };
        let guard = backend.begin(tokens);
        dispatched.get_or_insert_with(Instant::now);
        let first_byte = gw.config.timeouts.first_byte;
        match tokio::time::timeout(first_byte, gw.client.request(upstream)).await {
            Err(_) => {
                tracing::warn!(request_id = ?request_id, backend = %backend.name(), attempt = attempts, "no response headers within the first-byte timeout");
                failure = Some(ApiError::UpstreamTimeout {
                    backend: backend.name().to_owned(),
                    after: first_byte,
                });
            }
            Ok(Err(e)) => {
                tracing::warn!(request_id = ?request_id, backend = %backend.name(), attempt = attempts, error = %e, "upstream request failed");
                failure = Some(unreachable(backend, error_chain(&e)));
            }
            Ok(Ok(resp)) if retryable(resp.status()) => {
                if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                    let wait = retry_after(resp.headers()).unwrap_or(DEFAULT_COOLDOWN);
                    backend.state.cool_down(gw.now(), wait);
                }
                tracing::info!(request_id = ?request_id, backend = %backend.name(), attempt = attempts, status = %resp.status(), "upstream answered with a retryable status");
                held = Some((resp, backend, guard));
            }
            Ok(Ok(resp)) => {
                // Gateway time: profiling and routing before the first dispatch, and turning
                // the upstream head into the client's response after it.
                let headers_at = Instant::now();
                let mut r = relay(gw, &pool.name, resp, backend, guard, attempts, started);
                if debug {
                    r.headers_mut()
                        .insert("x-switchyard-route", explain::route_header(pool, &decision));
                }
                let before = dispatched.map_or(Default::default(), |d| d - body_read);
                gw.metrics
                    .overhead
                    .observe((before + headers_at.elapsed()).as_secs_f64());
                tracing::debug!(request_id = ?request_id, model = %pool.name, backend = %backend.name(), reason = %decision.reason, attempts, "routed");
                return Ok(r);
            }
        }
    }
    if let Some((resp, backend, guard)) = held {
        let mut r = relay(gw, &pool.name, resp, backend, guard, attempts, started);
        if debug {
            r.headers_mut()
                .insert("x-switchyard-route", explain::route_header(pool, &decision));
        }
        return Ok(r);
    }
    Err((
        pool.name.clone(),
        failure.unwrap_or(ApiError::NoBackend {
            model: pool.name.clone(),
        }),
    ))
}

/// Statuses that mean "this backend cannot serve it now; another may": rate limited,
/// overloaded, or a gateway in front of it failed.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// A `Retry-After` of delay-seconds. The HTTP-date form is rare from inference servers and
/// is treated as absent.
fn retry_after(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    let secs: f64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    std::time::Duration::try_from_secs_f64(secs).ok()
}

fn unreachable(backend: &Backend, detail: String) -> ApiError {
    ApiError::UpstreamUnreachable {
        backend: backend.name().to_owned(),
        detail,
    }
}

/// The client's response: upstream status and headers (hop-by-hop removed) plus ours, and the
/// upstream body relayed as it arrives.
fn relay(
    gw: &Snapshot,
    model: &str,
    resp: hyper::Response<Incoming>,
    backend: &Backend,
    guard: InFlightGuard,
    attempts: u32,
    started: Instant,
) -> Response<GatewayBody> {
    let (mut head, incoming) = resp.into_parts();
    forward::clean_response_headers(&mut head.headers);
    head.headers
        .insert("x-switchyard-backend", backend.name_header.clone());
    head.headers
        .insert("x-switchyard-attempts", HeaderValue::from(attempts));
    gw.metrics.count(model, backend.name(), head.status);
    let sse = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let relay = Relay::new(incoming, started, sse, guard);
    Response::from_parts(head, GatewayBody::Relay(relay))
}

/// An error and its sources on one line ("client error (Connect): tcp connect error: ...").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
