//! The gateway handle: the running config with its pools, the upstream client, metrics, and
//! the clock every decision reads. Shared by all connections through an `Arc`.

use http::HeaderValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::fleet::{Pool, PoolContext};
use crate::forward::{self, UpstreamClient};
use crate::telemetry::Metrics;

/// Everything a request needs, shared.
#[derive(Debug)]
pub struct Gateway {
    /// The validated config this gateway was built from.
    pub config: Config,
    /// Model name -> pool.
    pub pools: HashMap<String, Pool>,
    /// Model names, sorted, for `/v1/models` and error messages.
    pub model_names: Vec<String>,
    /// Pooled upstream connections.
    pub client: UpstreamClient,
    /// Metric families.
    pub metrics: Metrics,
    /// Epoch of the monotonic time handed to policies.
    started: Instant,
    /// Unix time at start, for `created` fields.
    pub started_unix: u64,
    /// Source of request ids.
    id_seq: AtomicU64,
    id_salt: u64,
}

impl Gateway {
    /// Builds pools, policies and the client from a validated config.
    pub fn new(config: Config) -> Arc<Self> {
        let metrics = Metrics::new();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = unix.as_nanos() as u64 ^ u64::from(std::process::id());
        let started = Instant::now();
        let pools: HashMap<String, Pool> = config
            .models
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let ctx = PoolContext {
                    retry: &config.retry,
                    metrics: &metrics,
                    seed: seed.wrapping_add(i as u64),
                    epoch: started,
                    default_connect: config.timeouts.connect,
                };
                (p.name.clone(), Pool::new(p, &ctx))
            })
            .collect();
        let mut model_names: Vec<String> = pools.keys().cloned().collect();
        model_names.sort();
        Arc::new(Self {
            client: forward::client(&config.timeouts),
            config,
            pools,
            model_names,
            metrics,
            started,
            started_unix: unix.as_secs(),
            id_seq: AtomicU64::new(0),
            id_salt: seed,
        })
    }

    /// Time since the gateway started: the `now` every decision sees.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// A new request id, unique within this process and unlikely to collide across processes.
    pub fn new_request_id(&self) -> HeaderValue {
        let n = self.id_seq.fetch_add(1, Ordering::Relaxed);
        let mut z = n
            .wrapping_add(self.id_salt)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z ^= z >> 29;
        HeaderValue::try_from(format!("sy-{z:016x}{n:x}"))
            .unwrap_or_else(|_| HeaderValue::from_static("sy-0"))
    }

    /// Whether some backend of some model can take a request.
    pub fn ready(&self) -> bool {
        self.pools
            .values()
            .any(|p| p.backends.iter().any(|b| b.usable(self.now())))
    }
}
