//! `/dashboard`: one live page, served wherever the admin API is (its own listener, or the
//! main one behind the admin token), with everything embedded in the binary.
//!
//! | request | does |
//! |---|---|
//! | `GET /dashboard` | the page (or, without access, a form asking for the admin token) |
//! | `GET /dashboard?token=T` | checks `T`, keeps it in a cookie, redirects to `/dashboard` |
//! | `POST /dashboard/login` | the form's target: `token=T`, as above |
//! | `GET /dashboard/events` | server-sent events: `history` once, then a `tick` a second |
//! | `GET /dashboard/assets/{file}` | the page's script, styles and the vendored uPlot (no token needed: they hold no data) |
//!
//! Access: with an admin token configured, every request carries it as
//! `Authorization: Bearer <token>` or holds the session cookie, which is a SHA-256 of the token
//! (never the token itself), `HttpOnly` and `SameSite=Strict`. The page only reads: it changes
//! nothing in the gateway. Feeds end when the gateway drains.

pub mod hub;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::config::Admin;
use crate::error::ApiError;
use crate::gateway::Gateway;

pub use hub::Hub;

/// The session cookie's name.
const COOKIE: &str = "switchyard_dashboard";
/// Largest login form body.
const MAX_LOGIN_BODY: usize = 4096;
/// Frames a slow page may fall behind before the feed waits for it.
const FEED_BUFFER: usize = 4;

/// Embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/dashboard/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/dashboard/app.css"),
    ),
    (
        "uplot.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/dashboard/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uplot.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/dashboard/vendor/uplot/uPlot.min.css"),
    ),
    (
        "uplot-LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/dashboard/vendor/uplot/LICENSE"),
    ),
];
const PAGE: &str = include_str!("../../assets/dashboard/index.html");
const LOGIN: &str = include_str!("../../assets/dashboard/login.html");

/// Whether `path` belongs to the dashboard.
pub fn is_path(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

/// Answers one dashboard request; `admin` is the config's admin section.
pub async fn handle(gw: &Gateway, admin: &Admin, req: Request<Incoming>) -> Response<GatewayBody> {
    let path = req.uri().path().to_owned();
    let query = crate::admin::Query::parse(req.uri().query());
    let method = req.method().clone();
    if path == "/dashboard/login" {
        if method != Method::POST {
            return ApiError::MethodNotAllowed {
                path,
                allowed: "POST",
            }
            .into_response();
        }
        return login(admin, req).await;
    }
    // The embedded files hold no data (the login form uses the styles): open to all.
    if method == Method::GET {
        if let Some(name) = path.strip_prefix("/dashboard/assets/") {
            if let Some((_, kind, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) {
                let body = GatewayBody::full(Bytes::from_static(bytes));
                return typed(StatusCode::OK, body, kind, "no-cache");
            }
        }
    }
    let allowed = match &admin.token {
        None => true,
        Some(token) => {
            crate::admin::bearer(token, req.headers()).is_ok() || has_session(token, req.headers())
        }
    };
    let page = path == "/dashboard" || path == "/dashboard/";
    if page && method == Method::GET {
        // A token in the address is taken once, then kept out of the address bar and history.
        if let (Some(given), Some(token)) = (query.get("token"), admin.token.as_ref()) {
            return if token.matches(given.as_bytes()) {
                signed_in(token)
            } else {
                login_page(
                    StatusCode::UNAUTHORIZED,
                    "That token is not the admin token.",
                )
            };
        }
        if !allowed {
            return login_page(StatusCode::UNAUTHORIZED, "");
        }
        return html(StatusCode::OK, PAGE.to_owned());
    }
    if !allowed {
        return ApiError::AdminUnauthorized(
            "the dashboard needs the admin token: open /dashboard and sign in, or send `Authorization: Bearer <admin token>`",
        )
        .into_response();
    }
    if method != Method::GET {
        return ApiError::MethodNotAllowed {
            path,
            allowed: "GET",
        }
        .into_response();
    }
    if path == "/dashboard/events" {
        return feed(gw);
    }
    ApiError::NotFound {
        method: method.to_string(),
        path,
    }
    .into_response()
}

/// `POST /dashboard/login` with a form body `token=...`.
async fn login(admin: &Admin, req: Request<Incoming>) -> Response<GatewayBody> {
    let Some(token) = &admin.token else {
        // Nothing to sign in to: the page is open.
        return redirect(None);
    };
    let body = match Limited::new(req.into_body(), MAX_LOGIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return login_page(StatusCode::BAD_REQUEST, "The form could not be read."),
    };
    let form = String::from_utf8_lossy(&body).replace('+', " ");
    let given = crate::admin::Query::parse(Some(&form))
        .get("token")
        .map(str::to_owned)
        .unwrap_or_default();
    if token.matches(given.trim().as_bytes()) {
        signed_in(token)
    } else {
        login_page(
            StatusCode::UNAUTHORIZED,
            "That token is not the admin token.",
        )
    }
}

/// The session cookie's value for `token`: a hash, so the cookie never holds the token.
fn session_value(token: &crate::config::Secret) -> String {
    token.digest_hex("switchyard dashboard session")
}

/// Whether the request holds a valid session cookie.
fn has_session(token: &crate::config::Secret, headers: &HeaderMap) -> bool {
    let want = crate::config::Secret::new(session_value(token));
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .any(|(k, v)| k == COOKIE && want.matches(v.as_bytes()))
}

/// 303 to the page, setting the session cookie when `token` is given.
fn signed_in(token: &crate::config::Secret) -> Response<GatewayBody> {
    redirect(Some(format!(
        "{COOKIE}={}; Path=/dashboard; HttpOnly; SameSite=Strict",
        session_value(token)
    )))
}

fn redirect(cookie: Option<String>) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    resp
}

fn login_page(status: StatusCode, message: &str) -> Response<GatewayBody> {
    // `message` is always one of this file's own sentences: no escaping needed.
    html(status, LOGIN.replace("{message}", message))
}

/// A response of content type `kind` that browsers must not sniff, cached as `cache` says.
fn typed(
    status: StatusCode,
    body: GatewayBody,
    kind: &'static str,
    cache: &'static str,
) -> Response<GatewayBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn html(status: StatusCode, body: String) -> Response<GatewayBody> {
    let mut resp = typed(
        status,
        GatewayBody::full(body),
        "text/html; charset=utf-8",
        "no-store",
    );
    let h = resp.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

/// `GET /dashboard/events`: the history, the current frame, then every frame the sampler
/// publishes, until the page goes or the gateway drains.
fn feed(gw: &Gateway) -> Response<GatewayBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(FEED_BUFFER);
    let mut frames = gw.dashboard.watch();
    let snap = gw.snapshot();
    let first = [
        gw.dashboard.history_event(),
        gw.dashboard.current_event(gw, &snap),
    ];
    let closed = frames.borrow_and_update().is_none() || gw.draining();
    tokio::spawn(async move {
        for e in first {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        if closed {
            return;
        }
        loop {
            // A tick arrives every second; a silent sampler (the gateway stopping) ends it.
            match tokio::time::timeout(hub::TICK * 5, frames.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
            let Some(frame) = frames.borrow_and_update().clone() else {
                return;
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    let mut resp = typed(
        StatusCode::OK,
        GatewayBody::Feed(rx),
        "text/event-stream",
        "no-cache",
    );
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
