//! The dashboard's data. A sampler reads the gateway's counters once a second into a
//! 15-minute history (requests, errors and tokens per second, per model and backend) and,
//! while some page is watching, publishes one frame per second: the fleet with its windowed
//! percentiles, the newest point of every series, the recent decisions, queues and tenants.
//! Frames are built once and shared by every watcher; nothing here touches the request path.

use bytes::Bytes;
use prometheus::core::Metric;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use crate::gateway::{Gateway, Snapshot};

/// Points of history kept: 15 minutes at one a second.
pub const HISTORY: usize = 900;
/// Seconds between samples.
pub const TICK: Duration = Duration::from_secs(1);
/// Samples the fleet table's percentiles and rates look back over (one minute).
const WINDOW: usize = 60;
/// Decisions each frame carries, newest last.
const DECISIONS_SHOWN: usize = 30;

/// `(model, backend)`.
type Key = (String, String);

/// Shared by the sampler and every dashboard connection.
#[derive(Debug)]
pub struct Hub {
    history: Mutex<History>,
    /// The newest frame, as a complete SSE event (empty until the first watched tick);
    /// `None` once the gateway drains, which ends every feed.
    frames: watch::Sender<Option<Bytes>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            history: Mutex::new(History::default()),
            frames: watch::Sender::new(Some(Bytes::new())),
        }
    }
}

/// Counter readings of one backend at one sample.
#[derive(Debug, Clone, Default)]
struct Reading {
    answers: u64,
    errors: u64,
    tokens: u64,
    /// Cumulative bucket counts of time to first byte and of duration.
    ttfb: Vec<u64>,
    duration: Vec<u64>,
}

/// One series: values per second, aligned with [`History::times`]; `None` before it existed.
#[derive(Debug, Clone, Default)]
struct Series {
    rps: VecDeque<Option<f32>>,
    eps: VecDeque<Option<f32>>,
    tps: VecDeque<Option<f32>>,
}

#[derive(Debug, Default)]
struct History {
    /// Unix seconds of each point, oldest first.
    times: VecDeque<u64>,
    series: BTreeMap<Key, Series>,
    /// The last [`WINDOW`] + 1 readings per backend, oldest first.
    readings: HashMap<Key, VecDeque<Reading>>,
    /// Bucket upper bounds of the latency histograms, in seconds.
    bounds: Vec<f64>,
}

impl Hub {
    /// A receiver of frames: it sees the next one published.
    pub fn watch(&self) -> watch::Receiver<Option<Bytes>> {
        self.frames.subscribe()
    }

    /// Ends every feed: the gateway is draining.
    pub fn close(&self) {
        self.frames.send_replace(None);
    }

    /// The `tick` event for `snap` now, from the history so far (what a new watcher sees
    /// before the next tick).
    pub fn current_event(&self, gw: &Gateway, snap: &Snapshot) -> Bytes {
        let h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let t = h.times.back().copied().unwrap_or_else(unix_now);
        event("tick", &frame(gw, snap, &h, t))
    }

    /// The `history` event a new watcher starts with: every series over the last 15 minutes.
    pub fn history_event(&self) -> Bytes {
        let h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let series: Map<String, Value> = h
            .series
            .iter()
            .map(|((model, backend), s)| {
                (
                    format!("{model}/{backend}"),
                    json!({ "model": model, "backend": backend, "rps": s.rps, "eps": s.eps, "tps": s.tps }),
                )
            })
            .collect();
        event("history", &json!({ "times": h.times, "series": series }))
    }

    /// Takes one sample of `snap` at unix second `t` and, when some page watches, publishes
    /// the frame built from it.
    pub fn tick(&self, gw: &Gateway, snap: &Snapshot, t: u64) {
        let answers = snap.metrics.answers_by_backend();
        let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now: BTreeMap<Key, Reading> = BTreeMap::new();
        for model in &snap.model_names {
            let Some(pool) = snap.pools.get(model) else {
                continue;
            };
            for b in &pool.backends {
                let m = b.state.metrics();
                let key = (model.clone(), b.name().to_owned());
                let (all, errors) = answers.get(&key).copied().unwrap_or_default();
                let (ttfb, bounds) = buckets(&m.ttfb);
                let (duration, _) = buckets(&m.duration);
                if h.bounds.is_empty() {
                    h.bounds = bounds;
                }
                now.insert(
                    key,
                    Reading {
                        answers: all,
                        errors: errors + m.stream_errors.get(),
                        tokens: m.tokens[0].get() + m.tokens[1].get(),
                        ttfb,
                        duration,
                    },
                );
            }
        }
        h.push(t, now);
        let watched = self.frames.receiver_count() > 0;
        if watched && !gw.draining() {
            let frame = frame(gw, snap, &h, t);
            drop(h);
            self.frames.send_replace(Some(event("tick", &frame)));
        }
    }
}

impl History {
    /// Appends one point: the rate of every series since the previous reading.
    fn push(&mut self, t: u64, now: BTreeMap<Key, Reading>) {
        let gap = self.times.back().map_or(TICK.as_secs_f64(), |last| {
            t.saturating_sub(*last).max(1) as f64
        });
        let len = self.times.len();
        self.series.retain(|k, _| now.contains_key(k));
        self.readings.retain(|k, _| now.contains_key(k));
        for (key, reading) in now {
            let prev = self.readings.get(&key).and_then(|r| r.back());
            let rate = |f: fn(&Reading) -> u64| {
                prev.map(|p| f(&reading).saturating_sub(f(p)) as f64 / gap)
                    .map(|r| r as f32)
            };
            let (rps, eps, tps) = (rate(|r| r.answers), rate(|r| r.errors), rate(|r| r.tokens));
            let s = self.series.entry(key.clone()).or_insert_with(|| Series {
                rps: std::iter::repeat_n(None, len).collect(),
                eps: std::iter::repeat_n(None, len).collect(),
                tps: std::iter::repeat_n(None, len).collect(),
            });
            s.rps.push_back(rps);
            s.eps.push_back(eps);
            s.tps.push_back(tps);
            if s.rps.len() > HISTORY {
                s.rps.pop_front();
                s.eps.pop_front();
                s.tps.pop_front();
            }
            let r = self.readings.entry(key).or_default();
            r.push_back(reading);
            if r.len() > WINDOW + 1 {
                r.pop_front();
            }
        }
        self.times.push_back(t);
        if self.times.len() > HISTORY {
            self.times.pop_front();
        }
    }

    /// The last minute of one backend: answers and errors per second, error share, and
    /// percentiles of time to first byte and duration in milliseconds.
    fn window(&self, key: &Key) -> Value {
        let Some(r) = self.readings.get(key) else {
            return Value::Null;
        };
        let (Some(first), Some(last)) = (r.front(), r.back()) else {
            return Value::Null;
        };
        let secs = (r.len().saturating_sub(1)).max(1) as f64 * TICK.as_secs_f64();
        let answers = last.answers.saturating_sub(first.answers);
        let errors = last.errors.saturating_sub(first.errors);
        let q = |hist: fn(&Reading) -> &Vec<u64>, q: f64| {
            quantile(&self.bounds, hist(first), hist(last), q).map(|s| s * 1000.0)
        };
        json!({
            "rps": answers as f64 / secs,
            "tps": last.tokens.saturating_sub(first.tokens) as f64 / secs,
            "error_rate": (answers > 0).then(|| errors as f64 / answers as f64),
            "ttft_p50_ms": q(|r| &r.ttfb, 0.5),
            "ttft_p95_ms": q(|r| &r.ttfb, 0.95),
            "latency_p50_ms": q(|r| &r.duration, 0.5),
            "latency_p95_ms": q(|r| &r.duration, 0.95),
        })
    }
}

/// A histogram's cumulative bucket counts and their upper bounds.
fn buckets(h: &prometheus::Histogram) -> (Vec<u64>, Vec<f64>) {
    let m = h.metric();
    let b = m.get_histogram().get_bucket();
    (
        b.iter().map(|b| b.cumulative_count()).collect(),
        b.iter().map(|b| b.upper_bound()).collect(),
    )
}

/// The `q` quantile of what a histogram observed between two readings of its cumulative
/// buckets, interpolated linearly inside the bucket (as Prometheus' `histogram_quantile`).
/// `None` when nothing was observed; the last finite bound when it lies beyond.
pub(crate) fn quantile(bounds: &[f64], before: &[u64], after: &[u64], q: f64) -> Option<f64> {
    let counts: Vec<u64> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total = *counts.last()?;
    if total == 0 {
        // Observations above the last bound are only in the sum: say nothing finer.
        return None;
    }
    let rank = q * total as f64;
    let mut lower = 0.0;
    let mut below = 0;
    for (bound, cum) in bounds.iter().zip(&counts) {
        if *cum as f64 >= rank {
            let inside = (cum - below) as f64;
            let frac = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * frac.clamp(0.0, 1.0));
        }
        lower = *bound;
        below = *cum;
    }
    bounds.last().copied()
}

/// One SSE event.
fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// What one tick shows.
fn frame(gw: &Gateway, snap: &Snapshot, h: &History, t: u64) -> Value {
    let mut backends = Vec::new();
    let mut models = Vec::new();
    for model in &snap.model_names {
        let Some(pool) = snap.pools.get(model) else {
            continue;
        };
        models.push(json!({ "model": model, "policy": pool.policy.name() }));
        for b in &pool.backends {
            let mut v = crate::admin::backend_json(snap, pool, b);
            let key = (model.clone(), b.name().to_owned());
            if let (Value::Object(o), Value::Object(w)) = (&mut v, h.window(&key)) {
                o.extend(w);
            }
            backends.push(v);
        }
    }
    let point: Map<String, Value> = h
        .series
        .iter()
        .map(|((model, backend), s)| {
            (
                format!("{model}/{backend}"),
                json!([s.rps.back(), s.eps.back(), s.tps.back()]),
            )
        })
        .collect();
    let decisions = snap.decisions.last(DECISIONS_SHOWN);
    let decisions: Vec<&crate::decisions::Record> = decisions.iter().map(|r| &**r).collect();
    json!({
        "t": t,
        "generation": snap.generation,
        "uptime_s": snap.now().as_secs(),
        "draining": gw.draining(),
        "models": models,
        "backends": backends,
        "point": { "t": t, "series": point },
        "decisions": decisions,
        "queues": snap.admission.is_some().then(|| crate::admission::admin::queues(snap)["queues"].clone()),
        "tenants": tenants(snap),
    })
}

/// Per configured tenant: requests, tokens, spend and throttles so far (empty without auth).
fn tenants(snap: &Snapshot) -> Value {
    use prometheus::core::Collector;
    if snap.admission.is_none() {
        return json!([]);
    }
    let a = &snap.metrics.admission;
    let mut rows: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut add = |families: Vec<prometheus::proto::MetricFamily>, field: &str| {
        for f in families {
            for m in f.get_metric() {
                let mut tenant = None;
                let mut kind = None;
                for l in m.get_label() {
                    match l.name() {
                        "tenant" => tenant = Some(l.value().to_owned()),
                        "kind" => kind = Some(l.value()),
                        _ => {}
                    }
                }
                let Some(tenant) = tenant else { continue };
                let v = m.get_counter().get_value();
                let name = match kind {
                    Some(k) => format!("{k}_tokens"),
                    None => field.to_owned(),
                };
                let row = rows.entry(tenant).or_default();
                let sum = row.get(&name).and_then(Value::as_f64).unwrap_or(0.0) + v;
                row.insert(name, json!(sum));
            }
        }
    };
    add(a.tenant_requests.collect(), "requests");
    add(a.tenant_tokens.collect(), "tokens");
    add(a.tenant_spend.collect(), "spend");
    add(a.tenant_throttled.collect(), "throttled");
    Value::Array(
        rows.into_iter()
            .map(|(tenant, mut row)| {
                row.insert("tenant".into(), json!(tenant));
                Value::Object(row)
            })
            .collect(),
    )
}

/// Samples `gw` every [`TICK`] until the gateway is dropped. Spawned once per gateway.
pub async fn run(gw: std::sync::Weak<Gateway>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(gw) = gw.upgrade() else { return };
        let snap = gw.snapshot();
        gw.dashboard.tick(&gw, &snap, unix_now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(answers: u64, tokens: u64) -> Reading {
        Reading {
            answers,
            tokens,
            ..Reading::default()
        }
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket_and_diffs_readings() {
        let bounds = [0.1, 0.5, 1.0];
        // 10 observations in (0.1, 0.5] after the first reading, none elsewhere.
        let before = [5, 5, 5];
        let after = [5, 15, 15];
        let p50 = quantile(&bounds, &before, &after, 0.5).unwrap_or(f64::NAN);
        assert!((p50 - 0.3).abs() < 1e-9, "p50 {p50}");
        assert_eq!(quantile(&bounds, &after, &after, 0.5), None);
        // Everything in the first bucket: interpolated from zero.
        let p = quantile(&bounds, &[0, 0, 0], &[4, 4, 4], 0.5).unwrap_or(f64::NAN);
        assert!((p - 0.05).abs() < 1e-9, "{p}");
    }

    #[test]
    fn history_rates_pad_new_series_and_drop_removed_ones() {
        let mut h = History::default();
        let a = ("m".to_owned(), "a".to_owned());
        let b = ("m".to_owned(), "b".to_owned());
        h.push(100, BTreeMap::from([(a.clone(), reading(0, 0))]));
        h.push(101, BTreeMap::from([(a.clone(), reading(5, 50))]));
        h.push(
            103,
            BTreeMap::from([(a.clone(), reading(9, 70)), (b.clone(), reading(1, 1))]),
        );
        let sa = &h.series[&a];
        assert_eq!(sa.rps, [None, Some(5.0), Some(2.0)]);
        assert_eq!(sa.tps, [None, Some(50.0), Some(10.0)]);
        let sb = &h.series[&b];
        assert_eq!(sb.rps, [None, None, None], "first reading has no rate yet");
        h.push(104, BTreeMap::from([(b.clone(), reading(4, 1))]));
        assert!(
            !h.series.contains_key(&a),
            "a removed backend's series goes"
        );
        assert_eq!(h.series[&b].rps.back(), Some(&Some(3.0)));
        assert_eq!(h.times, [100, 101, 103, 104]);
    }

    #[test]
    fn history_keeps_fifteen_minutes() {
        let mut h = History::default();
        let a = ("m".to_owned(), "a".to_owned());
        for t in 0..(HISTORY as u64 + 50) {
            h.push(t, BTreeMap::from([(a.clone(), reading(t, t))]));
        }
        assert_eq!(h.times.len(), HISTORY);
        assert_eq!(h.series[&a].rps.len(), HISTORY);
        assert_eq!(h.readings[&a].len(), WINDOW + 1);
        assert_eq!(h.times.front(), Some(&50));
        let w = h.window(&a);
        assert_eq!(w["rps"], json!(1.0));
    }
}
