//! Token usage of a response, as the backend reports it, for limits and spend.
//!
//! A streamed request whose client did not ask for usage gets
//! `stream_options.include_usage` added on its way upstream ([`with_include_usage`]), and the
//! extra final chunk that carries the usage (`"choices": []`) is taken out of what the client
//! sees ([`Meter::observe`]), so the client gets the stream it asked for and the gateway its
//! token counts. Only chunks that mention `"usage"` are parsed.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

/// Tokens a response used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct Usage {
    /// Prompt tokens (`input_tokens` in an Anthropic answer).
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: u32,
    /// Output tokens (`output_tokens` in an Anthropic answer).
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: u32,
}

/// What the meter looks for in one event or body.
#[derive(Deserialize)]
struct Carrier {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
    /// An Anthropic `message_start` event carries the prompt's usage in its message.
    #[serde(default)]
    message: Option<Inner>,
}

/// The message of an Anthropic `message_start` event.
#[derive(Deserialize)]
struct Inner {
    #[serde(default)]
    usage: Option<Usage>,
}

impl Usage {
    /// Both counts, each the larger of `self`'s and `other`'s: an Anthropic stream reports
    /// prompt tokens at its start and output tokens at its end; an OpenAI answer reports
    /// both once.
    fn merged(self, other: Option<Usage>) -> Usage {
        let o = other.unwrap_or_default();
        Usage {
            prompt_tokens: self.prompt_tokens.max(o.prompt_tokens),
            completion_tokens: self.completion_tokens.max(o.completion_tokens),
        }
    }
}

/// The `data:` line of one SSE event (after an `event:` line, if any), trimmed.
fn data_of(event: &[u8]) -> &[u8] {
    event
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"data:"))
        .map(<[u8]>::trim_ascii)
        .unwrap_or_default()
}

/// `body` with `"stream_options": {"include_usage": true}` added, or `None` when it cannot be
/// done without changing what the client asked (it already has `stream_options`, or is not a
/// JSON object).
pub fn with_include_usage(body: &Bytes) -> Option<Bytes> {
    crate::forward::with_field(body, "stream_options", r#"{"include_usage":true}"#)
}

/// Watches a response body go by for its usage.
#[derive(Debug, Default)]
pub struct Meter {
    /// The body is an SSE stream.
    pub sse: bool,
    /// The gateway added `include_usage`: take the usage-only chunk out.
    pub strip: bool,
    /// The usage, once seen.
    pub usage: Option<Usage>,
}

const USAGE_KEY: &[u8] = b"\"usage\"";

/// Finders for [`USAGE_KEY`], built once (building one per call cost more than the search).
static FIND: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(USAGE_KEY));
static FIND_LAST: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new(USAGE_KEY));

fn mentions_usage(data: &[u8]) -> bool {
    FIND.find(data).is_some()
}

/// The object after the last `"usage":` key of `data`, when that key is not inside a string
/// (its quote is not escaped) and its value parses as usage. Parsing a few dozen bytes
/// instead of the whole answer is most of what metering costs a request.
fn usage_at_last_key(data: &[u8]) -> Option<Usage> {
    let at = FIND_LAST.rfind(data)?;
    if at > 0 && data[at - 1] == b'\\' {
        return None;
    }
    let rest = data[at + USAGE_KEY.len()..].trim_ascii_start();
    let value = rest.strip_prefix(b":")?.trim_ascii_start();
    if !value.starts_with(b"{") {
        return None;
    }
    // Zero tokens is no answer's usage: more likely a nested object of that name; let the
    // whole parse find the top-level one.
    flat_usage(value)
        .unwrap_or_else(|| {
            Usage::deserialize(&mut serde_json::Deserializer::from_slice(value)).ok()
        })
        .filter(|u| *u != Usage::default())
}

/// The usage in `value` when it is a flat object (every value a number, `null`, a boolean or
/// a string without escapes), read without serde: `Some(result)` says what parsing it would
/// give (`None` inside for what serde refuses: a count that is no `u32`, such as `null`, or a
/// field twice);
/// `None` says the object is not flat and serde should read it.
fn flat_usage(value: &[u8]) -> Option<Option<Usage>> {
    let mut u = Usage::default();
    let (mut prompt, mut completion) = (false, false);
    let mut rest = value.strip_prefix(b"{")?.trim_ascii_start();
    if rest.starts_with(b"}") {
        return Some(Some(u));
    }
    loop {
        let body = rest.strip_prefix(b"\"")?;
        let close = memchr::memchr2(b'"', b'\\', body)?;
        if body[close] != b'"' {
            return None;
        }
        let key = &body[..close];
        rest = body[close + 1..]
            .trim_ascii_start()
            .strip_prefix(b":")?
            .trim_ascii_start();
        let end = rest
            .iter()
            .position(|&b| matches!(b, b',' | b'}') || b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        let slot = match key {
            b"prompt_tokens" | b"input_tokens" => Some((&mut u.prompt_tokens, &mut prompt)),
            b"completion_tokens" | b"output_tokens" => {
                Some((&mut u.completion_tokens, &mut completion))
            }
            _ => None,
        };
        match (slot, token.first()) {
            (_, Some(b'{' | b'[')) | (_, None) => return None,
            (Some((count, seen)), _) => {
                if std::mem::replace(seen, true) {
                    return Some(None);
                }
                match token {
                    [b'0', _, ..] => return Some(None), // JSON has no leading zeros
                    digits if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
                        let Ok(n) = std::str::from_utf8(digits).unwrap_or("x").parse::<u32>()
                        else {
                            return Some(None);
                        };
                        *count = n;
                    }
                    _ => return Some(None),
                }
                rest = &rest[end..];
            }
            (None, Some(b'"')) => {
                let body = &rest[1..];
                let close = memchr::memchr2(b'"', b'\\', body)?;
                if body[close] != b'"' {
                    return None;
                }
                rest = &body[close + 1..];
            }
            (None, Some(_)) => rest = &rest[end..],
        }
        rest = rest.trim_ascii_start();
        match rest.first() {
            Some(b',') => rest = rest[1..].trim_ascii_start(),
            Some(b'}') => return Some(Some(u)),
            _ => return None,
        }
    }
}

impl Meter {
    /// Looks at one data chunk on its way to the client; returns what goes on (the chunk
    /// itself unless a usage-only event was taken out).
    pub fn observe(&mut self, data: Bytes) -> Bytes {
        if !self.sse {
            // A whole JSON answer: usage is one of its top-level fields, usually the last;
            // read it alone, and the whole answer only when that fails.
            match usage_at_last_key(&data) {
                Some(u) => self.usage = Some(u),
                None if !mentions_usage(&data) => {}
                None => {
                    if let Ok(c) = serde_json::from_slice::<Carrier>(&data) {
                        self.usage = c.usage.or(self.usage);
                    }
                }
            }
            return data;
        }
        if !mentions_usage(&data) {
            return data;
        }
        // Whole SSE events (the relay frames them): look at each that mentions usage.
        let mut kept = BytesMut::new();
        let mut dropped = false;
        for event in split_events(&data) {
            let payload = data_of(event);
            if mentions_usage(event) {
                if let Ok(c) = serde_json::from_slice::<Carrier>(payload) {
                    if let Some(u) = c.usage.or(c.message.and_then(|m| m.usage)) {
                        self.usage = Some(u.merged(self.usage));
                        if self.strip && c.choices.as_ref().is_some_and(Vec::is_empty) {
                            dropped = true;
                            continue;
                        }
                    }
                }
            }
            kept.extend_from_slice(event);
        }
        if dropped {
            kept.freeze()
        } else {
            data
        }
    }
}

/// `data` cut after each blank line (`\n\n`), separators kept with the event before them.
fn split_events(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(rest.len(), |i| i + 2);
        let (event, tail) = rest.split_at(cut);
        rest = tail;
        Some(event)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_usage_is_added_only_when_absent() {
        let b = Bytes::from_static(br#"{"model":"m","stream":true} "#);
        assert_eq!(
            with_include_usage(&b).unwrap(),
            Bytes::from_static(
                br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}} "#
            )
        );
        let has = Bytes::from_static(br#"{"stream":true,"stream_options":{}}"#);
        assert_eq!(with_include_usage(&has), None);
        assert_eq!(
            with_include_usage(&Bytes::from_static(b"{}")).unwrap(),
            Bytes::from_static(br#"{"stream_options":{"include_usage":true}}"#)
        );
    }

    #[test]
    fn the_usage_chunk_is_read_and_stripped_only_when_injected() {
        let chunk = Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
        );
        let mut m = Meter {
            sse: true,
            strip: true,
            usage: None,
        };
        let out = m.observe(chunk.clone());
        assert_eq!(
            out,
            Bytes::from_static(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
            )
        );
        assert_eq!(
            m.usage,
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 3
            })
        );
        let mut asked = Meter {
            sse: true,
            ..Meter::default()
        };
        assert_eq!(
            asked.observe(chunk.clone()),
            chunk,
            "the client asked for it"
        );
        assert_eq!(asked.usage.map(|u| u.completion_tokens), Some(3));
    }

    #[test]
    fn an_anthropic_stream_gives_its_usage_from_start_and_delta() {
        let mut m = Meter {
            sse: true,
            ..Meter::default()
        };
        let events = Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":17}}\n\n",
        );
        assert_eq!(m.observe(events.clone()), events);
        assert_eq!(
            m.usage,
            Some(Usage {
                prompt_tokens: 25,
                completion_tokens: 17
            })
        );
        let mut json = Meter::default();
        json.observe(Bytes::from_static(
            br#"{"type":"message","usage":{"input_tokens":3,"output_tokens":4}}"#,
        ));
        assert_eq!(
            json.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4
            })
        );
    }

    #[test]
    fn flat_usage_reads_what_serde_reads_and_leaves_the_rest_to_it() {
        let serde =
            |v: &[u8]| Usage::deserialize(&mut serde_json::Deserializer::from_slice(v)).ok();
        for v in [
            &br#"{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}"#[..],
            br#"{ "prompt_tokens" : 7 , "completion_tokens" : 3 }"#,
            br#"{"input_tokens":12,"output_tokens":1}"#,
            br#"{"prompt_tokens":7,"prompt_tokens_details":null,"completion_tokens":3}"#,
            br#"{"prompt_tokens":7,"model":"m, }","completion_tokens":3}"#,
            br#"{"prompt_tokens":null,"completion_tokens":3,"ok":true}"#,
            br#"{}"#,
            br#"{"prompt_tokens":7,"input_tokens":8}"#,
            br#"{"prompt_tokens":-1}"#,
            br#"{"prompt_tokens":99999999999}"#,
            br#"{"prompt_tokens":1.5}"#,
            br#"{"prompt_tokens":07}"#,
            br#"{"prompt_tokens":0,"completion_tokens":0}"#,
        ] {
            let fast = flat_usage(v).expect("flat");
            assert_eq!(fast, serde(v), "{}", String::from_utf8_lossy(v));
        }
        for v in [
            &br#"{"prompt_tokens":7,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens":3}"#[..],
            br#"{"prompt_tokens":7,"name":"a\"b","completion_tokens":3}"#,
            br#"{"prompt_tokens":7"#,
            br#"[1]"#,
        ] {
            assert_eq!(flat_usage(v), None, "{}", String::from_utf8_lossy(v));
        }
        // Nested objects still read through serde.
        let nested =
            br#"{"x":1,"usage":{"prompt_tokens":7,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens":3}}"#;
        assert_eq!(
            usage_at_last_key(nested),
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 3
            })
        );
    }

    #[test]
    fn a_json_answer_gives_its_usage() {
        let mut m = Meter::default();
        let body = Bytes::from_static(
            br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        );
        assert_eq!(m.observe(body.clone()), body);
        assert_eq!(
            m.usage,
            Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 2
            })
        );
    }

    #[test]
    fn usage_quoted_in_the_content_or_before_other_fields_is_still_the_answers() {
        let usage = |body: &'static [u8]| {
            let mut m = Meter::default();
            m.observe(Bytes::from_static(body));
            m.usage.map(|u| (u.prompt_tokens, u.completion_tokens))
        };
        // The key in the model's text is escaped: the real one is found by the whole parse.
        assert_eq!(
            usage(br#"{"usage":{"prompt_tokens":4,"completion_tokens":5},"choices":[{"message":{"content":"say \"usage\": {}"}}]}"#),
            Some((4, 5))
        );
        // Usage first, then more fields; nested details skipped; Anthropic's names.
        assert_eq!(
            usage(br#"{"usage":{"prompt_tokens":7,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens":1},"id":"x"}"#),
            Some((7, 1))
        );
        assert_eq!(
            usage(br#"{"type":"message","usage":{"input_tokens":9,"output_tokens":2}}"#),
            Some((9, 2))
        );
        assert_eq!(usage(br#"{"usage": null}"#), None);
        // A nested object of that name after the real usage.
        assert_eq!(
            usage(br#"{"usage":{"prompt_tokens":3,"completion_tokens":1},"meta":{"usage":{}}}"#),
            Some((3, 1))
        );
    }
}
