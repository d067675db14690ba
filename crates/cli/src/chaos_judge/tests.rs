//! The judge on hand-built answers: whole, cut at every byte offset (glued the old way or ended
//! on a whole event), spliced, altered, and left.

use super::*;
use switchyard_gateway::body::STREAM_BROKEN_EVENT;
use switchyard_sim::http::output::output_text;

fn want(tokens: u32) -> Expected {
    Expected {
        output_seed: 42,
        max_tokens: tokens,
        text: output_text(42, tokens),
    }
}

fn chunk(id: &str, content: &str, finish: Option<&str>) -> String {
    let finish = finish.map_or("null".to_owned(), |f| format!("\"{f}\""));
    format!(
        "data: {{\"id\":\"{id}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":{finish}}}]}}\n\n"
    )
}

/// Chunks of `w`'s tokens `from..to` under response id `id`, the last of the whole answer
/// with its finish reason.
fn tokens(id: &str, w: &Expected, from: usize, to: usize) -> String {
    (from..to)
        .map(|i| {
            let last = i + 1 == w.max_tokens as usize;
            chunk(id, w.piece(i).unwrap(), last.then_some("length"))
        })
        .collect()
}

fn whole(w: &Expected) -> String {
    let role = "data: {\"id\":\"a\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
    format!(
        "{role}{}data: [DONE]\n\n",
        tokens("a", w, 0, w.max_tokens as usize)
    )
}

fn outcome(body: &str, w: &Expected) -> Outcome {
    judge(200, body.as_bytes(), true, w).outcome
}

#[test]
fn a_whole_stream_is_full_and_a_spliced_one_counts_its_repeats() {
    let w = want(3);
    assert_eq!(outcome(&whole(&w), &w), Outcome::Full);
    // A retry after bytes were sent would splice a second answer in.
    let spliced = format!(
        "{}{}data: [DONE]\n\n",
        tokens("a", &w, 0, 2),
        tokens("b", &w, 0, 3)
    );
    let v = judge(200, spliced.as_bytes(), true, &w);
    assert_eq!((v.duplicated_tokens, v.altered_tokens), (3, 0));
    assert!(matches!(v.outcome, Outcome::Lost(_)), "{v:?}");
    let w5 = want(5);
    let too_many = format!("{}data: [DONE]\n\n", tokens("a", &w5, 0, 5));
    assert_eq!(
        judge(200, too_many.as_bytes(), true, &w).duplicated_tokens,
        2
    );
}

#[test]
fn a_token_the_replica_never_said_is_altered() {
    let w = want(3);
    let body = whole(&w).replacen(w.piece(1).unwrap(), "~~~~", 1);
    let v = judge(200, body.as_bytes(), true, &w);
    assert_eq!(v.altered_tokens, 1);
    assert!(matches!(v.outcome, Outcome::Altered(_)), "{v:?}");
    // A correct prefix before a clean error is fine; a wrong one is not.
    let cut = format!("{}{STREAM_BROKEN_EVENT}", tokens("a", &w, 0, 2));
    assert_eq!(
        outcome(&cut, &w),
        Outcome::CleanError("upstream_stream_broken".into())
    );
    let wrong = cut.replacen(w.piece(0).unwrap(), "~~~~", 1);
    assert!(matches!(outcome(&wrong, &w), Outcome::Altered(_)));
}

#[test]
fn a_cut_at_every_offset_is_clean_on_whole_events_and_altered_when_glued() {
    let w = want(4);
    let full = whole(&w);
    let stream = &full[..full.find("data: [DONE]").unwrap()];
    for cut in 0..stream.len() {
        let sent = &stream[..cut];
        // What a relay by whole events sends: the whole events, then the error event.
        let boundary = sent.rfind("\n\n").map_or(0, |i| i + 2);
        let clean = format!("{}{STREAM_BROKEN_EVENT}", &sent[..boundary]);
        assert_eq!(
            outcome(&clean, &w),
            Outcome::CleanError("upstream_stream_broken".into()),
            "cut at {cut}: {clean}"
        );
        // The error event glued onto the partial event.
        let glued = format!("{sent}{STREAM_BROKEN_EVENT}");
        let o = outcome(&glued, &w);
        if boundary == cut {
            assert_eq!(o, Outcome::CleanError("upstream_stream_broken".into()));
        } else {
            assert!(matches!(o, Outcome::Altered(_)), "cut at {cut}: {o:?}");
        }
    }
    // SSE lines may end with `\r\n`.
    let crlf = whole(&w).replace('\n', "\r\n");
    assert_eq!(outcome(&crlf, &w), Outcome::Full);
}

#[test]
fn error_event_then_done_is_clean_and_silent_truncation_is_lost() {
    let w = want(3);
    let bare = format!(
        "{}data: {{\"error\":{{\"message\":\"broke\"}}}}\n\ndata: [DONE]\n\n",
        tokens("a", &w, 0, 2)
    );
    assert_eq!(
        outcome(&bare, &w),
        Outcome::CleanError("stream_error_event".into())
    );
    assert!(matches!(
        outcome(&tokens("a", &w, 0, 2), &w),
        Outcome::Lost(_)
    ));
    let short = format!("{}data: [DONE]\n\n", tokens("a", &w, 0, 2));
    assert!(matches!(outcome(&short, &w), Outcome::Lost(_)));
    // An error event is the last before [DONE], or the stream is not a clean error.
    let late = format!(
        "{}data: {{\"error\":{{\"message\":\"x\"}}}}\n\n{}data: [DONE]\n\n",
        tokens("a", &w, 0, 1),
        tokens("a", &w, 1, 2)
    );
    assert!(matches!(outcome(&late, &w), Outcome::Lost(_)));
    let after_done = format!("{}{}", whole(&w), tokens("a", &w, 0, 1));
    assert!(matches!(outcome(&after_done, &w), Outcome::Altered(_)));
}

#[test]
fn a_client_that_left_is_judged_on_its_whole_events() {
    let w = want(10);
    let partial = format!("{}data: {{\"id\":\"a\",\"cho", tokens("a", &w, 0, 4));
    assert_eq!(judge_left(partial.as_bytes(), &w).outcome, Outcome::Left);
    let wrong = partial.replacen(w.piece(2).unwrap(), "~~~~", 1);
    let v = judge_left(wrong.as_bytes(), &w);
    assert!(matches!(v.outcome, Outcome::Altered(_)));
    assert_eq!(v.altered_tokens, 1);
}

#[test]
fn whole_bodies_are_compared_with_the_replica_s_text() {
    let w = want(3);
    let body = |t: &str| format!(r#"{{"choices":[{{"message":{{"content":"{t}"}}}}]}}"#);
    assert_eq!(
        judge(200, body(&w.text).as_bytes(), false, &w).outcome,
        Outcome::Full
    );
    assert!(matches!(
        judge(200, body(&w.text[..8]).as_bytes(), false, &w).outcome,
        Outcome::Lost(_)
    ));
    let mut other = w.text.clone();
    other.replace_range(4..8, "~~~~");
    let v = judge(200, body(&other).as_bytes(), false, &w);
    assert!(matches!(v.outcome, Outcome::Altered(_)));
    assert_eq!(v.altered_tokens, 1);
}

#[test]
fn error_bodies_are_clean_and_others_lost() {
    let w = want(3);
    let openai = br#"{"error":{"message":"x","type":"server_error","param":null,"code":"upstream_timeout"}}"#;
    assert_eq!(
        judge(504, openai, false, &w).outcome,
        Outcome::CleanError("upstream_timeout".into())
    );
    let vllm = br#"{"object":"error","message":"x","type":"InternalServerError","code":500}"#;
    assert_eq!(
        judge(500, vllm, true, &w).outcome,
        Outcome::CleanError("500".into())
    );
    assert!(matches!(
        judge(502, b"oops", false, &w).outcome,
        Outcome::Lost(_)
    ));
}
