//! Routing state survives change: after a reload (with or without a new backend) or an admin
//! add or remove, a prompt whose prefix a kept backend holds goes back to that backend. Before,
//! the pool's policy was rebuilt with an empty prefix index and every prefix was cold again.

use crate::admin_support::*;
use crate::support::*;
use http::StatusCode;

/// Six prompts with long, distinct prefixes (2,000 tokens each).
fn prefixes() -> Vec<String> {
    (0..6u8)
        .map(|i| {
            let word = format!("{} ", char::from(b'a' + i)).repeat(4000);
            format!("document {i}: {word}")
        })
        .collect()
}

fn chat(prompt: &str, question: &str) -> String {
    serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": format!("{prompt}\n{question}")}],
        "max_tokens": 8,
    })
    .to_string()
}

/// Sends each prefix once, in order, and returns the backend that took it.
async fn homes(gw: &FileGw, prompts: &[String]) -> Vec<String> {
    let c = client();
    let mut out = Vec::new();
    for p in prompts {
        let a = post(&c, &gw.url("/v1/chat/completions"), &chat(p, "first"), &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        out.push(a.backend());
    }
    out
}

/// Sends each prefix again with another question, starting from the second prefix: cold
/// requests spread in rotation, so without the index they would land elsewhere than in the
/// first round. Returns the backends in the order of `prompts`.
async fn again(gw: &FileGw, prompts: &[String]) -> Vec<String> {
    let c = client();
    let mut out = vec![String::new(); prompts.len()];
    for k in 1..=prompts.len() {
        let i = k % prompts.len();
        let body = chat(&prompts[i], "and again");
        let a = post(&c, &gw.url("/v1/chat/completions"), &body, &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        out[i] = a.backend();
    }
    out
}

/// Four mock upstreams, a gateway over the first three (`prefix_aware`) started from a file,
/// and where each of the [`prefixes`] went when first sent.
struct Setup {
    mocks: Vec<Mock>,
    file: TempConfig,
    gw: FileGw,
    prompts: Vec<String>,
    homes: Vec<String>,
}

async fn setup() -> Setup {
    let mut mocks = Vec::new();
    for _ in 0..4 {
        mocks.push(Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await);
    }
    let file = TempConfig::new(&pool_of(&mocks, &[0, 1, 2]));
    let gw = FileGw::start(&file).await;
    let prompts = prefixes();
    let homes = homes(&gw, &prompts).await;
    Setup {
        mocks,
        file,
        gw,
        prompts,
        homes,
    }
}

/// The pool of these mocks, in this order, named `b0`, `b1`, ...
fn pool_of(mocks: &[Mock], order: &[usize]) -> String {
    let urls: Vec<String> = order.iter().map(|&i| mocks[i].url()).collect();
    admin_config(&urls, "policy: prefix_aware")
}

async fn reload(s: &Setup) {
    let a = admin(&client(), "POST", &s.gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
}

#[tokio::test]
async fn a_reload_that_changes_nothing_keeps_every_prefix_at_its_home() {
    let s = setup().await;
    reload(&s).await;
    assert_eq!(again(&s.gw, &s.prompts).await, s.homes);
}

#[tokio::test]
async fn a_reload_that_adds_a_backend_keeps_every_prefix_at_its_home() {
    let s = setup().await;
    // The new backend goes first, so every kept one moves to another position.
    let text = pool_of(&s.mocks, &[3, 0, 1, 2])
        .replace("name: b0", "name: new")
        .replace("name: b1", "name: b0")
        .replace("name: b2", "name: b1")
        .replace("name: b3", "name: b2");
    s.file.write(&text);
    reload(&s).await;
    assert_eq!(again(&s.gw, &s.prompts).await, s.homes);
}

#[tokio::test]
async fn admin_add_and_remove_keep_the_prefixes_of_the_backends_that_stay() {
    let s = setup().await;
    let c = client();
    let body = format!(r#"{{"url": "{}", "name": "new"}}"#, s.mocks[3].url());
    let a = admin(
        &c,
        "POST",
        &s.gw.admin_url("/admin/backends?model=m"),
        &body,
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(again(&s.gw, &s.prompts).await, s.homes);

    let a = admin(&c, "DELETE", &s.gw.admin_url("/admin/backends/b0"), "").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let after = again(&s.gw, &s.prompts).await;
    let before = &s.homes;
    for (i, (was, now)) in before.iter().zip(&after).enumerate() {
        if was != "b0" {
            assert_eq!(now, was, "prefix {i} left its home");
        }
    }
}
