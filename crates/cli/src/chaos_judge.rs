//! How the chaos benchmark ([`crate::chaos`]) judges one answer, and the run's tallies.
//!
//! - **answered in full**: 200 with the whole output: a body of `4 x max_tokens` characters
//!   (the simulator's tokens are 4 bytes), or a stream of exactly `max_tokens` content chunks
//!   of one response id, a `finish_reason`, and `[DONE]`;
//! - **clean error**: an error the client can act on: a non-2xx answer with an error JSON
//!   body (OpenAI's shape or vLLM's), or a stream that ends with an SSE error event and
//!   `[DONE]` after what it had sent;
//! - **lost**: anything else: no answer, a cut connection, a stream that stops without an
//!   error event or `[DONE]`, or a malformed body.
//!
//! Duplicated streamed tokens: a response repeats tokens if content chunks carry more than
//! one response id (two upstream answers spliced together) or one id carries more than
//! `max_tokens` content chunks; every such extra chunk counts.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The whole answer.
    Full,
    /// A clean error of this kind (the error code, or the HTTP status).
    CleanError(String),
    /// No usable answer, for this reason.
    Lost(String),
}

/// The judgement of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Full, clean error or lost.
    pub outcome: Outcome,
    /// Content chunks beyond a single, complete response.
    pub duplicated_tokens: u64,
}

impl Verdict {
    /// A request with no usable answer.
    pub fn lost(why: String) -> Self {
        Self {
            outcome: Outcome::Lost(why),
            duplicated_tokens: 0,
        }
    }

    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            duplicated_tokens: 0,
        }
    }
}

/// Judges one answer to a request for `max_tokens` tokens.
pub fn judge(status: u16, body: &[u8], stream: bool, max_tokens: u32) -> Verdict {
    if status != 200 {
        return match serde_json::from_slice::<Value>(body) {
            Ok(v) if v["error"]["message"].is_string() => Verdict::of(Outcome::CleanError(
                v["error"]["code"]
                    .as_str()
                    .map_or_else(|| status.to_string(), str::to_owned),
            )),
            Ok(v) if v["object"] == "error" => Verdict::of(Outcome::CleanError(status.to_string())),
            _ => Verdict::lost(format!("{status} without an error body")),
        };
    }
    if !stream {
        let len = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["choices"][0]["message"]["content"].as_str().map(str::len));
        return match len {
            Some(n) if n == 4 * max_tokens as usize => Verdict::of(Outcome::Full),
            Some(n) => Verdict::lost(format!("{n} characters for {max_tokens} tokens")),
            None => Verdict::lost("200 with a malformed body".into()),
        };
    }
    judge_stream(body, max_tokens)
}

fn judge_stream(body: &[u8], max_tokens: u32) -> Verdict {
    let text = String::from_utf8_lossy(body);
    let (mut done, mut error_event, mut finished) = (false, false, false);
    // Content chunks per response id, in order of first appearance.
    let mut per_id: Vec<(String, u64)> = Vec::new();
    for event in text.split("\n\n") {
        let Some(data) = event.trim().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Verdict::lost("an SSE event that is not JSON".into());
        };
        if v.get("error").is_some() {
            error_event = true;
            continue;
        }
        let id = v["id"].as_str().unwrap_or("").to_owned();
        let choice = &v["choices"][0];
        if !choice["finish_reason"].is_null() {
            finished = true;
        }
        let content = choice["delta"]["content"].as_str().unwrap_or("");
        if !content.is_empty() {
            match per_id.iter_mut().find(|(i, _)| *i == id) {
                Some((_, n)) => *n += 1,
                None => per_id.push((id, 1)),
            }
        }
    }
    let first = per_id.first().map_or(0, |(_, n)| *n);
    let duplicated = first.saturating_sub(u64::from(max_tokens))
        + per_id.iter().skip(1).map(|(_, n)| n).sum::<u64>();
    let outcome = if done && error_event {
        Outcome::CleanError("stream_error_event".into())
    } else if done && finished && first == u64::from(max_tokens) && per_id.len() == 1 {
        Outcome::Full
    } else if done {
        Outcome::Lost(format!(
            "stream ended with [DONE] after {first} of {max_tokens} tokens and no error event"
        ))
    } else {
        Outcome::Lost(format!(
            "stream stopped after {first} of {max_tokens} tokens without [DONE]"
        ))
    };
    Verdict {
        outcome,
        duplicated_tokens: duplicated,
    }
}

/// Tallies of one run.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Requests sent.
    pub sent: u64,
    /// Answered in full.
    pub full: u64,
    /// Answered with a clean error.
    pub clean_error: u64,
    /// Lost.
    pub lost: u64,
    /// Duplicated streamed tokens, summed.
    pub duplicated_tokens: u64,
    /// Clean errors by kind.
    pub clean_kinds: BTreeMap<String, u64>,
    /// Lost requests by reason (the first 40 characters).
    pub lost_kinds: BTreeMap<String, u64>,
    /// Latencies of answers in full, seconds.
    full_latency: Vec<f64>,
    /// Latencies of every answer (full or clean error), seconds.
    answered_latency: Vec<f64>,
    /// Wall time of the run.
    pub wall_s: f64,
}

impl RunStats {
    /// Counts one request.
    pub fn record(&mut self, v: &Verdict, latency: Duration) {
        self.sent += 1;
        self.duplicated_tokens += v.duplicated_tokens;
        if !matches!(v.outcome, Outcome::Lost(_)) {
            self.answered_latency.push(latency.as_secs_f64());
        }
        match &v.outcome {
            Outcome::Full => {
                self.full += 1;
                self.full_latency.push(latency.as_secs_f64());
            }
            Outcome::CleanError(kind) => {
                self.clean_error += 1;
                *self.clean_kinds.entry(kind.clone()).or_default() += 1;
            }
            Outcome::Lost(why) => {
                self.lost += 1;
                let key: String = why.chars().take(40).collect();
                *self.lost_kinds.entry(key).or_default() += 1;
            }
        }
    }

    /// The `q` quantile (0..1) of full answers' latency in seconds; 0 with none.
    pub fn percentile(&self, q: f64) -> f64 {
        quantile(&self.full_latency, q)
    }

    /// The `q` quantile of every answer's latency (clean errors included: a hang's timeout
    /// shows here).
    pub fn percentile_answered(&self, q: f64) -> f64 {
        quantile(&self.answered_latency, q)
    }

    /// The tallies as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "sent": self.sent,
            "answered_in_full": self.full,
            "clean_error": self.clean_error,
            "lost": self.lost,
            "duplicated_streamed_tokens": self.duplicated_tokens,
            "p50_full_s": self.percentile(0.5),
            "p99_full_s": self.percentile(0.99),
            "p99_answered_s": self.percentile_answered(0.99),
            "clean_errors_by_kind": self.clean_kinds,
            "lost_by_reason": self.lost_kinds,
            "wall_s": self.wall_s,
        })
    }
}

/// The `q` quantile (0..1) of `samples` (nearest rank, as every benchmark reports it); 0 with
/// none.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    switchyard_bench::stats::percentile(&v, q).unwrap_or(0.0)
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    switchyard_bench::output::utc_date_time(secs).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str, content: &str, finish: Option<&str>) -> String {
        let finish = finish.map_or("null".to_owned(), |f| format!("\"{f}\""));
        format!(
            "data: {{\"id\":\"{id}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":{finish}}}]}}\n\n"
        )
    }

    fn stream(id: &str, tokens: u32) -> String {
        let mut s = String::new();
        for _ in 0..tokens {
            s.push_str(&chunk(id, "abcd", None));
        }
        s
    }

    #[test]
    fn a_whole_stream_is_full_and_a_spliced_one_counts_its_repeats() {
        let whole = format!(
            "{}{}data: [DONE]\n\n",
            stream("a", 3),
            chunk("a", "", Some("length"))
        );
        assert_eq!(judge(200, whole.as_bytes(), true, 3).outcome, Outcome::Full);
        // A retry after bytes were sent would splice a second answer in.
        let spliced = format!(
            "{}{}{}data: [DONE]\n\n",
            stream("a", 2),
            stream("b", 3),
            chunk("b", "", Some("length"))
        );
        let v = judge(200, spliced.as_bytes(), true, 3);
        assert_eq!(v.duplicated_tokens, 3);
        assert!(matches!(v.outcome, Outcome::Lost(_)));
        let too_many = format!(
            "{}{}data: [DONE]\n\n",
            stream("a", 5),
            chunk("a", "", Some("length"))
        );
        assert_eq!(
            judge(200, too_many.as_bytes(), true, 3).duplicated_tokens,
            2
        );
    }

    #[test]
    fn error_event_then_done_is_clean_and_silent_truncation_is_lost() {
        let clean = format!(
            "{}data: {{\"error\":{{\"message\":\"broke\"}}}}\n\ndata: [DONE]\n\n",
            stream("a", 2)
        );
        assert_eq!(
            judge(200, clean.as_bytes(), true, 3).outcome,
            Outcome::CleanError("stream_error_event".into())
        );
        assert!(matches!(
            judge(200, stream("a", 2).as_bytes(), true, 3).outcome,
            Outcome::Lost(_)
        ));
        let short = format!("{}data: [DONE]\n\n", stream("a", 2));
        assert!(matches!(
            judge(200, short.as_bytes(), true, 3).outcome,
            Outcome::Lost(_)
        ));
    }

    #[test]
    fn error_bodies_are_clean_and_others_lost() {
        let openai = br#"{"error":{"message":"x","type":"server_error","param":null,"code":"upstream_timeout"}}"#;
        assert_eq!(
            judge(504, openai, false, 3).outcome,
            Outcome::CleanError("upstream_timeout".into())
        );
        let vllm = br#"{"object":"error","message":"x","type":"InternalServerError","code":500}"#;
        assert_eq!(
            judge(500, vllm, true, 3).outcome,
            Outcome::CleanError("500".into())
        );
        assert!(matches!(
            judge(502, b"oops", false, 3).outcome,
            Outcome::Lost(_)
        ));
        let ok = br#"{"choices":[{"message":{"content":"abcdabcdabcd"}}]}"#;
        assert_eq!(judge(200, ok, false, 3).outcome, Outcome::Full);
        assert!(matches!(judge(200, ok, false, 4).outcome, Outcome::Lost(_)));
    }

    #[test]
    fn percentiles_and_dates() {
        let mut s = RunStats::default();
        for ms in 1..=100 {
            s.record(&Verdict::of(Outcome::Full), Duration::from_millis(ms));
        }
        assert_eq!(s.percentile(0.99), 0.099);
        assert_eq!(s.percentile(0.5), 0.05);
        assert_eq!(utc_date().len(), 10);
    }
}
