//! Every way the gateway itself can answer with an error, mapped to an OpenAI-shaped response
//! in one place: `{"error": {"message", "type", "code"}}` with a stable `code`.
//! Upstream error responses are not these: they pass through as the backend sent them.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use std::time::Duration;
use switchyard_core::ProfileError;

use crate::body::GatewayBody;

/// An error the gateway answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be profiled.
    #[error("{0}")]
    BadRequest(#[from] ProfileError),
    /// The body could not be read from the client.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The body is over the configured limit.
    #[error("request body is larger than the limit of {limit} bytes; send a smaller request or raise max_body_bytes in the config")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// No pool serves this model.
    #[error("model '{model}' is not served here; available models: {available}")]
    ModelNotFound {
        /// The requested name.
        model: String,
        /// Comma-separated configured names.
        available: String,
    },
    /// Every backend of the pool is unusable now.
    #[error("no backend of model '{model}' can take a request now; retry shortly")]
    NoBackend {
        /// The requested model.
        model: String,
    },
    /// The backend could not be reached.
    #[error("backend '{backend}' is unreachable: {detail}")]
    UpstreamUnreachable {
        /// Backend name.
        backend: String,
        /// What failed (connection refused, reset, TLS...).
        detail: String,
    },
    /// The backend did not answer in time.
    #[error("backend '{backend}' sent no response within {}s", after.as_secs_f64())]
    UpstreamTimeout {
        /// Backend name.
        backend: String,
        /// The timeout that fired.
        after: Duration,
    },
    /// No such endpoint.
    #[error("no endpoint {method} {path}; see GET /v1/models, POST /v1/chat/completions, /v1/completions, /v1/embeddings")]
    NotFound {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The endpoint exists but not with this method.
    #[error("{path} accepts {allowed} only")]
    MethodNotAllowed {
        /// Request path.
        path: String,
        /// The method it accepts.
        allowed: &'static str,
    },
}

impl ApiError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ModelNotFound { .. } | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NoBackend { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(e) => e.code(),
            ApiError::BodyRead(_) => "body_read_error",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::NoBackend { .. } => "no_backend_available",
            ApiError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ApiError::UpstreamTimeout { .. } => "upstream_timeout",
            ApiError::NotFound { .. } => "unknown_endpoint",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }

    /// OpenAI's error `type`: the client's fault or the server side's.
    pub fn kind(&self) -> &'static str {
        if self.status().is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        }
    }

    /// The response, ready to send.
    pub fn into_response(self) -> Response<GatewayBody> {
        let status = self.status();
        let body = serde_json::json!({
            "error": { "message": self.to_string(), "type": self.kind(), "param": null, "code": self.code() }
        });
        let mut resp = Response::new(GatewayBody::full(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = &self {
            h.insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        resp
    }
}
