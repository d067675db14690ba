//! Where a request waits at the gateway while no backend can take it: first come first served
//! (the default), or, with an [`Admission`], core's [`AdmissionQueue`] (priorities with aging,
//! VTC fairness between tenants, per-level timeouts and length limits, shedding), the same
//! code the gateway's admission stage runs.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use switchyard_core::admission::{
    AdmissionQueue, PrefillShares, Priority, QueueSettings, TenantId, Waiting,
};

use super::Pending;

/// The admission stage of a fleet run: the queue's settings and who sent each request.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The queue's levels, aging and limits (the gateway's `admission.queue`).
    pub settings: QueueSettings,
    /// Tenant weights, index = [`TenantId`] (others weigh 1).
    pub tenant_weights: Vec<f64>,
    /// One per workload request, in workload order; requests past its end are
    /// [`Class::default`].
    pub classes: Vec<Class>,
    /// Requests of each backend's concurrency cap kept for critical ones: others find a
    /// backend full this many below its cap (the gateway's `critical_reserve`).
    pub critical_reserve: u32,
    /// Each request carries its level to the engine as its `priority` (the gateway's
    /// `engine_priority`); engines with priority scheduling admit by it.
    pub engine_priority: bool,
    /// With a budget (the backends' prefill limits added up), each present tenant may have
    /// at most its weighted share of it in prompts awaiting a first token (the gateway's
    /// `tenant_prefill_share`, see [`PrefillShares`]).
    pub tenant_prefill_budget: Option<u64>,
}

/// What of a backend one request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Allowance {
    /// Of the concurrency cap, requests it may not use (kept for critical ones).
    pub(super) reserve: u32,
    /// Only the concurrency cap applies, not the engine-queue and prefill limits.
    pub(super) cap_only: bool,
}

/// A request's level and tenant, as its key would give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Class {
    /// Its priority.
    pub priority: Priority,
    /// Its tenant.
    pub tenant: TenantId,
}

/// The gateway's waiting room during a run.
pub(super) enum Lobby<'a> {
    /// In arrival order.
    Fifo(VecDeque<Pending>),
    /// Core's admission queue; `held` keeps each waiting request's payload by index.
    Admission {
        /// Boxed: it is much larger than the FIFO.
        queue: Box<AdmissionQueue>,
        classes: &'a [Class],
        held: HashMap<u64, Pending>,
        /// [`Admission::critical_reserve`].
        reserve: u32,
        /// [`Admission::engine_priority`].
        engine_priority: bool,
        /// [`Admission::tenant_prefill_budget`]'s shares.
        shares: Option<PrefillShares>,
    },
}

/// A moment in a request's life that the tenants' prefill shares count.
#[derive(Debug, Clone, Copy)]
pub(super) enum Moment {
    /// It reached the gateway.
    Arrived,
    /// It went to a backend with this many prompt tokens.
    Dispatched(u32),
    /// Its prompt of this many tokens produced a first token.
    Prefilled(u32),
    /// It ended, answered or refused.
    Left,
}

/// What putting a request in line did.
pub(super) struct Pushed {
    /// Requests refused (the new one when its level is full, or a less urgent one shed).
    pub(super) refused: Vec<usize>,
}

impl<'a> Lobby<'a> {
    pub(super) fn new(admission: Option<&'a Admission>) -> Self {
        match admission {
            None => Lobby::Fifo(VecDeque::new()),
            Some(a) => Lobby::Admission {
                queue: Box::new(AdmissionQueue::new(a.settings.clone(), &a.tenant_weights)),
                classes: &a.classes,
                held: HashMap::new(),
                reserve: a.critical_reserve,
                engine_priority: a.engine_priority,
                shares: a
                    .tenant_prefill_budget
                    .map(|b| PrefillShares::new(b, &a.tenant_weights)),
            },
        }
    }

    /// Whether this is the admission queue (which checks for room before taking a request
    /// out, so a request is charged to its tenant only when it goes).
    pub(super) fn is_admission(&self) -> bool {
        matches!(self, Lobby::Admission { .. })
    }

    /// What of each backend request `index` may use: all of its cap but the critical
    /// reserve, and, for a critical request when levels reach the engines, a backend whose
    /// engine queue or pending prefill is past its limit (the engine will run it first).
    pub(super) fn allowance(&self, index: usize) -> Allowance {
        match self {
            Lobby::Fifo(_) => Allowance::default(),
            Lobby::Admission {
                classes,
                reserve,
                engine_priority,
                ..
            } => {
                let class = classes.get(index).copied().unwrap_or_default();
                let critical = class.priority == Priority::Critical;
                Allowance {
                    reserve: if critical { 0 } else { *reserve },
                    cap_only: critical && *engine_priority,
                }
            }
        }
    }

    /// The `priority` request `index` carries to its engine: its level's rank (0 most
    /// urgent) when the gateway passes levels on, else 0.
    pub(super) fn engine_priority(&self, index: usize) -> i32 {
        match self {
            Lobby::Admission {
                classes,
                engine_priority: true,
                ..
            } => classes
                .get(index)
                .copied()
                .unwrap_or_default()
                .priority
                .index() as i32,
            _ => 0,
        }
    }

    /// The request [`Lobby::pop`] would give at `t`, by workload index.
    pub(super) fn peek(&self, t: f64) -> Option<usize> {
        match self {
            Lobby::Fifo(q) => q.front().map(|p| p.index),
            Lobby::Admission {
                queue,
                held,
                shares,
                ..
            } => {
                let w = queue.peek_where(Duration::from_secs_f64(t), |x| {
                    PrefillShares::allow(shares.as_ref(), x)
                })?;
                held.get(&w.id).map(|p| p.index)
            }
        }
    }

    /// Whether tenants' prefill shares are kept.
    pub(super) fn shares_on(&self) -> bool {
        matches!(
            self,
            Lobby::Admission {
                shares: Some(_),
                ..
            }
        )
    }

    /// Whether request `index`'s tenant is within its prefill share (always, without shares).
    pub(super) fn within_share(&self, index: usize) -> bool {
        match self {
            Lobby::Admission {
                classes,
                shares: Some(s),
                ..
            } => s.may_go(classes.get(index).copied().unwrap_or_default().tenant),
            _ => true,
        }
    }

    /// Reports a moment of request `index`'s life to the tenants' prefill shares.
    pub(super) fn track(&mut self, index: usize, moment: Moment) {
        if let Lobby::Admission {
            classes,
            shares: Some(s),
            ..
        } = self
        {
            let t = classes.get(index).copied().unwrap_or_default().tenant;
            match moment {
                Moment::Arrived => s.arrive(t),
                Moment::Dispatched(tokens) => s.dispatch(t, u64::from(tokens)),
                Moment::Prefilled(tokens) => s.prefilled(t, u64::from(tokens)),
                Moment::Left => s.leave(t),
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            Lobby::Fifo(q) => q.is_empty(),
            Lobby::Admission { queue, .. } => queue.is_empty(),
        }
    }

    /// Puts `p` in line at `t` with `max_output` expected output tokens.
    pub(super) fn push(&mut self, p: Pending, max_output: u32, t: f64) -> Pushed {
        match self {
            Lobby::Fifo(q) => {
                q.push_back(p);
                Pushed {
                    refused: Vec::new(),
                }
            }
            Lobby::Admission {
                queue,
                classes,
                held,
                ..
            } => {
                let class = classes.get(p.index).copied().unwrap_or_default();
                let w = Waiting {
                    id: p.index as u64,
                    priority: class.priority,
                    tenant: class.tenant,
                    input_tokens: p.tokens.len() as u32,
                    output_tokens: max_output,
                    arrived: Duration::from_secs_f64(t),
                };
                match queue.push(w) {
                    Err(_) => Pushed {
                        refused: vec![p.index],
                    },
                    Ok(entered) => {
                        held.insert(w.id, p);
                        let refused = entered
                            .shed
                            .and_then(|s| held.remove(&s.id))
                            .map(|s| vec![s.index])
                            .unwrap_or_default();
                        Pushed { refused }
                    }
                }
            }
        }
    }

    /// Takes the request to try next at `t`.
    pub(super) fn pop(&mut self, t: f64) -> Option<Pending> {
        match self {
            Lobby::Fifo(q) => q.pop_front(),
            Lobby::Admission {
                queue,
                held,
                shares,
                ..
            } => {
                let w = queue.pop_where(Duration::from_secs_f64(t), |x| {
                    PrefillShares::allow(shares.as_ref(), x)
                })?;
                held.remove(&w.id)
            }
        }
    }

    /// Gives back a request [`Lobby::pop`] returned that found no backend: first in line again
    /// (FIFO), or back in the admission queue at its class (not charged twice: the admission
    /// queue is only popped when a backend has room).
    pub(super) fn unpop(&mut self, p: Pending, max_output: u32, t: f64) -> Vec<usize> {
        match self {
            Lobby::Fifo(q) => {
                q.push_front(p);
                Vec::new()
            }
            Lobby::Admission { .. } => self.push(p, max_output, t).refused,
        }
    }

    /// Takes out the requests whose level's queue timeout has passed at `t`.
    pub(super) fn expire(&mut self, t: f64) -> Vec<usize> {
        match self {
            Lobby::Fifo(_) => Vec::new(),
            Lobby::Admission { queue, held, .. } => queue
                .expire(Duration::from_secs_f64(t))
                .into_iter()
                .filter_map(|w| held.remove(&w.id).map(|p| p.index))
                .collect(),
        }
    }

    /// Empties the room: every request still waiting, in index order for the admission queue.
    pub(super) fn drain(&mut self) -> Vec<usize> {
        match self {
            Lobby::Fifo(q) => q.drain(..).map(|p| p.index).collect(),
            Lobby::Admission { queue, held, .. } => {
                let mut out: Vec<usize> = held.drain().map(|(_, p)| p.index).collect();
                out.sort_unstable();
                **queue = AdmissionQueue::new(queue.settings().clone(), &[]);
                out
            }
        }
    }
}
