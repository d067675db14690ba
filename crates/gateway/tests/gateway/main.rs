//! The gateway's integration tests, in one binary: each module boots the real gateway over
//! loopback sockets ([`support`]), against mock upstreams or simulated vLLM replicas. One
//! binary links once; nextest still runs every test in its own process.

mod admin_support;
mod support;

mod admin_auth;
mod admin_drain;
mod admin_membership;
mod admin_reload;
mod admission;
mod change_keeps_state;
mod crafted_bodies;
mod dashboard;
mod decisions;
mod engine_detect;
mod failover;
mod front_door;
mod observability;
mod policies;
mod providers;
mod proxy;
mod resilience_429;
mod resilience_5xx;
mod resilience_breaker;
mod resilience_disconnect;
mod resilience_fallback;
mod resilience_health;
mod resilience_stream_drop;
mod resilience_timeouts;
mod routes;
mod routing_state;
mod security_proxy;
mod security_reload;
mod signals;
mod traces;
mod workers;
