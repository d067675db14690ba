//! `switchyard-gateway`: the server.
//!
//! A request flows through [`api`] (route, bounded body read, [`switchyard_core::RequestProfile`]),
//! the pool's policy (a pure [`switchyard_core::Decision`] over a [`fleet`] snapshot), and
//! [`forward`] and [`upstream`] (pooled upstream call, original bytes out, response relayed frame by frame by
//! [`body`]). [`telemetry`] counts everything; [`error`] maps every failure to an OpenAI-shaped
//! answer; [`startup`] starts a gateway ([`Server`]: listeners, reloader, shutdown handle) and
//! `server` runs its accept loop and graceful drain; [`config`] reads and validates the YAML
//! file; [`reload`] swaps in a new config (file re-read, SIGHUP, admin changes) and
//! [`admin`] serves `/admin/...`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod admin;
pub mod admission;
pub(crate) mod api;
pub(crate) mod attempts;
pub(crate) mod backend_health;
pub mod body;
pub(crate) mod clock;
pub mod config;
pub(crate) mod conn;
pub(crate) mod dashboard;
pub mod decisions;
pub(crate) mod engine_kind;
pub(crate) mod error;
pub(crate) mod explain;
pub mod fleet;
pub(crate) mod forward;
pub mod gateway;
pub(crate) mod health;
pub(crate) mod otel;
pub mod providers;
pub(crate) mod reload;
pub(crate) mod routes;
pub(crate) mod scrape;
pub(crate) mod server;
pub(crate) mod signals;
pub(crate) mod sse;
pub mod startup;
pub(crate) mod telemetry;
pub(crate) mod upstream;
pub(crate) mod workers;

pub use config::{Config, ConfigError};
pub use gateway::Gateway;
pub use server::{shutdown_signal, Drained, Stop};
pub use startup::{Running, Server};
