//! Admission over real loopback sockets and a real SQLite file: API keys (config and run
//! time, hashed in the store, revoked and rotated through the admin API, surviving a
//! restart), 401/403, rate limits and their headers, and the per-pool waiting room (priority
//! order, timeouts, shedding, fairness between tenants).

use crate::support::conf::{Conf, Pool};
use crate::support::*;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

const ADMIN: &str = "admin-token-0123456789";
const KEY_A: &str = "sk-test-tenant-a-0123456789";
const KEY_B: &str = "sk-test-tenant-b-0123456789";

/// A fresh directory for one test's database.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sy-admission-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts that `a` is the gateway's refusal with `status` and `code`.
fn refused(a: &Answer, status: u16, code: &str) {
    assert_eq!(
        (a.status.as_u16(), a.error_code().as_str()),
        (status, code),
        "{:?}",
        a.body
    );
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn chat(c: &Client, gw: &Gw, model: &str, headers: &[(&str, &str)]) -> Answer {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    post(c, &gw.url("/v1/chat/completions"), &body, headers).await
}

async fn admin(c: &Client, gw: &Gw, method: Method, path: &str, body: &str) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .header("authorization", bearer(ADMIN))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(c, req).await
}

/// The `auth:` section: tenants `team-a` and `team-b`, [`KEY_A`] of team-a for model `m`
/// only with `key_a`'s fields added, [`KEY_B`] of team-b (unless `with_b` is false), and the
/// store at `db`.
fn auth(db: Option<&std::path::Path>, key_a: Value, with_b: bool) -> Value {
    let mut a = json!({"key": KEY_A, "tenant": "team-a", "models": ["m"]});
    if let (Some(a), Value::Object(fields)) = (a.as_object_mut(), key_a) {
        a.extend(fields);
    }
    let mut keys = vec![a];
    if with_b {
        keys.push(json!({"key": KEY_B, "tenant": "team-b"}));
    }
    let mut auth = json!({"tenants": {"team-a": {}, "team-b": {}}, "keys": keys});
    if let Some(db) = db {
        auth["db"] = json!(db);
    }
    auth
}

/// The admin API behind [`ADMIN`], [`auth`] with both keys, model `m` on `url` (backend `b0`,
/// `max_concurrency: 1`) and model `other` on `url` (backend `b1`).
fn auth_config(url: &str, db: Option<&std::path::Path>, key_a: Value) -> Conf {
    Conf::new()
        .set("admin", json!({"token": ADMIN}))
        .set("auth", auth(db, key_a, true))
        .model("m", b0(json!({"url": url, "max_concurrency": 1})))
        .model(
            "other",
            Pool::default().backend(json!({"url": url, "name": "b1"})),
        )
}

/// Model `m`'s pool: backend `b0` with `fields`.
fn b0(fields: Value) -> Pool {
    let mut b = json!({"name": "b0"});
    if let (Some(b), Value::Object(fields)) = (b.as_object_mut(), fields) {
        b.extend(fields);
    }
    Pool::default().backend(b)
}

/// No fields added.
fn none() -> Value {
    json!({})
}

#[tokio::test]
async fn missing_unknown_and_wrong_model_keys_are_refused_and_good_ones_pass() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(auth_config(&up.url(), None, none())).await;
    let c = client();

    let a = chat(&c, &gw, "m", &[]).await;
    refused(&a, 401, "invalid_api_key");
    assert_eq!(a.headers["www-authenticate"], "Bearer");
    let a = chat(
        &c,
        &gw,
        "m",
        &[("authorization", "Bearer sk-nope-nope-nope-nope")],
    )
    .await;
    refused(&a, 401, "invalid_api_key");
    // A bad key learns nothing about the models: 401 before 404.
    let a = chat(&c, &gw, "no-such-model", &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(up.count(), 0);

    let a = chat(&c, &gw, "m", &[("authorization", &bearer(KEY_A))]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // The key is the gateway's: the backend never sees it.
    assert!(!up.last().headers.contains_key("authorization"));
    let a = chat(&c, &gw, "m", &[("x-api-key", KEY_B)]).await;
    assert_eq!(a.status, 200, "x-api-key is accepted too");
    assert!(!up.last().headers.contains_key("x-api-key"));
    let a = chat(&c, &gw, "other", &[("authorization", &bearer(KEY_A))]).await;
    refused(&a, 403, "model_not_allowed");
    assert_eq!(up.count(), 2);
    // An unknown model: the 404 lists only what the key may use.
    let a = chat(&c, &gw, "nope", &[("authorization", &bearer(KEY_A))]).await;
    refused(&a, 404, "model_not_found");
    let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.ends_with("available models: m"), "{message}");
    let a = chat(&c, &gw, "nope", &[("authorization", &bearer(KEY_B))]).await;
    let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("other"),
        "an unlimited key hears of every model: {message}"
    );
    // The model list, too, needs a key and names only what it may use.
    refused(
        &get(&c, &gw.url("/v1/models")).await,
        401,
        "invalid_api_key",
    );
    let ids = |h: &str, key: &str| {
        let (c, url) = (c.clone(), gw.url("/v1/models"));
        let (h, key) = (h.to_owned(), key.to_owned());
        async move {
            let a = get_with(&c, &url, &h, &key).await;
            assert_eq!(a.status, 200, "{:?}", a.body);
            a.json()["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("authorization", &bearer(KEY_A)).await, ["m"]);
    assert_eq!(ids("x-api-key", KEY_B).await, ["m", "other"]);
}

/// A GET of `url` with one header.
async fn get_with(c: &Client, url: &str, name: &str, value: &str) -> Answer {
    let req = Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(name, value)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(c, req).await
}

#[tokio::test]
async fn run_time_keys_are_hashed_in_sqlite_revoked_rotated_and_survive_a_restart() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let dir = temp_dir("lifecycle");
    let db = dir.join("keys.db");
    let conf = auth_config(&up.url(), Some(&db), none());
    let mut gw = Gw::with(conf.clone()).await;
    let c = client();

    let made = admin(
        &c,
        &gw,
        Method::POST,
        "/admin/keys",
        r#"{"tenant":"team-b","models":["m"],"priority":"high","rpm":100}"#,
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let key = made.json()["key"].as_str().unwrap().to_owned();
    let id = made.json()["info"]["id"].as_i64().unwrap();
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &bearer(&key))])
            .await
            .status,
        200
    );

    // Listed without the key; the file does not hold it either.
    let list = admin(&c, &gw, Method::GET, "/admin/keys", "").await;
    assert_eq!(list.status, 200);
    assert!(!String::from_utf8_lossy(&list.body).contains(&key));
    assert_eq!(list.json()["keys"][0]["prefix"], &key[..10]);
    let raw = std::fs::read(&db).unwrap();
    assert!(!raw.windows(key.len()).any(|w| w == key.as_bytes()));

    // Unknown tenants and models are refused at creation.
    let bad = admin(
        &c,
        &gw,
        Method::POST,
        "/admin/keys",
        r#"{"tenant":"nobody"}"#,
    )
    .await;
    assert_eq!(bad.status, 400);

    // It survives a restart.
    gw.shutdown().await;
    let mut gw = Gw::with(conf.clone()).await;
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &bearer(&key))])
            .await
            .status,
        200
    );

    // Rotation: the new key works, the old one no longer does.
    let rotated = admin(
        &c,
        &gw,
        Method::POST,
        &format!("/admin/keys/{id}/rotate"),
        "",
    )
    .await;
    assert_eq!(rotated.status, 201, "{:?}", rotated.body);
    let new_key = rotated.json()["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &bearer(&key))])
            .await
            .status,
        401
    );
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &bearer(&new_key))])
            .await
            .status,
        200
    );
    let new_id = rotated.json()["info"]["id"].as_i64().unwrap();

    // Revocation is immediate, and sticks across a restart.
    let revoked = admin(
        &c,
        &gw,
        Method::DELETE,
        &format!("/admin/keys/{new_id}"),
        "",
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &bearer(&new_key))])
            .await
            .status,
        401
    );
    gw.shutdown().await;
    let gw = Gw::with(conf.clone()).await;
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &bearer(&new_key))])
            .await
            .status,
        401
    );
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &bearer(KEY_A))])
            .await
            .status,
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn rpm_limit_answers_429_with_retry_after_and_ratelimit_headers() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(auth_config(
        &up.url(),
        None,
        json!({"rpm": 2, "tpm": 100000}),
    ))
    .await;
    let c = client();
    let auth = bearer(KEY_A);
    let a = chat(&c, &gw, "m", &[("authorization", &auth)]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-ratelimit-limit-requests"], "2");
    assert_eq!(a.headers["x-ratelimit-remaining-requests"], "1");
    // The four headers the issue names; the token limit and reset are not sent.
    assert!(!a.headers.contains_key("x-ratelimit-limit-tokens"));
    assert!(!a.headers.contains_key("x-ratelimit-reset-tokens"));
    let left: u64 = a.headers["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left < 100_000, "the request's estimate was taken: {left}");
    assert!(a.headers.contains_key("x-ratelimit-reset-requests"));
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &auth)]).await.status,
        200
    );
    let a = chat(&c, &gw, "m", &[("authorization", &auth)]).await;
    refused(&a, 429, "rate_limit_exceeded");
    let after: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&after), "{after}");
    assert_eq!(up.count(), 2);
    // Another key is not affected.
    assert_eq!(
        chat(&c, &gw, "m", &[("x-api-key", KEY_B)]).await.status,
        200
    );
}

#[tokio::test]
async fn max_concurrent_counts_a_request_until_its_body_ends() {
    let release = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(release.clone())).await;
    let gw = Arc::new(Gw::with(auth_config(&up.url(), None, json!({"max_concurrent": 1}))).await);
    let c = client();
    let held = {
        let (c, gw) = (c.clone(), gw.clone());
        tokio::spawn(async move { chat(&c, &gw, "m", &[("authorization", &bearer(KEY_A))]).await })
    };
    eventually(|| up.count() == 1).await;
    let a = chat(&c, &gw, "m", &[("authorization", &bearer(KEY_A))]).await;
    refused(&a, 429, "rate_limit_exceeded");
    release.notify_one();
    assert_eq!(held.await.unwrap().status, 200);
    release.notify_one();
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &bearer(KEY_A))])
            .await
            .status,
        200
    );
}

/// Requests waiting in model `m`'s queue at `level`, from the admin API.
async fn waiting(c: &Client, gw: &Gw, level: &str) -> u64 {
    admin(c, gw, Method::GET, "/admin/queues", "").await.json()["queues"]["m"][level]
        .as_u64()
        .unwrap()
}

/// Polls until `n` requests wait at `level`.
async fn until_waiting(c: &Client, gw: &Gw, level: &str, n: u64) {
    for _ in 0..1000 {
        if waiting(c, gw, level).await == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{n} never waited at {level}");
}

fn spawn_chat(
    c: &Client,
    gw: &Arc<Gw>,
    headers: Vec<(&'static str, String)>,
) -> tokio::task::JoinHandle<Answer> {
    let (c, gw) = (c.clone(), gw.clone());
    tokio::spawn(async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        chat(&c, &gw, "m", &h).await
    })
}

/// Lets the request held at the mock finish, then each of the `n - 1` that follow it, one
/// at a time (a held request waits for one notification each).
async fn serve_one_by_one(up: &Mock, release: &Notify, n: usize) {
    let start = up.count();
    for i in 0..n {
        release.notify_one();
        if i + 1 < n {
            eventually(|| up.count() > start + i).await;
        }
    }
}

/// The `x-test` header of each request the mock received, in order.
fn order(up: &Mock) -> Vec<String> {
    up.seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| {
            s.headers
                .get("x-test")
                .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_full_pool_queues_and_serves_the_most_urgent_first() {
    let release = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(release.clone())).await;
    let conf = Conf::new()
        .model("m", b0(json!({"url": up.url(), "max_concurrency": 1})))
        .set("admin", json!({"token": ADMIN}))
        .set("admission", json!({"aging": 0}));
    let gw = Arc::new(Gw::with(conf).await);
    let c = client();
    let first = spawn_chat(&c, &gw, vec![("x-test", "first".into())]);
    eventually(|| up.count() == 1).await;
    let batch = spawn_chat(
        &c,
        &gw,
        vec![("x-test", "batch".into()), ("x-priority", "batch".into())],
    );
    until_waiting(&c, &gw, "batch", 1).await;
    let normal = spawn_chat(&c, &gw, vec![("x-test", "normal".into())]);
    until_waiting(&c, &gw, "normal", 1).await;
    // Without auth a request may lower its level, and "critical" is not a lowering of normal.
    let asked_up = spawn_chat(
        &c,
        &gw,
        vec![
            ("x-test", "asked-up".into()),
            ("x-priority", "critical".into()),
        ],
    );
    until_waiting(&c, &gw, "normal", 2).await;
    assert_eq!(
        up.count(),
        1,
        "the backend never gets more than its max_concurrency"
    );
    serve_one_by_one(&up, &release, 4).await;
    for h in [first, batch, normal, asked_up] {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(order(&up), ["first", "normal", "asked-up", "batch"]);
}

#[tokio::test]
async fn a_request_waits_at_most_its_level_timeout_and_a_full_queue_sheds_the_least_urgent() {
    let release = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(release.clone())).await;
    let admission = json!({"max_waiting": 1, "levels": {"low": {"timeout": "300ms"}}});
    let conf = Conf::new()
        .model("m", b0(json!({"url": up.url(), "max_concurrency": 1})))
        .set("admin", json!({"token": ADMIN}))
        .set("admission", admission);
    let gw = Arc::new(Gw::with(conf).await);
    let c = client();
    let first = spawn_chat(&c, &gw, vec![("x-test", "first".into())]);
    eventually(|| up.count() == 1).await;

    // A low request times out after 300 ms.
    let a = chat(&c, &gw, "m", &[("x-priority", "low")]).await;
    refused(&a, 429, "queue_timeout");
    assert_eq!(a.headers["retry-after"], "1");

    // The queue holds one: a batch request waits, a normal one takes its place.
    let batch = spawn_chat(
        &c,
        &gw,
        vec![("x-test", "batch".into()), ("x-priority", "batch".into())],
    );
    until_waiting(&c, &gw, "batch", 1).await;
    let normal = spawn_chat(&c, &gw, vec![("x-test", "normal".into())]);
    let shed = batch.await.unwrap();
    refused(&shed, 429, "queue_full");
    // Another batch request finds nothing less urgent to shed.
    let a = chat(&c, &gw, "m", &[("x-priority", "batch")]).await;
    assert_eq!(a.error_code(), "queue_full");
    serve_one_by_one(&up, &release, 2).await;
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(normal.await.unwrap().status, 200);
    assert_eq!(order(&up), ["first", "normal"]);
    let m = sim::metrics(&gw).await;
    let refused = "switchyard_admission_refused_total";
    assert_eq!(
        series(&m, refused, &["code=\"queue_timeout\"", "priority=\"low\""]),
        1.0
    );
    assert_eq!(
        series(&m, refused, &["code=\"queue_full\"", "priority=\"batch\""]),
        2.0
    );
    let waiting = "switchyard_admission_waiting";
    assert_eq!(
        series(&m, waiting, &["model=\"m\"", "priority=\"normal\""]),
        0.0
    );
}

/// A `/metrics` page on loopback whose text the test sets (each scrape gets the current
/// text; `scrapes` counts them). Returns its URL.
async fn metrics_page(text: Arc<Mutex<String>>, scrapes: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (text, scrapes) = (text.clone(), scrapes.clone());
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head).await;
                let body = text.lock().unwrap().clone();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                scrapes.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    format!("http://{addr}/metrics")
}

/// A backend whose engine reports more requests waiting than `engine_queue_threshold` is
/// full: a request waits in the pool's queue instead of piling onto that engine, and goes
/// once a scrape shows the engine's queue short again.
#[tokio::test]
async fn a_request_waits_while_the_engines_scraped_queue_is_past_the_threshold() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let page = Arc::new(Mutex::new(
        "vllm:num_requests_running 4\nvllm:num_requests_waiting 9\n".to_owned(),
    ));
    let scrapes = Arc::new(AtomicUsize::new(0));
    let metrics = metrics_page(page.clone(), scrapes.clone()).await;
    let backend = json!({"url": up.url(), "engine": "vllm", "metrics_url": metrics});
    let conf = Conf::new()
        .model("m", b0(backend))
        .set("admin", json!({"token": ADMIN}))
        .set("scrape", json!({"interval": "20ms"}))
        .set("admission", json!({"engine_queue_threshold": 4}));
    let gw = Arc::new(Gw::with(conf).await);
    // Scrape rounds run one after another: by the second scrape the first one's page is read.
    eventually(|| scrapes.load(Ordering::SeqCst) >= 2).await;
    let c = client();
    let pending = spawn_chat(&c, &gw, vec![]);
    until_waiting(&c, &gw, "normal", 1).await;
    assert_eq!(
        up.count(),
        0,
        "nothing is sent to an engine past the threshold"
    );

    *page.lock().unwrap() = "vllm:num_requests_running 4\nvllm:num_requests_waiting 1\n".into();
    assert_eq!(pending.await.unwrap().status, 200);
    assert_eq!(up.count(), 1);
    assert_eq!(waiting(&c, &gw, "normal").await, 0);
}

#[tokio::test]
async fn prompts_awaiting_their_first_byte_past_max_prefill_tokens_make_a_backend_full() {
    let release = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(release.clone())).await;
    let conf = Conf::over(&[up.url()])
        .set("admin", json!({"token": ADMIN}))
        .set("admission", json!({"max_prefill_tokens": 1}));
    let gw = Arc::new(Gw::with(conf).await);
    let c = client();
    // The first request's prompt waits for its first byte at the mock: the backend is full.
    let first = spawn_chat(&c, &gw, vec![("x-test", "first".into())]);
    eventually(|| up.count() == 1).await;
    let second = spawn_chat(&c, &gw, vec![("x-test", "second".into())]);
    until_waiting(&c, &gw, "normal", 1).await;
    assert_eq!(up.count(), 1, "no max_concurrency, yet the second waits");
    serve_one_by_one(&up, &release, 2).await;
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    assert_eq!(order(&up), ["first", "second"]);
    // Zero would hold every request forever: refused at load.
    let e = switchyard_gateway::config::parse(
        "admission: {max_prefill_tokens: 0}\nmodels:\n  m:\n    backends:\n      - {url: \"http://127.0.0.1:1\"}\n",
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("max_prefill_tokens must be at least 1"), "{e}");
}

#[tokio::test]
async fn critical_reserve_keeps_the_last_of_max_concurrency_for_critical_requests() {
    let release = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(release.clone())).await;
    let conf = auth_config(&up.url(), None, json!({"priority": "critical"}))
        .set("admission", json!({"critical_reserve": 1}))
        .model("m", b0(json!({"url": up.url(), "max_concurrency": 2})));
    let gw = Arc::new(Gw::with(conf).await);
    let c = client();
    let key = |k: &str| ("authorization", bearer(k));
    let first = spawn_chat(&c, &gw, vec![key(KEY_B), ("x-test", "normal-1".into())]);
    eventually(|| up.count() == 1).await;
    // One of two in flight: a normal request finds the backend full, its last slot kept.
    let second = spawn_chat(&c, &gw, vec![key(KEY_B), ("x-test", "normal-2".into())]);
    until_waiting(&c, &gw, "normal", 1).await;
    // A critical one takes it at once.
    let critical = spawn_chat(&c, &gw, vec![key(KEY_A), ("x-test", "critical".into())]);
    eventually(|| up.count() == 2).await;
    assert_eq!(waiting(&c, &gw, "normal").await, 1);
    // With one of two in flight the normal one still waits: the last slot is kept.
    release.notify_one();
    eventually(|| first.is_finished() || critical.is_finished()).await;
    assert_eq!((up.count(), waiting(&c, &gw, "normal").await), (2, 1));
    release.notify_one();
    eventually(|| up.count() == 3).await;
    release.notify_one();
    for h in [first, second, critical] {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(order(&up), ["normal-1", "critical", "normal-2"]);
}

/// The value of the sample of metric `name` whose labels include every one of `labels`.
fn series(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} {labels:?} in metrics"))
}

#[tokio::test]
async fn tenants_take_turns_in_the_queue_whoever_queued_first() {
    let release = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(release.clone())).await;
    let gw = Arc::new(
        Gw::with(auth_config(&up.url(), None, none()).set("admission", json!({"aging": 0}))).await,
    );
    let c = client();
    let key = |k: &str| ("authorization", bearer(k));
    let first = spawn_chat(&c, &gw, vec![key(KEY_A), ("x-test", "a".into())]);
    eventually(|| up.count() == 1).await;
    // Tenant A queues four requests before tenant B's two arrive.
    let mut waiting_all = vec![first];
    for i in 1..=4 {
        waiting_all.push(spawn_chat(
            &c,
            &gw,
            vec![key(KEY_A), ("x-test", "a".into())],
        ));
        until_waiting(&c, &gw, "normal", i).await;
    }
    for i in 5..=6 {
        waiting_all.push(spawn_chat(
            &c,
            &gw,
            vec![key(KEY_B), ("x-test", "b".into())],
        ));
        until_waiting(&c, &gw, "normal", i).await;
    }
    serve_one_by_one(&up, &release, 7).await;
    for h in waiting_all {
        assert_eq!(h.await.unwrap().status, 200);
    }
    // First in the queue order, B would go last; VTC gives B its share as soon as it waits.
    assert_eq!(order(&up), ["a", "a", "b", "a", "b", "a", "a"]);
}

const STREAM: [&str; 3] = [
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n",
    "data: [DONE]\n\n",
];

#[tokio::test]
async fn a_metered_stream_asks_for_usage_invisibly_and_the_usage_reconciles_tpm() {
    let up = Mock::start(Reply::Sse {
        chunks: STREAM.to_vec(),
        gate: None,
    })
    .await;
    let gw = Gw::with(auth_config(&up.url(), None, json!({"tpm": 1000}))).await;
    let c = client();
    let body = r#"{"model":"m","stream":true,"max_tokens":500,"messages":[{"role":"user","content":"hi"}]}"#;
    let auth = [("authorization", bearer(KEY_A))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = post(&c, &gw.url("/v1/chat/completions"), body, &auth).await;
    assert_eq!(a.status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&up.last().body).unwrap();
    assert_eq!(
        seen["stream_options"]["include_usage"], true,
        "asked upstream"
    );
    assert_eq!(
        String::from_utf8_lossy(&a.body),
        format!("{}{}", STREAM[0], STREAM[2]),
        "the client never sees the usage chunk it did not ask for"
    );
    let record = gw.gateway().snapshot().decisions.last(1);
    assert_eq!(
        (record[0].prompt_tokens, record[0].completion_tokens),
        (Some(7), Some(3)),
        "the decision record takes the usage the permit read from the stripped chunk"
    );
    // The estimate (prompt + 500) came back down to the 10 tokens used, so a second request
    // of the same estimate fits in the 1000 tokens per minute.
    let a = post(&c, &gw.url("/v1/chat/completions"), body, &auth).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let left: u64 = a.headers["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left >= 400, "{left}");

    // A client that asked for usage gets it, untouched.
    let asked =
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let a = post(&c, &gw.url("/v1/chat/completions"), asked, &auth).await;
    assert_eq!(String::from_utf8_lossy(&a.body), STREAM.concat());
    assert_eq!(up.last().body, asked.as_bytes());
}

/// The recorded spend rows, from the admin API.
async fn spend_rows(c: &Client, gw: &Gw) -> Vec<serde_json::Value> {
    admin(c, gw, Method::GET, "/admin/keys/spend", "")
        .await
        .json()["spend"]
        .as_array()
        .unwrap()
        .clone()
}

/// `conf` (from [`auth_config`]) with model `m`'s backend on `url` priced at 1 per token.
fn priced(conf: Conf, url: &str) -> Conf {
    let price = json!({"input": 1000000, "output": 1000000});
    conf.model(
        "m",
        b0(json!({"url": url, "max_concurrency": 1, "price": price})),
    )
}

#[tokio::test]
async fn a_spent_budget_answers_insufficient_quota_and_stays_spent_after_a_restart() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let dir = temp_dir("budget");
    let db = dir.join("keys.db");
    // One token costs 1; each answer of the mock uses 2 tokens; the key may spend 3 a month.
    let conf = priced(
        auth_config(&up.url(), Some(&db), json!({"budget": 3})),
        &up.url(),
    );
    let mut gw = Gw::with(conf.clone()).await;
    let c = client();
    let auth = bearer(KEY_A);
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &auth)]).await.status,
        200
    );
    assert_eq!(
        chat(&c, &gw, "m", &[("authorization", &auth)]).await.status,
        200
    );
    let a = chat(&c, &gw, "m", &[("authorization", &auth)]).await;
    refused(&a, 429, "insufficient_quota");
    // Another key of another tenant still has its own budget (none).
    assert_eq!(
        chat(&c, &gw, "m", &[("x-api-key", KEY_B)]).await.status,
        200
    );

    // Written behind the request path, within about a second.
    let mut rows = Vec::new();
    for _ in 0..300 {
        rows = spend_rows(&c, &gw).await;
        if rows
            .iter()
            .filter(|r| r["model"] == "m")
            .map(|r| r["requests"].as_u64().unwrap())
            .sum::<u64>()
            >= 4
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let team_a = rows
        .iter()
        .find(|r| r["scope"] == "tenant:team-a")
        .expect("tenant row");
    assert_eq!(team_a["requests"], 2);
    assert_eq!(team_a["cost"], 4.0);
    assert_eq!(
        (
            team_a["prompt_tokens"].as_u64(),
            team_a["completion_tokens"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert!(rows
        .iter()
        .any(|r| r["scope"].as_str().unwrap().starts_with("key:") && r["cost"] == 4.0));

    gw.shutdown().await;
    let gw = Gw::with(conf.clone()).await;
    let a = chat(&c, &gw, "m", &[("authorization", &auth)]).await;
    assert_eq!(
        a.error_code(),
        "insufficient_quota",
        "spend survived the restart"
    );
    assert_eq!(up.count(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn debug_headers_show_the_admission_decision_in_the_route_header() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let conf = auth_config(&up.url(), None, json!({"priority": "high"}))
        .set("debug_headers", true)
        .set("admission", json!({}));
    let gw = Gw::with(conf).await;
    let c = client();
    let a = chat(
        &c,
        &gw,
        "m",
        &[("authorization", &bearer(KEY_A)), ("x-priority", "low")],
    )
    .await;
    assert_eq!(a.status, 200);
    let route = a.headers["x-switchyard-route"].to_str().unwrap();
    assert!(
        route.contains("admission: priority=low tenant=team-a waited_ms=0"),
        "{route}"
    );
}

#[tokio::test]
async fn a_model_limit_holds_for_every_caller_and_only_that_model() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let admission = json!({"model_limits": {"m": {"rpm": 1}}});
    let gw = Gw::with(auth_config(&up.url(), None, none()).set("admission", admission)).await;
    let c = client();
    let a = chat(&c, &gw, "m", &[("x-api-key", KEY_A)]).await;
    assert_eq!(a.headers["x-ratelimit-remaining-requests"], "0");
    let a = chat(&c, &gw, "m", &[("x-api-key", KEY_B)]).await;
    refused(&a, 429, "rate_limit_exceeded");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("model's rpm"));
    assert_eq!(
        chat(&c, &gw, "other", &[("x-api-key", KEY_B)]).await.status,
        200
    );
}

/// The `priority` field a mock upstream received last.
fn sent_priority(up: &Mock) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(&up.last().body).unwrap();
    v["priority"].as_i64()
}

#[tokio::test]
async fn engine_priority_tells_vllm_backends_each_requests_level_and_a_client_may_only_lower_it() {
    let vllm = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let sglang = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let other = json!({"url": sglang.url(), "name": "b1", "engine": "sglang"});
    let conf = auth_config(&vllm.url(), None, json!({"priority": "critical"}))
        .set("admission", json!({"engine_priority": true}))
        .model("m", b0(json!({"url": vllm.url(), "engine": "vllm"})))
        .model("other", Pool::default().backend(other));
    let gw = Gw::with(conf).await;
    let c = client();
    let a = chat(&c, &gw, "m", &[("authorization", &bearer(KEY_A))]).await;
    assert_eq!(a.status, 200);
    assert_eq!(sent_priority(&vllm), Some(0), "critical is 0");
    let b = bearer(KEY_B);
    chat(&c, &gw, "m", &[("authorization", &b)]).await;
    assert_eq!(sent_priority(&vllm), Some(2), "normal is 2");
    chat(
        &c,
        &gw,
        "m",
        &[("authorization", &b), ("x-priority", "batch")],
    )
    .await;
    assert_eq!(sent_priority(&vllm), Some(4), "lowered to batch");
    // A body asking for more urgency than the key's level is brought back to the level.
    let body = r#"{"model":"m","priority":0,"messages":[{"role":"user","content":"hi"}]}"#;
    post(
        &c,
        &gw.url("/v1/chat/completions"),
        body,
        &[("authorization", &b)],
    )
    .await;
    assert_eq!(sent_priority(&vllm), Some(2));
    // Engines not known to be vLLM get no field they may refuse.
    chat(&c, &gw, "other", &[("authorization", &b)]).await;
    assert_eq!(sglang.count(), 1);
    assert_eq!(sent_priority(&sglang), None);
}

#[tokio::test]
async fn with_engine_priority_a_critical_request_passes_the_prefill_limit_that_holds_others() {
    let release = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(release.clone())).await;
    let conf = auth_config(&up.url(), None, json!({"priority": "critical"}))
        .set(
            "admission",
            json!({"max_prefill_tokens": 1, "engine_priority": true}),
        )
        .model("m", b0(json!({"url": up.url(), "engine": "vllm"})));
    let gw = Arc::new(Gw::with(conf).await);
    let c = client();
    let key = |k: &str| ("authorization", bearer(k));
    // A normal request awaits its first byte: its prompt fills the prefill limit.
    let first = spawn_chat(&c, &gw, vec![key(KEY_B), ("x-test", "normal-1".into())]);
    eventually(|| up.count() == 1).await;
    let second = spawn_chat(&c, &gw, vec![key(KEY_B), ("x-test", "normal-2".into())]);
    until_waiting(&c, &gw, "normal", 1).await;
    // The engine will run a critical request first: it goes now.
    let critical = spawn_chat(&c, &gw, vec![key(KEY_A), ("x-test", "critical".into())]);
    eventually(|| up.count() == 2).await;
    assert_eq!(waiting(&c, &gw, "normal").await, 1);
    for _ in 0..3 {
        release.notify_one();
    }
    eventually(|| up.count() == 3).await;
    release.notify_one();
    for h in [first, second, critical] {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(order(&up), ["normal-1", "critical", "normal-2"]);
}

#[tokio::test]
async fn a_tenant_past_its_prefill_share_waits_though_a_backend_has_room() {
    // Three backends with room for one prompt each: a prefill budget of 3 tokens, halved
    // while team-a and team-b are both present. Any prompt here is longer than 1.5 tokens.
    let run = |share: bool| async move {
        let release = Arc::new(Notify::new());
        let up = Mock::start(Reply::HoldUntil(release.clone())).await;
        let pool = b0(json!({"url": up.url()}))
            .backend(json!({"url": up.url(), "name": "b2"}))
            .backend(json!({"url": up.url(), "name": "b3"}));
        let admission = json!({"max_prefill_tokens": 1, "tenant_prefill_share": share});
        let conf = auth_config(&up.url(), None, none())
            .set("admission", admission)
            .model("m", pool);
        let gw = Arc::new(Gw::with(conf).await);
        let c = client();
        let key = |k: &str| ("authorization", bearer(k));
        // team-a alone may use the whole budget; then team-b arrives and goes.
        let a1 = spawn_chat(&c, &gw, vec![key(KEY_A), ("x-test", "a1".into())]);
        eventually(|| up.count() == 1).await;
        let b1 = spawn_chat(&c, &gw, vec![key(KEY_B), ("x-test", "b1".into())]);
        eventually(|| up.count() == 2).await;
        let a2 = spawn_chat(&c, &gw, vec![key(KEY_A), ("x-test", "a2".into())]);
        let held = if share {
            // a1 awaits its first byte: team-a is at its share and a2 waits, though the
            // third backend is free.
            until_waiting(&c, &gw, "normal", 1).await;
            up.count() == 2
        } else {
            eventually(|| up.count() == 3).await;
            false
        };
        // The first two answers end a1's prefill whichever goes first; then a2 is sent.
        release.notify_one();
        release.notify_one();
        eventually(|| up.count() == 3).await;
        release.notify_one();
        for h in [a1, b1, a2] {
            assert_eq!(h.await.unwrap().status, 200);
        }
        assert_eq!(order(&up), ["a1", "b1", "a2"]);
        held
    };
    assert!(run(true).await, "a2 waited for its tenant's share");
    assert!(!run(false).await);
    let e = switchyard_gateway::config::parse(
        "admission: {tenant_prefill_share: true}\nmodels:\n  m:\n    backends:\n      - {url: \"http://127.0.0.1:1\"}\n",
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("tenant_prefill_share needs admission.max_prefill_tokens"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_the_queue_refuses_costs_its_key_no_quota() {
    let release = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(release.clone())).await;
    // team-a's key may send 2 requests a minute; the pool takes one at a time and a normal
    // request waits at most 200 ms.
    let admission = json!({"levels": {"normal": {"timeout": "200ms"}}});
    let conf = auth_config(&up.url(), None, json!({"rpm": 2})).set("admission", admission);
    let gw = Arc::new(Gw::with(conf).await);
    let c = client();
    let auth = bearer(KEY_A);
    let first = spawn_chat(&c, &gw, vec![("authorization", auth.clone())]);
    eventually(|| up.count() == 1).await;
    let a = chat(&c, &gw, "m", &[("authorization", auth.as_str())]).await;
    refused(&a, 429, "queue_timeout");
    release.notify_one();
    assert_eq!(first.await.unwrap().status, 200);
    // The timed-out request gave its turn back: the second of the minute still passes.
    release.notify_one();
    let a = chat(&c, &gw, "m", &[("authorization", auth.as_str())]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.headers["x-ratelimit-remaining-requests"], "0");
    let a = chat(&c, &gw, "m", &[("authorization", auth.as_str())]).await;
    refused(&a, 429, "rate_limit_exceeded");
}

#[tokio::test]
async fn a_run_time_keys_budget_holds_across_rotation_and_restart() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let dir = temp_dir("rt-budget");
    let db = dir.join("keys.db");
    // Each answer costs 2; the key made below may spend 3 a day.
    let conf = priced(auth_config(&up.url(), Some(&db), none()), &up.url());
    let mut gw = Gw::with(conf.clone()).await;
    let c = client();
    let made = admin(
        &c,
        &gw,
        Method::POST,
        "/admin/keys",
        r#"{"tenant": "team-b", "budget": 3, "budget_period": "day"}"#,
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let made = made.json();
    assert_eq!(made["info"]["budget"], 3.0);
    assert_eq!(made["info"]["budget_period"], "day");
    let key = made["key"].as_str().unwrap().to_owned();
    let id = made["info"]["id"].as_i64().unwrap();
    let auth = bearer(&key);
    for _ in 0..2 {
        assert_eq!(
            chat(&c, &gw, "m", &[("authorization", &auth)]).await.status,
            200
        );
    }
    refused(
        &chat(&c, &gw, "m", &[("authorization", &auth)]).await,
        429,
        "insufficient_quota",
    );
    // A rotated key keeps what the old one spent.
    let rotated = admin(
        &c,
        &gw,
        Method::POST,
        &format!("/admin/keys/{id}/rotate"),
        "",
    )
    .await;
    assert_eq!(rotated.status, 201, "{:?}", rotated.body);
    let key = rotated.json()["key"].as_str().unwrap().to_owned();
    let auth = bearer(&key);
    refused(
        &chat(&c, &gw, "m", &[("authorization", &auth)]).await,
        429,
        "insufficient_quota",
    );
    // Once the spend is written, a restart reads it back through the rotation.
    for _ in 0..300 {
        let rows = spend_rows(&c, &gw).await;
        if rows
            .iter()
            .any(|r| r["scope"] == format!("key:{id}") && r["cost"] == 4.0)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    gw.shutdown().await;
    let gw = Gw::with(conf.clone()).await;
    refused(
        &chat(&c, &gw, "m", &[("authorization", &auth)]).await,
        429,
        "insufficient_quota",
    );
    // A budget that is no amount is refused.
    let bad = admin(
        &c,
        &gw,
        Method::POST,
        "/admin/keys",
        r#"{"tenant": "team-b", "budget": -1}"#,
    )
    .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(up.count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One kept-alive connection to `addr`: every request sent on it goes over the same socket.
async fn one_connection(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    send
}

/// A chat request for `m` with `key` on `conn`; its status once the body is read.
async fn chat_on(
    conn: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    key: &str,
) -> u16 {
    use http_body_util::BodyExt;
    conn.ready().await.expect("the connection stays open");
    let req = Request::post("/v1/chat/completions")
        .header("host", "gateway")
        .header("authorization", bearer(key))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let resp = conn.send_request(req).await.expect("answered");
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

/// A connection remembers the key it presented last, so its next requests skip the SHA-256.
/// That memo must never outlive the key: revoked through the admin API, or gone from the
/// config by a reload, the next request on the same connection is refused. A different key
/// on the connection (one byte off, or another caller's) is checked, not taken from the memo.
#[tokio::test]
async fn a_kept_alive_connection_is_refused_at_once_when_its_key_is_revoked_or_removed() {
    use crate::admin_support::{FileGw, TempConfig};
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let dir = temp_dir("memo");
    let db = dir.join("keys.db");
    let conf = auth_config(&up.url(), Some(&db), none());
    let file = TempConfig::new(&conf.text());
    let fg = FileGw::start(&file).await;
    let c = client();
    let admin_call = |method: Method, path: String, body: &'static str| {
        let req = Request::builder()
            .method(method)
            .uri(fg.url(&path))
            .header("authorization", bearer(ADMIN))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        send(&c, req)
    };
    let made = admin_call(Method::POST, "/admin/keys".into(), r#"{"tenant":"team-b"}"#).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let key = made.json()["key"].as_str().unwrap().to_owned();
    let id = made.json()["info"]["id"].as_i64().unwrap();

    let mut conn = one_connection(fg.addr).await;
    assert_eq!(chat_on(&mut conn, &key).await, 200);
    assert_eq!(chat_on(&mut conn, &key).await, 200, "the remembered key");
    let mut near = key.clone().into_bytes();
    let last = near.len() - 1;
    near[last] = if near[last] == b'x' { b'y' } else { b'x' };
    let near = String::from_utf8(near).unwrap();
    assert_eq!(chat_on(&mut conn, &near).await, 401, "one byte off");
    assert_eq!(chat_on(&mut conn, KEY_B).await, 200, "another caller's key");
    assert_eq!(chat_on(&mut conn, &key).await, 200);

    let revoked = admin_call(Method::DELETE, format!("/admin/keys/{id}"), "").await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(
        chat_on(&mut conn, &key).await,
        401,
        "revoked: refused at once"
    );

    assert_eq!(chat_on(&mut conn, KEY_B).await, 200);
    let without_b = conf.set("auth", auth(Some(&db), none(), false));
    file.write(&without_b.text());
    fg.gw.reload().expect("the smaller file reloads");
    assert_eq!(chat_on(&mut conn, KEY_B).await, 401, "removed by a reload");
    assert_eq!(chat_on(&mut conn, KEY_A).await, 200);
    let _ = std::fs::remove_dir_all(&dir);
}
