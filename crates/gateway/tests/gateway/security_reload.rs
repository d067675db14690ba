//! Reloads and admin changes that must not open a hole or take the gateway down: a kept admin
//! listener keeps its authentication, an `api_key` that cannot be sent is refused instead of
//! letting the client's own `Authorization` through, and values that would panic, overflow
//! or exhaust memory are refused with their line and the fix while the old config serves.

use crate::admin_support::*;
use crate::support::*;
use http::{Request, StatusCode};

async fn get_unauthenticated(c: &Client, url: &str) -> Answer {
    send(c, Request::get(url).body(Default::default()).unwrap()).await
}

/// Before the fix, a reload that moved `admin.listen` to loopback and dropped the token kept
/// the running listener on 0.0.0.0 (its address changes only with a restart) and took the
/// file's "no token": the admin API was open to every machine that reached the host.
#[tokio::test]
async fn a_reload_cannot_strip_the_token_from_a_kept_open_admin_listener() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let models = format!(
        "models:\n  m:\n    backends:\n      - {{url: \"{}\", name: b0}}\n",
        up.url()
    );
    let file = TempConfig::new(&format!(
        "admin:\n  listen: 0.0.0.0:0\n  token: {TOKEN}\n{models}"
    ));
    let gw = FileGw::start(&file).await;
    let c = client();
    let backends = gw.admin_url("/admin/backends");
    assert_eq!(
        get_unauthenticated(&c, &backends).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Valid on its own (a loopback listener may go without a token), but the running
    // listener would stay on 0.0.0.0 with no token.
    file.write(&format!("admin:\n  listen: 127.0.0.1:0\n{models}"));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.body);
    assert_eq!(a.error_code(), "invalid_config");
    let msg = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains(&format!("{}:2:3: admin:", file.file_name())),
        "{msg}"
    );
    assert!(msg.contains("reachable from other machines"), "{msg}");
    assert!(msg.contains("add token:"), "{msg}");

    let a = get_unauthenticated(&c, &backends).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let list = admin(&c, "GET", &backends, "").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json()["generation"], 1);

    // A file that keeps a token (a new one) reloads, and the new token is the one asked for.
    file.write(&format!(
        "admin:\n  listen: 127.0.0.1:0\n  token: rotated-token\n{models}"
    ));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.json()["restart_needed"][0], "admin.listen");
    assert_eq!(
        admin(&c, "GET", &backends, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_unauthenticated(&c, &backends).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Before the fix, an `api_key` with a trailing `\r` (a `.env` file written on Windows) was
/// accepted; the `Authorization` header could not be built from it, so none was set and the
/// client's own `Authorization` went to the backend instead.
#[tokio::test]
async fn an_api_key_that_cannot_be_a_header_is_refused_and_never_lets_the_clients_through() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let with_key = |key: &str| {
        format!(
            "admin: {{token: {TOKEN}}}\nmodels:\n  m:\n    backends:\n      - url: \"{}\"\n        name: b0\n        api_key: \"{key}\"\n",
            up.url()
        )
    };
    let file = TempConfig::new(&with_key("sk-good"));
    let gw = FileGw::start(&file).await;
    let c = client();
    let chat = gw.url("/v1/chat/completions");
    let client_auth = [("authorization", "Bearer client-secret")];
    let sent_auth = |up: &Mock| up.last().headers["authorization"].clone();

    assert_eq!(post(&c, &chat, CHAT, &client_auth).await.status, 200);
    assert_eq!(sent_auth(&up), "Bearer sk-good");

    // The same file with a key that ends in `\r` (YAML's "\r" escape): refused, located,
    // with the fix, and without showing the key.
    file.write(&with_key("sk-bad\\r"));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.body);
    assert_eq!(a.error_code(), "invalid_config");
    let msg = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains(&format!(
            "{}:5:9: models.m.backends[0]: api_key ends with a carriage return",
            file.file_name()
        )),
        "{msg}"
    );
    assert!(msg.contains("remove it"), "{msg}");
    assert!(!msg.contains("sk-bad"), "{msg}");
    assert_eq!(post(&c, &chat, CHAT, &client_auth).await.status, 200);
    assert_eq!(sent_auth(&up), "Bearer sk-good");

    // A backend added through the admin API is held to the same rule.
    let other = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let body = format!(
        r#"{{"url": "{}", "name": "b1", "api_key": "sk-added\n"}}"#,
        other.url()
    );
    let a = admin(&c, "POST", &gw.admin_url("/admin/backends?model=m"), &body).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.body);
    assert_eq!(a.error_code(), "invalid_backend");
    let msg = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("api_key ends with a line feed"), "{msg}");
    for _ in 0..4 {
        assert_eq!(post(&c, &chat, CHAT, &client_auth).await.status, 200);
    }
    assert_eq!(other.count(), 0);
    assert_eq!(sent_auth(&up), "Bearer sk-good");
}

/// Before the fix, each of these files was accepted by a reload: `first_byte: 1e19` made the
/// next request's deadline overflow (a panic, the client's connection closed), a zero health
/// check interval panicked the check loop (checks silently stopped), and a hash ring of
/// weight x virtual nodes points was built however large (4e9 x 160 exhausts memory; a
/// smaller weight past the new bound stands in for it here).
#[tokio::test]
async fn values_that_would_panic_or_exhaust_memory_are_refused_by_reload_and_admin() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file_with = |top: &str, pool: &str, backend: &str| {
        format!(
            "admin: {{token: {TOKEN}}}\n{top}models:\n  m:\n    policy: consistent_hash\n{pool}    backends:\n      - url: \"{u}\"\n        name: b0\n{backend}",
            u = up.url()
        )
    };
    let file = TempConfig::new(&file_with("", "", ""));
    let gw = FileGw::start(&file).await;
    let c = client();
    let chat = gw.url("/v1/chat/completions");
    assert_eq!(post(&c, &chat, CHAT, &[]).await.status, StatusCode::OK);

    for (text, at, says) in [
        (
            file_with("timeouts: {first_byte: 1e19}\n", "", ""),
            "2:24",
            "timeouts.first_byte: '1e19' is longer than the longest duration the config takes, 365 days",
        ),
        (
            file_with("", "    health_check: {interval: 0}\n", ""),
            "5:19",
            "health_check.interval must be at least 10ms",
        ),
        (
            file_with("", "", "        weight: 12500\n"),
            "8:9",
            "consistent_hash would put 2000000 points",
        ),
    ] {
        file.write(&text);
        let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{text}: {:?}", a.body);
        let msg = a.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            msg.contains(&format!("{}:{at}: ", file.file_name())),
            "{msg}"
        );
        assert!(msg.contains(says), "{msg}");
        assert_eq!(post(&c, &chat, CHAT, &[]).await.status, StatusCode::OK);
    }

    // A backend added at run time is held to the same bound.
    let body = format!(
        r#"{{"url": "{}", "name": "b1", "weight": 12500}}"#,
        up.url()
    );
    let a = admin(&c, "POST", &gw.admin_url("/admin/backends?model=m"), &body).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.body);
    assert_eq!(a.error_code(), "invalid_backend");
    let list = admin(&c, "GET", &gw.admin_url("/admin/backends"), "").await;
    assert_eq!(list.json()["generation"], 1);
    assert_eq!(post(&c, &chat, CHAT, &[]).await.status, StatusCode::OK);
}
