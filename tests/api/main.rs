//! Integration tests: the real server over real HTTP, on real PostgreSQL.

mod accounts;
mod events;
mod files;
mod health;
mod helpers;
mod membership;
mod permissions;
mod projections;
mod projects;
mod realtime;
mod relay;
mod relay_s3;
mod store;
mod transfers;
mod cli;
mod openapi;
mod client_accounts;
mod client_share;
mod client_pull;
mod client_resume;
mod client_sync;
