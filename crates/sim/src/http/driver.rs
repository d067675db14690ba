//! The engine driver: one task per replica owns its [`Engine`] and runs it in real time.
//!
//! Handlers talk to it over a channel ([`DriverHandle`]): they submit a request with a channel
//! for its events, abort it when the client leaves, or ask for a metrics [`Snapshot`]. The
//! loop steps the engine at the current simulated time, sleeps until the step's end
//! (simulated seconds divided by `time_scale`), still taking commands while it sleeps (a
//! submission joins the next step, as in vLLM), then hands each request its events. Nothing
//! else touches the engine, so no lock is ever held across an `.await`.

use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::metrics::{Histogram, E2E_BUCKETS, TTFT_BUCKETS};
use crate::{Engine, EngineConfig, EngineEvent, EngineMetrics, RequestId, SimRequest, SubmitError};

/// What one request hears from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqEvent {
    /// Admitted to the batch; `cached_tokens` of the prompt came from the prefix cache.
    Admitted {
        /// Prompt tokens found cached.
        cached_tokens: u32,
    },
    /// An output token.
    Token {
        /// Position in the output, from 0.
        index: u32,
    },
    /// The last token was produced.
    Finished {
        /// Tokens generated.
        output_tokens: u32,
    },
}

/// The engine's numbers at one moment, with the driver's own latency histograms.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The engine's metrics.
    pub engine: EngineMetrics,
    /// Time to first token, simulated seconds.
    pub ttft: Histogram,
    /// End-to-end latency (submission to last token), simulated seconds.
    pub e2e: Histogram,
    /// Requests accepted since start (or the last crash).
    pub requests_received: u64,
    /// Whether the engine caches prefixes.
    pub prefix_caching: bool,
}

/// Simulated time: wall time since `epoch` times `scale`. Read from tokio's clock (the
/// system's in a normal build), so a replica inside a test on tokio's paused clock runs on
/// the paused time, as the gateway under test does.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    scale: f64,
}

impl Clock {
    /// A clock at 0 now, running `scale` times faster than the wall clock.
    pub fn new(scale: f64) -> Self {
        Self {
            epoch: Instant::now(),
            scale,
        }
    }

    /// Simulated seconds now.
    pub fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * self.scale
    }

    /// The wall-clock instant of simulated time `t`.
    pub fn instant_at(&self, t: f64) -> Instant {
        self.epoch + Duration::try_from_secs_f64(t / self.scale).unwrap_or(Duration::ZERO)
    }
}

enum Command {
    Submit {
        req: SimRequest,
        events: mpsc::UnboundedSender<ReqEvent>,
        accepted: oneshot::Sender<Result<(), SubmitError>>,
    },
    Abort(RequestId),
    Snapshot(oneshot::Sender<Snapshot>),
    /// Drop every request and start from an empty engine (a crashed process restarting).
    Reset,
}

/// A handle to a replica's driver task. Cloning is cheap; the task ends when every handle is
/// dropped.
#[derive(Debug, Clone)]
pub struct DriverHandle {
    tx: mpsc::UnboundedSender<Command>,
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The engine refused the request's shape.
    #[error(transparent)]
    Rejected(#[from] SubmitError),
    /// The driver is gone (the replica is shutting down).
    #[error("the engine is not running")]
    Stopped,
}

impl DriverHandle {
    /// Starts a driver for a fresh engine on the current tokio runtime.
    pub fn spawn(config: EngineConfig, time_scale: f64) -> Result<Self, crate::ConfigError> {
        let engine = Engine::new(config.clone())?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(engine, config, Clock::new(time_scale), rx));
        Ok(Self { tx })
    }

    /// Queues a request; its events arrive on the returned receiver.
    pub async fn submit(
        &self,
        req: SimRequest,
    ) -> Result<mpsc::UnboundedReceiver<ReqEvent>, DriveError> {
        let (events, rx) = mpsc::unbounded_channel();
        let (accepted, ok) = oneshot::channel();
        self.tx
            .send(Command::Submit {
                req,
                events,
                accepted,
            })
            .map_err(|_| DriveError::Stopped)?;
        ok.await.map_err(|_| DriveError::Stopped)??;
        Ok(rx)
    }

    /// Drops a request (its client went away).
    pub fn abort(&self, id: RequestId) {
        let _ = self.tx.send(Command::Abort(id));
    }

    /// Drops every request and empties the engine.
    pub fn reset(&self) {
        let _ = self.tx.send(Command::Reset);
    }

    /// The engine's numbers now; `None` if the driver is gone.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Snapshot(tx)).ok()?;
        rx.await.ok()
    }
}

/// A request the driver is serving.
struct Live {
    events: mpsc::UnboundedSender<ReqEvent>,
    submitted_at: f64,
}

struct Driver {
    engine: Engine,
    config: EngineConfig,
    clock: Clock,
    live: HashMap<RequestId, Live>,
    ttft: Histogram,
    e2e: Histogram,
    received: u64,
}

async fn run(
    engine: Engine,
    config: EngineConfig,
    clock: Clock,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut d = Driver {
        engine,
        config,
        clock,
        live: HashMap::new(),
        ttft: Histogram::new(TTFT_BUCKETS),
        e2e: Histogram::new(E2E_BUCKETS),
        received: 0,
    };
    loop {
        let Some(step) = d.engine.step(d.clock.now()) else {
            // Idle: wait for work.
            match rx.recv().await {
                Some(cmd) => d.command(cmd),
                None => return,
            }
            continue;
        };
        let sleep = tokio::time::sleep_until(d.clock.instant_at(step.stats.end));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => d.command(cmd),
                    None => return,
                },
            }
        }
        d.deliver(step.stats.end, &step.events);
    }
}

impl Driver {
    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                req,
                events,
                accepted,
            } => {
                let id = req.id;
                let result = self.engine.submit(req);
                if result.is_ok() {
                    self.received += 1;
                    self.live.insert(
                        id,
                        Live {
                            events,
                            submitted_at: self.clock.now(),
                        },
                    );
                }
                if accepted.send(result).is_err() {
                    self.abort(id);
                }
            }
            Command::Abort(id) => self.abort(id),
            Command::Snapshot(reply) => {
                let _ = reply.send(Snapshot {
                    engine: self.engine.metrics(self.clock.now()),
                    ttft: self.ttft.clone(),
                    e2e: self.e2e.clone(),
                    requests_received: self.received,
                    prefix_caching: self.config.enable_prefix_caching,
                });
            }
            Command::Reset => {
                if let Ok(fresh) = Engine::new(self.config.clone()) {
                    self.engine = fresh;
                }
                self.live.clear();
                self.ttft = Histogram::new(TTFT_BUCKETS);
                self.e2e = Histogram::new(E2E_BUCKETS);
                self.received = 0;
            }
        }
    }

    fn abort(&mut self, id: RequestId) {
        self.live.remove(&id);
        self.engine.abort(id);
    }

    /// Hands a finished step's events to their requests, at the step's end `t`.
    fn deliver(&mut self, t: f64, events: &[EngineEvent]) {
        for ev in events {
            let (id, out) = match *ev {
                EngineEvent::Admitted { id, cached_tokens } => {
                    (id, ReqEvent::Admitted { cached_tokens })
                }
                EngineEvent::Token { id, index, .. } => {
                    if index == 0 {
                        if let Some(l) = self.live.get(&id) {
                            self.ttft.observe(t - l.submitted_at);
                        }
                    }
                    (id, ReqEvent::Token { index })
                }
                EngineEvent::Finished { id, output_tokens } => {
                    if let Some(l) = self.live.remove(&id) {
                        self.e2e.observe(t - l.submitted_at);
                        let _ = l.events.send(ReqEvent::Finished { output_tokens });
                    }
                    continue;
                }
                EngineEvent::Preempted { .. } => continue,
            };
            let gone = match self.live.get(&id) {
                Some(l) => l.events.send(out).is_err(),
                None => false,
            };
            if gone {
                self.abort(id);
            }
        }
    }
}
