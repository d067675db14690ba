//! Draining through the admin API: a drained backend gets no new request, the ones it has
//! finish normally, and the drain call reports "drained" once they have.

use crate::admin_support::*;
use crate::support::*;
use http::StatusCode;
use std::sync::Arc;
use tokio::sync::Notify;

async fn chat(gw: &FileGw) -> Answer {
    post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await
}

async fn list(c: &Client, gw: &FileGw) -> serde_json::Value {
    admin(c, "GET", &gw.admin_url("/admin/backends"), "")
        .await
        .json()
}

#[tokio::test]
async fn drain_under_load_finishes_in_flight_requests_and_sends_no_new_ones() {
    let release = Arc::new(Notify::new());
    let held = Mock::start(Reply::HoldUntil(release.clone())).await;
    let free = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&admin_config(
        &[held.url(), free.url()],
        "policy: round_robin",
    ));
    let gw = Arc::new(FileGw::start(&file).await);
    let c = client();

    // Load: four requests, two of which round robin sends to b0, where they are held.
    let mut first = Vec::new();
    for _ in 0..4 {
        let gw = gw.clone();
        first.push(tokio::spawn(async move { chat(&gw).await }));
    }
    eventually(|| held.count() == 2 && free.count() == 2).await;

    // Drain without waiting: accepted, still draining with its two requests.
    let a = admin(&c, "POST", &gw.admin_url("/admin/backends/b0/drain"), "").await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(a.json()["state"], "draining");
    assert_eq!(a.json()["in_flight"], 2);
    // A drain call that waits answers only once the backend is empty.
    let waiting = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let c = client();
            admin(
                &c,
                "POST",
                &gw.admin_url("/admin/backends/b0/drain?wait=15s"),
                "",
            )
            .await
        })
    };

    // New load while draining: all of it goes to b1.
    for _ in 0..6 {
        let a = chat(&gw).await;
        assert_eq!((a.status, a.backend()), (StatusCode::OK, "b1".to_owned()));
    }
    assert_eq!(held.count(), 2, "a draining backend got a new request");
    let b0 = backend_in(&list(&c, &gw).await, "m", "b0");
    assert_eq!(
        (b0["state"].clone(), b0["in_flight"].clone()),
        ("draining".into(), 2.into())
    );
    assert!(!waiting.is_finished());

    // The held requests finish normally; then the drain reports drained.
    release.notify_waiters();
    for r in first {
        let a = r.await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
    }
    let done = waiting.await.unwrap();
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.json()["state"], "drained");
    assert_eq!(done.json()["in_flight"], 0);
    assert_eq!(
        backend_in(&list(&c, &gw).await, "m", "b0")["state"],
        "drained"
    );
    assert_eq!(chat(&gw).await.backend(), "b1");
    assert_eq!(held.count(), 2);

    // Undrain: b0 takes requests again.
    let a = admin(&c, "POST", &gw.admin_url("/admin/backends/b0/undrain"), "").await;
    assert_eq!(a.json()["state"], "up");
    let mut again = Vec::new();
    for _ in 0..2 {
        let gw = gw.clone();
        again.push(tokio::spawn(async move { chat(&gw).await }));
    }
    eventually(|| held.count() == 3).await;
    release.notify_waiters();
    for r in again {
        assert_eq!(r.await.unwrap().status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_backend_name_in_two_models_needs_the_model_to_drain_it() {
    let a = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let b = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let yaml = format!(
        "admin: {{token: {TOKEN}}}\nmodels:\n  x:\n    backends:\n      - {{url: \"{}\", name: gpu}}\n  y:\n    backends:\n      - {{url: \"{}\", name: gpu}}\n      - {{url: \"{}\", name: other}}\n",
        a.url(),
        b.url(),
        a.url()
    );
    let file = TempConfig::new(&yaml);
    let gw = FileGw::start(&file).await;
    let c = client();
    let r = admin(&c, "POST", &gw.admin_url("/admin/backends/gpu/drain"), "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error_code(), "ambiguous_backend");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x, y"));
    let r = admin(
        &c,
        "POST",
        &gw.admin_url("/admin/backends/gpu/drain?model=y"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.json()["model"].clone(), r.json()["state"].clone()),
        ("y".into(), "drained".into())
    );
    let list = admin(&c, "GET", &gw.admin_url("/admin/backends"), "")
        .await
        .json();
    assert_eq!(backend_in(&list, "x", "gpu")["state"], "up");
    assert_eq!(backend_in(&list, "y", "gpu")["state"], "drained");
    // Model y now sends everything to `other`; x still uses its gpu.
    let body = r#"{"model":"y","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..3 {
        let r = post(&c, &gw.url("/v1/chat/completions"), body, &[]).await;
        assert_eq!(r.backend(), "other");
    }
    let r = admin(
        &c,
        "POST",
        &gw.admin_url("/admin/backends/gpu/drain?model=z"),
        "",
    )
    .await;
    assert_eq!(r.error_code(), "backend_not_found");
}
