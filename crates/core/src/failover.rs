//! Failover as data: which backend one request tries next, after how long, and when it stops.
//!
//! A request tries the pool of the model it asked for, then each fallback model's pool in
//! turn (the caller walks that chain on [`Step::NextModel`]). In one pool, each round asks the
//! pool's policy for a [`Decision`] and tries its candidates in order. Retries after the first
//! attempt take a token from the retry budget of the requested model and wait a jittered
//! backoff (see [`crate::backoff`]), raised to a `Retry-After` when the retry goes back to the
//! backend that sent it. When no backend is usable but some will be back at a known time, the
//! request waits for the first one, up to `cooldown_wait` and never past its total timeout.
//!
//! Pure: the caller passes `now` (gateway time) and what it sees of the pool ([`Target`]), and
//! executes the [`Step`]s it gets back: deciding, sleeping, sending, reporting each attempt's
//! [`Outcome`]. The gateway's async driver (`gateway/src/attempts.rs`) does only that.

use std::time::Duration;

use crate::backoff;
use crate::decision::Decision;
use crate::fleet::BackendId;
use crate::retry_budget::RetryBudget;

/// Least time an attempt is sent with: below it the backend's total timeout would cut it
/// before any answer.
pub const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(1);

/// Rounds of decisions a request makes again because every candidate was refused at
/// dispatch (a half-open breaker's probe slots filled in between).
pub const MAX_REFUSED_ROUNDS: u32 = 3;

/// How far past a backend's announced return a waiting request wakes, so that the backend
/// is usable by then.
const WAKE_MARGIN: Duration = Duration::from_millis(1);

/// What the plan needs to know of the pool it is trying, read when it asks.
pub trait Target {
    /// How many members the pool has (ids `0..len`).
    fn len(&self) -> usize;
    /// Whether the pool has no member.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether member `id` may take a new request at `now`.
    fn usable(&self, id: BackendId, now: Duration) -> bool;
    /// Member `id`'s total timeout per request, if it has one.
    fn total_timeout(&self, id: BackendId) -> Option<Duration>;
    /// When the first of the unusable members will be back, if any will at a known time.
    fn next_return(&self, now: Duration) -> Option<Duration>;
    /// 64 uniform random bits, for the backoff's jitter.
    fn random(&self) -> u64;
}

/// The failover settings of one request (from the gateway's `retry` config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailoverSettings {
    /// Attempts per model, the first included (1 turns failover off).
    pub max_attempts: u32,
    /// How long a request waits for a pool whose backends are all cooling down.
    pub cooldown_wait: Duration,
    /// Base of the jittered exponential backoff between attempts.
    pub backoff_base: Duration,
    /// Longest wait between two attempts, `Retry-After` included.
    pub backoff_max: Duration,
}

/// The fixed part of one request's failover: its settings, its budget and its arrival.
#[derive(Debug, Clone, Copy)]
pub struct FailoverPlan<'a> {
    /// The settings.
    pub settings: FailoverSettings,
    /// The retry budget of the requested model: every retry, in any model of the chain, is
    /// taken from it.
    pub budget: &'a RetryBudget,
    /// When the request arrived (gateway time): its backends' total timeouts count from here.
    pub arrived: Duration,
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Ask the current model's policy for a decision and pass it (or `None` when it found no
    /// candidate) to the next call, and to every call until the next `Decide`.
    Decide,
    /// Sleep until `until` (gateway time), then call again.
    Wait {
        /// When the first backend is back.
        until: Duration,
    },
    /// Sleep `after`, then dispatch an attempt to `backend` of the current model and report
    /// its [`Outcome`] (unless it is the client's answer: then the request is done).
    Send {
        /// The backend.
        backend: BackendId,
        /// The backoff before it (zero for the first attempt).
        after: Duration,
        /// It is a retry, taken from the budget.
        retry: bool,
    },
    /// This model is done: go on with the next model of the chain and call again, or stop
    /// when there is none.
    NextModel,
    /// Stop now.
    GiveUp(GiveUp),
}

/// Why a request stops before its models are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The retry budget refused a retry.
    Budget,
    /// The gateway itself is short of a resource: no other attempt would fare better.
    Local,
}

/// How a sent attempt ended, when it did not produce the client's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend refused it at dispatch (its breaker's probe slots were full): not made.
    Refused,
    /// No usable answer (connect error, timeout, broken before the first byte).
    Failed,
    /// A retryable answer (429, 5xx), with its `Retry-After`.
    Answered {
        /// The answer's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The gateway ran short of a local resource.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A model was just entered.
    Start,
    /// A decision is wanted: the next call returns [`Step::Decide`].
    Redecide,
    /// [`Step::Decide`] was returned: the next call brings the decision.
    Deciding,
    /// Trying the decision's candidates, from `cursor`.
    Trying,
    /// An attempt was sent: its outcome is due.
    Sent,
    /// Stopped.
    Stopped(GiveUp),
}

/// Where the attempts of one request stand.
#[derive(Debug, Clone)]
pub struct Progress {
    phase: Phase,
    /// Attempts made, over every model.
    attempts: u32,
    /// Attempts made in the current model.
    tried_here: u32,
    /// The current model's position in the chain (0: the requested one).
    model: u32,
    /// Rounds decided again in this model because every candidate was refused.
    refused_rounds: u32,
    /// Until when this model may wait for a cooling-down backend.
    wait_until: Duration,
    /// Next candidate of the current decision.
    cursor: usize,
    /// `tried_here` when the current round began.
    round_start: u32,
    /// A candidate of this round was refused at dispatch.
    refused: bool,
    /// The attempt in flight: its backend and whether it took a retry from the budget.
    sent: Option<(BackendId, bool)>,
    /// The last retryable answer's `Retry-After`, with the model and backend that sent it.
    retry_after: Option<(u32, BackendId, Duration)>,
}

impl Progress {
    /// Attempts made so far (counting the one in flight).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The current model's position in the chain (0: the requested one).
    pub fn model(&self) -> u32 {
        self.model
    }
}

impl<'a> FailoverPlan<'a> {
    /// Starts a request: counts it in the budget (which retries are a share of).
    pub fn begin(&self, now: Duration) -> Progress {
        self.budget.deposit(now);
        Progress {
            phase: Phase::Start,
            attempts: 0,
            tried_here: 0,
            model: 0,
            refused_rounds: 0,
            wait_until: now,
            cursor: 0,
            round_start: 0,
            refused: false,
            sent: None,
            retry_after: None,
        }
    }

    /// What is left at `now` of a backend's total timeout `total` (`None` when it has none).
    pub fn time_left(&self, total: Option<Duration>, now: Duration) -> Option<Duration> {
        total.map(|t| (self.arrived + t).saturating_sub(now))
    }

    /// Until when the model just entered may wait for a backend to come back: `cooldown_wait`
    /// from now, and never past the longest of its backends' total timeouts (an attempt sent
    /// after that would have no time left).
    fn wait_limit(&self, target: &impl Target, now: Duration) -> Duration {
        let until = now + self.settings.cooldown_wait;
        if target.is_empty() {
            return until;
        }
        let mut longest = Duration::ZERO;
        for i in 0..target.len() {
            match self.time_left(target.total_timeout(BackendId(i as u32)), now) {
                Some(left) => longest = longest.max(left),
                None => return until,
            }
        }
        until.min(now + longest)
    }

    /// The next step. `target` is the current model's pool; `decision` the one asked for by
    /// the last [`Step::Decide`].
    pub fn next(
        &self,
        p: &mut Progress,
        target: &impl Target,
        decision: Option<&Decision>,
        now: Duration,
    ) -> Step {
        loop {
            match p.phase {
                Phase::Stopped(why) => return Step::GiveUp(why),
                Phase::Start => {
                    p.tried_here = 0;
                    p.refused_rounds = 0;
                    p.wait_until = self.wait_limit(target, now);
                    p.phase = Phase::Deciding;
                    return Step::Decide;
                }
                Phase::Redecide => {
                    p.phase = Phase::Deciding;
                    return Step::Decide;
                }
                Phase::Deciding => {
                    if decision.is_none() {
                        // Nothing usable now: wait for the first backend back in time.
                        return match target.next_return(now).filter(|t| *t <= p.wait_until) {
                            Some(back) => {
                                p.phase = Phase::Redecide;
                                Step::Wait {
                                    until: back + WAKE_MARGIN,
                                }
                            }
                            None => self.next_model(p),
                        };
                    }
                    p.cursor = 0;
                    p.round_start = p.tried_here;
                    p.refused = false;
                    p.phase = Phase::Trying;
                }
                // The caller did not report the attempt it was given: count it as failed.
                Phase::Sent => p.phase = Phase::Trying,
                Phase::Trying => {
                    let candidate = decision.and_then(|d| d.attempts().nth(p.cursor));
                    let Some(id) = candidate else {
                        return self.end_round(p, target, now);
                    };
                    p.cursor += 1;
                    if let Some(step) = self.consider(p, target, id, now) {
                        return step;
                    }
                }
            }
        }
    }

    /// Whether to send to candidate `id` now; `None` skips it.
    fn consider(
        &self,
        p: &mut Progress,
        target: &impl Target,
        id: BackendId,
        now: Duration,
    ) -> Option<Step> {
        if p.tried_here >= self.settings.max_attempts || id.index() >= target.len() {
            return Some(self.next_model(p));
        }
        if p.attempts > 0 && !target.usable(id, now) {
            return None;
        }
        // An attempt needs some of the backend's own total timeout left: one sent without
        // would time out at once and count as the backend's failure.
        let left = self.time_left(target.total_timeout(id), now);
        if left.is_some_and(|left| left < MIN_ATTEMPT_TIME) {
            return None;
        }
        let mut after = Duration::ZERO;
        let retry = p.attempts > 0;
        if retry {
            // A Retry-After speaks for the backend that sent it (now cooling down): it
            // lengthens the wait only before asking that same backend again.
            let retry_after = p
                .retry_after
                .filter(|(model, b, _)| *model == p.model && *b == id)
                .map(|(_, _, d)| d);
            after = backoff::delay(
                p.attempts,
                self.settings.backoff_base,
                self.settings.backoff_max,
                retry_after,
                target.random(),
            );
            // Checked before anything is spent: a backoff that would leave this backend no
            // time is not slept (another candidate may have a longer total timeout).
            if left.is_some_and(|left| after + MIN_ATTEMPT_TIME > left) {
                return None;
            }
            if !self.budget.try_withdraw(now) {
                p.phase = Phase::Stopped(GiveUp::Budget);
                return Some(Step::GiveUp(GiveUp::Budget));
            }
            if retry_after.is_some() {
                p.retry_after = None;
            }
        }
        p.attempts += 1;
        p.tried_here += 1;
        p.sent = Some((id, retry));
        p.phase = Phase::Sent;
        Some(Step::Send {
            backend: id,
            after,
            retry,
        })
    }

    /// Every candidate of the round was considered: decide again, or leave the model.
    fn end_round(&self, p: &mut Progress, target: &impl Target, now: Duration) -> Step {
        let tried = p.tried_here > p.round_start;
        // A round whose every candidate was refused at dispatch decides again (the refused
        // ones now show as unusable, so it picks another or waits for one); a few times at
        // most.
        if !tried && p.refused && p.refused_rounds < MAX_REFUSED_ROUNDS {
            p.refused_rounds += 1;
            p.phase = Phase::Deciding;
            return Step::Decide;
        }
        // Another round only if this one tried something, every backend is now cooling down,
        // and one comes back in time (each round spends an attempt, so this ends).
        if !tried || p.tried_here >= self.settings.max_attempts {
            return self.next_model(p);
        }
        let any_usable = (0..target.len()).any(|i| target.usable(BackendId(i as u32), now));
        if any_usable || target.next_return(now).is_none_or(|t| t > p.wait_until) {
            return self.next_model(p);
        }
        p.phase = Phase::Deciding;
        Step::Decide
    }

    fn next_model(&self, p: &mut Progress) -> Step {
        p.model += 1;
        p.phase = Phase::Start;
        Step::NextModel
    }

    /// Reports how the attempt of the last [`Step::Send`] ended.
    pub fn report(&self, p: &mut Progress, outcome: Outcome, now: Duration) {
        let Some((backend, retry)) = p.sent.take() else {
            return;
        };
        p.phase = Phase::Trying;
        match outcome {
            Outcome::Refused => {
                // Not made: it counts as no attempt, and its retry goes back to the budget.
                p.attempts -= 1;
                p.tried_here -= 1;
                if retry {
                    self.budget.refund(now);
                }
                p.refused = true;
            }
            Outcome::Failed => {}
            Outcome::Answered { retry_after } => {
                p.retry_after = retry_after.map(|d| (p.model, backend, d));
            }
            Outcome::Local => p.phase = Phase::Stopped(GiveUp::Local),
        }
    }
}

#[cfg(test)]
#[path = "failover_tests.rs"]
mod tests;
