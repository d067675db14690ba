//! `switchyard-gateway`: the server.
//!
//! A request flows through [`api`] (route, bounded body read, [`switchyard_core::RequestProfile`]),
//! the pool's policy (a pure [`switchyard_core::Decision`] over a [`fleet`] snapshot), and
//! [`forward`] and [`upstream`] (pooled upstream call, original bytes out, response relayed frame by frame by
//! [`body`]). [`telemetry`] counts everything; [`error`] maps every failure to an OpenAI-shaped
//! answer; [`server`] owns the listener and graceful shutdown; [`config`] reads and validates
//! the YAML file; [`reload`] swaps in a new config (file re-read, SIGHUP, admin changes) and
//! [`admin`] serves `/admin/...`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod attempts;
pub mod backend_health;
pub mod body;
pub mod clock;
pub mod config;
pub mod conn;
pub mod engine_kind;
pub mod error;
pub mod explain;
pub mod fleet;
pub mod forward;
pub mod gateway;
pub mod health;
pub mod reload;
pub mod scrape;
pub mod server;
pub mod signals;
pub mod sse;
pub mod telemetry;
pub mod upstream;

pub use config::{Config, ConfigError};
pub use gateway::Gateway;
pub use server::{serve, serve_admin, shutdown_signal, Drained, Stop};
