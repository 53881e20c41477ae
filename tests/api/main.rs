//! Integration tests: the real server over real HTTP, on real PostgreSQL.

mod accounts;
mod health;
mod helpers;
mod projections;
mod projects;
mod store;
