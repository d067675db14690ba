//! Forwarding: the pooled upstream client, and building the upstream request from the
//! client's, so that the body goes out as the original bytes (only `model` rewritten when the
//! backend expects another name) and headers pass through except hop-by-hop ones (the fixed
//! list and those the message's `Connection` header names, in both directions). The client's
//! address is appended to `X-Forwarded-For`, and `X-Forwarded-Proto` says how it came in.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use smallvec::SmallVec;
use std::net::IpAddr;
use std::time::Duration;
use switchyard_core::RequestProfile;

use crate::config::Timeouts;
use crate::fleet::Backend;
use crate::providers::{self, ClientApi, Direction, Outgoing, Provider};

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
            | "x-forwarded-for"
            | "x-forwarded-proto"
    )
}

/// Headers of [`skip_header`]'s list that are always set again on the way out (by
/// [`prepare_headers`] or [`upstream_request`]), which replaces the client's values.
fn replaced_header(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
}

/// The header names a message's `Connection` header lists (RFC 9110 section 7.6.1: the
/// sender declares them hop-by-hop), less `close` and `keep-alive`, which name no header to
/// remove. Usually empty.
fn connection_named(headers: &HeaderMap) -> SmallVec<[&str; 4]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("keep-alive")
        })
        .collect()
}

/// `X-Forwarded-For` as sent upstream: the client's value (every line of it, joined as one
/// list) with the client's own address appended, written without `format!`.
fn forwarded_for(client_headers: &HeaderMap, peer: IpAddr) -> Option<HeaderValue> {
    let mut list = String::with_capacity(40);
    for v in client_headers.get_all(X_FORWARDED_FOR) {
        if let Some(v) = v.to_str().ok().map(str::trim).filter(|v| !v.is_empty()) {
            list.push_str(v);
            list.push_str(", ");
        }
    }
    switchyard_core::ip_text::push_ip(&mut list, peer.to_canonical());
    HeaderValue::try_from(list).ok()
}

/// The client's headers made ready to forward (see [`prepare_headers`]): its map less the
/// hop-by-hop headers, and the headers the gateway adds, which replace any the client sent
/// under their names. The additions stay beside the map rather than in it: each attempt
/// lists both ([`HeaderPlan`]), so nothing is hashed into the map for them.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The client's headers, hop-by-hop ones removed.
    pub map: HeaderMap,
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `x-request-id`.
    pub added: SmallVec<[(HeaderName, HeaderValue); 3]>,
}

impl Prepared {
    /// Headers to send as they are (no additions).
    pub fn from_map(map: HeaderMap) -> Self {
        Self {
            map,
            added: SmallVec::new(),
        }
    }

    /// Sets an added header (replacing the client's, and an earlier addition).
    pub fn add(&mut self, name: HeaderName, value: HeaderValue) {
        self.added.retain(|(n, _)| *n != name);
        self.added.push((name, value));
    }
}

/// The client's headers made ready to forward, once per request and in place (no header is
/// copied or hashed again): hop-by-hop headers removed (the fixed list and those its
/// `Connection` header names); `X-Forwarded-For` with `peer` appended, `X-Forwarded-Proto`
/// and `x-request-id` added beside the map. What depends on the backend (its key, `Host`,
/// `Content-Length`) is set per attempt by [`upstream_request`], replacing the client's
/// values (so they are not removed here).
pub fn prepare_headers(mut headers: HeaderMap, peer: IpAddr, request_id: &HeaderValue) -> Prepared {
    let forwarded = forwarded_for(&headers, peer);
    // One scan finds what must go; usually nothing.
    let mut drop: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|n| skip_header(n) && !replaced_header(n))
        .cloned()
        .collect();
    if drop.contains(&header::CONNECTION) {
        drop.extend(
            connection_named(&headers)
                .into_iter()
                .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
        );
    }
    for name in drop {
        headers.remove(name);
    }
    let mut prepared = Prepared::from_map(headers);
    // An addition replaces every value the client sent under its name.
    match forwarded {
        Some(list) => prepared.added.push((X_FORWARDED_FOR, list)),
        None => {
            prepared.map.remove(X_FORWARDED_FOR);
        }
    }
    // The listener speaks cleartext HTTP only; a client's own claim is not passed on.
    prepared
        .added
        .push((X_FORWARDED_PROTO, HeaderValue::from_static("http")));
    prepared.added.push((X_REQUEST_ID, request_id.clone()));
    prepared
}

/// `body` with vLLM's `priority` at least `level` (lower runs first): added when absent; a
/// client's own value stands only if it is less urgent, so a client can lower its level and
/// never raise it. `None` when the body needs no change or is not a JSON object.
pub(crate) fn with_priority(body: &Bytes, level: u8) -> Option<Bytes> {
    if let Some(b) = with_field(body, "priority", &level.to_string()) {
        return Some(b);
    }
    // The client sent one (rare): read it, and keep the less urgent of the two.
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    let theirs = obj.get("priority").and_then(serde_json::Value::as_i64);
    if theirs.is_some_and(|p| p >= i64::from(level)) {
        return None;
    }
    obj.insert("priority".into(), serde_json::Value::from(level));
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// `body` (a JSON object) with the top-level field `"key": value` (`value` is JSON text)
/// added, or `None` when `key` appears in it already (the client's value stands) or it is not
/// a JSON object.
pub(crate) fn with_field(body: &Bytes, key: &str, value: &str) -> Option<Bytes> {
    let quoted = [b"\"", key.as_bytes(), b"\""].concat();
    if memchr::memmem::find(body, &quoted).is_some() {
        return None;
    }
    let end = body.iter().rposition(|&b| b == b'}')?;
    let head = &body[..end];
    let empty = head.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let mut out = bytes::BytesMut::with_capacity(body.len() + quoted.len() + value.len() + 2);
    out.extend_from_slice(head);
    if !empty {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(&quoted);
    out.extend_from_slice(b":");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&body[end..]);
    Some(out.freeze())
}

/// What one request sends upstream, whatever the backend: its client's API, its profile,
/// the chat body (a Messages request made chat, for a Messages client) and the client's own
/// body.
pub struct Outbound<'a> {
    /// The API the client called.
    pub client: ClientApi,
    /// Its profile (of the chat body).
    pub profile: &'a RequestProfile,
    /// The chat-completions body (the client's, or translated from Messages).
    pub body: &'a Bytes,
    /// The body as the client sent it (the same bytes as `body` for OpenAI clients).
    pub original: &'a Bytes,
}

/// Why no upstream request could be built.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The URI could not be built.
    #[error("{0}")]
    Http(#[from] http::Error),
    /// The request cannot be put in the backend's API.
    #[error("{0}")]
    Untranslatable(String),
}

/// The headers one attempt sends: the request's prepared headers ([`prepare_headers`]): its
/// additions, then its map, less those in `drop` and those an earlier entry replaces; and
/// first `set`, this attempt's own. Nothing is copied: a direct connection writes them as
/// they are listed ([`HeaderPlan::iter`]); only the pooled client needs a map of its own
/// ([`HeaderPlan::to_map`]).
#[derive(Debug)]
pub struct HeaderPlan<'a> {
    /// The client's headers, hop-by-hop ones removed.
    pub base: &'a HeaderMap,
    /// The gateway's additions for the whole request (forwarding, request id).
    pub added: &'a [(HeaderName, HeaderValue)],
    /// Headers this attempt sets, each replacing every value of its name.
    pub set: SmallVec<[(HeaderName, HeaderValue); 4]>,
    /// Headers this attempt does not send.
    pub drop: SmallVec<[HeaderName; 4]>,
}

impl<'a> HeaderPlan<'a> {
    /// The request's headers as they were prepared.
    pub fn new(prepared: &'a Prepared) -> Self {
        Self {
            base: &prepared.map,
            added: &prepared.added,
            set: SmallVec::new(),
            drop: SmallVec::new(),
        }
    }

    /// Sets `name` (replacing every other value of it).
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.set.retain(|(n, _)| *n != name);
        self.set.push((name, value));
    }

    /// Leaves `name` out (every value of it, but one set after this).
    pub fn remove(&mut self, name: HeaderName) {
        self.set.retain(|(n, _)| *n != name);
        self.drop.push(name);
    }

    /// Whether the client's header or an addition named `name` is not sent.
    fn hides(&self, name: &HeaderName) -> bool {
        self.drop.contains(name) || self.set.iter().any(|(n, _)| n == name)
    }

    /// Every header sent, in order: those set, the additions, then the client's.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let added = self.added.iter().filter(|(n, _)| !self.hides(n));
        let base = self
            .base
            .iter()
            .filter(|(n, _)| !self.hides(n) && !self.added.iter().any(|(a, _)| a == *n));
        self.set
            .iter()
            .chain(added)
            .map(|(n, v)| (n, v))
            .chain(base)
    }

    /// Whether a header named `name` is sent.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.set.iter().any(|(n, _)| n == name)
            || (!self.drop.contains(name)
                && (self.added.iter().any(|(n, _)| n == name) || self.base.contains_key(name)))
    }

    /// The headers sent, as a map of their own.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = self.base.clone();
        for name in &self.drop {
            map.remove(name);
        }
        for (name, value) in self.added.iter().filter(|(n, _)| !self.hides(n)) {
            map.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.set {
            map.insert(name.clone(), value.clone());
        }
        map
    }
}

/// What one attempt sends to a backend.
#[derive(Debug)]
pub struct Upstream<'a> {
    /// Origin-form (`/v1/...`) for a direct connection, absolute otherwise.
    pub uri: http::Uri,
    /// Its headers.
    pub headers: HeaderPlan<'a>,
    /// Its body.
    pub body: Bytes,
}

impl Upstream<'_> {
    /// As a request of its own, for the pooled client.
    pub fn to_request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.to_map();
        req
    }
}

/// What to send to `backend`, a member of the pool serving `model` (the requested model, or
/// a fallback model whose name the body must then carry), with the request's `prepared`
/// headers ([`prepare_headers`]) and the backend's provider's own, and how its answer is
/// translated back to the client. The URI is origin-form (`/v1/...`) when `origin_form`,
/// for a connection to the backend itself; absolute otherwise.
pub fn upstream_request<'a>(
    backend: &Backend,
    model: &str,
    outbound: &Outbound<'_>,
    prepared: &'a Prepared,
    origin_form: bool,
) -> Result<(Upstream<'a>, Option<Direction>), OutboundError> {
    let profile = outbound.profile;
    let name = backend.config.upstream_model.as_deref().unwrap_or(model);
    let provider = &backend.config.provider;
    let out = match provider {
        Provider::Anthropic => providers::to_anthropic(
            outbound.client,
            outbound.body,
            outbound.original,
            name,
            &profile.model,
        )
        .map_err(OutboundError::Untranslatable)?,
        _ => Outgoing {
            body: if name == profile.model {
                outbound.body.clone()
            } else {
                Bytes::from(profile.rewrite_model(outbound.body, name))
            },
            direction: providers::direction(outbound.client, provider, false),
        },
    };
    let mut uri = backend.endpoint_uri(profile.kind)?;
    if origin_form {
        if let Some(path) = uri.path_and_query().cloned() {
            uri = http::Uri::from(path);
        }
    }
    let mut headers = HeaderPlan::new(prepared);
    match &backend.host {
        Some(host) => headers.insert(header::HOST, host.clone()),
        None => headers.remove(header::HOST),
    }
    if out.direction.is_some() {
        // A translated answer must arrive as plain bytes to be read.
        headers.remove(header::ACCEPT_ENCODING);
    }
    // A backend with a key of its own never sees the client's (config refuses a key that
    // cannot be sent, so `credential` is then set).
    provider.set_headers(&mut headers, backend.credential.as_ref());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.body.len()));
    let upstream = Upstream {
        uri,
        headers,
        body: out.body,
    };
    Ok((upstream, out.direction))
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
/// See [`X_REQUEST_ID`].
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// See [`X_REQUEST_ID`].
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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

/// Removes hop-by-hop headers from an upstream response before it is relayed: the fixed
/// list, and those its `Connection` header names. Runs per response: a scan of the (few)
/// names present finds which ones are there, and only those are looked up and removed
/// (usually none, or just `connection`).
pub fn clean_response_headers(headers: &mut HeaderMap) {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    // Bit 0 is `connection`.
    if present & 1 != 0 {
        let named: SmallVec<[HeaderName; 4]> = connection_named(headers)
            .into_iter()
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
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
    #[test]
    fn engine_priority_is_added_and_a_client_may_only_lower_it() {
        use bytes::Bytes;
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let p = |body: Bytes| -> Option<i64> {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            v["priority"].as_i64()
        };
        let added = super::with_priority(&b(r#"{"model":"m"}"#), 2).unwrap();
        assert_eq!(p(added), Some(2));
        // Lower than its level (more urgent): raised back to the level.
        let fixed = super::with_priority(&b(r#"{"model":"m","priority":0}"#), 2).unwrap();
        assert_eq!(p(fixed), Some(2));
        // Less urgent than its level: the client's stands.
        assert!(super::with_priority(&b(r#"{"model":"m","priority":4}"#), 2).is_none());
        // The word in a message is not the field.
        let text = super::with_priority(
            &b(r#"{"model":"m","messages":[{"role":"user","content":"priority"}]}"#),
            1,
        )
        .unwrap();
        assert_eq!(p(text), Some(1));
    }

    use super::{clean_response_headers, forwarded_for};
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

        let mut named = HeaderMap::new();
        named.append("connection", HeaderValue::from_static("close, X-Hop"));
        named.append("connection", HeaderValue::from_static("x-other-hop"));
        named.insert("x-hop", HeaderValue::from_static("1"));
        named.insert("x-other-hop", HeaderValue::from_static("1"));
        named.insert("x-keep", HeaderValue::from_static("1"));
        clean_response_headers(&mut named);
        assert_eq!(named.keys().collect::<Vec<_>>(), ["x-keep"]);
    }

    #[test]
    fn a_plan_lists_on_the_wire_exactly_what_its_map_holds() {
        use super::{prepare_headers, HeaderPlan};
        use http::header::HeaderName;
        let mut client = HeaderMap::new();
        client.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        client.append("x-request-id", HeaderValue::from_static("the-clients"));
        client.append("authorization", HeaderValue::from_static("Bearer client"));
        client.append("accept-encoding", HeaderValue::from_static("gzip"));
        client.append("x-keep", HeaderValue::from_static("1"));
        client.append("x-keep", HeaderValue::from_static("2"));
        client.append("connection", HeaderValue::from_static("x-hop"));
        client.append("x-hop", HeaderValue::from_static("1"));
        client.append("host", HeaderValue::from_static("gateway"));
        let id = HeaderValue::from_static("ours");
        let prepared = prepare_headers(client, "10.0.0.1".parse().unwrap(), &id);
        let mut plan = HeaderPlan::new(&prepared);
        plan.insert(http::header::HOST, HeaderValue::from_static("backend:8000"));
        plan.remove(http::header::AUTHORIZATION);
        plan.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer ours"),
        );
        plan.remove(http::header::ACCEPT_ENCODING);
        let listed: Vec<(HeaderName, HeaderValue)> =
            plan.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        let map = plan.to_map();
        assert_eq!(listed.len(), map.len(), "{listed:?}");
        for (name, value) in &listed {
            assert!(map.get_all(name).iter().any(|v| v == value), "{name}");
        }
        let one = |name: &str| {
            let all: Vec<_> = listed.iter().filter(|(n, _)| n == name).collect();
            assert_eq!(all.len(), 1, "{name}: {all:?}");
            all[0].1.clone()
        };
        assert_eq!(one("host"), "backend:8000");
        assert_eq!(one("authorization"), "Bearer ours");
        assert_eq!(one("x-request-id"), "ours");
        assert_eq!(one("x-forwarded-for"), "203.0.113.7, 10.0.0.1");
        assert_eq!(one("x-forwarded-proto"), "http");
        assert!(listed
            .iter()
            .all(|(n, _)| n != "accept-encoding" && n != "x-hop" && n != "connection"));
        assert_eq!(listed.iter().filter(|(n, _)| n == "x-keep").count(), 2);
        assert!(plan.contains(&HeaderName::from_static("x-keep")));
        assert!(!plan.contains(&http::header::ACCEPT_ENCODING));
    }

    #[test]
    fn forwarded_for_appends_the_peer_to_every_line_of_the_clients_list() {
        let peer = "10.1.2.3".parse().unwrap();
        assert_eq!(forwarded_for(&HeaderMap::new(), peer).unwrap(), "10.1.2.3");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static(" 198.51.100.1, 192.0.2.9 "),
        );
        h.append("x-forwarded-for", HeaderValue::from_static(""));
        assert_eq!(
            forwarded_for(&h, peer).unwrap(),
            "203.0.113.7, 198.51.100.1, 192.0.2.9, 10.1.2.3"
        );
        let mapped = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            forwarded_for(&HeaderMap::new(), mapped).unwrap(),
            "10.1.2.3"
        );
    }
}
