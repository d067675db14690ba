//! Bodies crafted to be expensive to parse (issue 12): millions of empty messages, a prompt of
//! millions of token ids, one huge message. Each is answered and forwarded byte for byte, and
//! prefix routing sees at most `limits.max_prompt_bytes` of the prompt. How much memory they
//! cost is a benchmark's question (`bench/crafted-bodies.sh`), not a test's.

use crate::support::conf::Conf;
use crate::support::*;
use http::StatusCode;

/// The three shapes, each about `bytes` long.
fn crafted(bytes: usize) -> Vec<(&'static str, String)> {
    let empty = format!(
        r#"{{"model":"m","messages":[{}{{}}]}}"#,
        "{},".repeat(bytes / 3)
    );
    let ids = format!(
        r#"{{"model":"m","prompt":[[{}1]]}}"#,
        "1,".repeat(bytes / 2)
    );
    let long = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x\\n".repeat(bytes / 3)
    );
    vec![
        ("/v1/chat/completions", empty),
        ("/v1/completions", ids),
        ("/v1/chat/completions", long),
    ]
}

#[tokio::test]
async fn crafted_bodies_are_answered_and_forwarded_untouched() {
    let mock = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&[mock.url()]).pool("policy", "prefix_aware")).await;
    let c = client();
    for (path, body) in crafted(4 << 20) {
        let a = post(&c, &gw.url(path), &body, &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {:?}", a.error_code());
        assert!(mock.last().body == body.as_bytes(), "{path}: body changed");
        let health = get(&c, &gw.url("/health")).await;
        assert_eq!(health.status, StatusCode::OK);
    }
}

/// The cached-token count the `x-switchyard-route` header reports.
fn cached_tokens(a: &Answer) -> u32 {
    let route = a.headers["x-switchyard-route"].to_str().unwrap();
    let (_, rest) = route
        .split_once("prefix_aware: ")
        .unwrap_or_else(|| panic!("no prefix reason in {route}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn prefix_routing_sees_at_most_max_prompt_bytes_of_a_prompt() {
    let mock = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let document = "the same long document ".repeat(400);
    let chat = |question: &str| {
        serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": format!("{document}{question}")}],
        })
        .to_string()
    };
    let c = client();
    let limited = Some(serde_json::json!({"max_prompt_bytes": "1KiB"}));
    for (limits, most) in [(None, 2400), (limited, 256)] {
        let mut conf = Conf::over(&[mock.url()])
            .pool("policy", "prefix_aware")
            .set("debug_headers", true);
        if let Some(l) = &limits {
            conf = conf.set("limits", l.clone());
        }
        let gw = Gw::with(conf).await;
        post(&c, &gw.url("/v1/chat/completions"), &chat("first?"), &[]).await;
        let a = post(&c, &gw.url("/v1/chat/completions"), &chat("second?"), &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        let cached = cached_tokens(&a);
        assert!(
            cached > most * 9 / 10 && cached <= most,
            "{limits:?}: {cached} tokens cached"
        );
    }
}
