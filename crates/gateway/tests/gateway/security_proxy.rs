//! What a client or a backend can make the gateway pass on or do, over real sockets: headers
//! a message declares hop-by-hop stay on their hop, `X-Forwarded-For` carries the real peer,
//! the debug route header survives any backend name, `max_concurrency` holds under a burst,
//! and a health endpoint cannot make the gateway read without end.

use crate::support::conf::{Conf, Pool};
use crate::support::sim::sample;
use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

fn chat_request(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .unwrap()
}

/// Before the fix, only the fixed list of hop-by-hop headers was dropped: a header the
/// client or the backend named in `Connection` (RFC 9110 section 7.6.1) went on to the
/// next hop.
#[tokio::test]
async fn headers_a_client_names_in_connection_are_not_sent_upstream() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&[up.url()])).await;
    let c = client();
    let a = send(
        &c,
        chat_request(
            &gw.url("/v1/chat/completions"),
            &[
                ("connection", "keep-alive, X-Hop-Secret"),
                ("x-hop-secret", "for the gateway only"),
                ("x-end-to-end", "kept"),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = up.last().headers;
    assert!(seen.get("x-hop-secret").is_none(), "{seen:?}");
    assert_eq!(seen["x-end-to-end"], "kept");
}

#[tokio::test]
async fn headers_a_backend_names_in_connection_are_not_relayed() {
    let body = OK_BODY;
    let raw = raw_upstream(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: x-hop-reply, close\r\nx-hop-reply: for the gateway only\r\nx-end-to-end-reply: kept\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    let gw = Gw::with(Conf::over(&[raw]).set("scrape", json!({"enabled": false}))).await;
    let a = post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.get("x-hop-reply").is_none(), "{:?}", a.headers);
    assert_eq!(a.headers["x-end-to-end-reply"], "kept");
}

/// Before the fix, the client's `X-Forwarded-For` and `X-Forwarded-Proto` went upstream as
/// the client wrote them: any client could pose as any address, and the real one was lost.
#[tokio::test]
async fn forwarded_headers_carry_the_real_peer_not_the_clients_claim() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&[up.url()])).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let forwarded = |up: &Mock| {
        let h = up.last().headers;
        let all = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        (all("x-forwarded-for"), all("x-forwarded-proto"))
    };

    assert_eq!(post(&c, &url, CHAT, &[]).await.status, StatusCode::OK);
    assert_eq!(
        forwarded(&up),
        (vec!["127.0.0.1".into()], vec!["http".into()])
    );

    let claims = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-proto", "https"),
    ];
    assert_eq!(
        send(&c, chat_request(&url, &claims)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        forwarded(&up),
        (
            vec!["203.0.113.7, 198.51.100.1, 127.0.0.1".into()],
            vec!["http".into()]
        )
    );
}

/// Before the fix, `x-switchyard-route` was cut at 4096 bytes with `String::truncate`, which
/// panics when the cut falls inside a multi-byte character of a backend name: the request's
/// task died and the client saw its connection closed. Names of 3-byte characters shifted by
/// 0, 1 and 2 bytes put the cut inside a character for at least two of the three models.
#[tokio::test]
async fn the_route_header_is_cut_on_a_character_boundary() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let mut conf = Conf::new().set("debug_headers", true).no_scrape();
    for shift in 0..3 {
        let name = format!("{}{}", "x".repeat(shift), "€".repeat(1700));
        let pool = Pool::default()
            .set("policy", "least_loaded")
            .backend(json!({"url": up.url(), "name": format!("{name}-a")}))
            .backend(json!({"url": up.url(), "name": format!("{name}-b")}));
        conf = conf.model(&format!("m{shift}"), pool);
    }
    let gw = Gw::with(conf).await;
    let c = client();
    for shift in 0..3 {
        let body =
            format!(r#"{{"model":"m{shift}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        let a = post(&c, &gw.url("/v1/chat/completions"), &body, &[]).await;
        assert_eq!(a.status, StatusCode::OK, "m{shift}");
        let route = a.headers["x-switchyard-route"].to_str().unwrap();
        assert!(route.starts_with("least_loaded; "), "{route}");
        assert!(route.ends_with("..."), "m{shift}: {}", route.len());
        assert!(route.len() <= 4096 + 3, "m{shift}: {}", route.len());
    }
}

/// Before the fix, a backend's cap was checked when a request chose it and its in-flight
/// count raised later, at dispatch. A failover checks its next backend, then sleeps its
/// backoff, then sends: a burst failing over together (the heavy backend answers 500 to all)
/// all saw the slow backend's free slot and all went to it. Admission is now one step under the backend's own lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrency_is_never_exceeded_by_a_burst_failing_over() {
    const CAP: usize = 2;
    const BURST: usize = 60;
    let failing = Mock::start(Reply::Json(StatusCode::INTERNAL_SERVER_ERROR, "{}")).await;
    let release = Arc::new(Notify::new());
    let slow = Mock::start(Reply::HoldUntil(release.clone())).await;
    let pool = Pool::default()
        .set("policy", "weighted")
        .set("breaker", json!({"enabled": false}))
        .set("outlier_detection", json!({"enabled": false}))
        .backend(json!({"url": failing.url(), "name": "failing", "weight": 1000}))
        .backend(json!({"url": slow.url(), "name": "slow", "max_concurrency": CAP}));
    let retry = json!({
        "budget_ratio": 1.0,
        "min_per_second": 1000,
        "backoff_base": "300ms",
        "backoff_max": "300ms",
    });
    let gw = Gw::with(Conf::new().model("m", pool).no_scrape().set("retry", retry)).await;
    let url = gw.url("/v1/chat/completions");
    let finished = Arc::new(AtomicUsize::new(0));
    let burst: Vec<_> = (0..BURST)
        .map(|_| {
            let (url, finished) = (url.clone(), finished.clone());
            tokio::spawn(async move {
                let a = post(&client(), &url, CHAT, &[]).await;
                finished.fetch_add(1, Ordering::SeqCst);
                a.status
            })
        })
        .collect();
    // Every request of the burst is either held at the slow backend or answered (the failing
    // backend's 500 passed through, or 503 when nothing was left to try).
    eventually(|| slow.count() + finished.load(Ordering::SeqCst) == BURST).await;
    assert!(failing.count() > 0);
    assert!(
        slow.count() <= CAP,
        "{} requests in flight at a backend capped at {CAP}",
        slow.count()
    );
    while !burst.iter().all(|t| t.is_finished()) {
        release.notify_waiters();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut ok = 0;
    for t in burst {
        let status = t.await.unwrap();
        assert!([200, 500, 503].contains(&status.as_u16()), "{status}");
        ok += usize::from(status == StatusCode::OK);
    }
    assert_eq!(ok, slow.count());
}

/// An upstream that answers every request 200 with a chunked body that never ends. Returns its
/// url and, for each connection once it ends, the bytes of body written to it.
async fn endless_body_upstream() -> (String, Arc<Mutex<Vec<usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(Mutex::new(Vec::new()));
    let record = written.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let mut chunk = b"10000\r\n".to_vec();
                chunk.extend(std::iter::repeat_n(b'x', 0x10000));
                chunk.extend_from_slice(b"\r\n");
                let start = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
                let mut sent = 0;
                if sock.write_all(start).await.is_ok() {
                    while sock.write_all(&chunk).await.is_ok() {
                        sent += 0x10000;
                    }
                }
                record.lock().unwrap().push(sent);
            });
        }
    });
    (url, written)
}

/// Before the fix, a health check read the whole response body: a backend whose health path
/// streams without end had the gateway reading (and holding) all of it until the check's
/// timeout, and the check then failed, marking a backend that answered 200 down.
#[tokio::test]
async fn a_health_check_reads_a_bounded_body_and_the_status_decides() {
    let (url, written) = endless_body_upstream().await;
    let pool = json!({
        "interval": "100ms",
        "timeout": "1s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
    });
    let gw = Gw::with(Conf::over(&[url]).no_scrape().pool("health_check", pool)).await;
    eventually(|| written.lock().unwrap().len() >= 3).await;
    let metrics = get(&client(), &gw.url("/metrics")).await.body;
    let metrics = String::from_utf8_lossy(&metrics);
    assert_eq!(
        sample(
            &metrics,
            r#"switchyard_backend_healthy{backend="b0",model="m"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"switchyard_backend_transitions_total{backend="b0",model="m",to="down"}"#
        ),
        0.0
    );
    for sent in written.lock().unwrap().iter() {
        // What the gateway read plus what the sockets' buffers took before it closed.
        assert!(*sent < 64 << 20, "{sent} bytes written to one health check");
    }
}
