//! Hot reload: re-read the config file, validate it exactly as `switchyard check` does, and
//! swap it in; and the one way every run-time change (reload, admin add/remove) is applied.
//!
//! A change builds a new [`Snapshot`] on top of the current one and stores it atomically
//! ([`Gateway::install`]). Requests in flight keep the snapshot they started with, so none is
//! dropped; backends with the same pool, name and url keep their live state (the same
//! `Arc<BackendState>`: in-flight count, cooldown, drain). An invalid file changes nothing.
//!
//! What cannot change without a restart: the listen addresses (`listen`, `admin.listen`).
//! A reload that changes them keeps the running ones and says so in [`ReloadOutcome`]; a file
//! that would leave the kept admin listener unguarded (reachable from other machines with no
//! token) is refused as invalid.
//!
//! Backends added or removed through the admin API live in the running config only: the next
//! reload builds membership from the file alone (the file wins).

use serde::Serialize;
use std::sync::Arc;

use crate::config::{self, Access, Config, ConfigError};
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
    /// The file is the text the running config came from (at start or by the last reload),
    /// on the config it made: nothing was installed and the generation stays.
    pub unchanged: bool,
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
        let result = self.reload_file();
        let label = match &result {
            Ok(o) if o.unchanged => "unchanged",
            Ok(_) => "applied",
            Err(_) => "refused",
        };
        self.metrics.reloads.with_label_values(&[label]).inc();
        result
    }

    /// Notes the text the running config was read from at start: reloading that same text
    /// installs nothing, as after a reload.
    pub(crate) fn loaded(&self, text: String) {
        let generation = self.snapshot().generation;
        *self
            .reloaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((text, generation));
    }

    fn reload_file(&self) -> Result<ReloadOutcome, ApiError> {
        let path = self.source().ok_or(ApiError::NoConfigFile)?;
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ApiError::InvalidConfig(ConfigError::io(path, &e)))?;
        let mut next = config::parse(&text, &origin).map_err(ApiError::InvalidConfig)?;
        let mut reloaded = self
            .reloaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.snapshot();
        if reloaded
            .as_ref()
            .is_some_and(|(t, g)| *t == text && *g == current.generation)
        {
            // Nothing changed since this text was installed (a periodic SIGHUP, a config
            // sidecar touching the file): the running snapshot stays, with its generation.
            let mut outcome = diff(&current, &current);
            outcome.source = origin;
            outcome.unchanged = true;
            outcome.restart_needed = keep_listeners(&current.config, &mut next);
            return Ok(outcome);
        }
        let change = self.change(|current| {
            let restart_needed = keep_listeners(&current.config, &mut next);
            check_kept_admin(&next, &origin, &text).map_err(ApiError::InvalidConfig)?;
            Ok::<_, ApiError>((next, restart_needed))
        })?;
        *reloaded = Some((text, change.after.generation));
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

/// Refuses a file whose admin section, once the running admin listener is kept in place of
/// the file's `admin.listen`, would not be guarded as the file parser requires: a running
/// listener reachable from other machines left without a token (anyone could drain, add or
/// remove backends), or an admin API left on no listener at all.
fn check_kept_admin(next: &Config, origin: &str, text: &str) -> Result<(), ConfigError> {
    let Some(admin) = &next.admin else {
        return Ok(());
    };
    let message = match admin.access() {
        Access::Guarded => return Ok(()),
        Access::Open(running) => format!(
            "admin: the admin API stays on its running listener {running} until a restart (admin.listen changes only then), and that address is reachable from other machines, so the file must keep a `token:`; add token: ${{SWITCHYARD_ADMIN_TOKEN}}, or restart to move the admin API to the new address"
        ),
        Access::Unserved => "admin: the admin API stays on the main listener until a restart (admin.listen changes only then), and there it needs a `token:`; add token: ${SWITCHYARD_ADMIN_TOKEN}, or restart to move the admin API to its own listener".to_owned(),
    };
    Err(ConfigError::at_key(
        origin, text, "admin", "listen", message,
    ))
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
        unchanged: false,
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
        Ok(o) if o.unchanged => {
            tracing::info!(
                generation = o.generation,
                "config file {} unchanged since it was installed; nothing to reload",
                o.source
            );
        }
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

    #[test]
    fn a_kept_admin_listener_must_stay_guarded() {
        let kept = |running: &str, file: &str| {
            let text = format!("{file}\nmodels:\n  m:\n    backends:\n      - url: http://a:1\n");
            let mut next = config::parse(&text, "t.yaml").unwrap();
            keep_listeners(&cfg(running), &mut next);
            check_kept_admin(&next, "t.yaml", &text)
        };
        // An open listener kept without the token the file dropped: refused, at the key.
        let e = kept(
            "admin: {listen: 0.0.0.0:9090, token: t}",
            "admin:\n  listen: 127.0.0.1:9091\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(3)), "{e}");
        assert!(e.message.contains("0.0.0.0:9090"), "{e}");
        assert!(e.message.contains("add token:"), "{e}");
        // The admin API on the main listener, the file moving it to a loopback one: it
        // would stay on the main listener with no token.
        let e = kept("admin: {token: t}", "admin: {listen: 127.0.0.1:9091}").unwrap_err();
        assert_eq!((e.line, e.column), (Some(1), Some(9)), "{e}");
        assert!(e.message.contains("main listener"), "{e}");
        // Guarded either way: a token kept, a loopback listener kept, no admin section.
        assert!(kept(
            "admin: {listen: 0.0.0.0:9090, token: t}",
            "admin: {listen: 127.0.0.1:9091, token: u}"
        )
        .is_ok());
        assert!(kept(
            "admin: {listen: 127.0.0.1:9090}",
            "admin: {listen: 127.0.0.1:9091}"
        )
        .is_ok());
        assert!(kept("admin: {listen: 0.0.0.0:9090, token: t}", "").is_ok());
    }
}
