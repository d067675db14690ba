//! Renders a request's prompt for prefix hashing straight from the body's JSON, in work and
//! memory bounded by the body: messages, content parts and prompt items are visited one at a
//! time (no vector of them is built), strings are read in place and unescaped only as far as
//! the kept text reaches, and the text kept stops at a cap while the rest is only counted.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Most text reserved ahead of rendering; longer prompts grow as they render.
const RESERVE_MAX: usize = 4096;

/// The prompt text kept, and the size of the whole.
#[derive(Debug)]
pub(super) struct Renderer {
    /// The rendered prompt, up to `cap` bytes.
    pub text: String,
    /// Bytes of the whole rendered prompt, kept or not.
    pub total: usize,
    /// Token ids seen (completions prompts given as ids), counted, not rendered.
    pub token_ids: usize,
    cap: usize,
    /// Set once text was cut at the cap: nothing more is appended, so the text kept is always
    /// a prefix of the whole.
    full: bool,
}

impl Renderer {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            text: String::new(),
            total: 0,
            token_ids: 0,
            cap,
            full: false,
        }
    }

    /// Sizes the text once for what `json` can render to (its rendering is rarely longer
    /// than the JSON it comes from), so a small prompt is not grown piece by piece; at most
    /// [`RESERVE_MAX`] ahead, so a body of skipped parts (images) reserves little.
    fn reserve_for(&mut self, json: &str) {
        let room = self.cap - self.text.len();
        self.text.reserve(json.len().min(room).min(RESERVE_MAX));
    }

    fn push(&mut self, s: &str) {
        self.total = self.total.saturating_add(s.len());
        if self.full {
            return;
        }
        let room = self.cap - self.text.len();
        if s.len() <= room {
            self.text.push_str(s);
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&s[..cut]);
            self.full = true;
        }
    }

    /// Appends a JSON string value, given with its quotes as it sits in the body.
    fn push_json_str(&mut self, raw: &str) {
        let inner = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or("");
        let mut rest = inner;
        while let Some(at) = rest.find('\\') {
            self.push(&rest[..at]);
            let (c, used) = unescape(&rest[at..]);
            let mut buf = [0u8; 4];
            self.push(c.encode_utf8(&mut buf));
            rest = rest.get(at + used..).unwrap_or("");
        }
        self.push(rest);
    }

    /// Appends one chat message as the engine's template would order it: role, then content.
    fn push_message(&mut self, role: Option<&RawValue>, content: Option<&RawValue>) {
        self.push("<|");
        match role {
            Some(r) if r.get().starts_with('"') => self.push_json_str(r.get()),
            _ => self.push("user"),
        }
        self.push("|>\n");
        if let Some(raw) = content {
            let text = raw.get();
            if text.starts_with('"') {
                self.push_json_str(text);
            } else if text.starts_with('[') {
                // Content parts: the text of each, images and the rest skipped.
                let mut de = serde_json::Deserializer::from_str(text);
                let _ = Each(PartSeed(self)).deserialize(&mut de);
            }
        }
        self.push("\n");
    }

    /// Appends a completions `prompt` or embeddings `input`: a string, an array of strings, an
    /// array of token ids, or an array of such arrays. Token ids are counted, not rendered. A
    /// value of another shape adds nothing.
    pub(super) fn push_prompt_value(&mut self, raw: &RawValue) {
        let text = raw.get();
        self.reserve_for(text);
        if text.starts_with('"') {
            self.push_json_str(text);
        } else if text.starts_with('[') {
            let mut de = serde_json::Deserializer::from_str(text);
            let _ = Each(ItemSeed(self)).deserialize(&mut de);
        }
    }

    /// Appends every message of a chat `messages` array.
    pub(super) fn push_messages(&mut self, raw: &RawValue) -> Result<(), serde_json::Error> {
        self.reserve_for(raw.get());
        let mut de = serde_json::Deserializer::from_str(raw.get());
        Each(MessageSeed(self)).deserialize(&mut de)?;
        de.end()
    }
}

/// Decodes the escape at the start of `s` (which starts with a backslash): the character and
/// the bytes it took. The body was validated as JSON, but whatever the bytes, this never
/// panics: anything malformed decodes as U+FFFD.
fn unescape(s: &str) -> (char, usize) {
    let b = s.as_bytes();
    let hex = |from: usize| -> Option<u32> {
        let digits = s.get(from..from + 4)?;
        u32::from_str_radix(digits, 16).ok()
    };
    match b.get(1) {
        Some(b'n') => ('\n', 2),
        Some(b't') => ('\t', 2),
        Some(b'r') => ('\r', 2),
        Some(b'b') => ('\u{8}', 2),
        Some(b'f') => ('\u{c}', 2),
        Some(b'u') => match hex(2) {
            Some(hi @ 0xD800..=0xDBFF) => match (s.get(6..8), hex(8)) {
                (Some("\\u"), Some(lo @ 0xDC00..=0xDFFF)) => {
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    (char::from_u32(c).unwrap_or('\u{fffd}'), 12)
                }
                _ => ('\u{fffd}', 6),
            },
            Some(c) => (char::from_u32(c).unwrap_or('\u{fffd}'), 6),
            None => ('\u{fffd}', 2),
        },
        // `\"`, `\\`, `\/`; anything else is not JSON and is kept as the character.
        Some(&c) if c.is_ascii() => (char::from(c), 2),
        _ => ('\u{fffd}', 1),
    }
}

/// Visits each element of an array with a seed, one at a time.
struct Each<S>(S);

impl<'de, S> DeserializeSeed<'de> for Each<S>
where
    S: Reseed<'de>,
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S> Visitor<'de> for Each<S>
where
    S: Reseed<'de>,
{
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.0.reseed())?.is_some() {}
        Ok(())
    }
}

/// A seed that can be made again for the next element.
trait Reseed<'de> {
    type Seed<'s>: DeserializeSeed<'de, Value = ()>
    where
        Self: 's;
    fn reseed(&mut self) -> Self::Seed<'_>;
}

/// One chat message.
struct MessageSeed<'r>(&'r mut Renderer);
/// One content part.
struct PartSeed<'r>(&'r mut Renderer);
/// One item of a prompt array.
struct ItemSeed<'r>(&'r mut Renderer);

/// Each seed holds only the renderer, and reseeds by reborrowing it.
macro_rules! reseed {
    ($($seed:ident),*) => {$(
        impl<'de> Reseed<'de> for $seed<'_> {
            type Seed<'s>
                = $seed<'s>
            where
                Self: 's;
            fn reseed(&mut self) -> $seed<'_> {
                $seed(&mut *self.0)
            }
        }
    )*};
}

reseed!(MessageSeed, PartSeed, ItemSeed);

/// The keys of a message or content part the renderer reads; any other is skipped.
enum Key {
    Role,
    Content,
    Text,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "role" => Key::Role,
                    "content" => Key::Content,
                    "text" => Key::Text,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chat message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut role: Option<Option<&'de RawValue>> = None;
        let mut content: Option<Option<&'de RawValue>> = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Role if role.is_some() => return Err(de::Error::duplicate_field("role")),
                Key::Content if content.is_some() => {
                    return Err(de::Error::duplicate_field("content"))
                }
                Key::Role => {
                    let raw: &'de RawValue = map.next_value()?;
                    let text = raw.get();
                    if !(text.starts_with('"') || text == "null") {
                        return Err(de::Error::invalid_type(
                            de::Unexpected::Other(text.get(..1).unwrap_or("")),
                            &"a string",
                        ));
                    }
                    role = Some(Some(raw).filter(|r| r.get() != "null"));
                }
                Key::Content => content = Some(Some(map.next_value()?)),
                Key::Text | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.0.push_message(role.flatten(), content.flatten());
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for PartSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PartSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a content part")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            if let Key::Text = key {
                let raw: &'de RawValue = map.next_value()?;
                if raw.get().starts_with('"') {
                    self.0.push_json_str(raw.get());
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    // A part that is not an object contributes nothing.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| ())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let raw: &'de RawValue = de::Deserialize::deserialize(d)?;
        let text = raw.get();
        if text.starts_with('"') {
            self.0.push_json_str(text);
        } else if text.starts_with('[') {
            // An array of token ids: counted without keeping them.
            let mut de = serde_json::Deserializer::from_str(text);
            let mut n = 0usize;
            let _ = Counter(&mut n).deserialize(&mut de);
            self.0.token_ids = self.0.token_ids.saturating_add(n);
        } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            self.0.token_ids = self.0.token_ids.saturating_add(1);
        }
        Ok(())
    }
}

/// Counts an array's elements, skipping each.
struct Counter<'n>(&'n mut usize);

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {
            *self.0 += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(json_string: &str, cap: usize) -> (String, usize) {
        let mut r = Renderer::new(cap);
        r.push_json_str(json_string);
        (r.text, r.total)
    }

    #[test]
    fn unescapes_as_serde_json_does() {
        for s in [
            r#""plain""#,
            r#""a\"b\\c\/d\ne\tf\rg\bh\fi""#,
            r#""\u00e9t\u00e9 \ud83d\ude00 \u4e2d""#,
            r#""""#,
        ] {
            let want: String = serde_json::from_str(s).unwrap();
            assert_eq!(rendered(s, usize::MAX), (want.clone(), want.len()), "{s}");
        }
        // A lone surrogate (serde_json refuses it) becomes U+FFFD.
        assert_eq!(rendered(r#""a\ud800b""#, 100).0, "a\u{fffd}b");
    }

    #[test]
    fn text_stops_at_the_cap_on_a_char_boundary_and_the_rest_is_counted() {
        let (text, total) = rendered(r#""abc\u00e9def""#, 4);
        assert_eq!((text.as_str(), total), ("abc", 8));
        // Nothing is appended after a cut, even what would fit.
        let mut r = Renderer::new(4);
        r.push("abcé");
        r.push("x");
        assert_eq!((r.text.as_str(), r.total), ("abc", 6));
    }
}
