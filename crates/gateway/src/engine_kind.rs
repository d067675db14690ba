//! Which inference engine serves a backend, what it says of its cache, and the cache model
//! routing takes from that ([`switchyard_core::CacheModel`]).
//!
//! The kind comes from the backend's `engine:` setting, else from detection
//! ([`crate::scrape::detect`]) on start and whenever a backend is added. Until a backend is
//! detected it is routed as today (a paged prefix cache), so a slow or failing probe never
//! makes routing worse than before.

use arc_swap::ArcSwapOption;
use serde::Deserialize;
use std::sync::Arc;
use switchyard_core::CacheModel;

/// Slots assumed for a llama.cpp server whose `GET /props` could not be read: its
/// `--parallel` default (`-1`, auto) runs 4.
pub const DEFAULT_LLAMACPP_SLOTS: u32 = 4;
/// Context per slot assumed for a llama.cpp server whose `GET /props` could not be read.
pub const DEFAULT_LLAMACPP_CTX_TOKENS: u32 = 4096;

/// An inference engine family, as config names it (`engine:` on a backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// vLLM: `GET /version`, `vllm:` metrics.
    Vllm,
    /// SGLang: `GET /get_server_info`, `sglang:` metrics.
    Sglang,
    /// llama.cpp's `llama-server`: `GET /props`, `llamacpp:` metrics.
    Llamacpp,
    /// Hugging Face Text Generation Inference: `GET /info`, `tgi_` metrics.
    Tgi,
    /// A hosted API: set in config, or detected for an `https://` backend that answers none
    /// of the probes above.
    Hosted,
    /// An `http://` backend that answers none of the probes (an engine behind a proxy, an
    /// older version): routed with a paged cache, as before detection existed. Never set in
    /// config.
    #[serde(skip)]
    Other,
}

impl EngineKind {
    /// The config and admin name.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Vllm => "vllm",
            EngineKind::Sglang => "sglang",
            EngineKind::Llamacpp => "llamacpp",
            EngineKind::Tgi => "tgi",
            EngineKind::Hosted => "hosted",
            EngineKind::Other => "other",
        }
    }
}

/// Where a backend's engine kind came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindSource {
    /// The backend's `engine:` setting.
    Config,
    /// A probe of the backend.
    Detected,
}

/// What the gateway knows of a backend's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineInfo {
    /// The family.
    pub kind: EngineKind,
    /// Where `kind` came from.
    pub source: KindSource,
    /// llama.cpp: `total_slots` from `GET /props`.
    pub slots: Option<u32>,
    /// llama.cpp: tokens per slot (`default_generation_settings.n_ctx`).
    pub ctx_tokens: Option<u32>,
}

impl EngineInfo {
    /// The kind from config, before (or without) a probe.
    pub fn configured(kind: EngineKind) -> Self {
        Self {
            kind,
            source: KindSource::Config,
            slots: None,
            ctx_tokens: None,
        }
    }

    /// What routing assumes this engine keeps cached (see [`CacheModel`]).
    pub fn cache_model(&self) -> CacheModel {
        match self.kind {
            EngineKind::Vllm | EngineKind::Sglang | EngineKind::Tgi | EngineKind::Other => {
                CacheModel::Paged
            }
            EngineKind::Hosted => CacheModel::Opaque,
            EngineKind::Llamacpp => CacheModel::Slots {
                slots: self.slots.unwrap_or(DEFAULT_LLAMACPP_SLOTS).max(1),
                ctx_tokens: self.ctx_tokens.unwrap_or(DEFAULT_LLAMACPP_CTX_TOKENS),
            },
        }
    }

    /// Whether a probe still has something to learn: the kind, or a llama.cpp's slots.
    pub fn complete(&self) -> bool {
        self.kind != EngineKind::Llamacpp || self.slots.is_some()
    }

    /// As `/admin/backends` shows it.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind.name(),
            "source": match self.source {
                KindSource::Config => "config",
                KindSource::Detected => "detected",
            },
            "slots": self.slots,
            "ctx_tokens": self.ctx_tokens,
        })
    }
}

/// A backend's engine as last learned; read lock-free by every decision.
#[derive(Debug, Default)]
pub struct EngineCell(ArcSwapOption<EngineInfo>);

impl EngineCell {
    /// What is known, if anything.
    pub fn get(&self) -> Option<EngineInfo> {
        self.0.load().as_deref().copied()
    }

    /// Replaces what is known.
    pub fn set(&self, info: EngineInfo) {
        self.0.store(Some(Arc::new(info)));
    }

    /// The cache model for routing: the engine's, or a paged cache while it is unknown.
    pub fn cache_model(&self) -> CacheModel {
        self.0
            .load()
            .as_deref()
            .map_or(CacheModel::Paged, EngineInfo::cache_model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_its_cache_model() {
        let mut info = EngineInfo::configured(EngineKind::Vllm);
        assert_eq!(info.cache_model(), CacheModel::Paged);
        info.kind = EngineKind::Hosted;
        assert_eq!(info.cache_model(), CacheModel::Opaque);
        info.kind = EngineKind::Llamacpp;
        assert!(!info.complete());
        assert_eq!(
            info.cache_model(),
            CacheModel::Slots {
                slots: DEFAULT_LLAMACPP_SLOTS,
                ctx_tokens: DEFAULT_LLAMACPP_CTX_TOKENS
            }
        );
        info.slots = Some(2);
        info.ctx_tokens = Some(8192);
        assert!(info.complete());
        assert_eq!(
            info.cache_model(),
            CacheModel::Slots {
                slots: 2,
                ctx_tokens: 8192
            }
        );
        let cell = EngineCell::default();
        assert_eq!(cell.cache_model(), CacheModel::Paged, "unknown: as before");
        cell.set(info);
        assert_eq!(cell.get(), Some(info));
    }
}
