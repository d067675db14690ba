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
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use switchyard_core::{EndpointKind, ParseLimits, RequestMeta, RequestProfile};
use tokio::time::Instant;

use crate::admission::keys::KeyMemo;
use crate::attempts;
use crate::body::GatewayBody;
use crate::error::ApiError;
use crate::forward;
use crate::gateway::{Gateway, Snapshot};
use crate::providers::ClientApi;

/// Longest client-sent `x-request-id` kept as is; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The connection a request came on: the client's address and the key it presented last.
#[derive(Debug, Clone, Copy)]
pub struct Conn<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// Its last key (see [`KeyMemo`]).
    pub keys: &'a KeyMemo,
}

/// Answers one request. Never fails: every error becomes an OpenAI-shaped response.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: Conn<'_>,
    mut req: Request<Incoming>,
) -> Response<GatewayBody> {
    let started = Instant::now();
    let request_id = match req.headers().get(forward::X_REQUEST_ID) {
        Some(v) if !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.to_str().is_ok() => {
            v.clone()
        }
        _ => gw.new_request_id(),
    };
    let kind = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => {
            Some((EndpointKind::ChatCompletions, ClientApi::OpenAi))
        }
        (&Method::POST, "/v1/completions") => Some((EndpointKind::Completions, ClientApi::OpenAi)),
        (&Method::POST, "/v1/embeddings") => Some((EndpointKind::Embeddings, ClientApi::OpenAi)),
        // Anthropic's Messages API, served as chat completions by any pool.
        (&Method::POST, "/v1/messages") => {
            Some((EndpointKind::ChatCompletions, ClientApi::Anthropic))
        }
        _ => None,
    };
    let snap = gw.snapshot();
    let mut resp = match kind {
        Some(kind) => match snap.tracing.as_deref() {
            None => proxy(&snap, kind, conn, req, &request_id, started, None).await,
            Some(t) => {
                let trace = t.request(req.method(), req.uri().path(), req.headers(), &request_id);
                let request = proxy(&snap, kind, conn, req, &request_id, started, Some(&trace));
                let resp = tracing::Instrument::instrument(request, trace.log_span(&request_id));
                let resp = resp.await;
                trace.responded(resp.status());
                resp
            }
        },
        None if crate::admin::on_main_listener(&snap, req.uri().path()) => {
            crate::admin::handle(&gw, req).await
        }
        None => local(&gw, &snap, &mut req),
    };
    resp.headers_mut().insert(forward::X_REQUEST_ID, request_id);
    resp
}

/// The intent class of `text` for `routes:` rules, when intents are configured.
async fn intent_of(
    classifier: Option<Arc<crate::routes::semantic::Classifier>>,
    text: &str,
) -> Option<Arc<str>> {
    classifier?.classify(text).await.class
}

/// Appends how `routes:` chose the pool to `x-switchyard-route` (after the policy's
/// explanation when debug headers are on).
fn add_route_note(resp: &mut Response<GatewayBody>, note: &str) {
    let value = match resp
        .headers()
        .get("x-switchyard-route")
        .and_then(|v| v.to_str().ok())
    {
        Some(existing) => format!("{existing}; {note}"),
        None => note.to_owned(),
    };
    if let Ok(v) = HeaderValue::try_from(value) {
        resp.headers_mut().insert("x-switchyard-route", v);
    }
}

/// The endpoints the gateway answers itself.
fn local(gateway: &Gateway, gw: &Snapshot, req: &mut Request<Incoming>) -> Response<GatewayBody> {
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        "/v1/models" | "/health" | "/ready" | "/metrics" if !get => ApiError::MethodNotAllowed {
            path: path.to_owned(),
            allowed: "GET",
        }
        .into_response(),
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/messages" => {
            ApiError::MethodNotAllowed {
                path: path.to_owned(),
                allowed: "POST",
            }
            .into_response()
        }
        // With auth on, a key is needed here too, and it hears only of its models.
        "/v1/models" => match crate::admission::authenticate(gw, req.headers_mut(), None) {
            Ok(caller) => json(StatusCode::OK, models_body(gw, &caller)),
            Err(e) => e.into_response(),
        },
        "/health" => json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}")),
        "/ready" if gateway.draining() => not_ready("shutting down"),
        "/ready" if gw.ready() => json(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ready\"}"),
        ),
        "/ready" => not_ready("no backend is usable"),
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

/// `/ready`'s 503, with why.
fn not_ready(reason: &'static str) -> Response<GatewayBody> {
    let body = format!("{{\"status\":\"not_ready\",\"reason\":\"{reason}\"}}");
    let mut r = json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(body));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
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

/// The model names clients may ask for: every pool's, and every `routes:` alias, sorted.
fn served_names(gw: &Snapshot) -> Vec<&str> {
    let mut names: Vec<&str> = gw.model_names.iter().map(String::as_str).collect();
    if let Some(routes) = &gw.config.routes {
        names.extend(routes.aliases.keys().map(String::as_str));
        names.sort_unstable();
    }
    names
}

fn models_body(gw: &Snapshot, caller: &crate::admission::Caller) -> Bytes {
    let data: Vec<serde_json::Value> = served_names(gw)
        .into_iter()
        .filter(|m| caller.may_use(m))
        .map(|m| serde_json::json!({"id": m, "object": "model", "created": gw.started_unix(), "owned_by": "switchyard"}))
        .collect();
    Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
}

/// Reads a request body of at most `limit` bytes (`declared` by `content-length`, when
/// sent), each piece within `gap` of the one before.
async fn read_body(
    mut body: Incoming,
    limit: u64,
    declared: Option<u64>,
    gap: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(gap, body.frame()).await {
            Err(_) => return Err(ApiError::BodyTimeout { after: gap }),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::BodyRead(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let have = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if (have + data.len()) as u64 > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
        // One piece is the common case: keep it as it is, copy nothing.
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    let want = declared.map_or(0, |n| n as usize).max(f.len() + data.len());
                    rest.reserve_exact(want);
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
        if http_body::Body::is_end_stream(&body) {
            // All declared bytes are in: no need to wait for the end to be reported.
            break;
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    })
}

/// The proxy path. Every error is answered here, in the shape of the API the client called,
/// counted under the model it was for (none until the model is known).
async fn proxy(
    gw: &Arc<Snapshot>,
    (kind, client): (EndpointKind, ClientApi),
    conn: Conn<'_>,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    started: Instant,
    trace: Option<&crate::otel::RequestSpan>,
) -> Response<GatewayBody> {
    let peer = conn.peer;
    let refuse = |model: &str, e: ApiError| {
        gw.metrics.count(model, "", e.status());
        tracing::debug!(request_id = ?request_id, code = e.code(), "{e}");
        e.into_response_for(client)
    };
    let limit = gw.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return refuse("", ApiError::BodyTooLarge { limit });
    }
    let (mut parts, body) = req.into_parts();
    let caller = match crate::admission::authenticate(gw, &mut parts.headers, Some(conn.keys)) {
        Ok(caller) => caller,
        Err(e) => return refuse("", e),
    };
    let original = match read_body(body, limit, declared, gw.config.limits.body_read_timeout).await
    {
        Ok(body) => body,
        Err(e) => return refuse("", e),
    };
    // A Messages request is made a chat request once: profiled, routed and admitted as one,
    // sent as one to OpenAI-compatible backends, and as the client's own to Anthropic ones.
    let body = match client {
        ClientApi::OpenAi => original.clone(),
        ClientApi::Anthropic => match crate::providers::messages::request_to_chat(&original) {
            Ok(chat) => Bytes::from(chat),
            Err(why) => return refuse("", ApiError::Untranslatable(why)),
        },
    };
    let body_read = Instant::now();

    let meta = RequestMeta {
        session_header: parts
            .headers
            .get(forward::X_SESSION_ID)
            .and_then(|v| v.to_str().ok()),
        client_addr: Some(peer.ip()),
    };
    let limits = ParseLimits {
        max_prompt_bytes: usize::try_from(gw.config.limits.max_prompt_bytes).unwrap_or(usize::MAX),
    };
    let profile = match RequestProfile::parse_with(kind, &body, meta, limits) {
        Ok(profile) => profile,
        Err(e) => return refuse("", e.into()),
    };
    let routed = match &gw.config.routes {
        None => None,
        Some(routes) => {
            let asked = crate::routes::Asked {
                headers: &parts.headers,
                tenant: caller.tenant(gw),
                key: caller.key_scope(),
                client: peer.ip(),
                unix_secs: crate::admission::unix_now(),
            };
            let classifier = gw.classifier.clone();
            let classify = |text| intent_of(classifier, text);
            Some(
                routes
                    .resolve(&profile, &asked, request_id.as_bytes(), classify)
                    .await,
            )
        }
    };
    let wanted = routed.as_ref().map_or(profile.model.as_str(), |r| r.pool);
    let Some(pool) = gw.pools.get(wanted) else {
        // A key limited to some models hears only of those.
        let available = served_names(gw)
            .into_iter()
            .filter(|m| caller.may_use(m))
            .collect::<Vec<_>>()
            .join(", ");
        return refuse(
            "",
            ApiError::ModelNotFound {
                model: profile.model,
                available,
            },
        );
    };

    let sampled = gw.decisions.sampled();
    let explained = routed.as_ref().and_then(crate::routes::Routed::explain);
    if let Some(r) = &routed {
        if let crate::routes::How::Rule { name, .. } = r.how {
            gw.metrics
                .routes
                .routed
                .with_label_values(&[name, r.pool])
                .inc();
        } else if r.how == crate::routes::How::Alias {
            gw.metrics
                .routes
                .routed
                .with_label_values(&["alias", r.pool])
                .inc();
        }
    }
    let start = crate::decisions::Start {
        id: request_id.to_str().unwrap_or("?"),
        model: &profile.model,
        route: explained.as_deref().unwrap_or(&pool.name),
        policy: pool.policy.name(),
        pool: &pool.shared_name,
        started,
        sampled,
        trace,
    };
    let mut admitting = trace.map(|t| t.admission(&profile.model, pool));
    let admitted =
        match crate::admission::admit(gw, caller, pool, &profile, &parts.headers, &body).await {
            Ok(admitted) => admitted,
            Err(e) => {
                crate::otel::refused(admitting.as_mut(), &e);
                return crate::decisions::attach(&gw.decisions, start, None, refuse(&pool.name, e));
            }
        };
    drop(admitting);
    let headers =
        forward::prepare_headers(std::mem::take(&mut parts.headers), peer.ip(), request_id);
    let request = attempts::Request {
        gw,
        pool,
        profile: &profile,
        body: admitted.body(&body),
        client,
        original: &original,
        headers: &headers,
        request_id,
        started,
        body_read,
        explain: sampled,
        engine_priority: admitted.engine_priority,
        trace,
    };
    let (resp, how) = match attempts::run(&request).await {
        Ok(attempts::Served {
            mut resp,
            routed: how,
        }) => {
            if let Some(text) = &explained {
                add_route_note(&mut resp, text);
            }
            if let Some(shadow) = routed.as_ref().and_then(|r| r.mirror) {
                crate::routes::mirror::spawn(crate::routes::mirror::Copy {
                    snap: gw.clone(),
                    pool: shadow.to_owned(),
                    profile: profile.clone(),
                    body: body.clone(),
                    headers: headers.clone(),
                    request_id: request_id.clone(),
                });
            }
            let price = how.price;
            (admitted.finish(resp, price), Some(how))
        }
        Err(e) => (refuse(&pool.name, e), None),
    };
    crate::decisions::attach(&gw.decisions, start, how, resp)
}
