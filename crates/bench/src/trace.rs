//! Trace files: a workload as JSON lines, one request per line, so the same requests can be
//! generated once (`switchyard bench trace`) and replayed in real time against any
//! OpenAI-compatible endpoint (`switchyard bench replay`), or played in virtual time.
//!
//! # Format
//!
//! Each non-empty line is one JSON object (lines starting with `#` are comments):
//!
//! ```json
//! {"t":0.25,"session":"3f9a","tenant":"acme","priority":"critical","segments":[{"id":"sys-1","tokens":2000},{"id":"q-17","tokens":40}],"max_tokens":128}
//! {"t":0.31,"prompt":"Say hi","max_tokens":8}
//! ```
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `t` | number, required | arrival time, seconds from the start of the trace (>= 0); lines may be in any order, replay sorts them |
//! | `session` | string | the client's session key (sent as `x-session-id`) |
//! | `tenant` | string | who sends it (sent as `x-tenant`) |
//! | `priority` | string | `critical`, `standard`, `batch` or any label (sent as `x-priority`) |
//! | `segments` | array of `{"id": string, "tokens": int >= 1}` | the prompt as spans of synthetic text: equal ids are equal text, so a shared prefix is a shared first id |
//! | `prompt` | string | literal prompt text instead of `segments` (exactly one of the two) |
//! | `max_tokens` | int >= 1, required | output tokens asked for |
//!
//! Synthetic text is the sim crate's: four bytes per token, a pure function of the id, so a
//! simulated replica's prefix cache sees a shared id as a shared prefix. Unknown fields are an
//! error (a typo should not silently change a benchmark).

use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard_sim::workload::{Prompt, Segment};

/// One span of synthetic prompt text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSegment {
    /// Names the text: equal ids are equal text.
    pub id: String,
    /// Length in tokens.
    pub tokens: u32,
}

/// One request of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRecord {
    /// Arrival, seconds from the start of the trace.
    pub t: f64,
    /// Session key, if the client has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Tenant, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Priority label, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Prompt as synthetic spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<TraceSegment>>,
    /// Prompt as literal text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Output tokens asked for.
    pub max_tokens: u32,
}

/// A trace line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a valid record.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The trace has no request.
    #[error("the trace has no request")]
    Empty,
}

fn bad(line: usize, message: impl Into<String>) -> TraceError {
    TraceError::Line {
        line,
        message: message.into(),
    }
}

impl TraceRecord {
    /// The prompt in the sim crate's terms (synthetic ids become seeds).
    pub fn sim_prompt(&self) -> Prompt {
        match (&self.segments, &self.prompt) {
            (Some(segs), _) => Prompt::Segments(
                segs.iter()
                    .map(|s| Segment {
                        seed: id_seed(&s.id),
                        tokens: s.tokens,
                    })
                    .collect(),
            ),
            (None, Some(text)) => Prompt::Text(text.clone()),
            (None, None) => Prompt::Text(String::new()),
        }
    }

    /// The prompt text a client sends.
    pub fn prompt_text(&self) -> String {
        let mut s = String::new();
        self.sim_prompt().render(&mut s);
        s
    }

    fn check(&self, line: usize) -> Result<(), TraceError> {
        if !(self.t.is_finite() && self.t >= 0.0) {
            return Err(bad(
                line,
                format!("`t` must be a number of seconds >= 0, got {}", self.t),
            ));
        }
        if self.max_tokens == 0 {
            return Err(bad(line, "`max_tokens` must be at least 1"));
        }
        match (&self.segments, &self.prompt) {
            (Some(_), Some(_)) => Err(bad(line, "give `segments` or `prompt`, not both")),
            (None, None) => Err(bad(line, "no prompt: give `segments` or `prompt`")),
            (Some(s), None) if s.is_empty() => Err(bad(line, "`segments` is empty")),
            (Some(s), None) => match s.iter().position(|s| s.tokens == 0 || s.id.is_empty()) {
                Some(i) => Err(bad(
                    line,
                    format!("segments[{i}]: `id` must be non-empty and `tokens` at least 1"),
                )),
                None => Ok(()),
            },
            (None, Some(_)) => Ok(()),
        }
    }
}

/// The seed a segment id names: a 16-digit hex id is the seed itself (what [`seed_id`]
/// writes), anything else is hashed (FNV-1a, 64 bit).
pub fn id_seed(id: &str) -> u64 {
    if id.len() == 16 {
        if let Ok(v) = u64::from_str_radix(id, 16) {
            return v;
        }
    }
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The id written for a synthetic segment seed.
pub fn seed_id(seed: u64) -> String {
    format!("{seed:016x}")
}

/// Parses trace text; returns its records sorted by arrival (stable).
pub fn parse(text: &str) -> Result<Vec<TraceRecord>, TraceError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let rec: TraceRecord =
            serde_json::from_str(l).map_err(|e| bad(line, format!("not a trace record: {e}")))?;
        rec.check(line)?;
        out.push(rec);
    }
    if out.is_empty() {
        return Err(TraceError::Empty);
    }
    out.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(out)
}

/// Reads and parses a trace file.
pub fn read(path: &Path) -> Result<Vec<TraceRecord>, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

/// Renders records as trace text (one JSON line each).
pub fn render(records: &[TraceRecord]) -> String {
    let mut s = String::new();
    for r in records {
        // A record of plain fields always serializes.
        if let Ok(line) = serde_json::to_string(r) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}

/// Writes records to a trace file.
pub fn write(path: &Path, records: &[TraceRecord]) -> Result<(), TraceError> {
    std::fs::write(path, render(records)).map_err(|source| TraceError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A trace of a generated workload, one record per request with its tag.
pub fn from_workload(
    workload: &switchyard_sim::Workload,
    tags: &[crate::scenarios::Tag],
) -> Vec<TraceRecord> {
    workload
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let tag = tags.get(i).cloned().unwrap_or_default();
            let (segments, prompt) = match &r.prompt {
                Prompt::Segments(s) => (
                    Some(
                        s.iter()
                            .map(|s| TraceSegment {
                                id: seed_id(s.seed),
                                tokens: s.tokens,
                            })
                            .collect(),
                    ),
                    None,
                ),
                Prompt::Text(t) => (None, Some(t.clone())),
            };
            TraceRecord {
                // Microsecond resolution keeps the file short and the order exact.
                t: (r.arrival * 1e6).round() / 1e6,
                session: r.session.map(seed_id),
                tenant: tag.tenant,
                priority: tag.priority.map(str::to_owned),
                segments,
                prompt,
                max_tokens: r.max_output_tokens,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
# a comment
{"t":0.5,"session":"s1","tenant":"acme","priority":"batch","segments":[{"id":"sys","tokens":3},{"id":"00000000000000ff","tokens":2}],"max_tokens":4}

{"t":0.1,"prompt":"Say hi","max_tokens":8}
"#;

    #[test]
    fn good_lines_parse_sorted_with_comments_and_blanks_skipped() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].prompt.as_deref(), Some("Say hi"));
        assert_eq!(r[1].tenant.as_deref(), Some("acme"));
        assert_eq!(r[1].prompt_text().len(), 4 * 5, "four bytes per token");
        match r[1].sim_prompt() {
            Prompt::Segments(s) => assert_eq!(s[1].seed, 0xff),
            Prompt::Text(_) => panic!("segments expected"),
        }
    }

    #[test]
    fn generated_workloads_become_traces_that_keep_shared_prefixes() {
        let sc =
            crate::scenarios::build("shared_prefix", crate::scenarios::Size::Quick, 4).unwrap();
        let recs = from_workload(&sc.workload, &sc.tags);
        let back = parse(&render(&recs)).unwrap();
        assert_eq!(back.len(), sc.workload.len());
        for (r, w) in back.iter().zip(&sc.workload.requests) {
            assert_eq!(r.sim_prompt(), w.prompt);
            assert_eq!(r.max_tokens, w.max_output_tokens);
        }
    }

    #[test]
    fn render_then_parse_round_trips() {
        let r = parse(GOOD).unwrap();
        assert_eq!(parse(&render(&r)).unwrap(), r);
        assert_eq!(id_seed(&seed_id(u64::MAX - 3)), u64::MAX - 3);
        assert_ne!(id_seed("a"), id_seed("b"));
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_lines_name_their_line_and_the_fix() {
        let ok = r#"{"t":0,"prompt":"x","max_tokens":1}"#;
        assert!(err(&format!("{ok}\nnot json")).starts_with("line 2: not a trace record"));
        assert!(err(r#"{"t":-1,"prompt":"x","max_tokens":1}"#).contains("`t` must be"));
        assert!(err(r#"{"t":0,"prompt":"x","max_tokens":0}"#).contains("`max_tokens` must"));
        assert!(err(r#"{"t":0,"max_tokens":3}"#).contains("no prompt"));
        assert!(
            err(r#"{"t":0,"prompt":"x","segments":[{"id":"a","tokens":1}],"max_tokens":3}"#)
                .contains("not both")
        );
        assert!(
            err(r#"{"t":0,"segments":[{"id":"a","tokens":0}],"max_tokens":3}"#)
                .contains("segments[0]")
        );
        assert!(err(r#"{"t":0,"segments":[],"max_tokens":3}"#).contains("empty"));
        assert!(err(r#"{"t":0,"prompt":"x","max_token":3}"#).contains("unknown field"));
        assert!(err(r#"{"prompt":"x","max_tokens":3}"#).contains("missing field `t`"));
        assert_eq!(err("# only a comment\n"), "the trace has no request");
    }
}
