use super::*;
use proptest::prelude::*;

fn parse(body: &str) -> Result<RequestProfile, ProfileError> {
    RequestProfile::parse(
        EndpointKind::ChatCompletions,
        body.as_bytes(),
        RequestMeta::default(),
    )
}

#[test]
fn chat_body_gives_model_stream_and_rendered_prompt() {
    let body = r#"{"model":"llama","stream":true,"stream_options":{"include_usage":true},
        "messages":[{"role":"system","content":"Be brief."},
                    {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"x"}}]}],
        "max_tokens":64,"logit_bias":{"1":2}}"#;
    let p = parse(body).unwrap();
    assert_eq!(p.model, "llama");
    assert!(p.stream && p.include_usage);
    assert_eq!(p.prompt, "<|system|>\nBe brief.\n<|user|>\nHi\n");
    assert_eq!(p.max_output_tokens, Some(64));
    assert_eq!(
        p.estimated_input_tokens as usize,
        p.prompt.len().div_ceil(4)
    );
    assert_eq!(&body[p.model_span.clone()], "\"llama\"");
}

#[test]
fn rewrite_model_changes_only_the_model_value() {
    let body = r#"{ "temperature" : 0.5, "model" : "a\"b", "zzz": [1,2,{"model":"keep"}] }"#;
    let p = parse(body).unwrap();
    assert_eq!(p.model, "a\"b");
    let out = p.rewrite_model(body.as_bytes(), "meta/llama-3");
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{ "temperature" : 0.5, "model" : "meta/llama-3", "zzz": [1,2,{"model":"keep"}] }"#
    );
}

#[test]
fn session_key_precedence_header_then_user_then_address() {
    let body = br#"{"model":"m","user":"alice"}"#;
    let addr = Some("10.1.2.3".parse().unwrap());
    let kind = EndpointKind::Completions;
    let with_header = RequestMeta {
        session_header: Some("s-1"),
        client_addr: addr,
    };
    let p = RequestProfile::parse(kind, body, with_header).unwrap();
    assert_eq!(p.session_key.as_deref(), Some("s-1"));
    assert_eq!(p.session_source, Some(SessionSource::Header));
    let p = RequestProfile::parse(
        kind,
        body,
        RequestMeta {
            client_addr: addr,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        (p.session_key.as_deref(), p.session_source),
        (Some("alice"), Some(SessionSource::User))
    );
    let p = RequestProfile::parse(
        kind,
        br#"{"model":"m"}"#,
        RequestMeta {
            client_addr: addr,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(p.session_key.as_deref(), Some("10.1.2.3"));
}

#[test]
fn completion_prompts_of_every_shape_are_counted() {
    let kind = EndpointKind::Completions;
    let p = RequestProfile::parse(
        kind,
        br#"{"model":"m","prompt":[1,2,3]}"#,
        RequestMeta::default(),
    )
    .unwrap();
    assert_eq!(p.estimated_input_tokens, 3);
    let p = RequestProfile::parse(
        kind,
        br#"{"model":"m","prompt":[[1,2],[3]]}"#,
        RequestMeta::default(),
    )
    .unwrap();
    assert_eq!(p.estimated_input_tokens, 3);
    let p = RequestProfile::parse(
        kind,
        br#"{"model":"m","prompt":["abcd","efgh"]}"#,
        RequestMeta::default(),
    )
    .unwrap();
    assert_eq!(
        (p.prompt.as_str(), p.estimated_input_tokens),
        ("abcdefgh", 2)
    );
}

#[test]
fn bad_bodies_get_distinct_errors() {
    assert!(matches!(parse(""), Err(ProfileError::InvalidJson(_))));
    assert!(matches!(
        parse("{\"model\":"),
        Err(ProfileError::InvalidJson(_))
    ));
    assert_eq!(parse("[1,2]"), Err(ProfileError::NotAnObject));
    assert_eq!(parse("{}"), Err(ProfileError::MissingModel));
    assert_eq!(parse(r#"{"model":7}"#), Err(ProfileError::BadModel));
    assert_eq!(parse(r#"{"model":"  "}"#), Err(ProfileError::BadModel));
    assert!(matches!(
        parse(r#"{"model":"m","stream":"yes"}"#),
        Err(ProfileError::InvalidJson(_))
    ));
    assert!(matches!(
        parse(r#"{"model":"m","model":"n"}"#),
        Err(ProfileError::InvalidJson(_))
    ));
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("model".to_string()),
            Just("messages".to_string()),
            Just("content".to_string()),
            Just("role".to_string()),
            Just("prompt".to_string()),
            Just("input".to_string()),
            Just("stream".to_string()),
            Just("user".to_string()),
            Just("stream_options".to_string()),
            Just("max_tokens".to_string()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for kind in [EndpointKind::ChatCompletions, EndpointKind::Completions, EndpointKind::Embeddings] {
            let _ = RequestProfile::parse(kind, &bytes, RequestMeta::default());
        }
    }

    #[test]
    fn random_json_shapes_never_panic_and_rewrite_keeps_json_valid(v in arb_json()) {
        let body = serde_json::to_vec(&v).unwrap();
        if let Ok(p) = RequestProfile::parse(EndpointKind::ChatCompletions, &body, RequestMeta::default()) {
            let out = p.rewrite_model(&body, "other");
            let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back.get("model").and_then(|m| m.as_str()), Some("other"));
        }
    }
}

proptest! {
    #[test]
    fn client_address_session_key_is_the_address_as_display_writes_it(
        octets in any::<[u8; 4]>(),
        segments in any::<[u16; 8]>(),
    ) {
        let v4 = IpAddr::from(octets);
        prop_assert_eq!(ip_key(v4), v4.to_string());
        let v6 = IpAddr::from(segments);
        prop_assert_eq!(ip_key(v6), v6.to_string());
    }
}

/// The prompt a body renders to, computed the slow way from a `serde_json::Value`: what the
/// streaming renderer must produce.
fn reference_render(v: &serde_json::Value) -> (String, usize) {
    use serde_json::Value;
    let mut text = String::new();
    let mut ids = 0;
    if let Some(Value::Array(messages)) = v.get("messages") {
        for m in messages {
            text.push_str("<|");
            text.push_str(m.get("role").and_then(Value::as_str).unwrap_or("user"));
            text.push_str("|>\n");
            match m.get("content") {
                Some(Value::String(s)) => text.push_str(s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            text.push_str(t);
                        }
                    }
                }
                _ => {}
            }
            text.push('\n');
        }
    }
    for key in ["prompt", "input"] {
        match v.get(key) {
            Some(Value::String(s)) => text.push_str(s),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => text.push_str(s),
                        Value::Number(_) => ids += 1,
                        Value::Array(a) => ids += a.len(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (text, ids)
}

fn arb_chat_body() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let text = "[a-z \\n\"\\\\é😀]{0,80}";
    let part = prop_oneof![
        text.prop_map(|t| json!({"type": "text", "text": t})),
        Just(json!({"type": "image_url", "image_url": {"url": "x"}})),
    ];
    let content = prop_oneof![
        text.prop_map(serde_json::Value::from),
        prop::collection::vec(part, 0..4).prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    // Keys come out sorted: `content` before `role`, the order the renderer must undo.
    let message = (
        prop::option::of(prop_oneof![Just("system"), Just("user"), Just("assistant")]),
        content,
    )
        .prop_map(|(role, content)| {
            let mut m = serde_json::Map::new();
            if let Some(r) = role {
                m.insert("role".into(), r.into());
            }
            m.insert("content".into(), content);
            m.insert("name".into(), "n".into());
            serde_json::Value::Object(m)
        });
    let prompt = prop_oneof![
        text.prop_map(serde_json::Value::from),
        prop::collection::vec(text, 0..3).prop_map(serde_json::Value::from),
        prop::collection::vec(prop::collection::vec(0u32..50_000, 0..20), 0..3)
            .prop_map(|v| json!(v)),
        prop::collection::vec(0u32..50_000, 0..20).prop_map(|v| json!(v)),
    ];
    (
        prop::collection::vec(message, 0..5),
        prop::option::of(prompt),
    )
        .prop_map(|(messages, prompt)| {
            let mut body = json!({"model": "m", "messages": messages});
            if let Some(p) = prompt {
                body["prompt"] = p;
            }
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The streaming renderer gives the prompt and token estimate the slow way does, and with
    /// a cap keeps a prefix of it while still counting all of it.
    #[test]
    fn rendering_matches_the_value_based_reference(body in arb_chat_body(), cap in 0usize..200) {
        let (want, ids) = reference_render(&body);
        let bytes = serde_json::to_vec(&body).unwrap();
        let p = parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
        prop_assert_eq!(&p.prompt, &want);
        prop_assert_eq!(p.estimated_input_tokens as usize, want.len().div_ceil(4) + ids);
        prop_assert_eq!(&p.prompt_blocks, &crate::prefix::block_hashes(&want));
        let limits = ParseLimits { max_prompt_bytes: cap };
        let capped = RequestProfile::parse_with(
            EndpointKind::ChatCompletions, &bytes, RequestMeta::default(), limits,
        ).unwrap();
        prop_assert!(want.starts_with(&capped.prompt));
        if want.len() <= cap {
            prop_assert_eq!(&capped.prompt, &want);
        } else {
            // Cut on a character boundary at most 3 bytes short of the cap.
            prop_assert!(capped.prompt.len() <= cap && capped.prompt.len() + 4 > cap);
        }
        prop_assert_eq!(capped.estimated_input_tokens, p.estimated_input_tokens);
    }
}

/// The body shapes that used to cost an allocation per element (issue 12): each keeps at most
/// the cap of prompt text, hashes at most the cap's blocks, and still counts the whole.
#[test]
fn crafted_bodies_keep_a_bounded_prompt_and_count_the_rest() {
    let limits = ParseLimits {
        max_prompt_bytes: 4096,
    };
    let n = 200_000;
    let parse_limited = |kind, body: &str| {
        RequestProfile::parse_with(kind, body.as_bytes(), RequestMeta::default(), limits).unwrap()
    };
    let empty_messages = format!(
        r#"{{"model":"m","messages":[{}{{}}]}}"#,
        "{},".repeat(n - 1)
    );
    let p = parse_limited(EndpointKind::ChatCompletions, &empty_messages);
    let one = "<|user|>\n\n";
    assert_eq!(
        p.prompt,
        one.repeat(4096 / one.len()) + &one[..4096 % one.len()]
    );
    assert_eq!(p.prompt_blocks.len(), 4096 / crate::prefix::BLOCK_BYTES);
    assert_eq!(
        p.estimated_input_tokens as usize,
        (n * one.len()).div_ceil(4)
    );

    let token_ids = format!(r#"{{"model":"m","prompt":[[{}1]]}}"#, "1,".repeat(n - 1));
    let p = parse_limited(EndpointKind::Completions, &token_ids);
    assert_eq!(
        (p.prompt.as_str(), p.estimated_input_tokens as usize),
        ("", n)
    );

    let long = format!(
        r#"{{"model":"m","messages":[{{"content":"{}\n{}","role":"user"}}]}}"#,
        "x".repeat(n),
        "y".repeat(10)
    );
    let p = parse_limited(EndpointKind::ChatCompletions, &long);
    assert_eq!(p.prompt.len(), 4096);
    assert!(p.prompt.starts_with("<|user|>\nxxx"));
    assert_eq!(
        p.estimated_input_tokens as usize,
        ("<|user|>\n".len() + n + 1 + 10 + 1).div_ceil(4)
    );
}

#[test]
fn a_message_of_the_wrong_shape_is_invalid_json() {
    for body in [
        r#"{"model":"m","messages":5}"#,
        r#"{"model":"m","messages":["hi"]}"#,
        r#"{"model":"m","messages":[{"role":5}]}"#,
        r#"{"model":"m","messages":[{"role":"user","role":"system"}]}"#,
    ] {
        assert!(
            matches!(parse(body), Err(ProfileError::InvalidJson(_))),
            "{body}"
        );
    }
    assert!(parse(r#"{"model":"m","messages":null}"#).is_ok());
}

#[test]
fn last_user_text_is_the_last_user_message_or_the_whole_prompt() {
    let p = parse(
        r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":"first\nline two"},{"role":"assistant","content":"ok"},
            {"role":"user","content":[{"type":"text","text":"Write a haiku"}]},
            {"role":"assistant","content":"pre"}]}"#,
    )
    .unwrap();
    assert_eq!(p.last_user_text(), "Write a haiku");
    let p = parse(r#"{"model":"m","messages":[{"role":"user","content":"a\nb"}]}"#).unwrap();
    assert_eq!(p.last_user_text(), "a\nb");
    let p = parse(r#"{"model":"m","messages":[{"role":"system","content":"s"}]}"#).unwrap();
    assert_eq!(p.last_user_text(), "");
    let p = RequestProfile::parse(
        EndpointKind::Completions,
        br#"{"model":"m","prompt":"Once upon"}"#,
        RequestMeta::default(),
    )
    .unwrap();
    assert_eq!(p.last_user_text(), "Once upon");
}
