//! `auth:` and `admission:` — who may call the gateway, with which limits, and how a pool
//! that is full makes requests wait.
//!
//! ```yaml
//! auth:
//!   db: /var/lib/switchyard/keys.db      # keys created at run time (admin API); optional
//!   keys:
//!     - key: ${TEAM_A_KEY}               # a literal only in tests
//!       tenant: team-a
//!       models: [llama]                  # absent: every model
//!       priority: high                   # critical, high, normal (default), low, batch
//!       rpm: 600                         # requests per minute
//!       tpm: 200000                      # prompt + output tokens per minute
//!       max_concurrent: 20
//!       expires: 2027-01-31              # a date (UTC) or unix seconds; optional
//!       budget: 25.0                     # most it may spend per period (by `price:`)
//!       budget_period: month             # or day
//!   tenants:
//!     team-a: {weight: 2, rpm: 1200, tpm: 400000, max_concurrent: 40}
//! admission:                             # a waiting room per pool when its backends are full
//!   aging: 10s
//!   max_waiting: 2000
//!   engine_queue_threshold: 8            # an engine with more waiting counts as full
//!   max_prefill_tokens: 4096             # so do this many prompt tokens awaiting a first byte
//!   tenant_prefill_share: true           # default with max_prefill_tokens: while several
//!                                        # tenants are present, each may hold only its weighted
//!                                        # share of the pool's prefill (that x backends)
//!   critical_reserve: 2                  # of each max_concurrency, kept for critical requests
//!   engine_priority: true                # tell vLLM each request's level (`priority`); needs
//!                                        # vllm serve --scheduling-policy priority
//!   model_limits:                        # per model, over every caller
//!     llama: {rpm: 6000, tpm: 2000000, max_concurrent: 200}
//!   levels:
//!     critical: {timeout: 30s, max_waiting: 1000}
//! ```
//!
//! Keys are hashed (SHA-256) as they are read: the config the server runs holds no key.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use switchyard_core::admission::{Priority, QueueSettings, RateLimitSpec};

use super::values::{EnvString, Seconds};
pub use crate::admission::spend::{Budget, Period};

/// SHA-256 of a key: how keys are stored and looked up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The hash of `key`.
    pub fn of(key: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
}

impl KeyHash {
    /// The first 6 bytes in hex: names a config key in spend records without revealing it.
    pub fn short(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyHash({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// The validated `auth:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// Keys from the config file.
    pub keys: Vec<KeySpec>,
    /// Every tenant a key may belong to, by name (configured ones and those keys name).
    pub tenants: BTreeMap<String, TenantSpec>,
    /// The SQLite file of keys created at run time, and of spend; `None`: config keys only.
    pub db: Option<PathBuf>,
}

/// One key and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// Its tenant.
    pub tenant: String,
    /// Models it may use; `None`: all.
    pub models: Option<Vec<String>>,
    /// The level of its requests (a request may lower it with `x-priority`).
    pub priority: Priority,
    /// Its own limits.
    pub limits: RateLimitSpec,
    /// Unix seconds after which it is refused; `None`: never.
    pub expires: Option<u64>,
    /// Most it may spend per period; `None`: no budget.
    pub budget: Option<Budget>,
}

/// One tenant's share and limits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TenantSpec {
    /// Relative share of service when tenants compete in a queue (1 by default).
    pub weight: f64,
    /// Limits over all its keys together.
    pub limits: RateLimitSpec,
    /// Most its keys together may spend per period; `None`: no budget.
    pub budget: Option<Budget>,
}

/// The validated `admission:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// Levels, aging, total.
    pub queue: QueueSettings,
    /// What makes a backend full besides `max_concurrency`: an engine reporting more
    /// requests waiting than `engine_queue_threshold`, prompts waiting for their first byte
    /// reaching `max_prefill_tokens`; neither by default.
    pub full_when: crate::admission::gate::FullWhen,
    /// Limits per model over every caller (`model_limits: {llama: {rpm: 600}}`).
    pub model_limits: BTreeMap<String, RateLimitSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthRaw {
    #[serde(default)]
    keys: Vec<KeyRaw>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantRaw>,
    #[serde(default)]
    db: Option<EnvString>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRaw {
    key: EnvString,
    tenant: String,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    max_concurrent: Option<u32>,
    #[serde(default)]
    expires: Option<serde_norway::Value>,
    #[serde(default)]
    budget: Option<f64>,
    #[serde(default)]
    budget_period: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TenantRaw {
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    max_concurrent: Option<u32>,
    #[serde(default)]
    budget: Option<f64>,
    #[serde(default)]
    budget_period: Option<String>,
}

/// `budget:` and `budget_period:` as written.
pub(crate) fn budget(amount: Option<f64>, period: Option<&str>) -> Result<Option<Budget>, String> {
    let period = match period {
        None => Period::Month,
        Some(p) => Period::parse(p)
            .ok_or_else(|| format!("budget_period must be day or month, got '{p}'"))?,
    };
    match amount {
        None => Ok(None),
        Some(a) if a.is_finite() && a >= 0.0 => Ok(Some(Budget { amount: a, period })),
        Some(a) => Err(format!("budget must be an amount >= 0, got {a}")),
    }
}

/// Shortest key accepted: shorter ones can be guessed.
pub const MIN_KEY_LEN: usize = 16;

/// Limits as written; zero is refused (it would refuse everything: remove the key instead).
pub(crate) fn limits(
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_concurrent: Option<u32>,
) -> Result<RateLimitSpec, String> {
    if rpm == Some(0) || tpm == Some(0) || max_concurrent == Some(0) {
        return Err(
            "rpm, tpm and max_concurrent must be at least 1 (leave one out for no limit)".into(),
        );
    }
    Ok(RateLimitSpec {
        rpm,
        tpm,
        max_concurrent,
    })
}

/// `expires:` as a date `YYYY-MM-DD` (midnight UTC) or unix seconds.
pub(crate) fn expiry(v: &serde_norway::Value) -> Result<u64, String> {
    let bad = || format!("expires must be a date like 2027-01-31 or unix seconds, got {v:?}");
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let s = v.as_str().ok_or_else(bad)?;
    let mut parts = s.trim().splitn(3, '-');
    let mut num = || parts.next().and_then(|p| p.parse::<u32>().ok());
    let (Some(y), Some(m), Some(d)) = (num(), num(), num()) else {
        return Err(bad());
    };
    if !(1970..=9999).contains(&y) {
        return Err(bad());
    }
    let days = switchyard_core::calendar::days_from_civil(i64::from(y), m, d).ok_or_else(bad)?;
    u64::try_from(days * 86_400).map_err(|_| bad())
}

impl<'de> Deserialize<'de> for Auth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = AuthRaw::deserialize(d)?;
        let mut tenants = BTreeMap::new();
        for (name, t) in raw.tenants {
            let weight = t.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                return Err(de::Error::custom(format!(
                    "auth.tenants.{name}.weight must be a number above 0, got {weight}"
                )));
            }
            let at = |e: String| de::Error::custom(format!("auth.tenants.{name}: {e}"));
            let limits = limits(t.rpm, t.tpm, t.max_concurrent).map_err(at)?;
            let budget = budget(t.budget, t.budget_period.as_deref()).map_err(at)?;
            tenants.insert(
                name,
                TenantSpec {
                    weight,
                    limits,
                    budget,
                },
            );
        }
        let mut keys: Vec<KeySpec> = Vec::with_capacity(raw.keys.len());
        for (i, k) in raw.keys.into_iter().enumerate() {
            let at = |e: String| de::Error::custom(format!("auth.keys[{i}]: {e}"));
            if k.key.0.trim().len() < MIN_KEY_LEN {
                return Err(at(format!(
                    "key is shorter than {MIN_KEY_LEN} characters; use a long random string, e.g. key: ${{TEAM_KEY}}"
                )));
            }
            let priority = match k.priority {
                None => Priority::Normal,
                Some(p) => p
                    .parse()
                    .map_err(|e: switchyard_core::admission::PriorityError| at(e.to_string()))?,
            };
            let hash = KeyHash::of(k.key.0.trim().as_bytes());
            if keys.iter().any(|o| o.hash == hash) {
                return Err(at("the same key is listed twice".into()));
            }
            tenants.entry(k.tenant.clone()).or_insert(TenantSpec {
                weight: 1.0,
                limits: RateLimitSpec::default(),
                budget: None,
            });
            keys.push(KeySpec {
                hash,
                tenant: k.tenant,
                models: k.models,
                priority,
                limits: limits(k.rpm, k.tpm, k.max_concurrent).map_err(at)?,
                expires: k.expires.as_ref().map(expiry).transpose().map_err(at)?,
                budget: budget(k.budget, k.budget_period.as_deref()).map_err(at)?,
            });
        }
        Ok(Auth {
            keys,
            tenants,
            db: raw.db.map(|p| PathBuf::from(p.0)),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdmissionRaw {
    #[serde(default)]
    aging: Option<Seconds>,
    #[serde(default)]
    max_waiting: Option<usize>,
    #[serde(default)]
    engine_queue_threshold: Option<u32>,
    #[serde(default)]
    max_prefill_tokens: Option<u64>,
    #[serde(default)]
    critical_reserve: u32,
    #[serde(default)]
    engine_priority: bool,
    #[serde(default)]
    tenant_prefill_share: Option<bool>,
    #[serde(default)]
    levels: BTreeMap<String, LevelRaw>,
    #[serde(default)]
    model_limits: BTreeMap<String, ModelLimitsRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelLimitsRaw {
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    max_concurrent: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelRaw {
    #[serde(default)]
    timeout: Option<Seconds>,
    #[serde(default)]
    max_waiting: Option<usize>,
}

impl<'de> Deserialize<'de> for Admission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = AdmissionRaw::deserialize(d)?;
        if raw.max_prefill_tokens == Some(0) {
            return Err(de::Error::custom(
                "admission.max_prefill_tokens must be at least 1: at 0 every backend would \
                 always count as full",
            ));
        }
        if raw.tenant_prefill_share == Some(true) && raw.max_prefill_tokens.is_none() {
            return Err(de::Error::custom(
                "admission.tenant_prefill_share needs admission.max_prefill_tokens: the share \
                 is of the pool's prefill budget, which that sets per backend",
            ));
        }
        let mut queue = QueueSettings::default();
        if let Some(a) = raw.aging {
            queue.aging = a.0;
        }
        if let Some(n) = raw.max_waiting {
            queue.max_total = n;
        }
        for (name, level) in raw.levels {
            let p: Priority =
                name.parse()
                    .map_err(|e: switchyard_core::admission::PriorityError| {
                        de::Error::custom(format!("admission.levels: {e}"))
                    })?;
            let l = &mut queue.levels[p.index()];
            if let Some(t) = level.timeout {
                l.timeout = t.0;
            }
            if let Some(n) = level.max_waiting {
                l.max_len = n;
            }
        }
        let mut model_limits = BTreeMap::new();
        for (model, l) in raw.model_limits {
            let spec = limits(l.rpm, l.tpm, l.max_concurrent)
                .map_err(|e| de::Error::custom(format!("admission.model_limits.{model}: {e}")))?;
            model_limits.insert(model, spec);
        }
        Ok(Admission {
            queue,
            full_when: crate::admission::gate::FullWhen {
                engine_queue_threshold: raw.engine_queue_threshold,
                max_prefill_tokens: raw.max_prefill_tokens,
                critical_reserve: raw.critical_reserve,
                engine_priority: raw.engine_priority,
                tenant_share: raw.tenant_prefill_share.unwrap_or(true),
            },
            model_limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_become_unix_seconds() {
        let v = |s: &str| serde_norway::Value::String(s.into());
        assert_eq!(expiry(&v("1970-01-01")), Ok(0));
        assert_eq!(expiry(&v("2000-03-01")), Ok(951_868_800));
        assert_eq!(expiry(&v("2027-01-31")), Ok(1_801_353_600));
        assert!(expiry(&v("2027-13-01")).is_err());
        assert!(
            expiry(&v("2027-02-30")).is_err(),
            "a day the month does not have"
        );
        assert!(expiry(&v("tomorrow")).is_err());
    }
}
