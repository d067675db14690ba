//! How the chaos benchmark ([`crate::chaos`]) judges one answer against what the simulated
//! replica says to that request.
//!
//! A replica's output is a function of the request ([`switchyard_sim::http::expected`]), so
//! every token a client receives is checked against the expected token at its place:
//!
//! - **answered in full**: 200 with the whole expected text: the body's content, or a stream
//!   whose content chunks (one response id) are the expected pieces in order, with a
//!   `finish_reason` and `[DONE]`;
//! - **clean error**: a non-2xx answer with an error JSON body (OpenAI's shape or vLLM's), or a
//!   stream of whole events carrying a correct prefix of the text, then one SSE error event,
//!   then `[DONE]`;
//! - **left**: a client that left mid-stream on purpose after whole events carrying a correct
//!   prefix;
//! - **altered**: a client was handed something the replica never said: a token that differs
//!   from the expected one at its place, or an event that is not one whole `data:` line of
//!   JSON (a partial event with another glued on);
//! - **lost**: anything else: no answer, a cut connection, a stream that stops without an
//!   error event or `[DONE]`, an answer cut short but presented as complete.
//!
//! Duplicated tokens: content chunks of a second response id (two upstream answers spliced
//! together) or beyond `max_tokens`; each such chunk counts.

use serde_json::Value;
use switchyard_sim::http::Expected;

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The whole answer.
    Full,
    /// A clean error of this kind (the error code, or the HTTP status).
    CleanError(String),
    /// The client left mid-stream, as it meant to, with nothing wrong in what it had.
    Left,
    /// Something the replica never said reached the client, for this reason.
    Altered(String),
    /// No usable answer, for this reason.
    Lost(String),
}

/// The judgement of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What became of the request.
    pub outcome: Outcome,
    /// Content chunks beyond a single, complete response.
    pub duplicated_tokens: u64,
    /// Tokens that differ from the expected token at their place.
    pub altered_tokens: u64,
}

impl Verdict {
    /// A request with no usable answer.
    pub fn lost(why: String) -> Self {
        Self::of(Outcome::Lost(why))
    }

    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            duplicated_tokens: 0,
            altered_tokens: 0,
        }
    }
}

/// Judges a complete answer to a request whose output is `want`.
pub fn judge(status: u16, body: &[u8], stream: bool, want: &Expected) -> Verdict {
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
    if stream {
        Stream::parse(body).verdict(want)
    } else {
        judge_whole(body, want)
    }
}

/// Judges what a client that left mid-stream had received (a trailing partial event, cut by
/// the client's own leaving, is not counted).
pub fn judge_left(body: &[u8], want: &Expected) -> Verdict {
    let s = Stream::parse(body);
    let mut v = s.tally(want);
    v.outcome = match s.altered(&v) {
        Some(why) => Outcome::Altered(why),
        None => Outcome::Left,
    };
    v
}

/// Content chunks of the first response id among the whole events of a stream so far.
pub fn tokens_received(body: &[u8]) -> usize {
    Stream::parse(body).first().len()
}

fn judge_whole(body: &[u8], want: &Expected) -> Verdict {
    let Some(text) = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_owned)
    }) else {
        return Verdict::lost("200 with a malformed body".into());
    };
    if text == want.text {
        return Verdict::of(Outcome::Full);
    }
    if want.text.starts_with(&text) {
        return Verdict::lost(format!(
            "{} of {} characters, presented as whole",
            text.len(),
            want.text.len()
        ));
    }
    let pieces: Vec<&str> = (0..text.len().div_ceil(4))
        .map(|i| text.get(i * 4..(i * 4 + 4).min(text.len())).unwrap_or(""))
        .collect();
    Verdict {
        outcome: Outcome::Altered("the body's text is not the replica's".into()),
        duplicated_tokens: 0,
        altered_tokens: differing(&pieces, want),
    }
}

/// Pieces that differ from the expected piece at their place.
fn differing<S: AsRef<str>>(pieces: &[S], want: &Expected) -> u64 {
    pieces
        .iter()
        .enumerate()
        .take(want.max_tokens as usize)
        .filter(|(i, p)| want.piece(*i) != Some(p.as_ref()))
        .count() as u64
}

/// What a streamed body held.
#[derive(Debug, Default)]
struct Stream {
    /// Content chunks per response id, in order of first appearance.
    per_id: Vec<(String, Vec<String>)>,
    /// A chunk had a `finish_reason`.
    finished: bool,
    /// `[DONE]` arrived.
    done: bool,
    /// The code of the error event, if one arrived.
    error: Option<String>,
    /// Events after the error event other than `[DONE]`.
    after_error: u32,
    /// Events after `[DONE]`.
    after_done: u32,
    /// Events that are not one whole `data:` line of JSON.
    garbled: u32,
}

impl Stream {
    /// Reads the whole events of `body` (what follows its last blank line is ignored). Lines
    /// may end with `\n` or `\r\n`.
    fn parse(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
        let whole = text.rfind("\n\n").map_or(0, |i| i + 2);
        let mut s = Stream::default();
        for event in text[..whole].split("\n\n").filter(|e| !e.is_empty()) {
            if event.lines().all(|l| l.starts_with(':')) {
                continue; // an SSE comment
            }
            if s.done {
                s.after_done += 1;
                continue;
            }
            let data = match event.strip_prefix("data: ") {
                Some(d) if !d.contains('\n') => d,
                _ => {
                    s.garbled += 1;
                    continue;
                }
            };
            if data == "[DONE]" {
                s.done = true;
                continue;
            }
            if s.error.is_some() {
                s.after_error += 1;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                s.garbled += 1;
                continue;
            };
            if v.get("error").is_some() {
                let code = v["error"]["code"].as_str().unwrap_or("stream_error_event");
                s.error = Some(code.to_owned());
                continue;
            }
            let choice = &v["choices"][0];
            s.finished |= !choice["finish_reason"].is_null();
            let Some(content) = choice["delta"]["content"]
                .as_str()
                .filter(|c| !c.is_empty())
            else {
                continue;
            };
            let id = v["id"].as_str().unwrap_or("");
            match s.per_id.iter_mut().find(|(i, _)| i == id) {
                Some((_, p)) => p.push(content.to_owned()),
                None => s.per_id.push((id.to_owned(), vec![content.to_owned()])),
            }
        }
        s
    }

    /// Content chunks of the first response id.
    fn first(&self) -> &[String] {
        self.per_id.first().map_or(&[], |(_, p)| p.as_slice())
    }

    /// The token counts, with no outcome yet.
    fn tally(&self, want: &Expected) -> Verdict {
        let first = self.first();
        Verdict {
            outcome: Outcome::Full,
            duplicated_tokens: (first.len() as u64).saturating_sub(u64::from(want.max_tokens))
                + self
                    .per_id
                    .iter()
                    .skip(1)
                    .map(|(_, p)| p.len() as u64)
                    .sum::<u64>(),
            altered_tokens: differing(first, want),
        }
    }

    /// Why the client was handed something the replica never said, if it was.
    fn altered(&self, v: &Verdict) -> Option<String> {
        if self.garbled > 0 {
            Some(format!("{} event(s) not whole SSE JSON", self.garbled))
        } else if v.altered_tokens > 0 {
            Some(format!("{} token(s) not the replica's", v.altered_tokens))
        } else if self.after_done > 0 {
            Some("events after [DONE]".into())
        } else {
            None
        }
    }

    fn verdict(&self, want: &Expected) -> Verdict {
        let mut v = self.tally(want);
        let got = self.first().len();
        let max = want.max_tokens as usize;
        v.outcome = if let Some(why) = self.altered(&v) {
            Outcome::Altered(why)
        } else if let (true, Some(code)) = (self.done, &self.error) {
            if self.after_error == 0 {
                Outcome::CleanError(code.clone())
            } else {
                Outcome::Lost("events between the error event and [DONE]".into())
            }
        } else if self.done && self.finished && got == max && self.per_id.len() == 1 {
            Outcome::Full
        } else if self.done {
            Outcome::Lost(format!(
                "stream ended with [DONE] after {got} of {max} tokens and no error event"
            ))
        } else {
            Outcome::Lost(format!(
                "stream stopped after {got} of {max} tokens without [DONE]"
            ))
        };
        v
    }
}

#[cfg(test)]
mod tests;
