//! Each policy's distribution, observed through the real gateway over loopback sockets with
//! in-process mock upstreams.

use crate::support::conf::{Conf, Pool};
use crate::support::*;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Notify;

async fn mocks(n: usize, reply: Reply) -> Vec<Mock> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Mock::start(reply.clone()).await);
    }
    v
}

fn urls(m: &[Mock]) -> Vec<String> {
    m.iter().map(|m| m.url()).collect()
}

async fn sequence(gw: &Gw, n: usize, headers: &[(&str, &str)]) -> Vec<String> {
    let c = client();
    let mut out = Vec::new();
    for _ in 0..n {
        let a = post(&c, &gw.url("/v1/chat/completions"), CHAT, headers).await;
        assert_eq!(a.status, 200);
        out.push(a.backend());
    }
    out
}

#[tokio::test]
async fn round_robin_visits_each_backend_in_turn() {
    let m = mocks(3, Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&urls(&m)).pool("policy", "round_robin")).await;
    assert_eq!(
        sequence(&gw, 6, &[]).await,
        ["b0", "b1", "b2", "b0", "b1", "b2"]
    );
}

#[tokio::test]
async fn weighted_5_1_1_gives_the_exact_smooth_sequence() {
    let m = mocks(3, Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let pool = Pool::default()
        .set("policy", "weighted")
        .backend(json!({"url": m[0].url(), "name": "a", "weight": 5}))
        .backend(json!({"url": m[1].url(), "name": "b"}))
        .backend(json!({"url": m[2].url(), "name": "c"}));
    let gw = Gw::with(Conf::new().model("m", pool)).await;
    assert_eq!(sequence(&gw, 7, &[]).await.concat(), "aabacaa");
}

#[tokio::test]
async fn random_uses_every_backend() {
    let m = mocks(3, Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&urls(&m)).pool("policy", "random")).await;
    let seq = sequence(&gw, 60, &[]).await;
    for b in ["b0", "b1", "b2"] {
        assert!(
            seq.iter().filter(|s| *s == b).count() >= 5,
            "{b} under-used: {seq:?}"
        );
    }
}

/// Backend 0 holds every request it gets; 1 and 2 answer at once. A load-aware policy sends
/// backend 0 exactly one request: after that it is the busiest.
async fn busy_backend_gets_one_request(policy: &str) {
    let hold = Arc::new(Notify::new());
    let busy = Mock::start(Reply::HoldUntil(hold.clone())).await;
    let fast1 = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let fast2 = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let gw =
        Gw::with(Conf::over(&[busy.url(), fast1.url(), fast2.url()]).pool("policy", policy)).await;
    let c = client();
    let mut held = Vec::new();
    for i in 0..30 {
        let (c, url) = (c.clone(), gw.url("/v1/chat/completions"));
        let before = busy.count();
        let task = tokio::spawn(async move { post(&c, &url, CHAT, &[]).await.status });
        eventually(|| busy.count() + fast1.count() + fast2.count() == i + 1).await;
        if busy.count() > before {
            held.push(task);
        } else {
            // Let a fast request finish so that only the busy backend has load.
            assert_eq!(task.await.unwrap(), 200);
        }
    }
    assert!(
        busy.count() <= 1,
        "{policy}: busy backend got {} requests",
        busy.count()
    );
    // Each fast backend's share is Binomial(29, 1/2) for power_of_two: >= 5 fails ~1e-5.
    assert!(
        fast1.count() >= 5 && fast2.count() >= 5,
        "{policy}: {} / {}",
        fast1.count(),
        fast2.count()
    );
    hold.notify_waiters();
    for t in held {
        assert_eq!(t.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn least_connections_moves_load_away_from_a_busy_backend() {
    busy_backend_gets_one_request("least_connections").await;
}

#[tokio::test]
async fn power_of_two_moves_load_away_from_a_busy_backend() {
    busy_backend_gets_one_request("power_of_two").await;
}

fn hash_config(backends: &[(&str, String)]) -> Conf {
    let mut pool = Pool::default().set(
        "policy",
        json!({"name": "consistent_hash", "load_factor": 1.25}),
    );
    for (name, url) in backends {
        pool = pool.backend(json!({"url": url, "name": name}));
    }
    Conf::new().model("m", pool)
}

async fn owner(gw: &Gw, key: &str) -> String {
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        CHAT,
        &[("x-session-id", key)],
    )
    .await;
    assert_eq!(a.status, 200);
    a.backend()
}

#[tokio::test]
async fn consistent_hash_keys_stay_put_and_only_the_removed_backends_keys_move() {
    let m = mocks(3, Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    let all = [("x", m[0].url()), ("y", m[1].url()), ("z", m[2].url())];
    let gw3 = Gw::with(hash_config(&all)).await;
    let gw2 = Gw::with(hash_config(&[all[0].clone(), all[2].clone()])).await;
    let mut moved_from_y = 0;
    for k in 0..60 {
        let key = format!("user-{k}");
        let home = owner(&gw3, &key).await;
        assert_eq!(owner(&gw3, &key).await, home, "{key} did not stay put");
        let after = owner(&gw2, &key).await;
        if home == "y" {
            moved_from_y += 1;
        } else {
            assert_eq!(after, home, "{key} moved though its backend {home} stayed");
        }
    }
    assert!(
        moved_from_y > 5,
        "y owned too few keys to show anything: {moved_from_y}"
    );
}

#[tokio::test]
async fn consistent_hash_spills_a_hot_key_to_the_next_node() {
    let hold = Arc::new(Notify::new());
    let m = mocks(3, Reply::HoldUntil(hold.clone())).await;
    let gw = Gw::with(hash_config(&[
        ("x", m[0].url()),
        ("y", m[1].url()),
        ("z", m[2].url()),
    ]))
    .await;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..2 {
        let (c, url) = (c.clone(), gw.url("/v1/chat/completions"));
        tasks.push(tokio::spawn(async move {
            post(&c, &url, CHAT, &[("x-session-id", "hot")])
                .await
                .backend()
        }));
        eventually(|| m.iter().map(|m| m.count()).sum::<usize>() == i + 1).await;
    }
    // One in flight at home; bound = ceil(1.25 * 2 / 3) = 1, so the second request spills.
    let got: Vec<usize> = m.iter().map(|m| m.count()).collect();
    assert_eq!(
        got.iter().filter(|c| **c == 1).count(),
        2,
        "two different backends: {got:?}"
    );
    hold.notify_waiters();
    let (a, b) = (
        tasks.remove(0).await.unwrap(),
        tasks.remove(0).await.unwrap(),
    );
    assert_ne!(a, b);
}
