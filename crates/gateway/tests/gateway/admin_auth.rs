//! Who reaches the admin API: nobody without an `admin:` section, only token holders on the
//! main listener, and only its own listener when `admin.listen` is set. Refusals are
//! OpenAI-shaped with stable codes.

use crate::admin_support::*;
use crate::support::*;
use http::{Request, StatusCode};

async fn get_with(c: &Client, url: &str, auth: Option<&str>) -> Answer {
    let mut b = Request::get(url);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    send(c, b.body(Default::default()).unwrap()).await
}

#[tokio::test]
async fn admin_without_or_with_a_wrong_token_is_401_openai_shaped() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&admin_config(&[up.url()], ""));
    let gw = FileGw::start(&file).await;
    let c = client();
    let url = gw.admin_url("/admin/backends");
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer test-admin-tokeN"),
        Some(TOKEN),
    ] {
        let a = get_with(&c, &url, auth).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(a.error_code(), "admin_unauthorized");
        let err = &a.json()["error"];
        assert_eq!(err["type"], "invalid_request_error");
        assert!(err["message"].as_str().unwrap().contains("token"));
        assert!(err.get("param").is_some());
        assert_eq!(a.headers["www-authenticate"], "Bearer");
    }
    // Refused calls change nothing; the right token gets the list.
    let post = Request::post(gw.admin_url("/admin/backends/b0/drain"))
        .body(Default::default())
        .unwrap();
    assert_eq!(send(&c, post).await.status, StatusCode::UNAUTHORIZED);
    let a = admin(&c, "GET", &url, "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(backend_in(&a.json(), "m", "b0")["state"], "up");
    let lower = get_with(&c, &url, Some(&format!("bearer {TOKEN}"))).await;
    assert_eq!(lower.status, StatusCode::OK);
}

#[tokio::test]
async fn without_an_admin_section_there_is_no_admin_api() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&config(&[up.url()], "", ""));
    let gw = FileGw::start(&file).await;
    let c = client();
    for (method, path) in [("GET", "/admin/backends"), ("POST", "/admin/reload")] {
        let a = admin(&c, method, &gw.url(path), "").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(a.error_code(), "unknown_endpoint");
    }
}

#[tokio::test]
async fn an_admin_listener_serves_admin_only_and_the_main_one_no_admin() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let top = format!("admin: {{listen: 127.0.0.1:0, token: {TOKEN}}}");
    let file = TempConfig::new(&config(&[up.url()], "", &top));
    let gw = FileGw::start(&file).await;
    let c = client();
    let on_main = admin(&c, "GET", &gw.url("/admin/backends"), "").await;
    assert_eq!(on_main.status, StatusCode::NOT_FOUND);
    assert_eq!(on_main.error_code(), "unknown_endpoint");
    let url = gw.admin_url("/admin/backends");
    assert_eq!(
        get_with(&c, &url, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(admin(&c, "GET", &url, "").await.status, StatusCode::OK);
    let chat = post(&c, &gw.admin_url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(chat.status, StatusCode::UNAUTHORIZED);
    let chat = admin(&c, "POST", &gw.admin_url("/v1/chat/completions"), CHAT).await;
    assert_eq!(chat.error_code(), "unknown_endpoint");
    // The main listener still proxies.
    let a = post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_errors_have_stable_codes() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&admin_config(&[up.url()], ""));
    let gw = FileGw::start(&file).await;
    let c = client();
    let cases = [
        ("GET", "/admin/nothing", 404, "unknown_endpoint"),
        ("PUT", "/admin/backends", 405, "method_not_allowed"),
        ("GET", "/admin/reload", 405, "method_not_allowed"),
        (
            "POST",
            "/admin/backends/nope/drain",
            404,
            "backend_not_found",
        ),
        ("DELETE", "/admin/backends/nope", 404, "backend_not_found"),
        (
            "POST",
            "/admin/backends/b0/drain?wait=soon",
            400,
            "invalid_parameter",
        ),
        ("DELETE", "/admin/backends/b0", 409, "last_backend"),
    ];
    for (method, path, status, code) in cases {
        let a = admin(&c, method, &gw.admin_url(path), "").await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {:?}", a.body);
        assert_eq!(a.error_code(), code, "{method} {path}");
    }
}

#[tokio::test]
async fn reload_without_a_config_file_is_409() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(admin_conf(&[up.url()])).await;
    let c = client();
    let a = admin(&c, "POST", &gw.url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.error_code(), "no_config_file");
}
