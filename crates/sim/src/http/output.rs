//! What a simulated replica answers, as a pure function of the request, so that a client (a
//! test, the chaos benchmark) can recompute it and check every token it received.
//!
//! A replica's output text depends on the served model name, the prompt's tokens and the
//! request's `seed` field, and on nothing else: not on the replica, its `--seed`, the time, or
//! which requests came before. Replicas of one model answer alike, as copies of one model with
//! greedy decoding do, so a request that a gateway fails over gets the same text from any of
//! them. Its `i`-th token is the 4-byte piece
//! [`synthetic_piece`](crate::tokenizer::synthetic_piece)`(output_seed, i)`, and the text is
//! `max_tokens` such pieces (the simulated model never stops early).
//!
//! ```
//! use switchyard_sim::http::{output, openai::Kind, ReplicaConfig};
//! let mut cfg = ReplicaConfig::from_profile(&switchyard_sim::profile::l4_llama3_8b());
//! cfg.model = "llama".into();
//! let body = br#"{"model":"llama","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#;
//! let want = output::expected(&cfg, Kind::Chat, body).unwrap();
//! assert_eq!(want.text.len(), 12);
//! assert_eq!(want.piece(1), Some(&want.text[4..8]));
//! ```

use crate::tokenizer::{self, mix64};
use switchyard_core::profile::BYTES_PER_TOKEN;

use super::openai::{self, Kind};
use super::ReplicaConfig;

/// The seed of the output text for a request to `model` with `prompt` tokens and the
/// request's `seed` field (`None` when absent).
pub fn output_seed(model: &str, prompt: &[u32], sampling_seed: Option<u64>) -> u64 {
    let model_hash = xxhash_rust::xxh3::xxh3_64(model.as_bytes());
    let mut bytes = Vec::with_capacity(prompt.len() * 4);
    for t in prompt {
        bytes.extend_from_slice(&t.to_le_bytes());
    }
    let prompt_hash = xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, model_hash);
    // `Some(0)` and `None` must differ: a request that names seed 0 asked for a sample.
    let sampling = sampling_seed.map_or(0, |s| mix64(s ^ 0x7365_6564));
    mix64(prompt_hash ^ sampling)
}

/// The first `tokens` tokens of the output named `output_seed`.
pub fn output_text(output_seed: u64, tokens: u32) -> String {
    let mut s = String::with_capacity(tokens as usize * BYTES_PER_TOKEN);
    tokenizer::push_synthetic_text(output_seed, tokens, &mut s);
    s
}

/// What a replica answers to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The output's seed ([`output_seed`]); also the key a replica records a cancelled
    /// request under.
    pub output_seed: u64,
    /// Tokens it generates: the request's `max_completion_tokens` or `max_tokens`, or the
    /// replica's default.
    pub max_tokens: u32,
    /// The whole output text: `max_tokens` pieces of 4 bytes.
    pub text: String,
}

impl Expected {
    /// The `i`-th token's text, one streamed chunk's content.
    pub fn piece(&self, i: usize) -> Option<&str> {
        self.text
            .get(i * BYTES_PER_TOKEN..(i + 1) * BYTES_PER_TOKEN)
    }
}

/// What a replica configured as `cfg` answers to `body` on the endpoint `kind`; the reason
/// when the replica would refuse it with a 400 (or a 404 for another model's name).
pub fn expected(cfg: &ReplicaConfig, kind: Kind, body: &[u8]) -> Result<Expected, String> {
    let obj = openai::parse_object(body).map_err(|e| e.message)?;
    openai::check_model_name(&cfg.model, &obj).map_err(|e| e.message)?;
    let limits = openai::Limits {
        max_model_len: cfg.engine.max_model_len,
        default_max_tokens: cfg.default_max_tokens.max(1),
    };
    let g = openai::parse_generation(limits, kind, &obj)?;
    let output_seed = output_seed(&cfg.model, &g.prompt, g.seed);
    Ok(Expected {
        output_seed,
        max_tokens: g.max_tokens,
        text: output_text(output_seed, g.max_tokens),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile;

    fn cfg() -> ReplicaConfig {
        let mut c = ReplicaConfig::from_profile(&profile::h100_llama3_8b());
        c.model = "m".into();
        c
    }

    fn chat(content: &str, extra: &str) -> Vec<u8> {
        format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}],"max_tokens":5{extra}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn the_output_depends_on_the_request_only() {
        let a = expected(&cfg(), Kind::Chat, &chat("hello", "")).unwrap();
        assert_eq!(a, expected(&cfg(), Kind::Chat, &chat("hello", "")).unwrap());
        assert_eq!((a.max_tokens, a.text.len()), (5, 20));
        // Another replica seed: the same text.
        let mut other = cfg();
        other.seed = 99;
        assert_eq!(a, expected(&other, Kind::Chat, &chat("hello", "")).unwrap());
        // Another prompt, another `seed` field, another model: another text.
        let b = expected(&cfg(), Kind::Chat, &chat("hellp", "")).unwrap();
        let c = expected(&cfg(), Kind::Chat, &chat("hello", r#","seed":0"#)).unwrap();
        assert!(a.text != b.text && a.text != c.text && b.text != c.text);
        let mut m2 = cfg();
        m2.model = "m2".into();
        let body =
            br#"{"model":"m2","messages":[{"role":"user","content":"hello"}],"max_tokens":5}"#;
        assert_ne!(expected(&m2, Kind::Chat, body).unwrap().text, a.text);
        // A longer answer starts with the shorter one, as greedy decoding does.
        let long = expected(
            &cfg(),
            Kind::Chat,
            &chat("hello", r#","max_completion_tokens":9"#),
        )
        .unwrap();
        assert_eq!((long.max_tokens, &long.text[..20]), (9, a.text.as_str()));
        assert_eq!(a.piece(4), Some(&a.text[16..20]));
        assert_eq!(a.piece(5), None);
    }

    #[test]
    fn refused_requests_say_why() {
        assert!(expected(&cfg(), Kind::Chat, b"[1]").is_err());
        assert!(expected(&cfg(), Kind::Chat, br#"{"model":"x","messages":[]}"#).is_err());
        assert!(expected(&cfg(), Kind::Completion, br#"{"prompt":"a","seed":"x"}"#).is_err());
        let c = expected(&cfg(), Kind::Completion, br#"{"prompt":"abcd","seed":-3}"#).unwrap();
        assert_eq!(c.max_tokens, super::super::DEFAULT_MAX_TOKENS);
    }
}
