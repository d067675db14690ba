//! The permit an admitted request holds until its response body ends: it reads the
//! response's usage on the way ([`super::usage::Meter`]), reconciles token buckets and
//! budgets with it, and at the end gives back the key's, tenant's and model's concurrency
//! slots and lets the pool's next waiting request go.

use std::sync::{Arc, Mutex};
use switchyard_core::admission::TenantId;

use super::gate::Gate;
use super::keys::KeyRecord;
use super::{spend, unix_now, usage};
use crate::gateway::Snapshot;

/// What an admitted request holds until its response ends: a concurrency slot of its key
/// and tenant, and its pool's queue turn (freed slots let the next waiting request go).
#[derive(Debug)]
pub struct Permit {
    /// The config version the request runs under (its pools, limits and metrics).
    pub(super) snap: Arc<Snapshot>,
    /// Its key, whose limits and budget it counts against; `None` without auth.
    pub(super) key: Option<Arc<KeyRecord>>,
    /// Whether it holds a slot of its tenant's limits.
    pub(super) tenant_limited: bool,
    /// Its tenant.
    pub(super) tenant: TenantId,
    /// Its model (pool): for the waiting room, the model's limits and spend records.
    pub(super) pool: Arc<str>,
    /// The waiting room of its model, to let the next one go.
    pub(super) gate: Option<Arc<Gate>>,
    /// The gate may hold requests of its pool ([`Gate::never_holds`] is false for the pool
    /// of `snap`): its end then always looks for one to let go.
    pub(super) gate_holds: bool,
    /// Prompt tokens it holds of its tenant's prefill share in the gate, until the
    /// response's first byte (0: none).
    pub(super) prefill: u32,
    /// Reads the response's usage, when the request is metered (auth on).
    pub(super) meter: Option<usage::Meter>,
    /// Tokens taken from the token buckets at admission, to reconcile with the usage.
    pub(super) estimated: u32,
    /// [`Permit::end`] ran.
    pub(super) ended: bool,
    /// It holds a slot of its model's `model_limits`.
    pub(super) model_limited: bool,
    /// The serving backend's price, once the response is known.
    pub(super) price: Option<switchyard_core::Price>,
}

impl Permit {
    /// Whether it reads the response's usage itself (auth on).
    pub fn meters(&self) -> bool {
        self.meter.is_some()
    }

    /// The response's usage, once its meter has seen it.
    pub fn usage(&self) -> Option<usage::Usage> {
        self.meter.as_ref()?.usage
    }

    /// Looks at one frame of the response on its way (the first byte frees its prefill
    /// share; the meter reads the usage and may take a usage-only chunk out).
    pub(crate) fn observe(
        &mut self,
        frame: http_body::Frame<bytes::Bytes>,
    ) -> http_body::Frame<bytes::Bytes> {
        if self.prefill > 0 && frame.is_data() {
            self.first_byte();
        }
        match &mut self.meter {
            Some(m) => match frame.into_data() {
                Ok(d) => http_body::Frame::data(m.observe(d)),
                Err(other) => other,
            },
            None => frame,
        }
    }

    /// The response's first byte: its prompt leaves the tenant's prefill share.
    fn first_byte(&mut self) {
        let tokens = std::mem::take(&mut self.prefill);
        if let Some(gate) = &self.gate {
            if let Some(pool) = self.snap.pools.get(&*self.pool) {
                gate.prefilled(
                    self.tenant,
                    tokens,
                    pool,
                    self.snap.now(),
                    self.snap.config.scrape.max_age,
                );
            }
        }
    }

    /// The model limits it holds a slot of.
    fn model_limit(&self) -> Option<&Mutex<switchyard_core::admission::RateLimit>> {
        if !self.model_limited {
            return None;
        }
        self.snap.admission.as_ref()?.model_limits.get(&*self.pool)
    }

    /// The limits that counted it: its key's, its tenant's (when it holds a slot there) and
    /// its model's.
    fn limits(&self) -> impl Iterator<Item = &Mutex<switchyard_core::admission::RateLimit>> {
        let tenant = self
            .snap
            .admission
            .as_ref()
            .and_then(|a| a.keys.as_ref()?.tenant(self.tenant)?.limits.as_ref())
            .filter(|_| self.tenant_limited);
        self.key
            .as_ref()
            .and_then(|k| k.limits.as_ref())
            .into_iter()
            .chain(tenant)
            .chain(self.model_limit())
    }

    /// Adds the request's cost to its key's and tenant's budgets and records it.
    fn spend(&self, used: usage::Usage) {
        let Some(key) = &self.key else { return };
        let cost = self.price.map_or(0.0, |p| {
            (p.input_per_mtok * f64::from(used.prompt_tokens)
                + p.output_per_mtok * f64::from(used.completion_tokens))
                / 1e6
        });
        let adm = self.snap.admission.as_ref();
        let tenant = adm.and_then(|a| a.keys.as_ref()?.tenant(self.tenant));
        if let Some(t) = tenant {
            let s = &t.series;
            s.prompt_tokens.inc_by(u64::from(used.prompt_tokens));
            s.completion_tokens
                .inc_by(u64::from(used.completion_tokens));
            if cost > 0.0 {
                s.spend.inc_by(cost);
            }
        }
        let tenant_budget = tenant.and_then(|t| t.budget.as_ref());
        let writer = adm.and_then(|a| a.spend.as_ref());
        if key.budget.is_none() && tenant_budget.is_none() && writer.is_none() {
            // Nothing is kept by the period: no clock to read.
            return;
        }
        let unix = unix_now();
        for b in [key.budget.as_ref(), tenant_budget].into_iter().flatten() {
            b.add(cost, unix);
        }
        let Some(writer) = writer else {
            return;
        };
        let event = |scope: String| spend::SpendEvent {
            scope,
            model: self.pool.to_string(),
            unix,
            prompt_tokens: used.prompt_tokens,
            completion_tokens: used.completion_tokens,
            cost,
        };
        writer.record(event(key.scope.clone()));
        if let Some(t) = tenant {
            writer.record(event(format!("tenant:{}", t.name)));
        }
    }

    /// The request was refused after its limits let it in (the waiting room timed out, was
    /// full, or shed it): the request and its estimated tokens go back to every bucket that
    /// counted them, with the concurrency slots, so a refusal costs the caller no quota.
    pub(super) fn refund(mut self) {
        self.ended = true;
        for l in self.limits() {
            l.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .undo(self.estimated);
        }
    }

    /// The request is over: usage reconciled, slots released, the queue's next one let go.
    /// Runs once (the body's end calls it, and its drop if the client left first).
    pub(crate) fn end(&mut self) {
        self.end_at(None);
    }

    /// [`Permit::end`] at gateway time `now` when the caller has read the clock already
    /// (`None`: read it here).
    pub(crate) fn end_at(&mut self, now: Option<std::time::Duration>) {
        if self.ended {
            return;
        }
        self.ended = true;
        // Each limit is locked once: its slot given back and, with the usage known, its
        // token bucket given what the estimate took beyond it (or charged what it missed).
        let used = self.meter.as_ref().and_then(|m| m.usage);
        let now = now.unwrap_or_else(|| self.snap.now());
        for l in self.limits() {
            let mut l = l.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(u) = used {
                let actual = u.prompt_tokens.saturating_add(u.completion_tokens);
                l.reconcile(self.estimated, actual, now);
            }
            l.release();
        }
        if let Some(used) = used {
            self.spend(used);
        }
        if let Some(gate) = self.gate.as_ref().filter(|g| self.gate_holds || !g.quiet()) {
            if let Some(pool) = self.snap.pools.get(&*self.pool) {
                let prefill = std::mem::take(&mut self.prefill);
                gate.done(
                    self.tenant,
                    prefill,
                    pool,
                    now,
                    self.snap.config.scrape.max_age,
                );
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.end();
    }
}
