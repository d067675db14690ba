//! `routes:` — what a client asks for, mapped to pools: aliases, then rules matched in order,
//! each sending to one pool or splitting between several, and optionally mirroring a share to
//! a shadow pool. Matching itself is [`crate::routes`]; this module reads and checks the file.
//!
//! ```yaml
//! routes:
//!   aliases:
//!     gpt-4o: llama-70b              # a name clients use -> a pool
//!   region_header: x-region          # the header `region:` reads (this is the default)
//!   rules:
//!     - name: long-prompts
//!       when: { prompt_tokens: { above: 6000 } }
//!       to: llama-long
//!     - name: research
//!       when: { header: { x-team: research }, model: "gpt-*" }
//!       split: [ { to: llama-70b, weight: 90 }, { to: llama-70b-next, weight: 10 } ]
//!       sticky: user                 # user (default) or session
//!     - name: shadow
//!       mirror: { to: llama-next, sample: 0.05 }
//!     - name: coding
//!       when: { intent: [coding] }
//!       to: qwen-coder
//!   intents:                         # semantic routing: classes by example prompts
//!     embeddings: { model: embed, timeout: 150ms, threshold: 0.35, cache: 10000 }
//!     classes:
//!       coding: ["fix this rust compile error", "write a python function that parses json"]
//!       math: ["solve the integral of x squared", "what is the derivative of sin x"]
//! ```
//!
//! Every condition of a rule's `when:` must hold (an empty `when:` matches everything).
//! Glob-valued ones take `*`, `?`, `[abc]` and `{a,b}`.

use globset::{Glob, GlobMatcher};
use http::HeaderName;
use regex::Regex;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The header `region:` conditions read when `region_header:` is not given.
pub const DEFAULT_REGION_HEADER: &str = "x-region";
/// Most rules a config may hold: each request may test them all in turn.
pub const MAX_RULES: usize = 256;

/// The validated `routes:` section.
#[derive(Debug, Clone)]
pub struct Routes {
    /// Name a client uses -> the pool that serves it.
    pub aliases: BTreeMap<String, String>,
    /// Tried in order; the first whose conditions hold decides.
    pub rules: Vec<Rule>,
    /// The header `region:` conditions read.
    pub region_header: HeaderName,
    /// Intent classes for `intent:` conditions, and the embeddings pool that classifies.
    pub intents: Option<Intents>,
    /// Raw text of the section, to tell whether a reload changed it.
    pub fingerprint: String,
}

/// One rule: when it applies and where it sends.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Shown in `x-switchyard-route` and the decision log.
    pub name: String,
    /// Every one must hold.
    pub when: When,
    /// Where matching requests go; `None`: where they would have gone (a mirror-only rule).
    pub to: Option<Target>,
    /// A share of matching requests also sent to a shadow pool, answer discarded.
    pub mirror: Option<Mirror>,
}

/// A rule's destination.
#[derive(Debug, Clone)]
pub enum Target {
    /// One pool.
    Pool(String),
    /// Weighted arms; a caller always lands on the same arm.
    Split {
        /// `(pool, weight)`, weights above 0.
        arms: Vec<(String, u32)>,
        /// What keeps a caller on one arm.
        sticky: Sticky,
    },
}

/// What a split hashes so that one caller stays on one arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    /// The body's `user`, else `x-session-id`, else the API key, else the client address.
    User,
    /// `x-session-id`, else the body's `user`, else the API key, else the client address.
    Session,
}

/// `mirror:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    /// The shadow pool.
    pub to: String,
    /// Share of matching requests copied, 0 to 1.
    pub sample: f64,
}

/// A rule's conditions; `None` / empty ones do not constrain.
#[derive(Debug, Clone, Default)]
pub struct When {
    /// Globs on the model asked for (or the pool its alias names).
    pub model: Vec<GlobMatcher>,
    /// Header name -> glob its value must match.
    pub headers: Vec<(HeaderName, GlobMatcher)>,
    /// The caller's tenant is one of these (needs `auth:`).
    pub tenant: Vec<String>,
    /// Estimated prompt tokens within this range.
    pub prompt_tokens: Option<TokenRange>,
    /// Keywords or a regex found in the last user message.
    pub content: Option<Content>,
    /// Wall-clock window.
    pub time: Option<TimeWindow>,
    /// The region header is one of these.
    pub region: Vec<String>,
    /// The message's intent class is one of these (semantic routing).
    pub intent: Vec<String>,
}

/// `prompt_tokens: {above, below}`: strictly above and strictly below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRange {
    /// Holds when the estimate is greater than this.
    #[serde(default)]
    pub above: Option<u32>,
    /// Holds when the estimate is less than this.
    #[serde(default)]
    pub below: Option<u32>,
}

/// `content:`: holds when any keyword (a whole word, any case) or the regex is found.
#[derive(Debug, Clone)]
pub struct Content {
    /// The keywords as one case-insensitive word-bounded alternation.
    pub keywords: Option<Regex>,
    /// The user's own regex.
    pub regex: Option<Regex>,
}

/// `time: {from: "22:00", to: "06:00", utc_offset: "+02:00"}`: from inclusive, to exclusive,
/// wrapping past midnight when `to` is earlier than `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Start, seconds after local midnight.
    pub from: u32,
    /// End, seconds after local midnight.
    pub to: u32,
    /// Local time minus UTC, in seconds.
    pub offset: i32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesRaw {
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    #[serde(default)]
    region_header: Option<String>,
    #[serde(default)]
    rules: Vec<RuleRead>,
    #[serde(default)]
    intents: Option<Intents>,
}

/// Most messages whose classification is remembered when `cache:` is not given.
pub const DEFAULT_INTENT_CACHE: usize = 10_000;
/// How long classifying one message may take when `timeout:` is not given.
pub const DEFAULT_INTENT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(150);

/// `routes.intents`: classes defined by example prompts, and how messages are embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct Intents {
    /// The pool that answers `/v1/embeddings`.
    pub model: String,
    /// Longest a classification may take; past it the request routes as if no class matched.
    pub timeout: std::time::Duration,
    /// Least cosine similarity to a class's centroid that counts as that class.
    pub threshold: f32,
    /// Messages whose classification is remembered (by a hash of the text).
    pub cache: usize,
    /// Class name -> its example prompts, in name order.
    pub classes: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentsRaw {
    embeddings: EmbeddingsRaw,
    classes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRaw {
    model: String,
    #[serde(default)]
    timeout: Option<super::values::Seconds>,
    #[serde(default)]
    threshold: Option<f32>,
    #[serde(default)]
    cache: Option<usize>,
}

impl<'de> Deserialize<'de> for Intents {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = IntentsRaw::deserialize(d)?;
        let e = raw.embeddings;
        let threshold = e.threshold.unwrap_or(0.5);
        if !(-1.0..=1.0).contains(&threshold) {
            return Err(de::Error::custom(format!(
                "routes.intents.embeddings.threshold {threshold} is not a cosine similarity; write a number from -1 to 1"
            )));
        }
        let timeout = e.timeout.map_or(DEFAULT_INTENT_TIMEOUT, |s| s.0);
        if timeout.is_zero() {
            return Err(de::Error::custom(
                "routes.intents.embeddings.timeout is 0; no message could be classified",
            ));
        }
        if raw.classes.is_empty() {
            return Err(de::Error::custom(
                "routes.intents.classes is empty; define at least one class by example prompts",
            ));
        }
        for (name, examples) in &raw.classes {
            if examples.iter().all(|x| x.trim().is_empty()) {
                return Err(de::Error::custom(format!(
                    "routes.intents.classes.{name} has no example prompt; give it a few"
                )));
            }
        }
        Ok(Intents {
            model: e.model,
            timeout,
            threshold,
            cache: e.cache.unwrap_or(DEFAULT_INTENT_CACHE).max(1),
            classes: raw.classes.into_iter().collect(),
        })
    }
}

impl<'de> Deserialize<'de> for Routes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RoutesRaw::deserialize(d)?;
        if raw.rules.len() > MAX_RULES {
            return Err(de::Error::custom(format!(
                "routes.rules has {} rules; at most {MAX_RULES} are allowed",
                raw.rules.len()
            )));
        }
        let mut names: Vec<&str> = Vec::new();
        for r in &raw.rules {
            if names.contains(&r.rule.name.as_str()) {
                return Err(de::Error::custom(format!(
                    "two routes.rules are named '{}'; give each rule its own name",
                    r.rule.name
                )));
            }
            names.push(&r.rule.name);
        }
        let region_header = match raw.region_header.as_deref() {
            None => HeaderName::from_static(DEFAULT_REGION_HEADER),
            Some(h) => HeaderName::try_from(h.trim()).map_err(|_| {
                de::Error::custom(format!(
                    "routes.region_header '{h}' is not a header name; write e.g. x-region"
                ))
            })?,
        };
        let classes: Vec<&str> = raw
            .intents
            .iter()
            .flat_map(|i| i.classes.iter().map(|c| c.0.as_str()))
            .collect();
        for r in &raw.rules {
            for want in &r.rule.when.intent {
                if raw.intents.is_none() {
                    return Err(de::Error::custom(format!(
                        "routes rule '{}' has an `intent:` condition but routes.intents defines no classes",
                        r.rule.name
                    )));
                }
                if !classes.contains(&want.as_str()) {
                    return Err(de::Error::custom(format!(
                        "routes rule '{}': unknown intent class '{want}'; routes.intents.classes has {}",
                        r.rule.name,
                        classes.join(", ")
                    )));
                }
            }
        }
        let fingerprint = format!(
            "{:?}|{:?}|{:?}|{:?}",
            raw.aliases,
            region_header,
            raw.rules.iter().map(|r| &r.fingerprint).collect::<Vec<_>>(),
            raw.intents
        );
        Ok(Routes {
            aliases: raw.aliases,
            rules: raw.rules.into_iter().map(|r| r.rule).collect(),
            region_header,
            intents: raw.intents,
            fingerprint,
        })
    }
}

/// A rule as read, with a printable form of itself (compiled matchers do not compare).
#[derive(Debug)]
struct RuleRead {
    rule: Rule,
    fingerprint: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRaw {
    name: String,
    #[serde(default)]
    when: WhenRaw,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    split: Option<Vec<ArmRaw>>,
    #[serde(default)]
    sticky: Option<Sticky>,
    #[serde(default)]
    mirror: Option<MirrorRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArmRaw {
    to: String,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorRaw {
    to: String,
    #[serde(default)]
    sample: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenRaw {
    #[serde(default)]
    model: OneOrMany,
    #[serde(default)]
    header: BTreeMap<String, String>,
    #[serde(default)]
    tenant: OneOrMany,
    #[serde(default)]
    prompt_tokens: Option<TokenRange>,
    #[serde(default)]
    content: Option<ContentRaw>,
    #[serde(default)]
    time: Option<TimeRaw>,
    #[serde(default)]
    region: OneOrMany,
    #[serde(default)]
    intent: OneOrMany,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentRaw {
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeRaw {
    from: String,
    to: String,
    #[serde(default)]
    utc_offset: Option<String>,
}

/// A string or a list of strings.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "OneOrManyRaw")]
struct OneOrMany(Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrManyRaw {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrManyRaw> for OneOrMany {
    fn from(r: OneOrManyRaw) -> Self {
        match r {
            OneOrManyRaw::One(s) => OneOrMany(vec![s]),
            OneOrManyRaw::Many(v) => OneOrMany(v),
        }
    }
}

impl<'de> Deserialize<'de> for RuleRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RuleRaw::deserialize(d)?;
        let fingerprint = format!("{raw:?}");
        let rule = raw.check().map_err(de::Error::custom)?;
        Ok(RuleRead { rule, fingerprint })
    }
}

impl RuleRaw {
    fn check(self) -> Result<Rule, String> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err("a routes rule has an empty name; name each rule".into());
        }
        let at = format!("routes rule '{name}'");
        let to = match (self.to, self.split) {
            (Some(_), Some(_)) => {
                return Err(format!(
                "{at} has both `to:` and `split:`; keep one (a split names its pools in its arms)"
            ))
            }
            (Some(to), None) => {
                if self.sticky.is_some() {
                    return Err(format!("{at}: `sticky:` applies to a `split:`"));
                }
                Some(Target::Pool(to))
            }
            (None, Some(arms)) => {
                if arms.len() < 2 {
                    return Err(format!("{at}: a split needs at least two arms"));
                }
                if let Some(a) = arms.iter().find(|a| a.weight == 0) {
                    return Err(format!(
                        "{at}: the arm to '{}' has weight 0; give every arm a weight above 0 or remove it",
                        a.to
                    ));
                }
                if arms.iter().map(|a| u64::from(a.weight)).sum::<u64>() > u64::from(u32::MAX) {
                    return Err(format!("{at}: the split's weights add up past 4294967295"));
                }
                Some(Target::Split {
                    arms: arms.into_iter().map(|a| (a.to, a.weight)).collect(),
                    sticky: self.sticky.unwrap_or(Sticky::User),
                })
            }
            (None, None) if self.mirror.is_some() => None,
            (None, None) => {
                return Err(format!(
                    "{at} sends nowhere; give it `to:`, `split:` or `mirror:`"
                ))
            }
        };
        let mirror = match self.mirror {
            None => None,
            Some(m) => {
                let sample = m.sample.unwrap_or(1.0);
                if !(0.0..=1.0).contains(&sample) {
                    return Err(format!(
                        "{at}: mirror.sample {sample} is not a share; write a number from 0 to 1"
                    ));
                }
                Some(Mirror { to: m.to, sample })
            }
        };
        Ok(Rule {
            when: self.when.check(&at)?,
            name,
            to,
            mirror,
        })
    }
}

impl WhenRaw {
    fn check(self, at: &str) -> Result<When, String> {
        let glob = |what: &str, g: &str| {
            Glob::new(g)
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("{at}: {what} '{g}' is not a valid glob ({e})"))
        };
        let model = self
            .model
            .0
            .iter()
            .map(|g| glob("model", g))
            .collect::<Result<_, _>>()?;
        let mut headers = Vec::new();
        for (name, value) in &self.header {
            let h = HeaderName::try_from(name.trim())
                .map_err(|_| format!("{at}: '{name}' is not a header name"))?;
            headers.push((h, glob("header value", value)?));
        }
        if let Some(r) = self.prompt_tokens {
            if r.above.is_none() && r.below.is_none() {
                return Err(format!(
                    "{at}: prompt_tokens needs `above:`, `below:` or both"
                ));
            }
            if let (Some(a), Some(b)) = (r.above, r.below) {
                if b <= a.saturating_add(1) {
                    return Err(format!(
                        "{at}: prompt_tokens above {a} and below {b} holds for no prompt"
                    ));
                }
            }
        }
        let content = match self.content {
            None => None,
            Some(c) => Some(c.check(at)?),
        };
        let time = match self.time {
            None => None,
            Some(t) => Some(t.check(at)?),
        };
        let nonempty = |what: &str, v: &[String]| match v.iter().find(|s| s.trim().is_empty()) {
            Some(_) => Err(format!("{at}: {what} has an empty entry")),
            None => Ok(()),
        };
        nonempty("tenant", &self.tenant.0)?;
        nonempty("region", &self.region.0)?;
        nonempty("intent", &self.intent.0)?;
        Ok(When {
            model,
            headers,
            tenant: self.tenant.0,
            prompt_tokens: self.prompt_tokens,
            content,
            time,
            region: self.region.0,
            intent: self.intent.0,
        })
    }
}

impl ContentRaw {
    fn check(self, at: &str) -> Result<Content, String> {
        if self.keywords.is_empty() && self.regex.is_none() {
            return Err(format!("{at}: content needs `keywords:`, `regex:` or both"));
        }
        if self.keywords.iter().any(|k| k.trim().is_empty()) {
            return Err(format!("{at}: content.keywords has an empty keyword"));
        }
        let keywords = if self.keywords.is_empty() {
            None
        } else {
            let alternation: Vec<String> = self
                .keywords
                .iter()
                .map(|k| regex::escape(k.trim()))
                .collect();
            // Not `\b`: a keyword may end in a non-word character (`c++`).
            let pattern = format!(r"(?i)(?:^|\W)(?:{})(?:\W|$)", alternation.join("|"));
            Some(Regex::new(&pattern).map_err(|e| format!("{at}: content.keywords: {e}"))?)
        };
        let regex = match self.regex {
            None => None,
            Some(r) => Some(
                regex::RegexBuilder::new(&r)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("{at}: content.regex is not a valid regex: {e}"))?,
            ),
        };
        Ok(Content { keywords, regex })
    }
}

impl TimeRaw {
    fn check(self, at: &str) -> Result<TimeWindow, String> {
        let from = clock_time(&self.from).map_err(|e| format!("{at}: time.from {e}"))?;
        let to = clock_time(&self.to).map_err(|e| format!("{at}: time.to {e}"))?;
        if from == to {
            return Err(format!(
                "{at}: time.from and time.to are both {}; the window would be empty (leave `time:` out to match all day)",
                self.from
            ));
        }
        let offset = match self.utc_offset.as_deref() {
            None => 0,
            Some(o) => utc_offset(o).map_err(|e| format!("{at}: time.utc_offset {e}"))?,
        };
        Ok(TimeWindow { from, to, offset })
    }
}

/// `HH:MM` or `HH:MM:SS` as seconds after midnight.
fn clock_time(s: &str) -> Result<u32, String> {
    let bad = || format!("'{s}' is not a time of day; write HH:MM, e.g. 22:30");
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    let num = |p: &str, max: u32| {
        p.parse::<u32>()
            .ok()
            .filter(|n| *n <= max && p.len() == 2)
            .ok_or_else(bad)
    };
    let (h, m) = (num(parts[0], 23)?, num(parts[1], 59)?);
    let sec = match parts.get(2) {
        Some(p) => num(p, 59)?,
        None => 0,
    };
    Ok(h * 3600 + m * 60 + sec)
}

/// `+02:00`, `-05:30` or `Z` as seconds.
fn utc_offset(s: &str) -> Result<i32, String> {
    let s = s.trim();
    if s == "Z" || s == "UTC" {
        return Ok(0);
    }
    let bad = || format!("'{s}' is not an offset from UTC; write e.g. +02:00 or -05:30");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let secs = clock_time(rest).map_err(|_| bad())?;
    if secs > 14 * 3600 || secs % 60 != 0 {
        return Err(bad());
    }
    Ok(sign * secs as i32)
}

impl Routes {
    /// Every pool the section names: alias targets, rule targets, split arms and mirrors,
    /// with what names it (for errors).
    pub fn pools_named(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        for (alias, pool) in &self.aliases {
            out.push((format!("routes.aliases.{alias}"), pool.as_str()));
        }
        for r in &self.rules {
            let at = format!("routes rule '{}'", r.name);
            match &r.to {
                Some(Target::Pool(p)) => out.push((format!("{at} to"), p.as_str())),
                Some(Target::Split { arms, .. }) => {
                    for (p, _) in arms {
                        out.push((format!("{at} split"), p.as_str()));
                    }
                }
                None => {}
            }
            if let Some(m) = &r.mirror {
                out.push((format!("{at} mirror"), m.to.as_str()));
            }
        }
        if let Some(i) = &self.intents {
            out.push(("routes.intents.embeddings model".into(), i.model.as_str()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_times_and_offsets_parse_and_refuse() {
        assert_eq!(clock_time("00:00"), Ok(0));
        assert_eq!(clock_time("22:30"), Ok(22 * 3600 + 1800));
        assert_eq!(clock_time("06:00:30"), Ok(6 * 3600 + 30));
        for bad in ["24:00", "7:00", "12", "12:60", "aa:bb", "12:00:00:00", ""] {
            assert!(clock_time(bad).is_err(), "{bad}");
        }
        assert_eq!(utc_offset("+02:00"), Ok(7200));
        assert_eq!(utc_offset("-05:30"), Ok(-(5 * 3600 + 1800)));
        assert_eq!(utc_offset("Z"), Ok(0));
        for bad in ["02:00", "+15:00", "+2", "x"] {
            assert!(utc_offset(bad).is_err(), "{bad}");
        }
    }
}
