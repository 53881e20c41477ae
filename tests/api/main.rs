//! Integration tests: the real server over real HTTP, on real PostgreSQL.

mod accounts;
mod browser;
mod cli;
mod client_accounts;
mod client_direct;
mod client_fallback;
mod client_follow;
mod client_limits;
mod client_pull;
mod client_resume;
mod client_share;
mod client_sync;
mod client_verify;
mod content;
mod events;
mod files;
mod folders;
mod hardening;
mod health;
mod helpers;
mod membership;
mod openapi;
mod permissions;
mod projections;
mod projects;
mod realtime;
mod relay;
mod relay_s3;
mod sessions;
mod store;
// Shared with the benches, which use other parts of it.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;
mod transfers;
mod web;
mod web_browser;
