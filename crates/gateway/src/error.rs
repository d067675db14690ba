//! Every way the gateway itself can answer with an error, mapped to an OpenAI-shaped response
//! in one place: `{"error": {"message", "type", "param", "code"}}` with a stable `code`.
//! The admin API's errors ([`crate::admin`]) are here too.
//! Upstream error responses are not these: they pass through as the backend sent them.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use std::time::Duration;
use switchyard_core::ProfileError;

use crate::body::GatewayBody;
use crate::providers::ClientApi;

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
    /// The client sent the body too slowly: nothing arrived within the body-read timeout.
    #[error("the request body stalled: nothing arrived for {after:?} (limits.body_read_timeout); send the whole body without pauses")]
    BodyTimeout {
        /// The timeout that fired.
        after: std::time::Duration,
    },
    /// The gateway itself ran out of a local resource (file descriptors, ephemeral ports,
    /// memory) while opening an upstream connection. Not the backend's fault.
    #[error("the gateway is out of local resources to reach a backend ({detail}); retry shortly")]
    GatewayOverloaded {
        /// What ran out.
        detail: String,
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
    #[error("no endpoint {method} {path}; see GET /v1/models, POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages")]
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
    /// An admin request without the admin token, or with another one.
    #[error("{0}")]
    AdminUnauthorized(&'static str),
    /// The admin API names a backend no pool has.
    #[error("no backend '{name}'{}; GET /admin/backends lists them", in_model(.model))]
    BackendNotFound {
        /// The name asked for.
        name: String,
        /// The pool it was looked for in, if the caller scoped it.
        model: Option<String>,
    },
    /// The admin API names a backend that several pools have.
    #[error(
        "backend '{name}' is in more than one model ({models}); add ?model=<model> to say which"
    )]
    AmbiguousBackend {
        /// The name asked for.
        name: String,
        /// Comma-separated pools that have it.
        models: String,
    },
    /// Adding a backend whose name the pool already has.
    #[error(
        "model '{model}' already has a backend named '{name}'; give the new one a distinct `name`"
    )]
    BackendExists {
        /// The name.
        name: String,
        /// The pool.
        model: String,
    },
    /// Removing the only backend of a pool.
    #[error("'{name}' is the last backend of model '{model}'; a model needs at least one (remove the model from the config file and reload instead)")]
    LastBackend {
        /// The backend.
        name: String,
        /// The pool.
        model: String,
    },
    /// A backend description sent to the admin API that cannot be used.
    #[error("invalid backend: {0}")]
    InvalidBackend(String),
    /// A query parameter of an admin request that cannot be used.
    #[error("invalid query parameter `{param}`: {message}")]
    InvalidParam {
        /// The parameter.
        param: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A reload found the config file invalid; the running config is unchanged.
    #[error("the config was not reloaded; the running config is unchanged: {0}")]
    InvalidConfig(crate::config::ConfigError),
    /// A reload was asked of a gateway that was not started from a config file.
    #[error("this gateway was not started from a config file, so there is nothing to reload")]
    NoConfigFile,
    /// No API key, or one that is unknown, revoked or expired (auth on).
    #[error("{0}")]
    InvalidApiKey(&'static str),
    /// The key may not use this model.
    #[error("this API key may not use model '{model}'")]
    ModelNotAllowed {
        /// The requested model.
        model: String,
    },
    /// A key's, tenant's, model's or backend's rate limit refused the request.
    #[error("rate limit exceeded: the {scope}'s {limit} limit is reached; retry after {}s", retry_after.as_secs())]
    RateLimited {
        /// `key`, `tenant`, `model` or `backend`.
        scope: &'static str,
        /// `rpm`, `tpm` or `max_concurrent`.
        limit: &'static str,
        /// When a retry may pass.
        retry_after: Duration,
    },
    /// The request waited its priority level's queue timeout for a backend of its model.
    #[error("every backend of model '{model}' stayed busy for {}s (the {priority} queue timeout); retry later", after.as_secs_f64())]
    QueueTimeout {
        /// The model.
        model: String,
        /// Its level.
        priority: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The model's admission queue had no room for the request at its level, or it was
    /// shed for a more urgent one.
    #[error("the waiting queue of model '{model}' is full at priority {priority}; retry later")]
    QueueFull {
        /// The model.
        model: String,
        /// Its level.
        priority: &'static str,
    },
    /// The key's or tenant's budget for the period is spent.
    #[error("the {scope}'s budget for this period is spent; it renews with the next period, or ask for a larger budget")]
    InsufficientQuota {
        /// `key`, `tenant`, `model` or `backend`.
        scope: &'static str,
    },
    /// The key store (`auth.db`) could not be used.
    #[error("the key store is not available: {0}")]
    KeyStore(String),
    /// The request cannot be put in the API of the backend (or the endpoint) it is for.
    #[error("the request cannot be translated: {0}")]
    Untranslatable(String),
}

fn in_model(model: &Option<String>) -> String {
    model
        .as_ref()
        .map(|m| format!(" in model '{m}'"))
        .unwrap_or_default()
}

impl ApiError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::GatewayOverloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ModelNotFound { .. } | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NoBackend { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::AdminUnauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BackendNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AmbiguousBackend { .. }
            | ApiError::BackendExists { .. }
            | ApiError::LastBackend { .. }
            | ApiError::NoConfigFile => StatusCode::CONFLICT,
            ApiError::InvalidBackend(_)
            | ApiError::InvalidParam { .. }
            | ApiError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidApiKey(_) => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. }
            | ApiError::QueueTimeout { .. }
            | ApiError::QueueFull { .. }
            | ApiError::InsufficientQuota { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::KeyStore(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Untranslatable(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(e) => e.code(),
            ApiError::BodyRead(_) => "body_read_error",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BodyTimeout { .. } => "request_body_timeout",
            ApiError::GatewayOverloaded { .. } => "gateway_overloaded",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::NoBackend { .. } => "no_backend_available",
            ApiError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ApiError::UpstreamTimeout { .. } => "upstream_timeout",
            ApiError::NotFound { .. } => "unknown_endpoint",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::AdminUnauthorized(_) => "admin_unauthorized",
            ApiError::BackendNotFound { .. } => "backend_not_found",
            ApiError::AmbiguousBackend { .. } => "ambiguous_backend",
            ApiError::BackendExists { .. } => "backend_exists",
            ApiError::LastBackend { .. } => "last_backend",
            ApiError::InvalidBackend(_) => "invalid_backend",
            ApiError::InvalidParam { .. } => "invalid_parameter",
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::NoConfigFile => "no_config_file",
            ApiError::InvalidApiKey(_) => "invalid_api_key",
            ApiError::ModelNotAllowed { .. } => "model_not_allowed",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
            ApiError::QueueTimeout { .. } => "queue_timeout",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::InsufficientQuota { .. } => "insufficient_quota",
            ApiError::KeyStore(_) => "key_store_unavailable",
            ApiError::Untranslatable(_) => "untranslatable_request",
        }
    }

    /// How long the client should wait before retrying, for the answers that say so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::QueueTimeout { .. } | ApiError::QueueFull { .. } => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// The request parameter at fault, when there is one.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidParam { param, .. } => Some(param),
            _ => None,
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
        self.into_response_for(ClientApi::OpenAi)
    }

    /// The response in the shape of the API `client` called: OpenAI's
    /// `{"error": {"message", "type", "param", "code"}}`, or Anthropic's
    /// `{"type": "error", "error": {"type", "message"}}` (its type from the status).
    pub fn into_response_for(self, client: ClientApi) -> Response<GatewayBody> {
        let status = self.status();
        let body = match client {
            ClientApi::OpenAi => serde_json::json!({
                "error": { "message": self.to_string(), "type": self.kind(), "param": self.param(), "code": self.code() }
            })
            .to_string()
            .into_bytes(),
            ClientApi::Anthropic => crate::providers::anthropic_error(
                crate::providers::anthropic_error_type(status),
                &self.to_string(),
            ),
        };
        let mut resp = Response::new(GatewayBody::full(Bytes::from(body)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(after) = self.retry_after() {
            // Whole seconds, rounded up: a client that waits that long passes.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = &self {
            h.insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
