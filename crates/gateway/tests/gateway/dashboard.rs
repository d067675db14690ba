//! `/dashboard` over real sockets: where it is served and behind what, the sign-in form and
//! its cookie, the embedded files, and the live feed (history, then a tick a second with the
//! fleet, traffic and decisions) that ends when the gateway drains. The page itself is
//! exercised in headless Chromium by `tests/browser/test_dashboard.py`.

use crate::admin_support::*;
use crate::support::conf::{Conf, Pool};
use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use serde_json::Value;
use std::time::Duration;

fn get_with(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).unwrap()
}

/// An open event stream and the text not yet split into events.
struct Feed {
    body: hyper::body::Incoming,
    buf: String,
}

impl Feed {
    async fn open(c: &Client, url: &str, headers: &[(&str, &str)]) -> Feed {
        let resp = c.request(get_with(url, headers)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Feed {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// A feed opened with the admin token, its `history` event read.
    async fn admin(c: &Client, url: &str) -> Feed {
        let bearer = format!("Bearer {TOKEN}");
        let mut feed = Feed::open(c, url, &[("authorization", &bearer)]).await;
        assert_eq!(feed.next().await.unwrap().0, "history");
        feed
    }

    /// The next event as `(name, data)`; `None` once the stream ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                let data = serde_json::from_str(&data).expect("every event's data is JSON");
                return Some((name, data));
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")?
                .expect("the feed does not fail");
            if let Ok(d) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&d).unwrap());
            }
        }
    }

    /// Ticks until one satisfies `want` (at most `n`).
    async fn tick_where(&mut self, n: usize, want: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..n {
            let (name, data) = self.next().await.expect("the feed goes on");
            if name == "tick" && want(&data) {
                return data;
            }
        }
        panic!("no tick matched within {n} events");
    }
}

#[tokio::test]
async fn dashboard_asks_for_the_admin_token_and_keeps_only_a_hash_of_it_in_the_cookie() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(admin_conf(&[up.url()])).await;
    let c = client();

    // No token: the sign-in form, as HTML, with a 401; data and feed refused as JSON.
    let a = get(&c, &gw.url("/dashboard")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(a.body_text().contains("action=\"/dashboard/login\""));
    let a = get(&c, &gw.url("/dashboard/events")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error_code(), "admin_unauthorized");

    // The embedded files hold no data and need no token.
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("uplot.js", "text/javascript"),
        ("uplot.css", "text/css"),
        ("uplot-LICENSE.txt", "text/plain"),
    ] {
        let a = get(&c, &gw.url(&format!("/dashboard/assets/{file}"))).await;
        assert_eq!(a.status, StatusCode::OK, "{file}");
        assert!(a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(!a.body.is_empty());
    }
    // Only the embedded files: any other name is unknown (and, without the token, refused).
    let bearer = format!("Bearer {TOKEN}");
    let a = send(
        &c,
        get_with(
            &gw.url("/dashboard/assets/..%2f..%2fetc%2fpasswd"),
            &[("authorization", &bearer)],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = get(&c, &gw.url("/dashboard/assets/nope.js")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // A wrong token in the address or the form: the form again, saying so.
    let a = get(&c, &gw.url("/dashboard?token=wrong")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body_text().contains("not the admin token"));
    let form = Request::post(gw.url("/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from("token=wrong")))
        .unwrap();
    assert_eq!(send(&c, form).await.status, StatusCode::UNAUTHORIZED);

    // The right one: 303 to the page with a cookie that is not the token.
    let form = Request::post(gw.url("/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!("token={TOKEN}"))))
        .unwrap();
    let a = send(&c, form).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers["location"], "/dashboard");
    let cookie = a.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(!cookie.contains(TOKEN), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    let a = get(&c, &gw.url(&format!("/dashboard?token={TOKEN}"))).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers["set-cookie"].to_str().unwrap(), cookie);

    // The cookie (or the bearer token) opens the page and the feed.
    let a = send(&c, get_with(&gw.url("/dashboard"), &[("cookie", &pair)])).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body_text().contains("id=\"fleet-rows\""));
    let csp = a.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let mut feed = Feed::open(&c, &gw.url("/dashboard/events"), &[("cookie", &pair)]).await;
    assert_eq!(feed.next().await.unwrap().0, "history");
    let _feed = Feed::admin(&c, &gw.url("/dashboard/events")).await;
    let forged =
        "switchyard_dashboard=0000000000000000000000000000000000000000000000000000000000000000";
    let a = send(
        &c,
        get_with(&gw.url("/dashboard/events"), &[("cookie", forged)]),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(
        &c,
        Request::post(gw.url("/dashboard/events"))
            .header("authorization", &bearer)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn without_an_admin_section_there_is_no_dashboard() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&[up.url()])).await;
    let c = client();
    for path in [
        "/dashboard",
        "/dashboard/events",
        "/dashboard/assets/app.js",
    ] {
        assert_eq!(get(&c, &gw.url(path)).await.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn on_a_loopback_admin_listener_without_a_token_the_dashboard_is_open() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&config(&[up.url()], "", "admin: {listen: \"127.0.0.1:0\"}"));
    let gw = FileGw::start(&file).await;
    let c = client();
    let a = get(&c, &gw.admin_url("/dashboard")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        get(&c, &gw.url("/dashboard")).await.status,
        StatusCode::NOT_FOUND,
        "not on the main listener when the admin API has its own"
    );
}

#[tokio::test]
async fn the_feed_sends_history_then_ticks_with_fleet_traffic_decisions_and_tokens() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let pool = Pool::default().backend(json!({
        "url": up.url(),
        "name": "b0",
        "price": {"input": 2000000, "output": 4000000},
    }));
    let conf = Conf::new()
        .model("m", pool)
        .set("admin", json!({"token": TOKEN}))
        .set("decision_log", json!({"sample": 1.0}));
    let gw = Gw::with(conf).await;
    let c = client();
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];

    let mut feed = Feed::open(&c, &gw.url("/dashboard/events"), &auth).await;
    let (name, history) = feed.next().await.unwrap();
    assert_eq!(name, "history");
    assert!(history["times"].is_array());
    let (name, first) = feed.next().await.unwrap();
    assert_eq!(name, "tick", "the current frame comes right away");
    assert_eq!(first["backends"][0]["name"], "b0");
    assert_eq!(first["backends"][0]["state"], "up");
    assert_eq!(first["backends"][0]["breaker"], "closed");
    assert_eq!(first["models"][0]["model"], "m");

    for i in 0..4 {
        let a = post(
            &c,
            &gw.url("/v1/chat/completions"),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            &[("x-request-id", &format!("dash-{i}"))],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    // Within a few ticks: the four requests in the traffic series, the decisions and the
    // fleet's last-minute rates and percentiles.
    let tick = feed
        .tick_where(8, |t| {
            t["decisions"].as_array().is_some_and(|d| d.len() == 4)
                && t["backends"][0]["tokens"]["prompt"] == 4
        })
        .await;
    let d = &tick["decisions"][3];
    assert_eq!(d["id"], "dash-3");
    assert_eq!(d["backend"], "b0");
    assert_eq!(d["prompt_tokens"], 1);
    let cost = d["cost"].as_f64().expect("cost from the backend's price");
    assert!(
        (cost - 6.0).abs() < 1e-9,
        "1 prompt x $2 + 1 output x $4 per token: {cost}"
    );
    let b = &tick["backends"][0];
    assert_eq!(b["tokens"]["completion"], 4);
    assert!(b["rps"].as_f64().unwrap() > 0.0, "{b}");
    assert_eq!(b["error_rate"], 0.0);
    assert!(b["latency_p50_ms"].as_f64().unwrap() > 0.0, "{b}");
    assert!(b["ttft_p95_ms"].as_f64().is_some(), "{b}");
    let mut requests = 0.0;
    let mut tokens = 0.0;
    let mut ticks = vec![tick];
    for _ in 0..2 {
        ticks.push(feed.tick_where(1, |_| true).await);
    }
    // The requests show up as requests and tokens per second in the series' points; a fresh
    // history holds them too.
    let h = {
        let mut f = Feed::open(&c, &gw.url("/dashboard/events"), &auth).await;
        f.next().await.unwrap().1
    };
    for (rps, tps) in h["series"]["m/b0"]["rps"]
        .as_array()
        .unwrap()
        .iter()
        .zip(h["series"]["m/b0"]["tps"].as_array().unwrap())
    {
        requests += rps.as_f64().unwrap_or(0.0);
        tokens += tps.as_f64().unwrap_or(0.0);
    }
    assert_eq!(requests, 4.0, "{h}");
    assert_eq!(tokens, 8.0, "{h}");
    assert!(ticks
        .iter()
        .all(|t| t["point"]["series"]["m/b0"].is_array()));

    // The same usage in /metrics.
    let m = get(&c, &gw.url("/metrics")).await.body_text();
    assert!(m.contains("switchyard_tokens_total{backend=\"b0\",kind=\"prompt\",model=\"m\"} 4"));
    assert!(m.contains("switchyard_tokens_total{backend=\"b0\",kind=\"completion\",model=\"m\"} 4"));
}

#[tokio::test]
async fn feeds_end_when_the_gateway_drains_so_shutdown_is_clean() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let mut gw = Gw::with(admin_conf(&[up.url()]).set("drain_timeout", "20s")).await;
    let c = client();
    let mut feed = Feed::admin(&c, &gw.url("/dashboard/events")).await;
    // Clean, not timed out: the open feed did not hold the drain to its 20 s timeout.
    let drained = gw.shutdown().await;
    assert_eq!(drained, switchyard_gateway::Drained::Clean);
    while feed.next().await.is_some() {}
}
