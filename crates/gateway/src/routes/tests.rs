use super::*;
use crate::config::routes::Routes;
use http::HeaderValue;
use std::net::Ipv4Addr;
use switchyard_core::{EndpointKind, RequestMeta};

fn routes(yaml: &str) -> Routes {
    serde_norway::from_str(yaml).unwrap()
}

fn chat(model: &str, text: &str, user: Option<&str>) -> RequestProfile {
    let body = serde_json::json!({
        "model": model,
        "user": user,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
    });
    RequestProfile::parse(
        EndpointKind::ChatCompletions,
        body.to_string().as_bytes(),
        RequestMeta::default(),
    )
    .unwrap()
}

/// Noon UTC on some day.
const NOON: u64 = 1_790_000_000 - 1_790_000_000 % 86_400 + 12 * 3600;

fn asked(headers: &HeaderMap) -> Asked<'_> {
    Asked {
        headers,
        tenant: None,
        key: None,
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        unix_secs: NOON,
    }
}

/// Resolves with no classifier; returns the pool and the rule's name.
fn route(r: &Routes, p: &RequestProfile, a: &Asked<'_>) -> (String, Option<String>) {
    let got = futures_lite(r.resolve(p, a, b"id", |_| std::future::ready(None)));
    let rule = match got.how {
        How::Rule { name, .. } => Some(name.to_owned()),
        How::Alias => Some("alias".into()),
        How::Direct => None,
    };
    (got.pool.to_owned(), rule)
}

/// Runs a future that never waits (no intent classifier is asked to).
fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

const RULES: &str = r#"
aliases: { gpt-4o: llama-70b }
rules:
  - name: long
    when: { prompt_tokens: { above: 1000 } }
    to: llama-long
  - name: research
    when: { header: { x-team: "research*" }, model: "gpt-*" }
    to: llama-research
  - name: eu
    when: { region: [eu-west, EU-central] }
    to: llama-eu
  - name: code
    when: { content: { keywords: [rust, "c++"], regex: "(?i)stack ?trace" } }
    to: llama-code
  - name: night
    when: { time: { from: "22:00", to: "06:00", utc_offset: "+02:00" } }
    to: llama-night
  - name: acme
    when: { tenant: acme }
    to: llama-acme
"#;

#[test]
fn aliases_rename_and_the_first_matching_rule_decides() {
    let r = routes(RULES);
    let none = HeaderMap::new();
    let a = asked(&none);
    assert_eq!(
        route(&r, &chat("gpt-4o", "hi", None), &a),
        ("llama-70b".into(), Some("alias".into()))
    );
    assert_eq!(
        route(&r, &chat("mistral", "hi", None), &a),
        ("mistral".into(), None)
    );

    // Order: a long prompt from the research team goes by the earlier `long` rule.
    let mut team = HeaderMap::new();
    team.insert("x-team", HeaderValue::from_static("research-nlp"));
    let a = asked(&team);
    assert_eq!(
        route(&r, &chat("gpt-4o", "hi", None), &a).1.as_deref(),
        Some("research")
    );
    let long = "word ".repeat(1000);
    assert_eq!(
        route(&r, &chat("gpt-4o", &long, None), &a).1.as_deref(),
        Some("long")
    );
    // The model glob: a header alone is not enough for a model the rule does not name.
    assert_eq!(route(&r, &chat("mistral", "hi", None), &a).1, None);
}

#[test]
fn each_condition_kind_matches_and_refuses() {
    let r = routes(RULES);
    let mut eu = HeaderMap::new();
    eu.insert("x-region", HeaderValue::from_static("eu-central"));
    assert_eq!(
        route(&r, &chat("m", "hi", None), &asked(&eu)).1.as_deref(),
        Some("eu")
    );
    let mut us = HeaderMap::new();
    us.insert("x-region", HeaderValue::from_static("us-east"));
    assert_eq!(route(&r, &chat("m", "hi", None), &asked(&us)).1, None);

    let none = HeaderMap::new();
    let a = asked(&none);
    for (text, hit) in [
        ("Why does my Rust code not compile?", true),
        ("I love C++ templates", true),
        ("here is the STACK TRACE", true),
        ("trusty old rusty bike", false), // whole words only
    ] {
        let got = route(&r, &chat("m", text, None), &a).1;
        assert_eq!(got.as_deref() == Some("code"), hit, "{text}");
    }
    // Only the last user message counts, not the system prompt or earlier turns.
    let p = RequestProfile::parse(
        EndpointKind::ChatCompletions,
        br#"{"model":"m","messages":[{"role":"system","content":"you know rust"},{"role":"user","content":"hello"}]}"#,
        RequestMeta::default(),
    )
    .unwrap();
    assert_eq!(route(&r, &p, &a).1, None);

    let mut tenant = asked(&none);
    tenant.tenant = Some("acme");
    assert_eq!(
        route(&r, &chat("m", "hi", None), &tenant).1.as_deref(),
        Some("acme")
    );
    tenant.tenant = Some("other");
    assert_eq!(route(&r, &chat("m", "hi", None), &tenant).1, None);

    // 21:00 UTC is 23:00 at +02:00: inside 22:00-06:00; noon UTC is not.
    let mut night = asked(&none);
    night.unix_secs = NOON + 9 * 3600;
    assert_eq!(
        route(&r, &chat("m", "hi", None), &night).1.as_deref(),
        Some("night")
    );
    assert_eq!(route(&r, &chat("m", "hi", None), &a).1, None);
}

#[test]
fn time_windows_wrap_past_midnight() {
    let w = TimeWindow {
        from: 22 * 3600,
        to: 6 * 3600,
        offset: 0,
    };
    let day = NOON - 12 * 3600;
    assert!(in_window(w, day + 23 * 3600));
    assert!(in_window(w, day + 3600));
    assert!(!in_window(w, day + 6 * 3600));
    assert!(in_window(w, day + 22 * 3600));
    let w = TimeWindow {
        from: 9 * 3600,
        to: 17 * 3600,
        offset: -5 * 3600,
    };
    assert!(in_window(w, day + 15 * 3600)); // 10:00 at -05:00
    assert!(!in_window(w, day + 23 * 3600)); // 18:00 at -05:00
}

#[test]
fn a_split_holds_its_shares_within_two_points_over_ten_thousand_users_each_on_one_arm() {
    let arms: Vec<(String, u32)> = vec![("a".into(), 70), ("b".into(), 20), ("c".into(), 10)];
    let mut counts = [0usize; 3];
    for u in 0..10_000 {
        let key = format!("user-{u}");
        let arm = arm_for("canary", key.as_bytes(), &arms);
        // Every later request of the same user lands on the same arm.
        for _ in 0..3 {
            assert_eq!(arm_for("canary", key.as_bytes(), &arms), arm);
        }
        counts[arm] += 1;
    }
    for (i, (_, w)) in arms.iter().enumerate() {
        let share = counts[i] as f64 / 10_000.0 * 100.0;
        assert!(
            (share - f64::from(*w)).abs() <= 2.0,
            "arm {i}: {share:.2}% for weight {w}"
        );
    }
}

#[test]
fn a_split_keeps_a_user_on_one_arm_through_resolve_and_falls_back_to_the_session() {
    let r = routes(
        "rules:\n  - name: ab\n    split: [{to: a, weight: 1}, {to: b, weight: 1}]\n  - name: ab2\n    split: [{to: a, weight: 1}, {to: b, weight: 1}]\n    sticky: session\n",
    );
    let none = HeaderMap::new();
    let a = asked(&none);
    let mut seen = std::collections::HashSet::new();
    for u in 0..64 {
        let user = format!("u{u}");
        let first = route(&r, &chat("m", "hi", Some(&user)), &a).0;
        let again = route(&r, &chat("m", "other text", Some(&user)), &a).0;
        assert_eq!(first, again);
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "64 users all on one arm of a 50/50 split");
}

#[test]
fn mirror_only_rules_add_a_mirror_and_matching_goes_on() {
    let r = routes(
        "rules:\n  - name: shadow\n    mirror: {to: next, sample: 1.0}\n  - name: long\n    when: {prompt_tokens: {above: 10}}\n    to: big\n",
    );
    let none = HeaderMap::new();
    let a = asked(&none);
    let p = chat("m", &"word ".repeat(100), None);
    let got = futures_lite(r.resolve(&p, &a, b"id", |_| std::future::ready(None)));
    assert_eq!((got.pool, got.mirror), ("big", Some("next")));
    let p = chat("m", "hi", None);
    let got = futures_lite(r.resolve(&p, &a, b"id", |_| std::future::ready(None)));
    assert_eq!(
        (got.pool, got.mirror, got.how),
        ("m", Some("next"), How::Direct)
    );
    assert_eq!(got.explain().as_deref(), Some("route: pool=m mirror=next"));
}

#[test]
fn a_mirror_sample_is_a_share_of_request_ids() {
    let m = Mirror {
        to: "s".into(),
        sample: 0.1,
    };
    let hits = (0..10_000)
        .filter(|i| sampled(&m, format!("req-{i}").as_bytes()))
        .count();
    assert!((800..1200).contains(&hits), "{hits}");
    assert!(!sampled(
        &Mirror {
            to: "s".into(),
            sample: 0.0
        },
        b"x"
    ));
}

#[test]
fn intent_rules_ask_the_classifier_once_and_only_when_reached() {
    let r = routes(
        "intents: {embeddings: {model: e}, classes: {math: [integrals], coding: [rust]}}\nrules:\n  - name: skip\n    when: {region: mars, intent: math}\n    to: x\n  - name: coding\n    when: {intent: [coding]}\n    to: code\n  - name: math\n    when: {intent: math}\n    to: calc\n",
    );
    let none = HeaderMap::new();
    let a = asked(&none);
    let p = chat("m", "integrate x squared", None);
    let calls = std::cell::Cell::new(0);
    let got = futures_lite(r.resolve(&p, &a, b"id", |text| {
        calls.set(calls.get() + 1);
        assert_eq!(text, "integrate x squared");
        std::future::ready(Some(Arc::from("math")))
    }));
    assert_eq!((got.pool, calls.get()), ("calc", 1));
    assert_eq!(
        got.explain().as_deref(),
        Some("route: rule=math intent=math pool=calc")
    );
    // Below the threshold (None): no intent rule matches.
    let got = futures_lite(r.resolve(&p, &a, b"id", |_| std::future::ready(None)));
    assert_eq!(got.pool, "m");
}

#[test]
fn rules_are_checked_as_they_are_read() {
    for (yaml, says) in [
        ("rules: [{name: a}]", "sends nowhere"),
        (
            "rules: [{name: a, to: x, split: [{to: x, weight: 1}, {to: y, weight: 1}]}]",
            "both `to:` and `split:`",
        ),
        (
            "rules: [{name: a, split: [{to: x, weight: 1}]}]",
            "at least two arms",
        ),
        (
            "rules: [{name: a, split: [{to: x, weight: 0}, {to: y, weight: 1}]}]",
            "weight 0",
        ),
        (
            "rules: [{name: a, to: x, sticky: user}]",
            "applies to a `split:`",
        ),
        (
            "rules: [{name: a, to: x}, {name: a, to: y}]",
            "two routes.rules are named 'a'",
        ),
        (
            "rules: [{name: a, to: x, when: {model: \"[\"}}]",
            "not a valid glob",
        ),
        (
            "rules: [{name: a, to: x, when: {content: {regex: \"(\"}}}]",
            "not a valid regex",
        ),
        (
            "rules: [{name: a, to: x, when: {content: {}}}]",
            "keywords:`, `regex:`",
        ),
        (
            "rules: [{name: a, to: x, when: {prompt_tokens: {}}}]",
            "`above:`, `below:`",
        ),
        (
            "rules: [{name: a, to: x, when: {prompt_tokens: {above: 10, below: 5}}}]",
            "holds for no prompt",
        ),
        (
            "rules: [{name: a, to: x, when: {time: {from: \"25:00\", to: \"01:00\"}}}]",
            "not a time of day",
        ),
        (
            "rules: [{name: a, mirror: {to: x, sample: 2}}]",
            "not a share",
        ),
        ("rules: [{name: a, to: x, when: {hedaer: {}}}]", "hedaer"),
        ("region_header: \"bad header\"", "not a header name"),
        ("rules: [{name: a, to: x, when: {intent: math}}]", "routes.intents defines no classes"),
        ("intents: {embeddings: {model: e}, classes: {math: [x]}}\nrules: [{name: a, to: x, when: {intent: maths}}]", "unknown intent class 'maths'"),
        ("intents: {embeddings: {model: e, threshold: 2}, classes: {math: [x]}}", "not a cosine similarity"),
        ("intents: {embeddings: {model: e}, classes: {math: []}}", "no example prompt"),
        ("intents: {embeddings: {model: e}, classes: {}}", "classes is empty"),
    ] {
        let e = serde_norway::from_str::<Routes>(yaml)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{yaml}: {e}");
    }
}
