//! The key table the request path reads: every usable key by its SHA-256, with its tenant,
//! models, priority, expiry and live rate limits; and the configured tenants with theirs.
//!
//! Config keys are loaded once; keys created at run time come from the [`super::store`] at
//! start and are added or removed here as the admin API changes them, so a request costs one
//! SHA-256 and one hash lookup under a read lock, never a database read; and on a kept-alive
//! connection that presents the same key again, one constant-time comparison ([`KeyMemo`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq;
use switchyard_core::admission::{Priority, RateLimit, RateLimitSpec, TenantId};

use super::spend::Spent;
use crate::config::auth::{Auth, Budget, KeyHash, KeySpec};

/// One usable key.
#[derive(Debug)]
pub struct KeyRecord {
    /// The store's id for run-time keys; `None` for config keys.
    pub id: Option<i64>,
    /// Its tenant.
    pub tenant: TenantId,
    /// Models it may use; `None`: all.
    pub models: Option<Vec<String>>,
    /// Its requests' level.
    pub priority: Priority,
    /// Unix seconds after which it is refused.
    pub expires: Option<u64>,
    /// Its live limits; `None` when it has none.
    pub limits: Option<Mutex<RateLimit>>,
    /// What its spend is recorded under: `key:<id>` for run-time keys, `key:<hash prefix>`
    /// for config keys.
    pub scope: String,
    /// Its budget and what it spent; `None`: no budget.
    pub budget: Option<Spent>,
}

impl KeyRecord {
    /// A record for `spec`'s settings at gateway time `now`.
    pub fn new(
        id: Option<i64>,
        tenant: TenantId,
        models: Option<Vec<String>>,
        priority: Priority,
        limits: RateLimitSpec,
        expires: Option<u64>,
        now: Duration,
    ) -> Self {
        Self {
            id,
            tenant,
            models,
            priority,
            expires,
            limits: limits
                .is_set()
                .then(|| Mutex::new(RateLimit::new(limits, now))),
            scope: id.map(|i| format!("key:{i}")).unwrap_or_default(),
            budget: None,
        }
    }

    /// Whether it may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }
}

/// One configured tenant.
#[derive(Debug)]
pub struct Tenant {
    /// Its name (metric label, admin API).
    pub name: String,
    /// Its share in queues.
    pub weight: f64,
    /// Limits over all its keys; `None` when it has none.
    pub limits: Option<Mutex<RateLimit>>,
    /// Its budget and what it spent; `None`: no budget.
    pub budget: Option<Spent>,
    /// Its metric series.
    pub series: super::metrics::TenantSeries,
}

/// Hashes a [`KeyHash`] by its first eight bytes: it is a SHA-256 digest already, as evenly
/// spread as any hash of it would be, so hashing it again (SipHash over 32 bytes) only cost
/// every request time.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes its length, then its bytes: keep the first eight bytes of the
        // digest (mixed with anything written before, so other uses still hash).
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
    }
}

/// Builds [`DigestHasher`]s.
pub type BuildDigestHasher = std::hash::BuildHasherDefault<DigestHasher>;

/// Keys and tenants.
#[derive(Debug)]
pub struct Keys {
    /// Usable keys by hash.
    table: RwLock<HashMap<KeyHash, Arc<KeyRecord>, BuildDigestHasher>>,
    /// The table's version: a stamp no other table or version has, taken anew whenever
    /// `table` changes, so a [`KeyMemo`] made under another (an older version, or the table
    /// a reload replaced) is never used.
    version: AtomicU64,
    /// Tenants; the index is the [`TenantId`].
    pub tenants: Vec<Tenant>,
}

impl Keys {
    /// The config's keys and tenants, at gateway time `now`; budgets start from what
    /// `spend` (the store, if any) says was spent in their current period.
    pub fn from_config(
        auth: &Auth,
        now: Duration,
        spend: Option<&rusqlite::Connection>,
        metrics: &super::metrics::AdmissionMetrics,
    ) -> Self {
        let unix = super::unix_now();
        let spent = |scope: &str, b: Budget| {
            let already = spend.map_or(0.0, |c| super::spend::spent_in(c, scope, b.period, unix));
            Spent::new(b, already, unix)
        };
        let tenants: Vec<Tenant> = auth
            .tenants
            .iter()
            .map(|(name, t)| Tenant {
                name: name.clone(),
                weight: t.weight,
                limits: t
                    .limits
                    .is_set()
                    .then(|| Mutex::new(RateLimit::new(t.limits, now))),
                budget: t.budget.map(|b| spent(&format!("tenant:{name}"), b)),
                series: metrics.tenant(name),
            })
            .collect();
        let keys = Self {
            table: RwLock::new(HashMap::default()),
            version: AtomicU64::new(next_stamp()),
            tenants,
        };
        for k in &auth.keys {
            let KeySpec {
                hash,
                tenant,
                models,
                priority,
                limits,
                expires,
                budget,
            } = k;
            let Some(t) = keys.tenant_id(tenant) else {
                continue; // every key's tenant is in the map (the parser adds it)
            };
            let mut record =
                KeyRecord::new(None, t, models.clone(), *priority, *limits, *expires, now);
            record.scope = format!("key:{}", hash.short());
            record.budget = budget.map(|b| spent(&record.scope, b));
            keys.insert(*hash, record);
        }
        keys
    }

    /// The tenant named `name`, if configured.
    pub fn tenant_id(&self, name: &str) -> Option<TenantId> {
        self.tenants
            .iter()
            .position(|t| t.name == name)
            .and_then(|i| u32::try_from(i).ok())
            .map(TenantId)
    }

    /// The tenant `id`.
    pub fn tenant(&self, id: TenantId) -> Option<&Tenant> {
        self.tenants.get(id.0 as usize)
    }

    /// Tenants' weights by [`TenantId`], for queues.
    pub fn weights(&self) -> Vec<f64> {
        self.tenants.iter().map(|t| t.weight).collect()
    }

    /// The usable key presented as `key`, if any.
    pub fn find(&self, key: &[u8]) -> Option<Arc<KeyRecord>> {
        let hash = KeyHash::of(key);
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
            .cloned()
    }

    /// The usable key presented as `key`, remembered in `memo` (one connection's): a
    /// connection that presents the same key again skips the SHA-256 and the table, as long
    /// as the table is the same version.
    pub fn find_memo(&self, key: &[u8], memo: &KeyMemo) -> Option<Arc<KeyRecord>> {
        let mut last = memo
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Read before the lookup: a change after it gives the table a version the memo lacks.
        let version = self.version.load(Ordering::Acquire);
        if let Some(m) = last.as_ref() {
            if m.version == version && same_key(&m.presented, key) {
                return Some(m.record.clone());
            }
        }
        let record = self.find(key)?;
        *last = Some(Memo {
            presented: key.to_vec(),
            version,
            record: record.clone(),
        });
        Some(record)
    }

    /// Makes a key usable.
    pub fn insert(&self, hash: KeyHash, record: KeyRecord) {
        let mut t = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.insert(hash, Arc::new(record));
        self.version.store(next_stamp(), Ordering::Release);
    }

    /// What the usable key `id` spent in its budget's current period at `unix`, if it has a
    /// budget.
    pub fn spent_by_id(&self, id: i64, unix: u64) -> Option<f64> {
        let t = self
            .table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.values()
            .find(|r| r.id == Some(id))
            .and_then(|r| r.budget.as_ref())
            .map(|b| b.spent(unix))
    }

    /// Makes the run-time key `id` unusable; whether it was usable.
    pub fn remove_id(&self, id: i64) -> bool {
        let mut t = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = t.len();
        t.retain(|_, r| r.id != Some(id));
        self.version.store(next_stamp(), Ordering::Release);
        t.len() != before
    }
}

/// The key one connection presented last, and what it was: clients send the same key on
/// every request of a kept-alive connection, and this spares each one after the first the
/// SHA-256 and the table lookup. The bytes are compared in constant time, as a connection may
/// carry several callers' requests (a proxy in front). Held by the connection; gone with it.
#[derive(Default)]
pub struct KeyMemo {
    last: Mutex<Option<Memo>>,
}

impl std::fmt::Debug for KeyMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMemo") // never the key
    }
}

struct Memo {
    presented: Vec<u8>,
    version: u64,
    record: Arc<KeyRecord>,
}

/// Whether `a` and `b` are the same bytes, in time that depends on their length only: the
/// differences of every byte pair are gathered (a fold the compiler vectorises), then
/// compared to zero once.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    bool::from(diff.ct_eq(&0))
}

/// A key table version no table has had (see [`Keys`]'s `version`).
fn next_stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The header Anthropic-style clients present their key in.
const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// A key as a request presented it: the header's value, and where the key starts in it.
#[derive(Debug)]
pub struct Presented {
    value: http::HeaderValue,
    skip: usize,
}

impl Presented {
    /// The key's bytes.
    pub fn key(&self) -> &[u8] {
        self.value.as_bytes()[self.skip..].trim_ascii()
    }
}

/// Takes the key a request presents out of `headers`: `Authorization: Bearer <key>`, else
/// `x-api-key: <key>`. The header goes whether or not it holds a key: it is the gateway's,
/// and no backend is to see it (a backend's own key is its `api_key`). `None`: no key.
pub fn take_presented(headers: &mut http::HeaderMap) -> Option<Presented> {
    let found = match headers.remove(http::header::AUTHORIZATION) {
        Some(value) => {
            let bearer = value
                .as_bytes()
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "));
            bearer.then_some(Presented { value, skip: 7 })
        }
        None => headers
            .remove(X_API_KEY)
            .map(|value| Presented { value, skip: 0 }),
    };
    found.filter(|p| !p.key().is_empty())
}

#[cfg(test)]
mod tests {
    use super::same_key;

    #[test]
    fn same_key_compares_every_byte_and_the_length() {
        let key = b"sk-0123456789abcdef-0123456789";
        assert!(same_key(key, key));
        for i in 0..key.len() {
            let mut other = *key;
            other[i] ^= 1;
            assert!(!same_key(key, &other), "byte {i} differs");
        }
        assert!(!same_key(key, &key[..key.len() - 1]));
        assert!(same_key(b"", b""));
    }
}
