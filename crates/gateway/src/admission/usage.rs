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

/// A finder for [`USAGE_KEY`], built once (building one per call cost more than the search).
static FIND: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(USAGE_KEY));

fn mentions_usage(data: &[u8]) -> bool {
    FIND.find(data).is_some()
}

/// Where the last [`USAGE_KEY`] of `data` starts. It walks back over the key's `g`, a letter
/// JSON answers use little (a vectorised byte search), rather than matching the whole key
/// backwards, which cost a request about 400 instructions: an answer's usage is at or near
/// its end. Past a few dozen `g`s without it (a text full of them) the whole key is
/// searched for instead, so no answer costs much more than that search.
fn last_usage_key(data: &[u8]) -> Option<usize> {
    const G: usize = 4; // `"usage"`: the `g` is its fifth byte
    const CANDIDATES: usize = 64;
    let mut gs = memchr::memrchr_iter(b'g', data);
    for i in gs.by_ref().take(CANDIDATES) {
        if let Some(at) = i.checked_sub(G) {
            if data[at..].starts_with(USAGE_KEY) {
                return Some(at);
            }
        }
    }
    gs.next()?;
    memchr::memmem::rfind(data, USAGE_KEY)
}

/// The object after the last `"usage":` key of `data`, when that key is not inside a string
/// (its quote is not escaped) and its value parses as usage. Parsing a few dozen bytes
/// instead of the whole answer is most of what metering costs a request.
fn usage_at_last_key(data: &[u8]) -> Option<Usage> {
    let at = last_usage_key(data)?;
    if at > 0 && data[at - 1] == b'\\' {
        return None;
    }
    let mut c = Cursor {
        b: data,
        i: at + USAGE_KEY.len(),
    };
    c.space();
    c.eat(b':')?;
    c.space();
    let value = &data[c.i..];
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

/// A read position in a JSON text, for [`flat_usage`]: byte by byte, as the objects it reads
/// are a few dozen bytes (the slice helpers it replaced cost twice as much).
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips whitespace.
    fn space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// Steps over `byte` if it is next.
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// An object key after its opening quote: which count it names, if any; `None` as
    /// [`Cursor::plain_string`]. The names a usage object carries are matched whole first
    /// (their first letters differ), which is most of what reading one costs.
    fn key(&mut self) -> Option<Field> {
        let (known, field): (&[u8], Field) = match self.peek()? {
            b'p' => (b"prompt_tokens\"", Field::Prompt),
            b'c' => (b"completion_tokens\"", Field::Completion),
            b'i' => (b"input_tokens\"", Field::Prompt),
            b'o' => (b"output_tokens\"", Field::Completion),
            b't' => (b"total_tokens\"", Field::Other),
            _ => (b"", Field::Other),
        };
        if !known.is_empty() && self.b[self.i..].starts_with(known) {
            self.i += known.len();
            return Some(field);
        }
        // Not one of those names: a name that is one starts with it and its quote.
        self.plain_string().map(|_| Field::Other)
    }

    /// The rest of a string whose opening quote was eaten, and steps past its closing one;
    /// `None` at an escape (serde reads those) or when it does not end.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(&self.b[start..self.i - 1]);
                }
                b'\\' => return None,
                _ => self.i += 1,
            }
        }
    }

    /// A bare value (number, `null`, boolean): up to a comma, brace or whitespace.
    fn bare(&mut self) -> &'a [u8] {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| !matches!(b, b',' | b'}') && !b.is_ascii_whitespace())
        {
            self.i += 1;
        }
        &self.b[start..self.i]
    }
}

/// What a key of a usage object names.
#[derive(Clone, Copy)]
enum Field {
    /// `prompt_tokens` (`input_tokens`).
    Prompt,
    /// `completion_tokens` (`output_tokens`).
    Completion,
    /// Anything else.
    Other,
}

/// A JSON count without sign, fraction or leading zero that fits a `u32`; `None`: serde
/// refuses it too.
fn count(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// The usage in `value` when it is a flat object (every value a number, `null`, a boolean or
/// a string without escapes), read without serde: `Some(result)` says what parsing it would
/// give (`None` inside for what serde refuses: a count that is no `u32`, such as `null`, or a
/// field twice);
/// `None` says the object is not flat and serde should read it.
fn flat_usage(value: &[u8]) -> Option<Option<Usage>> {
    let mut u = Usage::default();
    let (mut prompt, mut completion) = (false, false);
    let mut c = Cursor { b: value, i: 0 };
    c.eat(b'{')?;
    c.space();
    if c.eat(b'}').is_some() {
        return Some(Some(u));
    }
    loop {
        c.eat(b'"')?;
        let field = c.key()?;
        c.space();
        c.eat(b':')?;
        c.space();
        let slot = match field {
            Field::Prompt => Some((&mut u.prompt_tokens, &mut prompt)),
            Field::Completion => Some((&mut u.completion_tokens, &mut completion)),
            Field::Other => None,
        };
        match (slot, c.peek()?) {
            (_, b'{' | b'[') => return None,
            (None, b'"') => {
                c.i += 1;
                c.plain_string()?;
            }
            (slot, _) => {
                let token = c.bare();
                if token.is_empty() {
                    return None;
                }
                if let Some((n, seen)) = slot {
                    if std::mem::replace(seen, true) {
                        return Some(None);
                    }
                    match count(token) {
                        Some(v) => *n = v,
                        None => return Some(None),
                    }
                }
            }
        }
        c.space();
        match c.peek() {
            Some(b',') => {
                c.i += 1;
                c.space();
            }
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
            br#"{"prompt_tokens":4294967295,"completion_tokens":0}"#,
            br#"{"prompt_tokens":4294967296}"#,
            br#"{"prompt_tokens":"7","completion_tokens":3}"#,
            br#"{"prompt_tokens":7,"prompt_tokens":7}"#,
            br#"{"model":"m","note":null,"done":true,"prompt_tokens":0}"#,
            br#"{"p":1,"t":2,"total":3,"prompt_tokens":3,"prompt_tokensx":4,"o":5}"#,
            br#"{"output_tokens":2,"input_tokens":1,"total_tokens":3}"#,
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
    fn the_last_usage_key_is_found_from_the_end() {
        assert_eq!(last_usage_key(br#"{"usage":1}"#), Some(1));
        assert_eq!(last_usage_key(br#""usage""usage"g"#), Some(7));
        assert_eq!(last_usage_key(br#"gg"usag"#), None);
        assert_eq!(last_usage_key(b"g"), None);
        assert_eq!(last_usage_key(b""), None);
        let long = format!(
            r#"{{"a":"{}","usage":{{}},"fingerprint":"g"}}"#,
            "ug".repeat(500)
        );
        assert_eq!(last_usage_key(long.as_bytes()), Some(1008));
        // More `g`s after the key than are tried one by one: the whole-key search finds it.
        let many = format!(r#"{{"usage":{{}},"a":"{}"}}"#, "g".repeat(200));
        assert_eq!(last_usage_key(many.as_bytes()), Some(1));
        assert_eq!(last_usage_key("g".repeat(200).as_bytes()), None);
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
