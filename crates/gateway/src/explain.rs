//! Showing a routing decision: the `x-switchyard-route` debug header, with the policy, its
//! reason, and, for policies that score candidates, every candidate's score and terms. Turned
//! on with `debug_headers: true`; it names backends and their load, so it is off by default.

use http::HeaderValue;
use std::fmt::Write;
use switchyard_core::Decision;

use crate::fleet::Pool;

/// Longest header value written; a huge pool's explanation is cut with `...`.
const MAX_LEN: usize = 4096;

/// `policy; reason; name=score (term value, ...); ...`.
pub fn route_header(pool: &Pool, decision: &Decision) -> HeaderValue {
    let mut s = String::with_capacity(128);
    let _ = write!(s, "{}; {}", pool.policy.name(), decision.reason);
    if let Some(ex) = &decision.explanation {
        for c in &ex.candidates {
            let name = pool.backend(c.id).map_or("?", |b| b.name());
            let _ = write!(s, "; {name}={}", num(c.score));
            if !c.terms.is_empty() {
                s.push_str(" (");
                for (i, (term, v)) in c.terms.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    let _ = write!(s, "{term} {}", num(*v));
                }
                s.push(')');
            }
            if s.len() > MAX_LEN {
                // Cut on a character boundary: names may hold multi-byte characters, and
                // `truncate` panics inside one.
                let mut cut = MAX_LEN;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.push_str("...");
                break;
            }
        }
    }
    // Reasons and names are ASCII; anything else is replaced rather than dropping the header.
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("unprintable"))
}

/// A score without noise digits.
fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.is_finite() {
        format!("{v:.3}")
    } else {
        v.to_string()
    }
}
