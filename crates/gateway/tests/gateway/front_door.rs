//! The front door: what one client can cost the gateway, and what a client sees when an
//! upstream stream is cut anywhere. Real sockets on 127.0.0.1 throughout; the upstreams that
//! cut streams are raw sockets, since a well-behaved server cannot misbehave on cue.

use crate::support::conf::Conf;
use crate::support::*;
use serde_json::json;
use std::time::Duration;
use switchyard_gateway::body::STREAM_BROKEN_EVENT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A recorded OpenAI stream: role chunk, three tokens, a finish chunk, `[DONE]`.
const RECORDED: &str = concat!(
    r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo, "},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"world"},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// An upstream that answers each request with the first `x-cut` bytes of `stream`, sent in
/// chunks of `piece` bytes (chunked encoding), and then closes the connection without the
/// final chunk: a stream broken at exactly that byte.
async fn cutting_upstream(stream: Vec<u8>, piece: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.ends_with(b"}") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_lowercase();
                let cut: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-cut: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(stream.len());
                let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                for part in stream[..cut].chunks(piece) {
                    out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
                let _ = sock.write_all(&out).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// The bytes of `stream[..cut]` up to the end of its last whole event, by the SSE grammar
/// (lines end with CRLF, LF or a lone CR; an empty line ends an event; a CR ending an event
/// takes the LF right after it along).
fn whole_events(stream: &[u8], cut: usize) -> &[u8] {
    let s = &stream[..cut];
    let mut end = 0;
    let mut i = 0;
    let mut line_start = true;
    while i < s.len() {
        let eol = match s[i] {
            b'\r' if s.get(i + 1) == Some(&b'\n') => 2,
            b'\r' | b'\n' => 1,
            _ => 0,
        };
        if eol == 0 {
            line_start = false;
            i += 1;
            continue;
        }
        if line_start {
            end = i + eol;
        }
        line_start = true;
        i += eol;
    }
    &s[..end]
}

/// One gateway over one cutting upstream, with nothing that would stop sending to it (the
/// breaker and outlier detection would rightly eject a backend that breaks every stream).
async fn cut_gateway(stream: Vec<u8>, piece: usize) -> Gw {
    let up = cutting_upstream(stream, piece).await;
    Gw::with(
        Conf::over(&[up])
            .pool("breaker", json!({"enabled": false}))
            .pool("outlier_detection", json!({"enabled": false}))
            .set("retry", json!({"max_attempts": 1})),
    )
    .await
}

async fn cut_at_every_offset(stream: Vec<u8>, piece: usize) {
    let gw = cut_gateway(stream.clone(), piece).await;
    let c = client();
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    for cut in 1..=stream.len() {
        let a = post(
            &c,
            &gw.url("/v1/chat/completions"),
            body,
            &[("x-cut", &cut.to_string())],
        )
        .await;
        let expected = [whole_events(&stream, cut), STREAM_BROKEN_EVENT.as_bytes()].concat();
        assert_eq!(
            String::from_utf8_lossy(&a.body),
            String::from_utf8_lossy(&expected),
            "cut at byte {cut} of {}, pieces of {piece}",
            stream.len()
        );
    }
}

#[tokio::test]
async fn a_stream_cut_at_any_byte_gives_whole_events_then_the_error_event() {
    // One piece per read, then pieces that split events and lines anywhere.
    cut_at_every_offset(RECORDED.as_bytes().to_vec(), RECORDED.len()).await;
    cut_at_every_offset(RECORDED.as_bytes().to_vec(), 7).await;
}

#[tokio::test]
async fn a_crlf_stream_cut_at_any_byte_gives_whole_events_then_the_error_event() {
    let crlf = RECORDED.replace('\n', "\r\n").into_bytes();
    cut_at_every_offset(crlf, 5).await;
}

#[tokio::test]
async fn an_event_ended_by_a_single_newline_is_not_glued_to_the_error_event() {
    // The upstream's last event ends with one newline, then the connection breaks.
    let stream = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n".to_vec();
    let gw = cut_gateway(stream.clone(), 1000).await;
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let a = post(&client(), &gw.url("/v1/chat/completions"), body, &[]).await;
    let first_event = &stream[..stream.windows(2).position(|w| w == b"\n\n").unwrap() + 2];
    let expected = [first_event, STREAM_BROKEN_EVENT.as_bytes()].concat();
    assert_eq!(
        String::from_utf8_lossy(&a.body),
        String::from_utf8_lossy(&expected)
    );
}

/// Reads from `sock` until the peer closes it; returns what it sent.
async fn read_to_close(sock: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out).await;
    out
}

#[tokio::test(start_paused = true)]
async fn a_half_sent_header_is_cut_off_at_the_header_read_timeout_while_others_are_served() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, r#"{"ok":true}"#)).await;
    let gw =
        Gw::with(Conf::over(&[up.url()]).set("limits", json!({"header_read_timeout": "1s"}))).await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-")
            .await
            .unwrap();
        slow.push(s);
    }
    // Meanwhile a whole request is served.
    let a = post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(a.status, 200);
    // Every trickling connection is closed by the gateway (EOF, not our timeout).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        for s in &mut slow {
            read_to_close(s).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "every half-sent header was cut off");
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_and_an_idle_kept_alive_one_too() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, r#"{"ok":true}"#)).await;
    let gw = Gw::with(Conf::over(&[up.url()]).set(
        "limits",
        json!({"header_read_timeout": "1s", "keepalive_timeout": "1s"}),
    ))
    .await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut kept = TcpStream::connect(gw.addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let answer = read_to_close(&mut kept).await;
        read_to_close(&mut silent).await;
        answer
    })
    .await
    .expect("both connections were closed by the gateway");
    let text = String::from_utf8_lossy(&closed);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_gets_408_and_a_huge_head_gets_431() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, r#"{"ok":true}"#)).await;
    let gw = Gw::with(Conf::over(&[up.url()]).set(
        "limits",
        json!({"body_read_timeout": "500ms", "max_header_bytes": "16KiB"}),
    ))
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("\"code\":\"request_body_timeout\""),
        "{answer}"
    );

    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let big = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let answer = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn connections_past_the_cap_get_503_too_many_connections() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, r#"{"ok":true}"#)).await;
    let gw = Gw::with(Conf::over(&[up.url()]).set("limits", json!({"max_connections": 2}))).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(gw.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let answer = String::from_utf8_lossy(&read_to_close(&mut extra).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("\"code\":\"too_many_connections\""),
        "{answer}"
    );
    // A slot frees when a connection closes.
    drop(held.pop());
    let text = eventually_ok(&gw, "/metrics").await;
    assert!(
        text.contains("switchyard_connections_rejected_total 1"),
        "{text}"
    );
}

/// The answer to `GET path` on a fresh connection, once one is admitted (the gateway sees a
/// close asynchronously).
async fn eventually_ok(gw: &Gw, path: &str) -> String {
    for _ in 0..100 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let got = read_to_close(&mut s).await;
        if got.starts_with(b"HTTP/1.1 200") {
            return String::from_utf8_lossy(&got).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no slot freed");
}

#[tokio::test(start_paused = true)]
async fn on_sigterm_ready_fails_for_the_drain_delay_while_requests_are_still_served() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, r#"{"ok":true}"#)).await;
    let yaml = config(&[up.url()], "", "drain_delay: 1s");
    let cfg = switchyard_gateway::config::parse(&yaml, "t.yaml").unwrap();
    let running = switchyard_gateway::Server::from_config(cfg)
        .listen(LOOPBACK)
        .start()
        .await
        .unwrap();
    let addr = running.addr();
    let (term, termed) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(running.until(async move {
        let _ = termed.await;
        switchyard_gateway::Stop::Drain
    }));
    let c = client();
    let ready = format!("http://{addr}/ready");
    assert_eq!(get(&c, &ready).await.status, 200);
    term.send(()).unwrap();
    // Not ready from now on, but new connections are still accepted and served.
    let mut seen_not_ready = false;
    for _ in 0..50 {
        let a = get(&client(), &ready).await;
        if a.status == 503 {
            assert!(String::from_utf8_lossy(&a.body).contains("shutting down"));
            seen_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_not_ready, "/ready turned 503 after SIGTERM");
    let a = post(
        &client(),
        &format!("http://{addr}/v1/chat/completions"),
        CHAT,
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "still serving during the drain delay");
    // Then the listener closes and the server drains.
    let drained = tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("the server stops after the drain delay")
        .unwrap()
        .unwrap();
    assert_eq!(drained, switchyard_gateway::Drained::Clean);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

/// Sets this process's soft open-file limit so that exactly `spare` more descriptors can be
/// opened. Each test runs in its own process under nextest, so nothing else is affected;
/// returns the limits to restore.
fn leave_spare_descriptors(spare: usize) -> (u64, u64) {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let mut used: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own descriptor was in the list and is free again: the lowest free one.
    let probe = std::fs::File::open("/dev/null").unwrap();
    used.remove(&(std::os::fd::AsRawFd::as_raw_fd(&probe) as u64));
    drop(probe);
    let mut free = 0;
    let mut limit = 0u64;
    while free < spare {
        if !used.contains(&limit) {
            free += 1;
        }
        limit += 1;
    }
    rlimit::Resource::NOFILE.set(limit, hard).unwrap();
    (soft, hard)
}

#[tokio::test]
async fn running_out_of_file_descriptors_is_not_the_backends_fault() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, r#"{"ok":true}"#)).await;
    let gw = Gw::with(
        Conf::over(&[up.url()])
            .pool("breaker", json!({"failures": 2}))
            .set("scrape", json!({"enabled": false})),
    )
    .await;
    // Room for the test's connection to the gateway and the gateway's end of it, none for
    // the gateway's connection upstream.
    let c = client();
    let (soft, hard) = leave_spare_descriptors(2);
    let mut codes = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        let body = CHAT;
        let req = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        s.write_all(req.as_bytes()).await.unwrap();
        let answer = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
        codes.push(answer);
    }
    rlimit::Resource::NOFILE.set(soft, hard).unwrap();
    for answer in &codes {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.contains("\"code\":\"gateway_overloaded\""),
            "{answer}"
        );
    }
    // The backend's breaker heard nothing: with descriptors back, it serves at once.
    let a = post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}
