//! Config errors that say where (file, line, column), what is wrong, and how to fix it.

use std::fmt;
use std::path::Path;

/// A config file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or other origin) the text came from.
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong, with the YAML path of the value (e.g. `models.llama.backends[1].url`).
    pub message: String,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    pub(crate) fn io(path: &Path, e: &std::io::Error) -> Self {
        Self {
            origin: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read the config file: {e}"),
        }
    }

    /// An error found after parsing, at `at` (line, column; `None`: not located).
    fn located(origin: &str, at: Option<(usize, usize)>, message: String) -> Self {
        Self {
            origin: origin.to_owned(),
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            message,
        }
    }

    /// An error found after parsing: located at the first line that mentions `needle` after
    /// a `fallbacks` key (or not located, if none does).
    pub(crate) fn at_text(origin: &str, text: &str, needle: &str, message: String) -> Self {
        Self::at_text_after(origin, text, "fallbacks", needle, message)
    }

    /// An error found after parsing: located at the first line that mentions `needle` on or
    /// after the first line that mentions `key` (or not located, if none does).
    pub(crate) fn at_text_after(
        origin: &str,
        text: &str,
        key: &str,
        needle: &str,
        message: String,
    ) -> Self {
        let mut seen_key = false;
        let mut at = None;
        for (i, line) in text.lines().enumerate() {
            seen_key |= line.contains(key);
            if seen_key {
                if let Some(col) = line.find(needle) {
                    at = Some((i + 1, col + 1));
                    break;
                }
            }
        }
        Self::located(origin, at, message)
    }

    /// An error found after parsing, about `key` of the top-level `section`: located at that
    /// key (in block or flow style), else at the section, else not located.
    pub(crate) fn at_key(
        origin: &str,
        text: &str,
        section: &str,
        key: &str,
        message: String,
    ) -> Self {
        let mut at = None;
        let mut inside = false;
        for (i, line) in text.lines().enumerate() {
            let top_level = !line.starts_with([' ', '\t', '#']) && !line.trim().is_empty();
            if top_level {
                if inside {
                    break;
                }
                let Some(rest) = line.strip_prefix(section) else {
                    continue;
                };
                if !rest.trim_start().starts_with(':') {
                    continue;
                }
                inside = true;
                at = Some((i + 1, 1));
            }
            if let Some(col) = key_column(line, key, "").filter(|_| inside) {
                at = Some((i + 1, col));
                break;
            }
        }
        Self::located(origin, at, message)
    }

    /// An error found after parsing, about `key` in model `model`'s pool: located at the first
    /// line of that pool whose `key` has the value `value`, else at the model, else not
    /// located.
    pub(crate) fn at_model_key(
        origin: &str,
        text: &str,
        model: &str,
        key: &str,
        value: &str,
        message: String,
    ) -> Self {
        let mut at = None;
        let mut in_models = false;
        let mut model_indent = None;
        for (i, line) in text.lines().enumerate() {
            let content = line.trim_start();
            let indent = line.len() - content.len();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if indent == 0 {
                if model_indent.is_some() {
                    break;
                }
                in_models = content.starts_with("models:");
                continue;
            }
            match model_indent {
                None if in_models => {
                    let name = content.trim_start_matches(['"', '\'']);
                    if name.strip_prefix(model).is_some_and(|rest| {
                        rest.trim_start_matches(['"', '\''])
                            .trim_start()
                            .starts_with(':')
                    }) {
                        model_indent = Some(indent);
                        at = Some((i + 1, indent + 1));
                    }
                }
                Some(m) if indent <= m => break,
                Some(_) => {
                    if let Some(col) = key_column(line, key, value) {
                        at = Some((i + 1, col));
                        break;
                    }
                }
                None => {}
            }
        }
        Self::located(origin, at, message)
    }

    pub(crate) fn from_yaml(origin: &str, text: &str, e: &serde_norway::Error) -> Self {
        let full = e.to_string();
        // serde_norway appends " at line L column C"; the location goes in front instead.
        let message = match full.rfind(" at line ") {
            Some(i) if e.location().is_some() => full[..i].to_owned(),
            _ => full,
        };
        let message = if text.trim().is_empty() {
            "the config is empty; it needs at least a `models:` map (see examples/minimal.yaml)"
                .to_owned()
        } else {
            with_hint(message)
        };
        Self {
            origin: origin.to_owned(),
            line: e.location().map(|l| l.line()),
            column: e.location().map(|l| l.column()),
            message,
        }
    }
}

/// The 1-based column of `key` written as a YAML key in `line` (a whole word followed by
/// `:`, in block or flow style), with a value starting with `value` (`""`: any value).
fn key_column(line: &str, key: &str, value: &str) -> Option<usize> {
    line.match_indices(key)
        .find(|(col, _)| {
            let whole_word = !line[..*col].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            let rest = line[col + key.len()..].trim_start();
            whole_word
                && rest
                    .strip_prefix(':')
                    .is_some_and(|v| v.trim_start().starts_with(value))
        })
        .map(|(col, _)| col + 1)
}

/// Adds "did you mean" to serde's unknown-field and unknown-variant messages, and a how-to for
/// a missing field.
fn with_hint(message: String) -> String {
    let ticks: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if message.contains("unknown field `") {
        if let Some((unknown, known)) = ticks.split_first() {
            if let Some(near) = nearest(unknown, known) {
                return format!("{message}; did you mean `{near}`?");
            }
        }
    }
    if message.contains("missing field `models`") {
        return format!("{message}; add a `models:` map naming each model and its backends");
    }
    if message.contains("missing field `backends`") {
        return format!("{message}; add `backends:` with at least one `- url: http://host:port`");
    }
    if message.contains("missing field `url`") {
        return format!("{message}; every backend needs `url: http://host:port`");
    }
    message
}

/// The candidate closest to `word` by edit distance, if any is close enough to be a typo.
pub(crate) fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
