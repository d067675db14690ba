//! A simulated replica's streams over real loopback sockets, as vLLM sends them: nothing before
//! the first token, output text a client can recompute from its request, stream faults that
//! cut inside an event or stall, and clients that leave seen as cancels.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;
use switchyard_sim::http::openai::Kind;
use switchyard_sim::http::{expected, Faults, Replica};
use switchyard_sim::StepTime;

fn url(r: &Replica) -> String {
    format!("{}/v1/chat/completions", r.url())
}

/// Reads a stream to its end: every data byte, and whether the body broke off.
async fn read_all(body: &mut hyper::body::Incoming) -> (Vec<u8>, Result<(), String>) {
    let mut raw = Vec::new();
    loop {
        match next_data(body).await {
            None => return (raw, Ok(())),
            Some(Err(e)) => return (raw, Err(e)),
            Some(Ok(d)) => raw.extend_from_slice(&d),
        }
    }
}

#[tokio::test]
async fn the_first_event_comes_with_the_first_token_after_the_simulated_ttft() {
    // Real time, and a slow prefill: 2 ms per prompt token, so a 156-token prompt takes about
    // 0.31 simulated seconds to its first token, and a decode step 3 ms.
    let mut cfg = config(1.0, Faults::default());
    cfg.engine.step_time = StepTime {
        base_s: 1e-3,
        per_token_s: 2e-3,
        per_context_token_s: 0.0,
    };
    let r = start_with(cfg.clone()).await;
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "x".repeat(600)}],
        "max_tokens": 4,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let want = expected(&cfg, Kind::Chat, body.as_bytes()).unwrap();
    let c = client();
    let sent = Instant::now();
    let mut b = open_stream(&c, url(&r), &body).await;
    let first = next_data(&mut b).await.unwrap().unwrap();
    let first_at = sent.elapsed().as_secs_f64();
    let (rest, end) = read_all(&mut b).await;
    end.unwrap();

    // The simulated clock: the first token came after a whole prefill step.
    let (all, _) = events(&[&first[..], &rest[..]].concat());
    assert_eq!(all.last().unwrap(), "[DONE]");
    let usage = &all[all.len() - 2]["usage"];
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    assert_eq!(prompt_tokens, 156);
    let prefill = cfg.engine.step_time.seconds(prompt_tokens, prompt_tokens);
    let ttft = r.snapshot().await.unwrap().ttft.mean().unwrap();
    assert!(
        ttft >= prefill,
        "simulated TTFT {ttft} < one prefill step {prefill}"
    );
    // The wall clock (time scale 1) cannot run ahead of it: the driver sleeps until the step
    // ends, so the first event is never early. Late by a wide margin would be a stall.
    assert!(
        first_at >= ttft,
        "the first event came {first_at} s after the request, before the simulated TTFT {ttft} s"
    );
    assert!(
        first_at < 4.0 * ttft + 0.5,
        "the first event came {first_at} s after the request, far past the TTFT {ttft} s"
    );
    // The first write holds the role chunk and the first token's chunk, nothing else.
    let (evs, tail) = events(&first);
    assert!(tail.is_empty());
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(
        evs[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(
        evs[1]["choices"][0]["delta"]["content"],
        want.piece(0).unwrap()
    );
    assert_eq!(pieces(&all).concat(), want.text);
    // The last token's chunk carries the finish reason, as vLLM's does.
    let last = &all[all.len() - 3]["choices"][0];
    assert_eq!(
        (
            last["delta"]["content"].as_str(),
            last["finish_reason"].as_str()
        ),
        (want.piece(3), Some("length"))
    );
}

#[tokio::test]
async fn the_output_is_the_documented_function_of_the_request() {
    let (mut a_cfg, mut b_cfg) = (
        config(50.0, Faults::default()),
        config(50.0, Faults::default()),
    );
    (a_cfg.seed, b_cfg.seed) = (1, 2);
    let (a, b) = (start_with(a_cfg.clone()).await, start_with(b_cfg).await);
    let c = client();
    // Streamed by one replica, whole from another: the same text, the one computed offline.
    let want = expected(&a_cfg, Kind::Chat, chat(9, true).as_bytes()).unwrap();
    let mut body = open_stream(&c, url(&a), &chat(9, true)).await;
    let (raw, end) = read_all(&mut body).await;
    end.unwrap();
    assert_eq!(pieces(&events(&raw).0).concat(), want.text);
    let whole = call(&c, "POST", url(&b), &chat(9, false)).await.json();
    assert_eq!(whole["choices"][0]["message"]["content"], want.text);
    // A completion with a `seed` field: its own text, recomputed the same way.
    let req = r#"{"model":"m","prompt":"The yard at dawn","max_tokens":6,"seed":7}"#;
    let want = expected(&a_cfg, Kind::Completion, req.as_bytes()).unwrap();
    let got = call(&c, "POST", format!("{}/v1/completions", b.url()), req)
        .await
        .json();
    assert_eq!(got["choices"][0]["text"], want.text);
}

#[tokio::test]
async fn drop_after_bytes_cuts_inside_an_event_and_is_no_cancel() {
    let faults = Faults {
        drop_after_bytes: Some(500),
        ..Faults::default()
    };
    let cfg = config(50.0, faults);
    let r = start_with(cfg.clone()).await;
    let want = expected(&cfg, Kind::Chat, chat(20, true).as_bytes()).unwrap();
    let mut body = open_stream(&client(), url(&r), &chat(20, true)).await;
    let (raw, end) = read_all(&mut body).await;
    assert!(end.is_err(), "the connection was cut");
    assert_eq!(raw.len(), 500, "exactly the bytes before the cut");
    let (evs, partial) = events(&raw);
    assert!(!partial.is_empty(), "the cut falls inside an event");
    assert!(partial.starts_with(b"data: {"));
    let got = pieces(&evs);
    assert!(!got.is_empty());
    assert_eq!(got.concat(), want.text[..got.len() * 4]);
    // The replica cut it: no client left, no cancel.
    assert_eq!(r.cancellations().total, 0);
}

#[tokio::test]
async fn a_stall_keeps_the_connection_open_and_a_client_leaving_it_is_a_cancel() {
    // Real time: 2000 tokens would run for about 15 s, so the engine is still at work.
    let faults = Faults {
        stall_after_tokens: Some(2),
        ..Faults::default()
    };
    let cfg = config(1.0, faults);
    let r = start_with(cfg.clone()).await;
    let want = expected(&cfg, Kind::Chat, chat(2000, true).as_bytes()).unwrap();
    let mut body = open_stream(&client(), url(&r), &chat(2000, true)).await;
    let mut raw = Vec::new();
    while pieces(&events(&raw).0).len() < 2 {
        raw.extend_from_slice(&next_data(&mut body).await.unwrap().unwrap());
    }
    assert_eq!(pieces(&events(&raw).0).concat(), want.text[..8]);
    // Silent, and open: no frame, no end.
    let silent = tokio::time::timeout(Duration::from_millis(300), next_data(&mut body)).await;
    assert!(silent.is_err(), "the stream did not stall: {silent:?}");
    assert_eq!(r.snapshot().await.unwrap().engine.num_running, 1);
    assert_eq!(r.cancellations().total, 0);
    drop(body);
    // The replica notices although it sends nothing, and the engine drops the request.
    let seen = eventually(async || {
        r.cancellations().total == 1 && r.snapshot().await.unwrap().engine.num_running == 0
    })
    .await;
    assert!(seen, "the cancel never reached the engine");
    assert_eq!(r.cancellations().recent, vec![want.output_seed]);
    let m = call(&client(), "GET", format!("{}/metrics", r.url()), "").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("vllm:request_success_total{finished_reason=\"abort\",model_name=\"m\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_bounded_stall_resumes_with_every_token() {
    let faults = Faults {
        stall_after_tokens: Some(2),
        stall_for_s: Some(0.3),
        ..Faults::default()
    };
    let cfg = config(50.0, faults);
    let r = start_with(cfg.clone()).await;
    let want = expected(&cfg, Kind::Chat, chat(8, true).as_bytes()).unwrap();
    let (evs, end) = stream(&client(), url(&r), &chat(8, true)).await;
    end.unwrap();
    let parsed: Vec<Value> = evs
        .iter()
        .map(|(_, e)| serde_json::from_str(e).unwrap_or(Value::String(e.clone())))
        .collect();
    assert_eq!(pieces(&parsed).concat(), want.text);
    assert_eq!(parsed.last().unwrap(), "[DONE]");
    // Events 0 and 1 (role, token 0) came together, token 1 next, then the stall.
    let gap = evs[3].0 - evs[2].0;
    assert!(gap >= Duration::from_millis(300), "no stall: {gap:?}");
}

#[tokio::test]
async fn a_client_leaving_a_whole_answer_cancels_it_and_a_fault_cut_does_not() {
    let r = start(1.0, Faults::default()).await;
    let (c, u) = (client(), url(&r));
    let pending = tokio::spawn(async move { call(&c, "POST", u, &chat(2000, false)).await });
    let running = eventually(async || r.snapshot().await.unwrap().engine.num_running == 1).await;
    assert!(running, "the request never reached the engine");
    pending.abort();
    let seen = eventually(async || {
        r.cancellations().total == 1 && r.snapshot().await.unwrap().engine.num_running == 0
    })
    .await;
    assert!(seen, "the cancel never reached the engine");
    // A stream the replica itself cuts is the replica's doing, not a cancel.
    r.set_faults(Faults {
        drop_after_tokens: Some(2),
        ..Faults::default()
    })
    .unwrap();
    let (_, end) = stream(&client(), url(&r), &chat(50, true)).await;
    assert!(end.is_err());
    assert_eq!(r.cancellations().total, 1);
}
