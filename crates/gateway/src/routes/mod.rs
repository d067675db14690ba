//! Routes: which pool serves a request, from what it asked for and who asked. Aliases rename a
//! model; rules, tried in order, match on the model, headers, tenant, prompt size, the last
//! user message's words or intent, the time of day and the region, and send to one pool or
//! split between several, each caller always on the same arm. A rule may also mirror a share
//! of its requests to a shadow pool ([`mirror`]).
//!
//! Matching reads only what it is given (the wall-clock second is a parameter) and never
//! blocks, except for an intent condition, which asks the classifier once per request, and only
//! when a rule with one is reached with its other conditions holding.

pub mod metrics;
pub mod mirror;
pub mod semantic;
#[cfg(test)]
mod tests;

use http::HeaderMap;
use std::fmt::Write;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use switchyard_core::RequestProfile;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::routes::{Mirror, Routes, Rule, Sticky, Target, TimeWindow, When};

/// Seconds in a day.
const DAY: i64 = 86_400;

/// What is known of who asked, besides the request's profile.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// Its headers as the client sent them.
    pub headers: &'a HeaderMap,
    /// Its API key's tenant, when auth is on.
    pub tenant: Option<&'a str>,
    /// Something that names its API key (for a split's stickiness), when auth is on.
    pub key: Option<&'a str>,
    /// The client's address.
    pub client: IpAddr,
    /// Wall-clock seconds since the Unix epoch (UTC).
    pub unix_secs: u64,
}

/// How a request was routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<'a> {
    /// The pool that serves it.
    pub pool: &'a str,
    /// Why that pool.
    pub how: How<'a>,
    /// Where a copy goes, if this request is mirrored.
    pub mirror: Option<&'a str>,
    /// The message's intent class, when a rule asked for it.
    pub intent: Option<Arc<str>>,
}

/// Why a request went to its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How<'a> {
    /// No alias or rule applied: the pool it named.
    Direct,
    /// An alias named the pool.
    Alias,
    /// A rule sent it there; `arm` is the split arm's index when the rule splits.
    Rule {
        /// The rule's name.
        name: &'a str,
        /// The arm of a split.
        arm: Option<usize>,
    },
}

impl Routed<'_> {
    /// For `x-switchyard-route`: `route: rule=<name> [arm=<i>] [intent=<c>] pool=<p> [mirror=<m>]`;
    /// `None` for a request that went where it asked.
    pub fn explain(&self) -> Option<String> {
        let mut s = String::from("route:");
        match self.how {
            How::Direct if self.mirror.is_none() && self.intent.is_none() => return None,
            How::Direct => {}
            How::Alias => s.push_str(" alias"),
            How::Rule { name, arm } => {
                let _ = write!(s, " rule={name}");
                if let Some(arm) = arm {
                    let _ = write!(s, " arm={arm}");
                }
            }
        }
        if let Some(i) = &self.intent {
            let _ = write!(s, " intent={i}");
        }
        let _ = write!(s, " pool={}", self.pool);
        if let Some(m) = self.mirror {
            let _ = write!(s, " mirror={m}");
        }
        Some(s)
    }
}

impl Routes {
    /// The pool for `asked`, by its aliases and rules. `classify` gives the intent class of the
    /// last user message; it is called at most once, and only if a rule needs it.
    pub async fn resolve<'a, F, Fut>(
        &'a self,
        profile: &'a RequestProfile,
        asked: &Asked<'_>,
        request_id: &[u8],
        classify: F,
    ) -> Routed<'a>
    where
        F: FnOnce(&'a str) -> Fut,
        Fut: Future<Output = Option<Arc<str>>>,
    {
        let model = profile.model.as_str();
        let aliased = self.aliases.get(model).map(String::as_str);
        let mut classify = Some(classify);
        let mut intent: Option<Option<Arc<str>>> = None;
        let mut mirror: Option<&'a Mirror> = None;
        for rule in &self.rules {
            if !holds(&rule.when, profile, asked, aliased, &self.region_header) {
                continue;
            }
            if !rule.when.intent.is_empty() {
                let class = match (&intent, classify.take()) {
                    (Some(known), _) => known.clone(),
                    (None, Some(f)) => {
                        let got = f(profile.last_user_text()).await;
                        intent = Some(got.clone());
                        got
                    }
                    (None, None) => None,
                };
                if !class.is_some_and(|c| rule.when.intent.iter().any(|i| **i == *c)) {
                    continue;
                }
            }
            if mirror.is_none() {
                mirror = rule.mirror.as_ref().filter(|m| sampled(m, request_id));
            }
            let Some(to) = &rule.to else {
                continue; // a mirror-only rule: matching goes on
            };
            let (pool, arm) = match to {
                Target::Pool(p) => (p.as_str(), None),
                Target::Split { arms, sticky } => {
                    let key = sticky_key(*sticky, profile, asked);
                    let i = arm_for(&rule.name, key.as_bytes(), arms);
                    (arms[i].0.as_str(), Some(i))
                }
            };
            return Routed {
                pool,
                how: How::Rule {
                    name: &rule.name,
                    arm,
                },
                mirror: mirror.map(|m| m.to.as_str()),
                intent: intent.flatten(),
            };
        }
        Routed {
            pool: aliased.unwrap_or(model),
            how: if aliased.is_some() {
                How::Alias
            } else {
                How::Direct
            },
            mirror: mirror.map(|m| m.to.as_str()),
            intent: intent.flatten(),
        }
    }

    /// Whether any rule has an intent condition (so a classifier is worth building).
    pub fn uses_intents(&self) -> bool {
        self.rules.iter().any(|r| !r.when.intent.is_empty())
    }

    /// The rule named `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Whether every condition of `when` but the intent holds.
fn holds(
    when: &When,
    p: &RequestProfile,
    asked: &Asked<'_>,
    aliased: Option<&str>,
    region_header: &http::HeaderName,
) -> bool {
    if !when.model.is_empty()
        && !when
            .model
            .iter()
            .any(|g| g.is_match(&p.model) || aliased.is_some_and(|a| g.is_match(a)))
    {
        return false;
    }
    for (name, glob) in &when.headers {
        let value = asked.headers.get(name).and_then(|v| v.to_str().ok());
        if !value.is_some_and(|v| glob.is_match(v)) {
            return false;
        }
    }
    if !when.tenant.is_empty()
        && !asked
            .tenant
            .is_some_and(|t| when.tenant.iter().any(|w| w == t))
    {
        return false;
    }
    if let Some(r) = when.prompt_tokens {
        let n = p.estimated_input_tokens;
        if r.above.is_some_and(|a| n <= a) || r.below.is_some_and(|b| n >= b) {
            return false;
        }
    }
    if !when.region.is_empty() {
        let value = asked
            .headers
            .get(region_header)
            .and_then(|v| v.to_str().ok());
        if !value.is_some_and(|v| when.region.iter().any(|r| r.eq_ignore_ascii_case(v.trim()))) {
            return false;
        }
    }
    if let Some(w) = when.time {
        if !in_window(w, asked.unix_secs) {
            return false;
        }
    }
    if let Some(c) = &when.content {
        let text = p.last_user_text();
        let found = c.keywords.as_ref().is_some_and(|k| k.is_match(text))
            || c.regex.as_ref().is_some_and(|r| r.is_match(text));
        if !found {
            return false;
        }
    }
    true
}

/// Whether `unix_secs` falls in the window, in the window's local time.
pub fn in_window(w: TimeWindow, unix_secs: u64) -> bool {
    let utc = (unix_secs % DAY as u64) as i64;
    let local = (utc + i64::from(w.offset)).rem_euclid(DAY) as u32;
    if w.from < w.to {
        (w.from..w.to).contains(&local)
    } else {
        local >= w.from || local < w.to
    }
}

/// What keeps a caller on one arm of a split.
fn sticky_key(sticky: Sticky, profile: &RequestProfile, asked: &Asked<'_>) -> String {
    let user = profile.user.as_deref().filter(|u| !u.is_empty());
    let session = asked
        .headers
        .get(crate::forward::X_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty());
    let (first, second) = match sticky {
        Sticky::User => (user, session),
        Sticky::Session => (session, user),
    };
    match first.or(second).or(asked.key) {
        Some(k) => k.to_owned(),
        None => asked.client.to_string(),
    }
}

/// The arm of `arms` for `key`: a hash of the rule's name and the key, spread over the
/// weights, so a key always lands on the same arm and keys split by weight.
pub fn arm_for(rule: &str, key: &[u8], arms: &[(String, u32)]) -> usize {
    let total: u64 = arms.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut seeded = Vec::with_capacity(rule.len() + 1 + key.len());
    seeded.extend_from_slice(rule.as_bytes());
    seeded.push(0);
    seeded.extend_from_slice(key);
    let point = ((u128::from(xxh3_64(&seeded)) * u128::from(total)) >> 64) as u64;
    let mut upto = 0;
    for (i, (_, w)) in arms.iter().enumerate() {
        upto += u64::from(*w);
        if point < upto {
            return i;
        }
    }
    arms.len() - 1
}

/// Whether this request is in the mirror's sample (by its id, so the choice is reproducible).
fn sampled(m: &Mirror, request_id: &[u8]) -> bool {
    if m.sample >= 1.0 {
        return true;
    }
    let u = (xxh3_64(request_id) >> 11) as f64 / (1u64 << 53) as f64;
    u < m.sample
}
