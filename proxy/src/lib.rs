//! pinroute: a sticky-session reverse proxy for SkyPilot API servers that
//! keeps every client request alive while the servers behind it are
//! cordoned, upgraded and replaced.
//!
//! This crate owns the request path (its own engine on pingora-core around
//! a pure routing decision), the sticky cookie, the admin API and metrics,
//! and the binary.
//! It is the only crate that knows pingora; it learns backends from
//! `pinroute-discovery` and settings from `pinroute-config`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admit;
pub mod affinity;
pub mod auth;
pub mod cookie;
pub mod demo;
pub mod discovery_service;
pub mod engine;
pub mod events;
pub mod forwarded;
pub mod gateway;
pub mod health;
pub mod local_limits;
pub mod metrics;
pub mod normalize;
pub mod reload;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
