//! Mirroring: a copy of a request sent to a shadow pool in the background. The copy is a
//! request of its own (same body, headers and failover, `x-request-id` suffixed `-mirror`),
//! started only after the client's own request is on its way; its answer is read to the end
//! and dropped. Nothing of it reaches the client: not its latency, status or errors.

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::BodyExt;
use std::sync::Arc;
use switchyard_core::RequestProfile;
use tokio::time::Instant;

use crate::attempts;
use crate::gateway::Snapshot;
use crate::providers::ClientApi;

/// What the copy needs, owned, so it outlives the client's request.
pub struct Copy {
    /// The snapshot the original is served under.
    pub snap: Arc<Snapshot>,
    /// The shadow pool's name.
    pub pool: String,
    /// The original's profile.
    pub profile: RequestProfile,
    /// The chat-completions body the original sends.
    pub body: Bytes,
    /// The headers the original forwards.
    pub headers: crate::forward::Prepared,
    /// The original's `x-request-id`.
    pub request_id: HeaderValue,
}

/// Sends `copy` in the background; returns at once.
pub fn spawn(copy: Copy) {
    tokio::spawn(async move {
        let Some(pool) = copy.snap.pools.get(&copy.pool) else {
            return;
        };
        let id = format!("{}-mirror", copy.request_id.to_str().unwrap_or("?"));
        let id = HeaderValue::try_from(id).unwrap_or_else(|_| copy.request_id.clone());
        let mut headers = copy.headers;
        headers.add(crate::forward::X_REQUEST_ID, id.clone());
        let now = Instant::now();
        let req = attempts::Request {
            gw: &copy.snap,
            pool,
            profile: &copy.profile,
            body: &copy.body,
            client: ClientApi::OpenAi,
            original: &copy.body,
            headers: &headers,
            request_id: &id,
            started: now,
            body_read: now,
            explain: false,
            engine_priority: None,
            trace: None,
        };
        let outcome = match attempts::run(&req).await {
            Ok(attempts::Served { resp, .. }) if resp.status().is_success() => {
                // Read the answer to the end so the backend's slot is freed as for any
                // request; its bytes go nowhere.
                match resp.into_body().collect().await {
                    Ok(_) => "ok",
                    Err(_) => "error",
                }
            }
            Ok(_) | Err(_) => "error",
        };
        copy.snap
            .metrics
            .routes
            .mirrored
            .with_label_values(&[copy.pool.as_str(), outcome])
            .inc();
    });
}
