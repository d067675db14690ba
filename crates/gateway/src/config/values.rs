//! Config values that check themselves as they are read, so that a bad one is reported with
//! its YAML path, line and column: durations, byte sizes, backend URLs, `${ENV}` strings and
//! policy specs.

use http::uri::{Authority, Scheme};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;
use switchyard_core::PolicySpec;

/// A duration written as a number of seconds (`2.5`) or with a unit (`300ms`, `5s`, `2m`, `1h`),
/// at most [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

/// The longest duration the config takes: a year. Longer ones serve no purpose, and the
/// gateway adds durations to instants and to each other (deadlines, ejection ends, scrape
/// ages); a value near `Duration::MAX` (`1e19s` parses) would make that overflow and panic.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `d`, if it is at most [`MAX_DURATION`]; `written` is the value as the file has it.
pub(crate) fn bounded(d: Duration, written: &dyn fmt::Display) -> Result<Duration, String> {
    if d <= MAX_DURATION {
        Ok(d)
    } else {
        Err(too_long(written))
    }
}

fn too_long(written: &dyn fmt::Display) -> String {
    format!(
        "'{written}' is longer than the longest duration the config takes, 365 days (8760h); write a shorter one"
    )
}

/// `secs` seconds, if that is a duration the config takes; `written` is the value as the
/// file has it.
pub(crate) fn seconds_f64(secs: f64, written: &dyn fmt::Display) -> Result<Duration, String> {
    if secs.is_nan() {
        return Err(format!("'{written}' is not a number of seconds"));
    }
    if secs < 0.0 {
        return Err("a duration cannot be negative".into());
    }
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(too_long(written));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{written}' is out of range"))
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 500ms, 5s, 2m or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                bounded(Duration::from_secs(v), &v)
                    .map(Seconds)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
                self.visit_u64(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                // `1e19` as written, not twenty digits.
                let written = if v.abs() >= 1e15 {
                    format!("{v:e}")
                } else {
                    v.to_string()
                };
                seconds_f64(v, &written).map(Seconds).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Seconds, E> {
                parse_duration(s).map(Seconds).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration of at least `min`, for a key where a shorter one cannot work; `message` says
/// which key and why (field errors are reported at the enclosing map, so it must).
pub(crate) fn at_least<'de, D: Deserializer<'de>>(
    d: D,
    min: Duration,
    message: &str,
) -> Result<Option<Seconds>, D::Error> {
    let s = Seconds::deserialize(d)?;
    if s.0 < min {
        return Err(de::Error::custom(message));
    }
    Ok(Some(s))
}

impl Seconds {
    /// Parses `500ms`, `5s`, `2m`, `1h` or a number of seconds, as the config file does.
    pub fn parse(s: &str) -> Result<Duration, String> {
        parse_duration(s)
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration; write e.g. 500ms, 5s, 2m or 1h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{s}'; use ms, s, m or h"
            ))
        }
    };
    seconds_f64(secs, &s)
}

/// A size in bytes written as a number or with a unit (`512KiB`, `32MiB`, `1GiB`, `10MB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 32MiB, 512KiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                let t = s.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let n: u64 = num.parse().map_err(|_| {
                    E::custom(format!("'{s}' is not a size; write e.g. 32MiB or 1048576"))
                })?;
                let mult: u64 = match unit.trim() {
                    "" | "B" => 1,
                    "KB" => 1000,
                    "KiB" => 1 << 10,
                    "MB" => 1_000_000,
                    "MiB" => 1 << 20,
                    "GB" => 1_000_000_000,
                    "GiB" => 1 << 30,
                    other => {
                        return Err(E::custom(format!(
                            "unknown size unit '{other}'; use B, KiB, MiB, GiB, KB, MB or GB"
                        )))
                    }
                };
                n.checked_mul(mult)
                    .map(ByteSize)
                    .ok_or_else(|| E::custom("size out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string in which `${NAME}` is replaced by the environment variable `NAME`. A variable that
/// is not set is an error, not an empty string: an empty API key fails later and obscurely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvString(pub String);

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand_env(&raw, |k| std::env::var(k).ok())
            .map(EnvString)
            .map_err(de::Error::custom)
    }
}

/// `api_key:`, an [`EnvString`] that must fit in an `Authorization` header. A key that cannot
/// (a line break left by a `.env` file, say) is refused here: the header could not be built,
/// and the backend would get the client's own `Authorization` instead.
pub fn api_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EnvString>, D::Error> {
    let key = EnvString::deserialize(d)?;
    match api_key_problem(&key.0) {
        None => Ok(Some(key)),
        Some(problem) => Err(de::Error::custom(problem)),
    }
}

/// Why `key` cannot be sent as `Authorization: Bearer <key>`, if it cannot. Never quotes the
/// key.
pub(crate) fn api_key_problem(key: &str) -> Option<String> {
    if key.trim().is_empty() {
        // Most often `${NAME}` with NAME set but empty: sending `Bearer ` would get a 401 from
        // the backend at the first request instead of an error here.
        return Some(
            "api_key is empty; set the environment variable it names, or remove api_key if the backend needs none"
                .to_owned(),
        );
    }
    // What an HTTP header value may not hold (RFC 9110 section 5.5): control characters
    // other than tab.
    let bad = |c: char| (c.is_ascii_control() && c != '\t') || c == '\u{7f}';
    let (at, c) = key.char_indices().find(|(_, c)| bad(*c))?;
    let what = match c {
        '\r' => "a carriage return (\\r)".to_owned(),
        '\n' => "a line feed (\\n)".to_owned(),
        '\0' => "a NUL byte".to_owned(),
        c => format!("the control character U+{:04X}", u32::from(c)),
    };
    let trailing = key[at..].chars().all(|c| bad(c) || c.is_whitespace());
    let place = if trailing {
        "ends with".to_owned()
    } else {
        format!("has, at character {},", key[..at].chars().count() + 1)
    };
    let hint = if matches!(c, '\r' | '\n') {
        " (a `.env` file or `echo` output often leaves one)"
    } else {
        ""
    };
    Some(format!(
        "api_key {place} {what}, which cannot be sent in an HTTP header{hint}; remove it from the value or the environment variable it comes from (the key itself is not shown)"
    ))
}

/// Expands `${NAME}` references with `lookup`.
pub(crate) fn expand_env(
    raw: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed '${{' in '{raw}'; write ${{NAME}}"))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "'${{{name}}}' is not a valid environment variable reference"
            ));
        }
        let value = lookup(name).ok_or_else(|| {
            format!("environment variable {name} is not set; export it or remove the reference")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A backend URL: `http` or `https`, a host, an optional port and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port, as written.
    pub authority: Authority,
    /// Path prefix without trailing slash and without a final `/v1`.
    pub base_path: String,
}

impl<'de> Deserialize<'de> for BackendUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let EnvString(raw) = EnvString::deserialize(d)?;
        parse_backend_url(&raw).map_err(de::Error::custom)
    }
}

pub(crate) fn parse_backend_url(raw: &str) -> Result<BackendUrl, String> {
    let fix = "write it as http://host:port or https://host/v1";
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| format!("'{raw}' is not a valid url ({e}); {fix}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("url '{raw}' has no scheme; {fix}"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "url '{raw}' uses scheme '{scheme}'; only http and https are supported"
        ));
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .cloned()
        .ok_or_else(|| format!("url '{raw}' has no host; {fix}"))?;
    if uri.query().is_some() {
        return Err(format!(
            "url '{raw}' has a query string; backend urls take only a path prefix"
        ));
    }
    let mut base = uri.path().trim_end_matches('/').to_owned();
    if base.ends_with("/v1") {
        base.truncate(base.len() - 3);
    }
    Ok(BackendUrl {
        scheme,
        authority,
        base_path: base,
    })
}

/// A policy: its name alone (`policy: least_connections`) or a map with `name` and parameters
/// (`policy: {name: consistent_hash, load_factor: 1.5}`).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyValue(pub PolicySpec);

impl<'de> Deserialize<'de> for PolicyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PolicyValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a policy name, or a map with `name` and the policy's parameters")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PolicyValue, E> {
                spec_for(s).map(PolicyValue).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PolicyValue, A::Error> {
                let mut name: Option<String> = None;
                let mut params: Vec<(String, super::policy::ParamValue)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "name" {
                        name = Some(map.next_value()?);
                    } else {
                        params.push((key, map.next_value()?));
                    }
                }
                let name = name.ok_or_else(|| {
                    de::Error::custom(format!(
                        "policy map needs a `name`; one of {}",
                        PolicySpec::NAMES.join(", ")
                    ))
                })?;
                let mut spec = spec_for(&name).map_err(de::Error::custom)?;
                for (key, value) in &params {
                    super::policy::apply(&mut spec, key, value).map_err(de::Error::custom)?;
                }
                spec.validate().map_err(de::Error::custom)?;
                Ok(PolicyValue(spec))
            }
        }
        d.deserialize_any(V)
    }
}

fn spec_for(name: &str) -> Result<PolicySpec, String> {
    PolicySpec::from_name(name).map_err(|_| {
        let mut msg = format!("unknown policy '{name}'");
        if let Some(near) = super::error::nearest(name, PolicySpec::NAMES) {
            msg.push_str(&format!("; did you mean '{near}'?"));
        }
        msg.push_str(&format!(
            " Known policies: {}",
            PolicySpec::NAMES.join(", ")
        ));
        msg
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_form() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_stop_at_a_year_in_every_form() {
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        let e = parse_duration("8761h").unwrap_err();
        assert!(
            e.contains("longest duration the config takes, 365 days"),
            "{e}"
        );
        assert!(parse_duration("1e19s").is_err());
        assert!(parse_duration("10000000000000000000").is_err());
        let read = |yaml: &str| serde_norway::from_str::<Seconds>(yaml).map(|s| s.0);
        assert_eq!(read("31536000").unwrap(), MAX_DURATION);
        for too_long in [
            "31536001",
            "1e19",
            "1.8e19",
            "\"31536001s\"",
            "1e300",
            ".inf",
        ] {
            let e = read(too_long).unwrap_err().to_string();
            assert!(e.contains("365 days"), "{too_long}: {e}");
        }
        assert!(read("99999999999999999999").is_err());
        assert!(read("-1.5").unwrap_err().to_string().contains("negative"));
        assert!(read(".nan").is_err());
    }

    #[test]
    fn env_references_expand_or_name_the_missing_variable() {
        let look = |k: &str| (k == "KEY").then(|| "sk-1".to_string());
        assert_eq!(expand_env("${KEY}", look), Ok("sk-1".into()));
        assert_eq!(expand_env("a${KEY}b", look), Ok("ask-1b".into()));
        assert!(expand_env("${NOPE}", look)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand_env("${KEY", look).is_err());
    }

    #[test]
    fn api_keys_that_cannot_be_a_header_are_refused_without_being_shown() {
        assert_eq!(api_key_problem("sk-abc123"), None);
        assert!(api_key_problem("").unwrap().starts_with("api_key is empty"));
        assert!(api_key_problem("  ")
            .unwrap()
            .starts_with("api_key is empty"));
        assert_eq!(api_key_problem("sk-with\ttab"), None);
        let e = api_key_problem("sk-secret\r").unwrap();
        assert!(
            e.starts_with("api_key ends with a carriage return (\\r)"),
            "{e}"
        );
        assert!(e.contains(".env"), "{e}");
        assert!(!e.contains("sk-secret"), "{e}");
        let e = api_key_problem("sk-secret\r\n").unwrap();
        assert!(e.contains("ends with a carriage return"), "{e}");
        let e = api_key_problem("sk-\nsecret").unwrap();
        assert!(e.contains("has, at character 4, a line feed"), "{e}");
        let e = api_key_problem("sk\u{1b}x").unwrap();
        assert!(e.contains("U+001B"), "{e}");
    }

    #[test]
    fn backend_urls_fold_v1_and_reject_what_cannot_work() {
        let u = parse_backend_url("https://api.openai.com/v1/").unwrap();
        assert_eq!(
            (u.scheme, u.authority.as_str(), u.base_path.as_str()),
            (Scheme::HTTPS, "api.openai.com", "")
        );
        let u = parse_backend_url("http://10.0.0.1:8000/proxy").unwrap();
        assert_eq!(u.base_path, "/proxy");
        assert!(parse_backend_url("10.0.0.1:8000").is_err());
        assert!(parse_backend_url("ftp://x").is_err());
        assert!(parse_backend_url("http://").is_err());
        assert!(parse_backend_url("http://h/?a=b").is_err());
    }
}
