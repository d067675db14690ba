//! The endpoints that answer without the engine: `POST /v1/embeddings` (a deterministic unit
//! vector per input that reflects word overlap: texts sharing words point the same way, so
//! semantic routing can be exercised without a model), `/tokenize` and `/detokenize` over the stand-in
//! [`tokenizer`]. Input is read as [`super::openai`] reads it, and refused in vLLM's shape.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::openai::{
    bad_request, check_model, completion_prompt, json_response, parse_object, render_chat, unix_now,
};
use super::server::{Shared, SimBody};
use crate::tokenizer::{self, mix64};

/// Dimension of the simulated embedding vectors.
pub const EMBEDDING_DIM: usize = 256;

/// `POST /v1/embeddings`: a deterministic unit vector per input, from its tokens.
pub fn embeddings(shared: &Shared, body: &[u8]) -> Response<SimBody> {
    let obj = match parse_object(body) {
        Ok(o) => o,
        Err(e) => return e.response(),
    };
    if let Err(e) = check_model(shared, &obj) {
        return e.response();
    }
    // Text inputs embed by their words; token-id inputs by their tokens.
    let inputs: Vec<(usize, Vec<f32>)> = match obj.get("input") {
        Some(Value::String(s)) => vec![(tokenizer::tokenize(s).len(), embed_words(s))],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) && !items.is_empty() => {
            items
                .iter()
                .map(|s| {
                    let s = s.as_str().unwrap_or_default();
                    (tokenizer::tokenize(s).len(), embed_words(s))
                })
                .collect()
        }
        Some(v @ Value::Array(_)) => match completion_prompt(Some(v)) {
            Ok(t) => vec![(t.len(), embed(&t))],
            Err(m) => return bad_request(&m),
        },
        _ => return bad_request("`input` must be a string or an array of strings"),
    };
    let mut tokens = 0usize;
    let data: Vec<Value> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, (n, v))| {
            tokens += n;
            json!({"index": i, "object": "embedding", "embedding": v})
        })
        .collect();
    let body = json!({
        "id": format!("embd-{:016x}", mix64(shared.next_request_id().0 ^ shared.seed)),
        "object": "list",
        "created": unix_now(),
        "model": shared.model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    });
    json_response(StatusCode::OK, body.to_string())
}

/// A unit vector that depends only on the tokens.
fn embed(tokens: &[u32]) -> Vec<f32> {
    let mut h = 0x656d_6265_6464_696e_u64;
    for &t in tokens {
        h = mix64(h ^ u64::from(t));
    }
    let mut v: Vec<f32> = (0..EMBEDDING_DIM as u64)
        .map(|i| (mix64(h ^ i) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// A unit vector from `text`'s words (lowercased runs of letters and digits), each hashed to
/// a few signed dimensions: the cosine of two texts grows with the words they share.
fn embed_words(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; EMBEDDING_DIM];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h = 0x776f_7264_u64;
        for b in word.to_lowercase().bytes() {
            h = mix64(h ^ u64::from(b));
        }
        for k in 0..4u64 {
            let x = mix64(h ^ k);
            let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
            v[((x >> 1) % EMBEDDING_DIM as u64) as usize] += sign;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v[0] = 1.0; // no words: still a unit vector
    }
    v
}

/// `POST /tokenize`: `{"prompt": "..."}` or `{"messages": [...]}` to token ids.
pub fn tokenize(shared: &Shared, body: &[u8]) -> Response<SimBody> {
    let obj = match parse_object(body) {
        Ok(o) => o,
        Err(e) => return e.response(),
    };
    if let Err(e) = check_model(shared, &obj) {
        return e.response();
    }
    let text = match (obj.get("prompt"), obj.get("messages")) {
        (Some(Value::String(p)), _) => p.clone(),
        (None, Some(m)) => match render_chat(Some(m)) {
            Ok(t) => t,
            Err(e) => return bad_request(&e),
        },
        _ => return bad_request("send `prompt` (a string) or `messages`"),
    };
    let tokens = tokenizer::tokenize(&text);
    shared.vocab.learn(&text, &tokens);
    let body =
        json!({"count": tokens.len(), "max_model_len": shared.max_model_len, "tokens": tokens});
    json_response(StatusCode::OK, body.to_string())
}

/// `POST /detokenize`: token ids back to text, for tokens this replica has seen in `/tokenize`
/// (the stand-in tokenizer hashes text, so it cannot invert unseen ids; those read `<|id|>`).
pub fn detokenize(shared: &Shared, body: &[u8]) -> Response<SimBody> {
    let obj = match parse_object(body) {
        Ok(o) => o,
        Err(e) => return e.response(),
    };
    let Some(Value::Array(ids)) = obj.get("tokens") else {
        return bad_request("`tokens` must be an array of token ids");
    };
    let mut ids32 = Vec::with_capacity(ids.len());
    for t in ids {
        match t.as_u64().and_then(|t| u32::try_from(t).ok()) {
            Some(t) => ids32.push(t),
            None => return bad_request("`tokens` must be an array of token ids"),
        }
    }
    let body = json!({"prompt": shared.vocab.text(&ids32)});
    json_response(StatusCode::OK, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed(&[1, 2, 3]);
        assert_eq!(a, embed(&[1, 2, 3]));
        assert_ne!(a, embed(&[1, 2, 4]));
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-3);
    }

    #[test]
    fn text_embeddings_reflect_word_overlap() {
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let q = embed_words("fix this Rust compile error");
        assert_eq!(
            q,
            embed_words("fix this rust compile error"),
            "deterministic, any case"
        );
        let near = embed_words("the rust compiler shows an error");
        let far = embed_words("write a poem about the sea");
        assert!(
            cos(&q, &near) > cos(&q, &far) + 0.2,
            "{} {}",
            cos(&q, &near),
            cos(&q, &far)
        );
        let n: f32 = far.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-3);
        assert!((embed_words("").iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
