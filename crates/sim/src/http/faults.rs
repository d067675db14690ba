//! Fault injection for one simulated replica: what a load balancer must survive.
//!
//! A replica starts with the [`Faults`] its config or CLI flags give, and `POST /admin/faults`
//! changes them at run time (a JSON object; the fields it names are replaced, the others kept;
//! `GET /admin/faults` returns the current set). [`FaultState::verdict`] decides, per inference
//! request, whether the request hangs, fails with a 5xx, is rate limited, or runs (with added
//! latency and perhaps a stream cut short, cut inside an event, or stalled: [`StreamFaults`],
//! carried out by [`super::stream`]). `crash` and `not_ready_for_s` act on the listener and on
//! `/health` (see [`super::server`]).

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use switchyard_core::rng::SplitMix;
use tokio::time::Instant;

/// The faults a replica injects. Every field defaults to "no fault".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of inference requests answered `500` (vLLM's error shape), 0..=1.
    pub error_rate: f64,
    /// Share of inference requests answered `429` with `Retry-After`, 0..=1.
    pub rate_limit: f64,
    /// Seconds announced in `Retry-After` on a `429`.
    pub retry_after_s: u32,
    /// Wall-clock milliseconds added before an inference request is handled.
    pub added_latency_ms: u64,
    /// Accept requests (except `/admin/...`) and never answer them.
    pub hang: bool,
    /// Cut a stream's connection after this many tokens were sent: no `[DONE]`, no final chunk.
    /// Applies to streaming requests.
    pub drop_after_tokens: Option<u32>,
    /// Cut a stream's connection after this many bytes of its body, wherever they fall (inside
    /// an SSE event, mostly): what a proxy or a network failure does to a stream. Applies to
    /// streaming requests; with `drop_after_tokens`, whichever comes first.
    pub drop_after_bytes: Option<u64>,
    /// After this many tokens, a stream goes silent (the connection stays open, the engine
    /// keeps generating) for `stall_for_s`, or until the client leaves. Applies to streaming
    /// requests.
    pub stall_after_tokens: Option<u32>,
    /// How long a stall lasts, seconds; `None`: until the client leaves.
    pub stall_for_s: Option<f64>,
    /// Stop listening: connections are refused, open ones are cut, and the engine loses its
    /// state as a crashed process would. Setting it back to `false` (in process, or after
    /// `crash_for_s`) listens again on the same port with a fresh engine.
    pub crash: bool,
    /// With `crash`, come back by itself after this many seconds (the replica's own admin
    /// endpoint is unreachable while it is down). `None`: stay down until told.
    pub crash_for_s: Option<f64>,
    /// `/health` answers `503` for this many seconds after the replica starts, restarts, or
    /// this field is set.
    pub not_ready_for_s: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            rate_limit: 0.0,
            retry_after_s: 1,
            added_latency_ms: 0,
            hang: false,
            drop_after_tokens: None,
            drop_after_bytes: None,
            stall_after_tokens: None,
            stall_for_s: None,
            crash: false,
            crash_for_s: None,
            not_ready_for_s: 0.0,
        }
    }
}

/// Why a fault set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FaultsError(pub String);

impl Faults {
    /// Checks ranges: rates in 0..=1, durations finite and non-negative.
    pub fn validate(&self) -> Result<(), FaultsError> {
        for (name, v) in [
            ("error_rate", self.error_rate),
            ("rate_limit", self.rate_limit),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(FaultsError(format!(
                    "{name} must be between 0 and 1, got {v}"
                )));
            }
        }
        let secs = [
            ("not_ready_for_s", Some(self.not_ready_for_s)),
            ("crash_for_s", self.crash_for_s),
            ("stall_for_s", self.stall_for_s),
        ];
        for (name, v) in secs {
            if let Some(v) = v {
                if !(0.0..=1e9).contains(&v) {
                    return Err(FaultsError(format!(
                        "{name} must be a non-negative number of seconds, got {v}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// These faults with the fields named in `patch` (a JSON object) replaced.
    pub fn patched(&self, patch: &serde_json::Value) -> Result<Faults, FaultsError> {
        let serde_json::Value::Object(fields) = patch else {
            return Err(FaultsError("expected a JSON object of fault fields".into()));
        };
        let mut current = serde_json::to_value(self)
            .map_err(|e| FaultsError(format!("cannot encode faults: {e}")))?;
        if let serde_json::Value::Object(cur) = &mut current {
            for (k, v) in fields {
                cur.insert(k.clone(), v.clone());
            }
        }
        let next: Faults =
            serde_json::from_value(current).map_err(|e| FaultsError(e.to_string()))?;
        next.validate()?;
        Ok(next)
    }
}

/// What to do with one inference request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Never answer.
    Hang,
    /// Answer 500.
    Error,
    /// Answer 429 with `Retry-After` of this many seconds.
    RateLimited(u32),
    /// Serve it, after `delay`, with these faults if it streams.
    Serve {
        /// Added latency.
        delay: Duration,
        /// What happens to its stream.
        stream: StreamFaults,
    },
}

/// What a fault does to one stream (see [`Faults`] for each field).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamFaults {
    /// Tokens after which the connection is cut.
    pub drop_after_tokens: Option<u32>,
    /// Body bytes after which the connection is cut.
    pub drop_after_bytes: Option<u64>,
    /// Tokens after which the stream goes silent.
    pub stall_after_tokens: Option<u32>,
    /// How long it stays silent; `None`: until the client leaves.
    pub stall_for: Option<Duration>,
}

/// A replica's live faults, shared by its connections. Locks are short and never held across
/// an `.await`.
#[derive(Debug)]
pub struct FaultState {
    faults: Mutex<Faults>,
    /// `/health` is 503 until then.
    not_ready_until: Mutex<Instant>,
    rng: SplitMix,
}

impl FaultState {
    /// The state for a replica starting now with `faults`.
    pub fn new(faults: Faults, seed: u64) -> Self {
        let until = Instant::now() + secs(faults.not_ready_for_s);
        Self {
            faults: Mutex::new(faults),
            not_ready_until: Mutex::new(until),
            rng: SplitMix::new(seed ^ 0x6661_756c_7473),
        }
    }

    /// The current faults.
    pub fn get(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Replaces the faults; returns the previous set. A changed `not_ready_for_s` counts from
    /// now.
    pub fn set(&self, next: Faults) -> Faults {
        let prev = std::mem::replace(&mut *lock(&self.faults), next.clone());
        if prev.not_ready_for_s != next.not_ready_for_s {
            self.restart_warmup();
        }
        prev
    }

    /// Starts the `not_ready_for_s` window again (at start-up and after a crash).
    pub fn restart_warmup(&self) {
        let s = lock(&self.faults).not_ready_for_s;
        *lock(&self.not_ready_until) = Instant::now() + secs(s);
    }

    /// Whether `/health` should answer 503 now.
    pub fn not_ready(&self) -> bool {
        Instant::now() < *lock(&self.not_ready_until)
    }

    /// Whether requests should hang.
    pub fn hang(&self) -> bool {
        lock(&self.faults).hang
    }

    /// The fate of one inference request.
    pub fn verdict(&self) -> Verdict {
        let f = lock(&self.faults).clone();
        if f.hang {
            return Verdict::Hang;
        }
        if f.error_rate > 0.0 && self.draw() < f.error_rate {
            return Verdict::Error;
        }
        if f.rate_limit > 0.0 && self.draw() < f.rate_limit {
            return Verdict::RateLimited(f.retry_after_s);
        }
        Verdict::Serve {
            delay: Duration::from_millis(f.added_latency_ms),
            stream: StreamFaults {
                drop_after_tokens: f.drop_after_tokens,
                drop_after_bytes: f.drop_after_bytes,
                stall_after_tokens: f.stall_after_tokens,
                stall_for: f.stall_for_s.map(secs),
            },
        }
    }

    /// A uniform draw in `[0, 1)`.
    fn draw(&self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

/// Locks, recovering from a poisoned lock (the data is plain values, always consistent).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_replace_named_fields_and_validate() {
        let f = Faults::default();
        let g = f
            .patched(&serde_json::json!({"error_rate": 0.5, "hang": true}))
            .unwrap();
        assert_eq!((g.error_rate, g.hang, g.retry_after_s), (0.5, true, 1));
        assert!(f.patched(&serde_json::json!({"error_rate": 2})).is_err());
        assert!(f.patched(&serde_json::json!({"eror_rate": 0.1})).is_err());
        assert!(f.patched(&serde_json::json!([1])).is_err());
        assert!(f.patched(&serde_json::json!({"crash_for_s": -1})).is_err());
        assert!(f
            .patched(&serde_json::json!({"stall_for_s": -0.5}))
            .is_err());
        assert!(f
            .patched(&serde_json::json!({"drop_after_bytes": -1}))
            .is_err());
    }

    #[test]
    fn stream_faults_reach_the_verdict() {
        let s = FaultState::new(Faults::default(), 1);
        let Verdict::Serve { stream, .. } = s.verdict() else {
            panic!("no fault set, yet not served");
        };
        assert_eq!(stream, StreamFaults::default());
        let f = Faults::default()
            .patched(&serde_json::json!({
                "drop_after_bytes": 700,
                "stall_after_tokens": 3,
                "stall_for_s": 1.5,
            }))
            .unwrap();
        s.set(f);
        let Verdict::Serve { stream, .. } = s.verdict() else {
            panic!("stream faults must not refuse the request");
        };
        assert_eq!(
            stream,
            StreamFaults {
                drop_after_tokens: None,
                drop_after_bytes: Some(700),
                stall_after_tokens: Some(3),
                stall_for: Some(Duration::from_millis(1500)),
            }
        );
    }

    #[test]
    fn rates_of_one_always_fire() {
        let s = FaultState::new(
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            1,
        );
        assert!((0..100).all(|_| s.verdict() == Verdict::Error));
        s.set(Faults {
            rate_limit: 1.0,
            retry_after_s: 7,
            ..Faults::default()
        });
        assert_eq!(s.verdict(), Verdict::RateLimited(7));
        s.set(Faults::default());
        assert!(matches!(s.verdict(), Verdict::Serve { .. }));
    }
}
