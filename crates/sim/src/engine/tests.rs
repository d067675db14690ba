use super::*;
use crate::config::{GpuModel, StepTime};
use crate::profile;
use crate::tokenizer::{push_synthetic_text, tokenize};

/// Runs `engine` from `now` until it is idle; every event with the time it takes effect, and
/// the time the engine went idle.
fn drain(engine: &mut Engine, mut now: f64) -> (Vec<(f64, EngineEvent)>, f64) {
    let mut out = Vec::new();
    while let Some(step) = engine.step(now) {
        now = step.stats.end;
        out.extend(step.events.into_iter().map(|e| (now, e)));
    }
    (out, now)
}

fn first_token_time(events: &[(f64, EngineEvent)], id: u64) -> f64 {
    events
        .iter()
        .find_map(|&(t, e)| match e {
            EngineEvent::Token {
                id: i, index: 0, ..
            } if i == RequestId(id) => Some(t),
            _ => None,
        })
        .expect("the request produced a first token")
}

fn synthetic(seed: u64, tokens: u32) -> Vec<u32> {
    let mut text = String::new();
    push_synthetic_text(seed, tokens, &mut text);
    tokenize(&text)
}

fn req(id: u64, prompt: Vec<u32>, out: u32) -> SimRequest {
    SimRequest {
        id: RequestId(id),
        prompt_tokens: prompt,
        max_output_tokens: out,
        output_seed: id,
        priority: 0,
    }
}

/// A small engine whose KV cache holds 1024 tokens.
fn small_config() -> EngineConfig {
    EngineConfig {
        name: "small".into(),
        block_size: 16,
        num_gpu_blocks: 64,
        max_num_seqs: 64,
        max_num_batched_tokens: 2048,
        max_model_len: 1024,
        enable_prefix_caching: true,
        enable_chunked_prefill: true,
        slots: None,
        priority_scheduling: false,
        step_time: StepTime {
            base_s: 0.005,
            per_token_s: 50e-6,
            per_context_token_s: 50e-9,
        },
        gpu: GpuModel {
            memory_total_mib: 1000,
            memory_used_mib: 900,
            idle_temp_c: 30.0,
            load_temp_c: 70.0,
            thermal_time_constant_s: 5.0,
            util_window_s: 1.0,
        },
    }
}

#[test]
fn repeated_long_prompt_is_much_faster_on_the_same_engine_only() {
    let config = profile::h100_llama3_8b().engine_config();
    let prompt = synthetic(11, 4000);
    let mut a = Engine::new(config.clone()).unwrap();
    a.submit(req(1, prompt.clone(), 1)).unwrap();
    let (ev, t) = drain(&mut a, 0.0);
    let cold = first_token_time(&ev, 1);

    let start = t + 1.0;
    a.submit(req(2, prompt.clone(), 1)).unwrap();
    let (ev, _) = drain(&mut a, start);
    let warm = first_token_time(&ev, 2) - start;
    // 4000 tokens are 250 blocks; the last token must be computed, so 249 blocks hit.
    assert!(ev.iter().any(|(_, e)| *e
        == EngineEvent::Admitted {
            id: RequestId(2),
            cached_tokens: 3984
        }));
    assert!(warm * 10.0 < cold, "warm {warm} cold {cold}");

    let mut b = Engine::new(config).unwrap();
    b.submit(req(3, prompt, 1)).unwrap();
    let (ev, _) = drain(&mut b, start);
    let fresh = first_token_time(&ev, 3) - start;
    assert!(fresh >= cold * 0.999, "fresh {fresh} cold {cold}");

    let m = a.metrics(start + 1.0);
    assert_eq!(m.prefix_cache_queries, 8000);
    assert_eq!(m.prefix_cache_hits, 3984);
    assert!((m.prefix_cache_hit_rate() - 0.498).abs() < 1e-3);
}

#[test]
fn kv_pressure_queues_evicts_and_preempts() {
    let mut e = Engine::new(small_config()).unwrap();
    for id in 0..20 {
        e.submit(req(id, synthetic(1000 + id, 200), 100)).unwrap();
    }
    let mut now = 0.0;
    let mut max_waiting = 0;
    let mut finished = 0;
    let mut tokens = [0u32; 20];
    while let Some(step) = e.step(now) {
        now = step.stats.end;
        max_waiting = max_waiting.max(e.metrics(now).num_waiting);
        assert!(e.metrics(now).kv_usage <= 1.0);
        for ev in step.events {
            match ev {
                EngineEvent::Token { id, index, .. } => {
                    assert_eq!(index, tokens[id.0 as usize], "tokens arrive in order, once");
                    tokens[id.0 as usize] += 1;
                }
                EngineEvent::Finished { output_tokens, .. } => {
                    assert_eq!(output_tokens, 100);
                    finished += 1;
                }
                _ => {}
            }
        }
    }
    let m = e.metrics(now);
    assert_eq!(finished, 20);
    assert!(tokens.iter().all(|&n| n == 100));
    assert!(max_waiting > 0);
    assert!(m.evicted_blocks_total > 0, "{m:?}");
    assert!(m.preemptions_total > 0, "{m:?}");
    assert_eq!((m.num_running, m.num_waiting), (0, 0));
    assert_eq!(m.kv_usage, 0.0);
    assert_eq!(m.requests_finished_total, 20);
    assert_eq!(m.generation_tokens_total, 2000);
}

#[test]
fn larger_batches_raise_throughput_and_step_time() {
    let config = profile::h100_llama3_8b().engine_config();
    let run = |n: u64| {
        let mut e = Engine::new(config.clone()).unwrap();
        for id in 0..n {
            e.submit(req(id, synthetic(id, 100), 50)).unwrap();
        }
        let mut now = 0.0;
        let mut decode_step = 0.0;
        while let Some(step) = e.step(now) {
            if step.stats.decode_seqs as u64 == n {
                decode_step = step.stats.duration();
            }
            now = step.stats.end;
        }
        ((n * 50) as f64 / now, decode_step)
    };
    let (thr1, step1) = run(1);
    let (thr32, step32) = run(32);
    assert!(thr32 > 10.0 * thr1, "{thr1} vs {thr32}");
    assert!(step32 > step1, "{step1} vs {step32}");
}

#[test]
fn same_inputs_same_steps() {
    let run = || {
        let mut e = Engine::new(small_config()).unwrap();
        let mut all = Vec::new();
        for id in 0..12 {
            e.submit(req(id, synthetic(id % 3, 150 + id as u32 * 7), 40))
                .unwrap();
            all.extend(e.step(id as f64 * 0.01));
        }
        all.extend(e.advance_until(0.2, f64::INFINITY));
        all
    };
    let a = run();
    assert!(!a.is_empty());
    assert_eq!(a, run());
}

#[test]
fn chunked_prefill_keeps_decodes_running() {
    let mut e = Engine::new(profile::a100_llama3_8b().engine_config()).unwrap();
    e.submit(req(1, synthetic(1, 50), 200)).unwrap();
    let mut now = e.step(0.0).unwrap().stats.end;
    e.submit(req(2, synthetic(2, 6000), 1)).unwrap();
    let mut mixed = 0;
    while let Some(step) = e.step(now) {
        let s = step.stats;
        assert!(s.tokens() <= 2048);
        if s.prefill_tokens > 0 && s.decode_seqs == 1 {
            mixed += 1;
        }
        now = s.end;
    }
    // 6000 prompt tokens over 2047-token chunks, each beside request 1's decode.
    assert_eq!(mixed, 3);
}

#[test]
fn multi_turn_history_hits_the_blocks_of_the_previous_answer() {
    let mut e = Engine::new(profile::h100_llama3_8b().engine_config()).unwrap();
    let first = synthetic(5, 300);
    e.submit(SimRequest {
        id: RequestId(1),
        prompt_tokens: first.clone(),
        max_output_tokens: 100,
        output_seed: 77,
        priority: 0,
    })
    .unwrap();
    let (_, t) = drain(&mut e, 0.0);
    let mut second = first;
    second.extend(synthetic(77, 100));
    second.extend(synthetic(6, 40));
    e.submit(req(2, second, 10)).unwrap();
    let (ev, _) = drain(&mut e, t);
    let cached = ev.iter().find_map(|(_, e)| match e {
        EngineEvent::Admitted { cached_tokens, .. } => Some(*cached_tokens),
        _ => None,
    });
    // Prompt and answer are 400 tokens, of which the last answer token was never computed:
    // 399 computed tokens make 24 full blocks.
    assert_eq!(cached, Some(24 * 16));
}

#[test]
fn without_prefix_caching_nothing_is_reused() {
    let mut config = profile::h100_llama3_8b().engine_config();
    config.enable_prefix_caching = false;
    let mut e = Engine::new(config).unwrap();
    let prompt = synthetic(3, 1000);
    e.submit(req(1, prompt.clone(), 1)).unwrap();
    let (ev1, t) = drain(&mut e, 0.0);
    e.submit(req(2, prompt, 1)).unwrap();
    let (ev2, _) = drain(&mut e, t);
    assert!((first_token_time(&ev2, 2) - t - first_token_time(&ev1, 1)).abs() < 1e-9);
    assert_eq!(e.metrics(t).prefix_cache_hits, 0);
}

#[test]
fn bad_requests_are_refused_and_aborts_free_blocks() {
    let mut e = Engine::new(small_config()).unwrap();
    assert_eq!(e.submit(req(1, vec![], 5)), Err(SubmitError::EmptyPrompt));
    assert_eq!(e.submit(req(1, vec![1], 0)), Err(SubmitError::NoOutput));
    assert!(matches!(
        e.submit(req(1, vec![1; 1000], 25)),
        Err(SubmitError::TooLong { .. })
    ));
    e.submit(req(1, synthetic(1, 500), 100)).unwrap();
    e.submit(req(2, synthetic(2, 100), 100)).unwrap();
    e.step(0.0).unwrap();
    assert!(e.metrics(0.0).kv_usage > 0.0);
    assert!(e.abort(RequestId(1)));
    assert!(e.abort(RequestId(2)));
    assert!(!e.abort(RequestId(2)));
    assert!(!e.has_work());
    assert_eq!(e.metrics(1.0).kv_usage, 0.0);
    assert!(e.step(1.0).is_none());
}

#[test]
fn gauges_follow_load() {
    let mut e = Engine::new(small_config()).unwrap();
    for id in 0..8 {
        e.submit(req(id, synthetic(id, 100), 900)).unwrap();
    }
    let (_, t) = drain(&mut e, 0.0);
    let busy = e.metrics(t);
    assert!(busy.gpu.utilization_pct > 95.0, "{busy:?}");
    assert!(busy.gpu.temperature_c > 60.0, "{busy:?}");
    let idle = e.metrics(t + 60.0);
    assert!(idle.gpu.utilization_pct < 1.0, "{idle:?}");
    assert!(idle.gpu.temperature_c < 31.0, "{idle:?}");
    assert_eq!(idle.gpu.memory_used_mib, 900);
}

/// `small_config` in llama.cpp-like slot mode with `slots` slots.
fn slot_config(slots: u32) -> EngineConfig {
    EngineConfig {
        slots: Some(crate::SlotMode::new(slots)),
        max_num_seqs: slots,
        ..small_config()
    }
}

/// The cached tokens of request `id`'s admission.
fn cached_at_admission(events: &[(f64, EngineEvent)], id: u64) -> u32 {
    events
        .iter()
        .find_map(|&(_, e)| match e {
            EngineEvent::Admitted {
                id: i,
                cached_tokens,
            } if i == RequestId(id) => Some(cached_tokens),
            _ => None,
        })
        .expect("the request was admitted")
}

/// Document `doc` (200 tokens) followed by question `q` (10 tokens).
fn doc_prompt(doc: u64, q: u64) -> Vec<u32> {
    let mut p = synthetic(doc, 200);
    p.extend(synthetic(10_000 + q, 10));
    p
}

#[test]
fn slot_mode_keeps_one_prompt_per_slot() {
    let mut e = Engine::new(slot_config(1)).unwrap();
    let mut now = 0.0;
    let mut run = |e: &mut Engine, id: u64, prompt: Vec<u32>| {
        e.submit(req(id, prompt, 4)).unwrap();
        let (ev, t) = drain(e, now);
        now = t;
        cached_at_admission(&ev, id)
    };
    assert_eq!(run(&mut e, 1, doc_prompt(1, 1)), 0);
    // The same document: its 200 tokens (token-exact, not whole blocks) are reused.
    let warm = run(&mut e, 2, doc_prompt(1, 2));
    assert!((200..210).contains(&warm), "{warm}");
    // Another document takes the only slot, so the first one is gone, although the KV pool
    // (1024 tokens) could have held both: a paged cache would have kept it.
    assert_eq!(run(&mut e, 3, doc_prompt(2, 3)), 0);
    assert_eq!(run(&mut e, 4, doc_prompt(1, 4)), 0);
    let m = e.metrics(now);
    assert_eq!(m.prefix_cache_hits, u64::from(warm));

    let mut paged = Engine::new(small_config()).unwrap();
    for (id, d) in [(1, 1), (3, 2), (4, 1)] {
        paged.submit(req(id, doc_prompt(d, id), 4)).unwrap();
        let (ev, t) = drain(&mut paged, now);
        now = t;
        if id == 4 {
            assert!(cached_at_admission(&ev, 4) >= 192);
        }
    }
}

#[test]
fn slot_mode_runs_at_most_its_slots_and_a_waiting_request_takes_the_oldest() {
    let mut e = Engine::new(EngineConfig {
        max_num_seqs: 8,
        ..slot_config(2)
    })
    .unwrap();
    for id in 0..3 {
        e.submit(req(id, doc_prompt(id, id), 4)).unwrap();
    }
    let step = e.step(0.0).unwrap();
    assert_eq!(step.stats.num_seqs, 2, "two slots, two requests at once");
    assert_eq!(e.num_waiting(), 1);
    let (_, now) = drain(&mut e, step.stats.end);
    // Request 2 waited, then took the least recently used slot (document 0's): document 1's
    // slot still holds it.
    e.submit(req(10, doc_prompt(1, 10), 4)).unwrap();
    let (ev, _) = drain(&mut e, now);
    assert!(cached_at_admission(&ev, 10) >= 200);
}

#[test]
fn priority_scheduling_admits_the_most_urgent_waiting_request_first() {
    // One sequence at a time, so every other request waits and the order of admission shows.
    let order = |priority_scheduling: bool| {
        let mut e = Engine::new(EngineConfig {
            max_num_seqs: 1,
            priority_scheduling,
            ..small_config()
        })
        .unwrap();
        for (id, priority) in [(1, 4), (2, 4), (3, 0), (4, 2), (5, 0)] {
            let mut r = req(id, synthetic(id, 32), 2);
            r.priority = priority;
            e.submit(r).unwrap();
        }
        let (ev, _) = drain(&mut e, 0.0);
        ev.iter()
            .filter_map(|(_, e)| match e {
                EngineEvent::Admitted { id, .. } => Some(id.0),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(order(false), [1, 2, 3, 4, 5]);
    // All arrive before the first step: the most urgent go first, in arrival order within a
    // level.
    assert_eq!(order(true), [3, 5, 4, 1, 2]);
}
