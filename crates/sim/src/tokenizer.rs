//! A deterministic tokenizer stand-in, and the synthetic text that workloads and the engine's
//! outputs are made of.
//!
//! Real tokenizers (BPE, SentencePiece) are large tables and their exact output does not
//! matter to a load balancer; what matters is that
//!
//! - token counts are about right: English BPE averages about four bytes per token, the figure
//!   [`switchyard_core::profile::BYTES_PER_TOKEN`] uses for its estimates, so the simulator and
//!   the gateway's estimate agree exactly: `tokenize(text).len() == text.len().div_ceil(4)`;
//! - equal text gives equal token ids, and two texts that share a prefix share the tokens of
//!   that prefix, so prefix caching behaves as it does on a real engine.
//!
//! The stand-in cuts the UTF-8 bytes into 4-byte chunks (the last one may be shorter) and hashes
//! each chunk into a vocabulary of [`VOCAB_SIZE`] ids. Like a real tokenizer, a shared prefix
//! only yields shared tokens up to the last chunk boundary inside it; unlike a real one, a
//! boundary falls every four bytes whatever the text, and distinct chunks may share an id.
//!
//! Synthetic text ([`push_synthetic_text`]) is what generated workloads and the engine's outputs
//! are made of: a `seed` names a span of text, and its `i`-th 4-byte piece is a pure function of
//! `(seed, i)`. Every piece is exactly one token, so a span of `n` tokens is `4 n` bytes and
//! spans concatenate without shifting token boundaries: a multi-turn history that repeats the
//! engine's own output (same seed) re-tokenizes into the very tokens the engine generated.

use switchyard_core::profile::BYTES_PER_TOKEN;

/// Size of the stand-in vocabulary (Llama 3's), so ids look like real ones.
pub const VOCAB_SIZE: u32 = 128_256;

/// The characters synthetic text is drawn from: 32 printable ASCII characters, so every piece
/// is valid UTF-8 of exactly [`BYTES_PER_TOKEN`] bytes.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz .,;'-";

/// SplitMix64's finalizer: a fast, well-mixed 64-bit hash of a 64-bit value.
// `inline(always)` here and below: these run per simulated token, and debug builds (which the
// tests use) only inline what is marked so.
#[inline(always)]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The token id of one chunk of at most [`BYTES_PER_TOKEN`] bytes. The chunk's length is part
/// of the hash, so a short final chunk differs from a full one that starts with it.
#[inline]
pub fn token_of_chunk(chunk: &[u8]) -> u32 {
    let mut word = [0u8; BYTES_PER_TOKEN];
    let len = chunk.len().min(BYTES_PER_TOKEN);
    word[..len].copy_from_slice(&chunk[..len]);
    token_of_word(u32::from_le_bytes(word), len)
}

/// The token id of a chunk read as a little-endian word, zero-padded, of `len` bytes.
#[inline(always)]
fn token_of_word(word: u32, len: usize) -> u32 {
    (mix64(u64::from(word) | ((len as u64) << 32)) % u64::from(VOCAB_SIZE)) as u32
}

/// How many tokens `text` is: the same figure as the gateway's estimate.
pub fn token_count(text: &str) -> usize {
    text.len().div_ceil(BYTES_PER_TOKEN)
}

/// Appends the tokens of `text` to `out`.
pub fn tokenize_into(text: &str, out: &mut Vec<u32>) {
    // Plain indexing: this runs per token of every simulated prompt, in debug builds too.
    let b = text.as_bytes();
    out.reserve(token_count(text));
    let full = b.len() / BYTES_PER_TOKEN * BYTES_PER_TOKEN;
    let mut i = 0;
    while i < full {
        let word = u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        out.push(token_of_word(word, BYTES_PER_TOKEN));
        i += BYTES_PER_TOKEN;
    }
    if full < b.len() {
        out.push(token_of_chunk(&b[full..]));
    }
}

/// The tokens of `text`.
pub fn tokenize(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    tokenize_into(text, &mut out);
    out
}

/// The `index`-th piece of synthetic text `seed`: [`BYTES_PER_TOKEN`] ASCII bytes, one token.
#[inline(always)]
pub fn synthetic_piece(seed: u64, index: u32) -> [u8; BYTES_PER_TOKEN] {
    let h = mix64(seed ^ u64::from(index).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    [
        ALPHABET[(h & 31) as usize],
        ALPHABET[((h >> 8) & 31) as usize],
        ALPHABET[((h >> 16) & 31) as usize],
        ALPHABET[((h >> 24) & 31) as usize],
    ]
}

/// The token id of the `index`-th piece of synthetic text `seed`; equal to
/// `tokenize(text)[index]` for any text produced by [`push_synthetic_text`] with that seed.
#[inline]
pub fn synthetic_token(seed: u64, index: u32) -> u32 {
    token_of_word(
        u32::from_le_bytes(synthetic_piece(seed, index)),
        BYTES_PER_TOKEN,
    )
}

/// Appends `tokens` pieces of synthetic text `seed` (pieces `0..tokens`) to `out`:
/// `4 * tokens` bytes that tokenize into exactly `tokens` tokens.
pub fn push_synthetic_text(seed: u64, tokens: u32, out: &mut String) {
    push_synthetic(seed, tokens, out, None);
}

/// [`push_synthetic_text`], also appending the text's tokens to `ids` if given: the same
/// result as tokenizing the text afterwards, in one pass.
pub fn push_synthetic(seed: u64, tokens: u32, out: &mut String, ids: Option<&mut Vec<u32>>) {
    const BATCH: usize = 16;
    out.reserve(tokens as usize * BYTES_PER_TOKEN);
    let mut words = [0u32; BATCH];
    let mut buf = [0u8; BATCH * BYTES_PER_TOKEN];
    let mut ids = ids;
    let want_ids = ids.is_some();
    let mut i = 0;
    // Plain loops over arrays: this runs per token of every simulated prompt.
    while i < tokens {
        let n = (tokens - i).min(BATCH as u32) as usize;
        let mut k = 0;
        while k < n {
            let piece = synthetic_piece(seed, i + k as u32);
            buf[k * 4] = piece[0];
            buf[k * 4 + 1] = piece[1];
            buf[k * 4 + 2] = piece[2];
            buf[k * 4 + 3] = piece[3];
            if want_ids {
                words[k] = token_of_word(u32::from_le_bytes(piece), BYTES_PER_TOKEN);
            }
            k += 1;
        }
        // Every byte comes from ALPHABET, which is ASCII.
        out.push_str(std::str::from_utf8(&buf[..n * BYTES_PER_TOKEN]).unwrap_or_default());
        if let Some(ids) = ids.as_deref_mut() {
            ids.extend_from_slice(&words[..n]);
        }
        i += n as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_matches_the_gateway_estimate() {
        for text in ["", "a", "abcd", "abcde", "héllo wörld, this is a prompt"] {
            assert_eq!(tokenize(text).len(), text.len().div_ceil(BYTES_PER_TOKEN));
            assert_eq!(token_count(text), tokenize(text).len());
        }
    }

    #[test]
    fn equal_text_equal_tokens_and_shared_prefix_shared_tokens() {
        let a = tokenize("You are a helpful assistant. Question one?");
        let b = tokenize("You are a helpful assistant. Question one?");
        let c = tokenize("You are a helpful assistant. Another question");
        assert_eq!(a, b);
        // "You are a helpful assistant. " is 29 bytes: 7 whole chunks are shared.
        assert_eq!(a[..7], c[..7]);
        assert_ne!(a[7..], c[7..]);
        assert!(a.iter().all(|&t| t < VOCAB_SIZE));
    }

    #[test]
    fn a_short_last_chunk_differs_from_a_full_one() {
        assert_ne!(token_of_chunk(b"ab"), token_of_chunk(b"ab\0\0"));
    }

    #[test]
    fn synthetic_text_tokenizes_into_its_synthetic_tokens() {
        let mut text = String::new();
        push_synthetic_text(42, 50, &mut text);
        assert_eq!(text.len(), 50 * BYTES_PER_TOKEN);
        let tokens = tokenize(&text);
        let expected: Vec<u32> = (0..50).map(|i| synthetic_token(42, i)).collect();
        assert_eq!(tokens, expected);
        let (mut again, mut ids) = (String::new(), Vec::new());
        push_synthetic(42, 50, &mut again, Some(&mut ids));
        assert_eq!((again.as_str(), ids.as_slice()), (&text[..], &tokens[..]));
        // Concatenated spans keep their boundaries.
        push_synthetic_text(7, 10, &mut text);
        let tokens = tokenize(&text);
        assert_eq!(
            tokens[50..],
            (0..10).map(|i| synthetic_token(7, i)).collect::<Vec<_>>()[..]
        );
        let mut other = String::new();
        push_synthetic_text(43, 50, &mut other);
        assert_ne!(text[..200], other[..]);
    }
}
