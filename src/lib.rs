//! Ferry: an event-sourced backend for sharing a project's files from an
//! owner's machine to its members. See `README.md` and `DESIGN.md`.

pub mod api;
pub mod client;
pub mod config;
pub mod domain;
pub mod projections;
pub mod protocol;
pub mod realtime;
pub mod relay;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod web;
