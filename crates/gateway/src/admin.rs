//! The admin API: see and change the fleet of a running gateway.
//!
//! | request | does |
//! |---|---|
//! | `GET /admin/backends` | every pool and backend: state, in-flight, cooldown, averages |
//! | `POST /admin/backends?model=M` | adds a backend to pool `M`; the body is the YAML backend fields as JSON |
//! | `DELETE /admin/backends/{name}` | removes it from routing; its in-flight requests finish |
//! | `POST /admin/backends/{name}/drain` | no new requests; `?wait=30s` answers once in-flight reached 0 |
//! | `POST /admin/backends/{name}/undrain` | takes requests again |
//! | `POST /admin/reload` | re-reads the config file (as SIGHUP does) |
//! | `GET /admin/decisions?last=N` | the last N routing records, newest last (see [`crate::decisions`]) |
//! | `GET /admin/queues` | requests waiting in each model's admission queue, per priority |
//! | `/admin/keys...` | API keys: list, create, revoke, rotate (see [`crate::admission::admin`]) |
//! | `/dashboard...` | the live dashboard (see [`crate::dashboard`]; it also takes a session cookie) |
//!
//! `{name}` is a backend name (percent-encoded if need be). When two models have a backend of
//! that name, `?model=M` says which one; without it the answer is 409 `ambiguous_backend`.
//!
//! Access ([`crate::config::Admin`]): every call carries `Authorization: Bearer <admin.token>`
//! when a token is configured. Served on `admin.listen` when set ([`crate::serve_admin`]),
//! otherwise on the main listener, where a token is always required. Changes go through
//! [`crate::reload`], so they are atomic and keep the live state of untouched backends.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::time::Duration;

use crate::api::json;
use crate::body::GatewayBody;
use crate::config::file::Backends;
use crate::config::Secret;
use crate::error::ApiError;
use crate::fleet::{Backend, Pool};
use crate::gateway::{Gateway, Snapshot};

/// Largest admin request body: a backend description is a few hundred bytes.
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// Longest `?wait=` a drain call may block.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(600);

/// Whether the main listener should hand `path` to the admin API: only when the admin API
/// is configured without a listener of its own and with a token.
pub fn on_main_listener(snap: &Snapshot, path: &str) -> bool {
    is_admin_path(path)
        && snap
            .config
            .admin
            .as_ref()
            .is_some_and(|a| a.listen.is_none() && a.token.is_some())
}

fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/") || crate::dashboard::is_path(path)
}

/// Checks `Authorization: Bearer <token>`.
pub(crate) fn bearer(token: &Secret, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| {
            // The scheme name is case-insensitive (RFC 9110 section 11.1).
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        });
    match given {
        None => Err(ApiError::AdminUnauthorized(
            "the admin API needs `Authorization: Bearer <admin token>`",
        )),
        Some(t) if !token.matches(t) => {
            Err(ApiError::AdminUnauthorized("the admin token is not valid"))
        }
        Some(_) => Ok(()),
    }
}

/// Answers one admin request. Never fails: errors are OpenAI-shaped.
pub async fn handle(gw: &Gateway, req: Request<Incoming>) -> Response<GatewayBody> {
    let snap = gw.snapshot();
    let Some(admin) = snap.config.admin.as_ref() else {
        return not_found(&req);
    };
    if crate::dashboard::is_path(req.uri().path()) {
        let admin = admin.clone();
        drop(snap);
        return crate::dashboard::handle(gw, &admin, req).await;
    }
    if let Some(token) = &admin.token {
        if let Err(e) = bearer(token, req.headers()) {
            return e.into_response();
        }
    }
    drop(snap);
    match route(gw, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(code = e.code(), "admin request refused: {e}");
            e.into_response()
        }
    }
}

fn not_found(req: &Request<Incoming>) -> Response<GatewayBody> {
    ApiError::NotFound {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    }
    .into_response()
}

async fn route(gw: &Gateway, req: Request<Incoming>) -> Result<Response<GatewayBody>, ApiError> {
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let wrong = |allowed| {
        Err(ApiError::MethodNotAllowed {
            path: path.clone(),
            allowed,
        })
    };
    match (segs.as_slice(), &method) {
        (["admin", "backends"], &Method::GET) => Ok(ok(list(&gw.snapshot()))),
        (["admin", "backends"], &Method::POST) => add(gw, req, &query).await,
        (["admin", "backends"], _) => wrong("GET, POST"),
        (["admin", "backends", name], &Method::DELETE) => remove(gw, name, &query),
        (["admin", "backends", _], _) => wrong("DELETE"),
        (["admin", "backends", name, "drain"], &Method::POST) => drain(gw, name, &query).await,
        (["admin", "backends", name, "undrain"], &Method::POST) => {
            let snap = gw.snapshot();
            let (pool, b) = find(&snap, name, query.get("model"))?;
            b.state.set_draining(false);
            Ok(ok(backend_json(&snap, pool, b)))
        }
        (["admin", "backends", _, "drain" | "undrain"], _) => wrong("POST"),
        (["admin", "reload"], &Method::POST) => {
            let outcome = gw.reload();
            crate::reload::log_reload(&outcome);
            Ok(ok(serde_json::to_value(outcome?).unwrap_or(Value::Null)))
        }
        (["admin", "reload"], _) => wrong("POST"),
        (["admin", "decisions"], &Method::GET) => decisions(&gw.snapshot(), &query),
        (["admin", "decisions"], _) => wrong("GET"),
        (["admin", "queues"], &Method::GET) => {
            Ok(ok(crate::admission::admin::queues(&gw.snapshot())))
        }
        (["admin", "keys", rest @ ..], _) => {
            let body = Limited::new(req.into_body(), MAX_ADMIN_BODY)
                .collect()
                .await
                .map_err(|e| ApiError::InvalidParam {
                    param: "body",
                    message: format!("cannot read the body: {e}"),
                })?
                .to_bytes();
            let (status, v) = crate::admission::admin::route(&gw.snapshot(), &method, rest, &body)?;
            Ok(json(status, Bytes::from(v.to_string())))
        }
        _ => Err(ApiError::NotFound {
            method: method.to_string(),
            path,
        }),
    }
}

/// Records `GET /admin/decisions` serves when `last` is not given.
const DEFAULT_LAST_DECISIONS: usize = 100;

/// `GET /admin/decisions?last=N`: `{"decisions": [...]}`, newest last.
fn decisions(snap: &Snapshot, query: &Query) -> Result<Response<GatewayBody>, ApiError> {
    let last = match query.get("last") {
        None => DEFAULT_LAST_DECISIONS,
        Some(n) => n.parse::<usize>().map_err(|_| ApiError::InvalidParam {
            param: "last",
            message: format!("last={n} is not a count; write e.g. last=100"),
        })?,
    };
    let records = snap.decisions.last(last);
    let list: Vec<&crate::decisions::Record> = records.iter().map(|r| &**r).collect();
    Ok(ok(json!({ "decisions": list })))
}

fn ok(v: Value) -> Response<GatewayBody> {
    json(StatusCode::OK, Bytes::from(v.to_string()))
}

/// `GET /admin/backends`.
fn list(snap: &Snapshot) -> Value {
    let models: Vec<Value> = snap
        .model_names
        .iter()
        .filter_map(|m| snap.pools.get(m))
        .map(|pool| {
            json!({
                "model": pool.name,
                "policy": pool.policy.name(),
                "backends": pool.backends.iter().map(|b| backend_json(snap, pool, b)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "generation": snap.generation, "models": models })
}

/// One backend as the admin API shows it.
pub(crate) fn backend_json(snap: &Snapshot, pool: &Pool, b: &Backend) -> Value {
    let now = snap.now();
    let in_flight = b.state.in_flight();
    let state = if b.state.draining() {
        if in_flight == 0 {
            "drained"
        } else {
            "draining"
        }
    } else if b.state.cooling(now) {
        "cooling"
    } else if b.state.metrics().ejected.get() == 1 {
        "ejected"
    } else if b.state.metrics().breaker_state.get() == 1 {
        "breaker_open"
    } else if b.state.metrics().healthy.get() == 0 {
        "down"
    } else if !b.usable(now) {
        "full"
    } else {
        "up"
    };
    let m = b.state.metrics();
    let breaker = match m.breaker_state.get() {
        1 => "open",
        2 => "half_open",
        _ => "closed",
    };
    let mean = |h: &prometheus::Histogram| {
        let n = h.get_sample_count();
        (n > 0).then(|| h.get_sample_sum() / n as f64)
    };
    json!({
        "model": pool.name,
        "name": b.name(),
        "url": b.url(),
        "state": state,
        "in_flight": in_flight,
        "cooling_left_s": b.state.cooling_left(now).as_secs_f64(),
        "weight": b.config.weight,
        "max_concurrency": b.config.max_concurrency,
        "upstream_model": b.config.upstream_model,
        "provider": b.config.provider.name(),
        "has_api_key": b.config.api_key.is_some(),
        "requests_finished": m.duration.get_sample_count(),
        "mean_duration_s": mean(&m.duration),
        "mean_ttfb_s": mean(&m.ttfb),
        "stream_errors": m.stream_errors.get(),
        "breaker": breaker,
        "healthy": m.healthy.get() == 1,
        "ejected": m.ejected.get() == 1,
        "tokens": { "prompt": m.tokens[0].get(), "completion": m.tokens[1].get() },
        "engine": b.state.engine.get().map(|e| e.to_json()),
        "load": b.state.signals.engine(now, snap.config.scrape.max_age).map(|l| json!({
            "running": l.running,
            "waiting": l.waiting,
            "kv_usage": l.kv_usage,
        })),
        "gpu": b.state.signals.gpu(now, snap.config.scrape.max_age).map(|g| json!({
            "utilization": g.utilization,
            "temperature_c": g.temperature_c,
        })),
    })
}

/// Finds backend `name`, in pool `model` if given; unique or an error.
fn find<'s>(
    snap: &'s Snapshot,
    name: &str,
    model: Option<&str>,
) -> Result<(&'s Pool, &'s Backend), ApiError> {
    let mut hits = snap
        .model_names
        .iter()
        .filter(|m| model.is_none_or(|want| want == m.as_str()))
        .filter_map(|m| snap.pools.get(m))
        .filter_map(|p| p.backends.iter().find(|b| b.name() == name).map(|b| (p, b)));
    let first = hits.next().ok_or_else(|| ApiError::BackendNotFound {
        name: name.to_owned(),
        model: model.map(str::to_owned),
    })?;
    let rest: Vec<&str> = hits.map(|(p, _)| p.name.as_str()).collect();
    if !rest.is_empty() {
        return Err(ApiError::AmbiguousBackend {
            name: name.to_owned(),
            models: std::iter::once(first.0.name.as_str())
                .chain(rest)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(first)
}

/// `POST /admin/backends/{name}/drain[?wait=30s]`.
async fn drain(gw: &Gateway, name: &str, query: &Query) -> Result<Response<GatewayBody>, ApiError> {
    let wait = match query.get("wait") {
        None => Duration::ZERO,
        Some(w) => crate::config::Seconds::parse(w)
            .map_err(|message| ApiError::InvalidParam {
                param: "wait",
                message,
            })?
            .min(MAX_DRAIN_WAIT),
    };
    let snap = gw.snapshot();
    let (pool, b) = find(&snap, name, query.get("model"))?;
    b.state.set_draining(true);
    tracing::info!(model = %pool.name, backend = %b.name(), "draining backend");
    let drained = b.state.drained(tokio::time::Instant::now() + wait).await;
    let body = backend_json(&snap, pool, b);
    let status = if drained {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(json(status, Bytes::from(body.to_string())))
}

/// `POST /admin/backends?model=M`.
async fn add(
    gw: &Gateway,
    req: Request<Incoming>,
    query: &Query,
) -> Result<Response<GatewayBody>, ApiError> {
    let model = query.get("model").ok_or(ApiError::InvalidParam {
        param: "model",
        message: "say which model's pool gets the backend: POST /admin/backends?model=<model>"
            .into(),
    })?;
    let body = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::InvalidBackend(format!("cannot read the body: {e}")))?
        .to_bytes();
    if body.windows(2).any(|w| w == b"${") {
        return Err(ApiError::InvalidBackend(
            "environment references (${...}) are expanded only in the config file; send the value itself".into(),
        ));
    }
    let fields: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::InvalidBackend(format!(
            "the body must be a JSON object with the backend's YAML fields, e.g. {{\"url\": \"http://10.0.0.5:8000\", \"name\": \"gpu-5\"}}: {e}"
        ))
    })?;
    let Backends(mut parsed) = serde_json::from_value(Value::Array(vec![fields]))
        .map_err(|e| ApiError::InvalidBackend(e.to_string()))?;
    // The new backend inherits its pool's timeouts and health check, as the file's do.
    let defaults = gw
        .snapshot()
        .config
        .models
        .iter()
        .find(|p| p.name == model)
        .map(|p| p.backend_defaults.clone())
        .unwrap_or_default();
    let Some(new) = parsed.pop().map(|b| b.into_backend_config(&defaults)) else {
        return Err(ApiError::InvalidBackend("no backend in the body".into()));
    };
    let name = new.name.clone();
    let snap = gw
        .change(|current| {
            let mut config = current.config.clone();
            let Some(pool) = config.models.iter_mut().find(|p| p.name == model) else {
                return Err(ApiError::ModelNotFound {
                    model: model.to_owned(),
                    available: current.model_names.join(", "),
                });
            };
            if pool.backends.iter().any(|b| b.name == new.name) {
                return Err(ApiError::BackendExists {
                    name: new.name.clone(),
                    model: model.to_owned(),
                });
            }
            pool.backends.push(new);
            if let Some((_, problem)) = crate::config::policy::ring_problem(pool) {
                return Err(ApiError::InvalidBackend(problem));
            }
            Ok((config, ()))
        })?
        .after;
    tracing::info!(model, backend = %name, "backend added through the admin API");
    let (pool, b) = find(&snap, &name, Some(model))?;
    Ok(json(
        StatusCode::CREATED,
        Bytes::from(backend_json(&snap, pool, b).to_string()),
    ))
}

/// `DELETE /admin/backends/{name}[?model=M]`.
fn remove(gw: &Gateway, name: &str, query: &Query) -> Result<Response<GatewayBody>, ApiError> {
    let change = gw.change(|current| {
        let (pool, b) = find(current, name, query.get("model"))?;
        if pool.backends.len() == 1 {
            return Err(ApiError::LastBackend {
                name: name.to_owned(),
                model: pool.name.clone(),
            });
        }
        let mut config = current.config.clone();
        if let Some(p) = config.models.iter_mut().find(|p| p.name == pool.name) {
            p.backends.retain(|c| c.name != name);
        }
        Ok((config, (pool.name.clone(), b.state.in_flight())))
    })?;
    let (model, in_flight) = change.extra;
    tracing::info!(model = %model, backend = %name, in_flight, "backend removed through the admin API");
    Ok(ok(json!({
        "model": model,
        "name": name,
        "state": "removed",
        "in_flight": in_flight,
    })))
}

/// Query parameters, percent-decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Self {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes `%XX` escapes; invalid ones stay as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_and_leaves_junk() {
        assert_eq!(percent_decode("127.0.0.1%3A8001"), "127.0.0.1:8001");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode(""), "");
    }

    #[test]
    fn query_takes_first_value_of_a_key() {
        let q = Query::parse(Some("model=m%2Fx&wait=5s&model=other&flag"));
        assert_eq!(q.get("model"), Some("m/x"));
        assert_eq!(q.get("wait"), Some("5s"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("nope"), None);
    }
}
