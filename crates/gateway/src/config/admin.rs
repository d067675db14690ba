//! `admin:` — who may reach the admin API (`/admin/...`: backends, drain, add/remove, reload)
//! and where.
//!
//! ```yaml
//! admin:
//!   listen: 127.0.0.1:9090            # its own listener (then /admin is not on the main one)
//!   token: ${SWITCHYARD_ADMIN_TOKEN}  # `Authorization: Bearer <token>` on every admin call
//! ```
//!
//! Safe by default: with no `admin:` section there is no admin API at all. On the main
//! listener it always needs a token. Its own listener may go without a token only on a
//! loopback address (where only local processes reach it).

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;

use super::file::ListenAddr;
use super::values::EnvString;

/// The validated `admin:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Its own listener; `None` serves `/admin/...` on the main listener, behind the token.
    pub listen: Option<SocketAddr>,
    /// The bearer token every admin request must carry; `None` only on a loopback listener.
    pub token: Option<Secret>,
}

/// A string that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Whether `candidate` equals the secret, in time that does not depend on where they
    /// first differ (so the token cannot be guessed byte by byte from response times).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        let mut diff = u8::from(secret.len() != candidate.len());
        for (i, s) in secret.iter().enumerate() {
            diff |= s ^ candidate.get(i).copied().unwrap_or(!s);
        }
        diff == 0
    }
}

impl Secret {
    /// SHA-256 of `purpose`, a NUL and the secret, in hex: a value derived from the secret
    /// that can be handed out (a session cookie) without giving the secret away.
    pub fn digest_hex(&self, purpose: &str) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(purpose.as_bytes());
        ctx.update(&[0]);
        ctx.update(self.0.as_bytes());
        ctx.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `admin:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminRaw {
    #[serde(default)]
    listen: Option<ListenAddr>,
    #[serde(default)]
    token: Option<EnvString>,
}

impl<'de> Deserialize<'de> for Admin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = AdminRaw::deserialize(d)?;
        let token = match raw.token {
            Some(EnvString(t)) if t.trim().is_empty() => {
                return Err(de::Error::custom(
                    "admin.token is empty; set it to a long random string, e.g. token: ${SWITCHYARD_ADMIN_TOKEN}",
                ))
            }
            Some(EnvString(t)) => Some(Secret(t)),
            None => None,
        };
        let admin = Admin {
            listen: raw.listen.map(|l| l.0),
            token,
        };
        match admin.access() {
            Access::Guarded => Ok(admin),
            Access::Unserved => Err(de::Error::custom(
                "admin needs a `token:` (to serve /admin on the main listener) or its own `listen:` address on loopback, e.g. listen: 127.0.0.1:9090",
            )),
            Access::Open(addr) => Err(de::Error::custom(format!(
                "admin.listen {addr} is reachable from other machines, so it needs a `token:`; add token: ${{SWITCHYARD_ADMIN_TOKEN}} or listen on 127.0.0.1"
            ))),
        }
    }
}

/// Who can reach an admin API set up as an [`Admin`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Behind a token, or on a loopback listener of its own: as the config meant.
    Guarded,
    /// No listener of its own and no token: the main listener does not serve it at all.
    Unserved,
    /// A listener of its own that other machines reach, with no token: anyone may use it.
    Open(SocketAddr),
}

impl Admin {
    /// Who can reach the admin API. The file parser accepts only [`Access::Guarded`]; a
    /// reload checks it again once the running listener address has been kept.
    pub fn access(&self) -> Access {
        match (self.listen, &self.token) {
            (_, Some(_)) => Access::Guarded,
            (None, None) => Access::Unserved,
            (Some(addr), None) if addr.ip().is_loopback() => Access::Guarded,
            (Some(addr), None) => Access::Open(addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_matches_only_itself_and_never_prints() {
        let s = Secret::new("s3cret-token");
        assert!(s.matches(b"s3cret-token"));
        assert!(!s.matches(b"s3cret-tokeN"));
        assert!(!s.matches(b"s3cret-token-longer"));
        assert!(!s.matches(b"s3cret"));
        assert!(!s.matches(b""));
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
