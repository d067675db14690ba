//! Adding and removing backends at run time through the admin API: an added backend takes
//! traffic at once, a removed one takes none while its in-flight requests finish, and bad
//! requests are refused with the reason.

use crate::admin_support::*;
use crate::support::*;
use http::StatusCode;
use std::sync::Arc;
use tokio::sync::Notify;

async fn backends_of(gw: &FileGw, n: usize) -> Vec<String> {
    let c = client();
    let mut out = Vec::new();
    for _ in 0..n {
        let a = post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        out.push(a.backend());
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_backend_added_at_run_time_takes_traffic_and_a_removed_one_none() {
    let first = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let added = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&admin_config(&[first.url()], "policy: round_robin"));
    let gw = FileGw::start(&file).await;
    let c = client();

    let body = format!(
        r#"{{"url": "{}", "name": "new", "weight": 1}}"#,
        added.url()
    );
    let a = admin(&c, "POST", &gw.admin_url("/admin/backends?model=m"), &body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(
        (a.json()["name"].clone(), a.json()["state"].clone()),
        ("new".into(), "up".into())
    );
    assert_eq!(backends_of(&gw, 4).await, ["b0", "b0", "new", "new"]);
    let list = admin(&c, "GET", &gw.admin_url("/admin/backends"), "")
        .await
        .json();
    assert_eq!(backend_in(&list, "m", "new")["url"], added.url());
    assert_eq!(backend_in(&list, "m", "new")["requests_finished"], 2);

    let a = admin(&c, "DELETE", &gw.admin_url("/admin/backends/b0"), "").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.json()["state"], "removed");
    let before = first.count();
    assert_eq!(backends_of(&gw, 4).await, ["new"; 4]);
    assert_eq!(first.count(), before, "a removed backend got a request");
    let list = admin(&c, "GET", &gw.admin_url("/admin/backends"), "")
        .await
        .json();
    assert!(backend_in(&list, "m", "b0").is_null());
    // The in-flight series of the removed backend is gone from /metrics.
    let metrics = get(&c, &gw.url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(!text.contains(r#"switchyard_backend_in_flight{backend="b0""#));
    assert!(text.contains(r#"switchyard_backend_in_flight{backend="new""#));
}

#[tokio::test]
async fn removing_a_backend_lets_its_in_flight_requests_finish() {
    let release = Arc::new(Notify::new());
    let held = Mock::start(Reply::HoldUntil(release.clone())).await;
    let other = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&admin_config(&[held.url(), other.url()], ""));
    let gw = Arc::new(FileGw::start(&file).await);
    let c = client();
    let running = {
        let gw = gw.clone();
        tokio::spawn(
            async move { post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await },
        )
    };
    eventually(|| held.count() == 1).await;
    let a = admin(&c, "DELETE", &gw.admin_url("/admin/backends/b0"), "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["in_flight"], 1);
    release.notify_waiters();
    let done = running.await.unwrap();
    assert_eq!(
        (done.status, done.backend()),
        (StatusCode::OK, "b0".to_owned())
    );
    assert_eq!(done.body, OK_BODY.as_bytes());
}

#[tokio::test]
async fn bad_additions_are_refused_with_the_reason() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&admin_config(&[up.url()], ""));
    let gw = FileGw::start(&file).await;
    let c = client();
    let url = |q: &str| gw.admin_url(&format!("/admin/backends{q}"));
    let cases: [(&str, String, u16, &str, &str); 8] = [
        (
            "",
            r#"{"url":"http://127.0.0.1:1"}"#.into(),
            400,
            "invalid_parameter",
            "?model=",
        ),
        (
            "?model=nope",
            r#"{"url":"http://127.0.0.1:1"}"#.into(),
            404,
            "model_not_found",
            "available models: m",
        ),
        (
            "?model=m",
            r#"{"url":"localhost:1"}"#.into(),
            400,
            "invalid_backend",
            "http://host:port",
        ),
        (
            "?model=m",
            r#"{"url":"http://127.0.0.1:1","wieght":2}"#.into(),
            400,
            "invalid_backend",
            "unknown field `wieght`",
        ),
        (
            "?model=m",
            r#"{"url":"http://127.0.0.1:1","weight":0}"#.into(),
            400,
            "invalid_backend",
            "weights start at 1",
        ),
        (
            "?model=m",
            r#"{"url":"http://127.0.0.1:1","api_key":"${HOME}"}"#.into(),
            400,
            "invalid_backend",
            "environment references",
        ),
        (
            "?model=m",
            "not json".into(),
            400,
            "invalid_backend",
            "JSON object",
        ),
        (
            "?model=m",
            format!(r#"{{"url":"{}","name":"b0"}}"#, up.url()),
            409,
            "backend_exists",
            "distinct `name`",
        ),
    ];
    for (q, body, status, code, says) in cases {
        let a = admin(&c, "POST", &url(q), &body).await;
        assert_eq!(a.status.as_u16(), status, "{body}: {:?}", a.body);
        assert_eq!(a.error_code(), code, "{body}");
        let msg = a.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    // Nothing was added.
    let list = admin(&c, "GET", &url(""), "").await.json();
    assert_eq!(list["models"][0]["backends"].as_array().unwrap().len(), 1);
    assert_eq!(list["generation"], 1);
}
