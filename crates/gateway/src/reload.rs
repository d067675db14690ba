//! Hot reload: re-read the config file, validate it exactly as `switchyard check` does, and
//! swap it in; and the one way every run-time change (reload, admin add/remove) is applied.
//!
//! A change builds a new [`Snapshot`] on top of the current one and stores it atomically
//! ([`Gateway::install`]). Requests in flight keep the snapshot they started with, so none is
//! dropped; backends with the same pool, name and url keep their live state (the same
//! `Arc<BackendState>`: in-flight count, cooldown, drain). An invalid file changes nothing.
//!
//! What cannot change without a restart: the listen addresses (`listen`, `admin.listen`).
//! A reload that changes them keeps the running ones and says so in [`ReloadOutcome`].
//!
//! Backends added or removed through the admin API live in the running config only: the next
//! reload builds membership from the file alone (the file wins).

use serde::Serialize;
use std::sync::Arc;

use crate::config::{self, Config};
use crate::error::ApiError;
use crate::gateway::{Gateway, Snapshot};

/// What a reload changed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// The file read.
    pub source: String,
    /// The new snapshot's generation.
    pub generation: u64,
    /// `model/backend` of backends that were not there before.
    pub added: Vec<String>,
    /// `model/backend` of backends that are gone (their in-flight requests finish).
    pub removed: Vec<String>,
    /// How many backends kept their live state.
    pub kept: usize,
    /// Settings the file changes that take effect only after a restart.
    pub restart_needed: Vec<&'static str>,
}

/// One applied change: the snapshot it started from, the one it installed, and what the edit
/// returned besides the config.
#[derive(Debug)]
pub(crate) struct Change<T> {
    pub(crate) before: Arc<Snapshot>,
    pub(crate) after: Arc<Snapshot>,
    pub(crate) extra: T,
}

impl Gateway {
    /// Re-reads the config file and swaps it in. On any problem (no file, unreadable, invalid)
    /// the running config stays and the error says why, with file, line and column.
    pub fn reload(&self) -> Result<ReloadOutcome, ApiError> {
        let path = self.source().ok_or(ApiError::NoConfigFile)?;
        let mut next = config::load(path).map_err(ApiError::InvalidConfig)?;
        let change = self.change(|current| {
            let restart_needed = keep_listeners(&current.config, &mut next);
            Ok::<_, ApiError>((next, restart_needed))
        })?;
        let mut outcome = diff(&change.before, &change.after);
        outcome.source = path.display().to_string();
        outcome.restart_needed = change.extra;
        Ok(outcome)
    }

    /// Applies one change: `edit` turns the current snapshot into the next config (or refuses
    /// with an error), and the result is installed. Changes are serialized.
    pub(crate) fn change<T, E>(
        &self,
        edit: impl FnOnce(&Snapshot) -> Result<(Config, T), E>,
    ) -> Result<Change<T>, E> {
        let _serial = self
            .changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.snapshot();
        let (config, extra) = edit(&current)?;
        let after = self.install(config, &current);
        Ok(Change {
            before: current,
            after,
            extra,
        })
    }
}

/// Keeps the running listen addresses in `next` (a listener cannot move without a restart)
/// and names the settings that differ.
fn keep_listeners(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let mut restart = Vec::new();
    if next.listen != running.listen {
        restart.push("listen");
        next.listen = running.listen;
    }
    let running_admin = running.admin.as_ref().and_then(|a| a.listen);
    if let Some(admin) = next.admin.as_mut() {
        if admin.listen != running_admin {
            restart.push("admin.listen");
            admin.listen = running_admin;
        }
    } else if running_admin.is_some() {
        // The admin section is gone: its listener stays up but answers 404 until a restart.
        restart.push("admin.listen");
    }
    restart
}

/// Backends added, removed and kept between two snapshots.
fn diff(old: &Snapshot, new: &Snapshot) -> ReloadOutcome {
    let mut out = ReloadOutcome {
        source: String::new(),
        generation: new.generation,
        added: Vec::new(),
        removed: Vec::new(),
        kept: 0,
        restart_needed: Vec::new(),
    };
    for name in &new.model_names {
        let Some(pool) = new.pools.get(name) else {
            continue;
        };
        for b in &pool.backends {
            match old
                .pools
                .get(name)
                .and_then(|p| p.backends.iter().find(|o| Arc::ptr_eq(&o.state, &b.state)))
            {
                Some(_) => out.kept += 1,
                None => out.added.push(format!("{name}/{}", b.name())),
            }
        }
    }
    for name in &old.model_names {
        let Some(pool) = old.pools.get(name) else {
            continue;
        };
        for b in &pool.backends {
            let survives = new
                .pools
                .get(name)
                .is_some_and(|p| p.backends.iter().any(|n| Arc::ptr_eq(&n.state, &b.state)));
            if !survives {
                out.removed.push(format!("{name}/{}", b.name()));
            }
        }
    }
    out
}

/// Reloads the config file on every SIGHUP, for the life of the process (abort the handle to
/// stop). The handler is installed before this returns, so a SIGHUP sent once the caller has
/// announced itself never kills the process. Results are logged: what changed, or why the file
/// was rejected (the old config keeps serving). Must run inside a tokio runtime.
pub fn spawn_sighup_reloader(gw: Arc<Gateway>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        Ok(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                log_reload(&gw.reload());
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = gw;
        Ok(tokio::spawn(async {}))
    }
}

/// Logs a reload's result.
pub fn log_reload(result: &Result<ReloadOutcome, ApiError>) {
    match result {
        Ok(o) => {
            tracing::info!(
                generation = o.generation,
                added = ?o.added,
                removed = ?o.removed,
                kept = o.kept,
                "config reloaded from {}",
                o.source
            );
            if !o.restart_needed.is_empty() {
                tracing::warn!(settings = ?o.restart_needed, "these settings changed in the file but take effect only after a restart");
            }
        }
        Err(e) => tracing::error!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(top: &str) -> Config {
        let text = format!("{top}\nmodels:\n  m:\n    backends:\n      - url: http://a:1\n");
        config::parse(&text, "t.yaml").unwrap()
    }

    #[test]
    fn a_reload_keeps_the_running_listeners_and_names_what_needs_a_restart() {
        let running = cfg("listen: 127.0.0.1:8080\nadmin: {listen: 127.0.0.1:9090, token: t}");
        let mut same = cfg("listen: 127.0.0.1:8080\nadmin: {listen: 127.0.0.1:9090, token: u}");
        assert!(keep_listeners(&running, &mut same).is_empty());

        let mut moved = cfg("listen: 127.0.0.1:8081\nadmin: {listen: 127.0.0.1:9091, token: t}");
        assert_eq!(
            keep_listeners(&running, &mut moved),
            ["listen", "admin.listen"]
        );
        assert_eq!(moved.listen, running.listen);
        assert_eq!(moved.admin.unwrap().listen, running.admin.unwrap().listen);

        // Moving the admin API from its own listener to the main one needs a restart too.
        let running = cfg("admin: {listen: 127.0.0.1:9090}");
        let mut onto_main = cfg("admin: {token: t}");
        assert_eq!(keep_listeners(&running, &mut onto_main), ["admin.listen"]);
    }
}
