//! Forwarding: the pooled upstream client, and building the upstream request from the
//! client's, so that the body goes out as the original bytes (only `model` rewritten when the
//! backend expects another name) and headers pass through except hop-by-hop ones.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use switchyard_core::RequestProfile;

use crate::config::Timeouts;
use crate::fleet::Backend;

/// The upstream HTTP client: keep-alive connection pools per backend, HTTP and HTTPS.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the shared upstream client.
pub fn client(timeouts: &Timeouts) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeouts.connect));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(1024)
        .build(https)
}

/// Headers that describe one connection, not the message, and so are never forwarded
/// (RFC 9110 section 7.6.1), plus those the gateway sets itself.
fn skip_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// The request to send to `backend`, a member of the pool serving `model` (the requested
/// model, or a fallback model whose name the body must then carry).
pub fn upstream_request(
    backend: &Backend,
    model: &str,
    profile: &RequestProfile,
    body: &Bytes,
    client_headers: &HeaderMap,
    request_id: &HeaderValue,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let name = backend.config.upstream_model.as_deref().unwrap_or(model);
    let body = if name == profile.model {
        body.clone()
    } else {
        Bytes::from(profile.rewrite_model(body, name))
    };
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(backend.endpoint_uri(profile.kind)?)
        .body(Full::new(body.clone()))?;
    let headers = req.headers_mut();
    headers.reserve(client_headers.len() + 3);
    for (name, value) in client_headers {
        // A backend with a key of its own never sees the client's (config refuses a key that
        // cannot be sent, so `authorization` is then set).
        if skip_header(name) || (backend.config.api_key.is_some() && name == header::AUTHORIZATION)
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if let Some(auth) = &backend.authorization {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    if let Some(host) = &backend.host {
        headers.insert(header::HOST, host.clone());
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(X_REQUEST_ID, request_id.clone());
    Ok(req)
}

/// Header names the gateway reads or sets on every request, built at compile time (a
/// `&str` name is parsed and hashed again on each insert or lookup).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// See [`X_REQUEST_ID`].
pub const X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
/// See [`X_REQUEST_ID`].
pub const X_SWITCHYARD_BACKEND: HeaderName = HeaderName::from_static("x-switchyard-backend");
/// See [`X_REQUEST_ID`].
pub const X_SWITCHYARD_ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");

/// Hop-by-hop headers never relayed from an upstream response (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers from an upstream response before it is relayed. Runs per
/// response: a scan of the (few) names present finds which ones are there, and only those
/// are looked up and removed (usually none, or just `connection`).
pub fn clean_response_headers(headers: &mut HeaderMap) {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clean_response_headers;
    use http::header::{HeaderMap, HeaderValue};

    #[test]
    fn response_cleaning_drops_every_hop_by_hop_header_and_keeps_the_rest() {
        let hop = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ];
        for dropped in hop {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h.insert(dropped, HeaderValue::from_static("x"));
            h.insert("x-keep", HeaderValue::from_static("1"));
            clean_response_headers(&mut h);
            assert!(h.get(dropped).is_none(), "{dropped} was relayed");
            assert_eq!(h.len(), 2, "after dropping {dropped}");
        }
        let mut all = HeaderMap::new();
        for name in hop {
            all.append(name, HeaderValue::from_static("x"));
            all.append(name, HeaderValue::from_static("y"));
        }
        all.insert("x-keep", HeaderValue::from_static("1"));
        clean_response_headers(&mut all);
        assert_eq!(all.len(), 1);
        assert!(all.get("x-keep").is_some());
    }
}
