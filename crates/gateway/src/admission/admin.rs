//! The admin API's keys calls (under `/admin/keys`), and loading stored keys at start.
//!
//! | request | does |
//! |---|---|
//! | `GET /admin/keys` | every run-time key: id, prefix, tenant, models, priority, limits, expiry, revoked |
//! | `POST /admin/keys` | creates one; body `{"tenant": ..., "models": [...], "priority": ..., "rpm": ..., "tpm": ..., "max_concurrent": ..., "expires": ..., "budget": ..., "budget_period": "day"}`; the answer holds the key, shown this once |
//! | `DELETE /admin/keys/{id}` | revokes it at once |
//! | `POST /admin/keys/{id}/rotate` | a new key with the same settings (its budget counts what the old one spent); the old one is revoked |
//! | `GET /admin/keys/spend` | recorded spend per UTC day, scope (`key:<id>`, `tenant:<name>`) and model |

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use switchyard_core::admission::Priority;

use super::keys::{KeyRecord, Keys};
use super::store::{NewKey, Store, StoredKey};
use crate::error::ApiError;
use crate::gateway::Snapshot;

/// Puts the store's usable keys in the in-memory table; keys of tenants no longer
/// configured are left out (and logged).
pub fn load_stored(keys: &Keys, store: &Store, now: Duration) {
    match store.usable() {
        Ok(rows) => {
            for (hash, row) in rows {
                match record(keys, store, &row, now) {
                    Some(r) => keys.insert(hash, r),
                    None => {
                        tracing::warn!(id = row.id, tenant = %row.tenant, "stored key's tenant is not configured; the key is not usable")
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read the key store"),
    }
}

/// The in-memory record of a stored key; its budget starts from what it (and the keys it
/// replaced by rotation) spent in the current period.
fn record(keys: &Keys, store: &Store, row: &StoredKey, now: Duration) -> Option<KeyRecord> {
    let tenant = keys.tenant_id(&row.tenant)?;
    let mut r = KeyRecord::new(
        Some(row.id),
        tenant,
        row.models.clone(),
        row.priority(),
        row.limits(),
        row.expires,
        now,
    );
    r.budget = row.budget().map(|b| {
        let unix = unix_now();
        let spent: f64 = store
            .lineage(row.id)
            .iter()
            .map(|scope| super::spend::spent_in(store.conn(), scope, b.period, unix))
            .sum();
        super::spend::Spent::new(b, spent, unix)
    });
    Some(r)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn store_err(e: rusqlite::Error) -> ApiError {
    ApiError::KeyStore(e.to_string())
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam {
        param,
        message: message.into(),
    }
}

/// Checks a new key's settings against the running config.
fn check(snap: &Snapshot, keys: &Keys, k: &NewKey) -> Result<(Priority, Option<u64>), ApiError> {
    if keys.tenant_id(&k.tenant).is_none() {
        let known: Vec<&str> = keys.tenants.iter().map(|t| t.name.as_str()).collect();
        return Err(invalid(
            "tenant",
            format!(
                "unknown tenant '{}'; configured tenants: {}",
                k.tenant,
                known.join(", ")
            ),
        ));
    }
    if let Some(m) = k
        .models
        .iter()
        .flatten()
        .find(|m| !snap.model_names.contains(m))
    {
        return Err(invalid("models", format!("unknown model '{m}'")));
    }
    let priority = match &k.priority {
        None => Priority::Normal,
        Some(p) => p
            .parse()
            .map_err(|e: switchyard_core::admission::PriorityError| {
                invalid("priority", e.to_string())
            })?,
    };
    crate::config::auth::limits(k.rpm, k.tpm, k.max_concurrent)
        .map_err(|e| invalid("limits", e))?;
    crate::config::auth::budget(k.budget, k.budget_period.as_deref())
        .map_err(|e| invalid("budget", e))?;
    let expires = match &k.expires {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| invalid("expires", "unix seconds must be a whole number"))?,
        ),
        Some(serde_json::Value::String(s)) => Some(
            crate::config::auth::expiry(&serde_norway::Value::String(s.clone()))
                .map_err(|e| invalid("expires", e))?,
        ),
        Some(_) => return Err(invalid("expires", "a date like 2027-01-31 or unix seconds")),
    };
    Ok((priority, expires))
}

/// `GET /admin/queues`: per model, requests waiting at each level (empty without
/// `admission:`).
pub fn queues(snap: &Snapshot) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(adm) = snap.admission.as_ref() {
        for name in &snap.model_names {
            if let Some(gate) = adm.gate(name) {
                let levels: serde_json::Map<String, serde_json::Value> = Priority::ALL
                    .iter()
                    .map(|p| (p.name().to_owned(), json!(gate.waiting(*p))))
                    .collect();
                out.insert(name.clone(), serde_json::Value::Object(levels));
            }
        }
    }
    json!({ "queues": out })
}

/// Answers `/admin/keys...`: `segs` are the path segments after `admin`, `body` the request
/// body (read by the caller).
pub fn route(
    snap: &Snapshot,
    method: &Method,
    segs: &[&str],
    body: &Bytes,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let Some(adm) = snap.admission.as_ref() else {
        return Err(ApiError::KeyStore(
            "auth is not configured (no `auth:` section)".into(),
        ));
    };
    let (Some(keys), Some(store)) = (adm.keys.as_ref(), adm.store.as_ref()) else {
        return Err(ApiError::KeyStore(
            "no key store: set `auth.db` to a file path to create keys at run time".into(),
        ));
    };
    let store = store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = snap.now();
    let id = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| invalid("id", format!("'{s}' is not a key id")))
    };
    match (segs, method) {
        (["spend"], &Method::GET) => Ok((
            StatusCode::OK,
            json!({"spend": super::spend::rows(store.conn()).map_err(store_err)?}),
        )),
        ([], &Method::GET) => Ok((
            StatusCode::OK,
            json!({"keys": store.list().map_err(store_err)?}),
        )),
        ([], &Method::POST) => {
            let settings: NewKey =
                serde_json::from_slice(body).map_err(|e| invalid("body", e.to_string()))?;
            let (priority, expires) = check(snap, keys, &settings)?;
            let (row, key, hash) = store
                .create(&settings, (priority, expires, None), unix_now())
                .map_err(store_err)?;
            if let Some(r) = record(keys, &store, &row, now) {
                keys.insert(hash, r);
            }
            tracing::info!(id = row.id, tenant = %row.tenant, "API key created");
            Ok((StatusCode::CREATED, json!({"key": key, "info": row})))
        }
        ([one], &Method::DELETE) => {
            let id = id(one)?;
            let was = store.revoke(id, unix_now()).map_err(store_err)?;
            keys.remove_id(id);
            if !was && store.get(id).map_err(store_err)?.is_none() {
                return Err(invalid("id", format!("no key {id}")));
            }
            tracing::info!(id, "API key revoked");
            Ok((StatusCode::OK, json!({"revoked": id})))
        }
        ([one, "rotate"], &Method::POST) => {
            let id = id(one)?;
            let Some(old) = store
                .get(id)
                .map_err(store_err)?
                .filter(|k| k.revoked.is_none())
            else {
                return Err(invalid("id", format!("no usable key {id}")));
            };
            let settings = NewKey {
                tenant: old.tenant.clone(),
                name: old.name.clone(),
                models: old.models.clone(),
                priority: Some(old.priority.clone()),
                rpm: old.rpm,
                tpm: old.tpm,
                max_concurrent: old.max_concurrent,
                expires: None,
                budget: old.budget,
                budget_period: old.budget_period.clone(),
            };
            let (row, key, hash) = store
                .create(
                    &settings,
                    (old.priority(), old.expires, Some(id)),
                    unix_now(),
                )
                .map_err(store_err)?;
            store.revoke(id, unix_now()).map_err(store_err)?;
            // The old key's spend in this period moves with it: from memory, which also holds
            // what the writer has not stored yet (after a restart, `lineage` reads it back).
            let carried = keys.spent_by_id(id, unix_now());
            keys.remove_id(id);
            if let Some(mut r) = record(keys, &store, &row, now) {
                if let (Some(b), Some(spent)) = (row.budget(), carried) {
                    r.budget = Some(super::spend::Spent::new(b, spent, unix_now()));
                }
                keys.insert(hash, r);
            }
            tracing::info!(old = id, new = row.id, "API key rotated");
            Ok((
                StatusCode::CREATED,
                json!({"key": key, "info": row, "revoked": id}),
            ))
        }
        _ => Err(ApiError::NotFound {
            method: method.to_string(),
            path: format!("/admin/keys/{}", segs.join("/")),
        }),
    }
}
