//! Semantic routing: which intent class a message belongs to, by the nearest class centroid
//! in embedding space. Each class's example prompts are embedded once through the configured
//! embeddings pool (at start-up and whenever a reload changes them; retried in the background
//! until that pool answers), and their normalized mean is the class's centroid. A message is
//! embedded by the same pool within `timeout` and takes the class of highest cosine similarity
//! if it reaches `threshold`; otherwise, or when the pool is slow or down, it has no class and
//! routes as if no intent rule matched. Outcomes are remembered by a hash of the message.

use bytes::Bytes;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use switchyard_core::EndpointKind;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::routes::Intents;
use crate::fleet::Pool;
use crate::forward::UpstreamClient;

/// Largest embeddings answer read (a batch of examples at a few thousand dimensions).
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Longest wait between two tries at embedding the examples.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One backend of the embeddings pool, as the classifier calls it.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    uri: Uri,
    model: String,
    credential: Option<(http::header::HeaderName, HeaderValue)>,
}

/// A class and its centroid (unit length).
type Centroids = Vec<(Arc<str>, Vec<f32>)>;

/// Classifies messages for `intent:` conditions; shared by every request of a snapshot, and
/// kept by a reload that leaves `routes.intents` and the embeddings pool as they were.
pub struct Classifier {
    intents: Intents,
    targets: Vec<Target>,
    client: UpstreamClient,
    /// `None` until the examples have been embedded.
    centroids: arc_swap::ArcSwapOption<Centroids>,
    /// Message hash -> its class (or none above the threshold).
    cache: Mutex<HashMap<u64, Option<Arc<str>>>>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("classes", &self.intents.classes.len())
            .field("ready", &self.ready())
            .finish()
    }
}

/// What classifying one message gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// The class, when one reached the threshold.
    pub class: Option<Arc<str>>,
    /// Whether it came from the cache.
    pub cached: bool,
}

impl Classifier {
    /// The classifier for `intents` over `pool`: `previous` when it was built from the same
    /// settings and backends (its centroids and cache kept), else a new one whose examples are
    /// embedded in the background (if a tokio runtime is running).
    pub fn start(
        intents: &Intents,
        pool: &Pool,
        client: &UpstreamClient,
        previous: Option<&Arc<Classifier>>,
    ) -> Arc<Self> {
        let targets: Vec<Target> = pool
            .backends
            .iter()
            .filter_map(|b| {
                Some(Target {
                    uri: b.endpoint_uri(EndpointKind::Embeddings).ok()?,
                    model: b.config.upstream_model.clone().unwrap_or(pool.name.clone()),
                    credential: b.credential.clone(),
                })
            })
            .collect();
        if let Some(p) = previous.filter(|p| p.intents == *intents && p.targets == targets) {
            return p.clone();
        }
        let me = Arc::new(Classifier {
            intents: intents.clone(),
            targets,
            client: client.clone(),
            centroids: arc_swap::ArcSwapOption::empty(),
            cache: Mutex::new(HashMap::new()),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(learn(Arc::downgrade(&me)));
        }
        me
    }

    /// Whether the examples have been embedded.
    pub fn ready(&self) -> bool {
        self.centroids.load().is_some()
    }

    /// The class of `text`, or none (below the threshold, not ready, pool slow or down).
    pub async fn classify(&self, text: &str) -> Classified {
        let none = Classified {
            class: None,
            cached: false,
        };
        let Some(centroids) = self.centroids.load_full() else {
            return none;
        };
        let key = xxh3_64(text.as_bytes());
        if let Some(hit) = self.lock().get(&key) {
            return Classified {
                class: hit.clone(),
                cached: true,
            };
        }
        let embedded = tokio::time::timeout(self.intents.timeout, self.embed(&[text])).await;
        let Ok(Some(mut vectors)) = embedded else {
            return none; // slow or down: not remembered, the next request asks again
        };
        let Some(v) = vectors.pop() else { return none };
        let class = nearest(&centroids, &v, self.intents.threshold);
        let mut cache = self.lock();
        if cache.len() >= self.intents.cache {
            cache.clear(); // bounded: start over rather than track recency
        }
        cache.insert(key, class.clone());
        Classified {
            class,
            cached: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<Arc<str>>>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Unit vectors of `inputs` from the first backend of the pool that answers.
    async fn embed(&self, inputs: &[&str]) -> Option<Vec<Vec<f32>>> {
        for t in &self.targets {
            if let Some(v) = embed_at(&self.client, t, inputs).await {
                return Some(v);
            }
        }
        None
    }
}

/// Embeds the examples until it works (or the classifier is gone), then sets the centroids.
async fn learn(me: Weak<Classifier>) {
    let mut wait = Duration::from_millis(200);
    loop {
        let Some(c) = me.upgrade() else { return };
        let examples: Vec<&str> = c
            .intents
            .classes
            .iter()
            .flat_map(|(_, ex)| ex.iter().map(String::as_str))
            .filter(|e| !e.trim().is_empty())
            .collect();
        let budget = c.intents.timeout.max(Duration::from_secs(10));
        if let Ok(Some(vectors)) = tokio::time::timeout(budget, c.embed(&examples)).await {
            if vectors.len() == examples.len() {
                let mut at = 0;
                let mut centroids = Vec::new();
                for (name, ex) in &c.intents.classes {
                    let n = ex.iter().filter(|e| !e.trim().is_empty()).count();
                    centroids.push((Arc::from(name.as_str()), mean(&vectors[at..at + n])));
                    at += n;
                }
                c.centroids.store(Some(Arc::new(centroids)));
                tracing::info!(classes = c.intents.classes.len(), "intent classes embedded");
                return;
            }
        }
        tracing::warn!(model = %c.intents.model, retry_s = wait.as_secs_f64(), "cannot embed the intent examples yet; intent rules match nothing until then");
        drop(c);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// One `/v1/embeddings` call; `None` on any failure.
async fn embed_at(client: &UpstreamClient, t: &Target, inputs: &[&str]) -> Option<Vec<Vec<f32>>> {
    let body = serde_json::json!({"model": t.model, "input": inputs}).to_string();
    let mut req = Request::post(t.uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    if let Some((name, value)) = &t.credential {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    let resp = client.request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .ok()?
        .to_bytes();
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        index: usize,
        embedding: Vec<f32>,
    }
    let mut a: Answer = serde_json::from_slice(&bytes).ok()?;
    a.data.sort_by_key(|i| i.index);
    if a.data.len() != inputs.len() {
        return None;
    }
    Some(a.data.into_iter().map(|i| unit(i.embedding)).collect())
}

/// `v` scaled to length 1 (a zero vector stays zero).
fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The normalized mean of unit vectors.
fn mean(vs: &[Vec<f32>]) -> Vec<f32> {
    let dim = vs.iter().map(Vec::len).max().unwrap_or(0);
    let mut m = vec![0f32; dim];
    for v in vs {
        for (a, b) in m.iter_mut().zip(v) {
            *a += b;
        }
    }
    unit(m)
}

/// The class whose centroid is most similar to `v`, if that similarity reaches `threshold`.
fn nearest(centroids: &Centroids, v: &[f32], threshold: f32) -> Option<Arc<str>> {
    let cos = |c: &[f32]| c.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
    centroids
        .iter()
        .map(|(name, c)| (name, cos(c)))
        .filter(|(_, s)| s.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, s)| *s >= threshold)
        .map(|(name, _)| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_centroid_wins_above_the_threshold_only() {
        let c: Centroids = vec![
            (Arc::from("a"), vec![1.0, 0.0]),
            (Arc::from("b"), vec![0.0, 1.0]),
        ];
        assert_eq!(
            nearest(&c, &unit(vec![0.9, 0.1]), 0.5).as_deref(),
            Some("a")
        );
        assert_eq!(
            nearest(&c, &unit(vec![0.2, 0.8]), 0.5).as_deref(),
            Some("b")
        );
        assert_eq!(nearest(&c, &unit(vec![1.0, 1.0]), 0.8), None, "0.707 < 0.8");
        assert_eq!(
            mean(&[vec![1.0, 0.0], vec![0.0, 1.0]]),
            unit(vec![1.0, 1.0])
        );
    }
}
