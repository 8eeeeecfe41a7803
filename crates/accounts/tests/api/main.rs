//! Accounts, served for real on port 0, each test on a fresh SQLite file and a fresh
//! PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed test should panic

mod abuse;
mod admin;
mod cli;
mod django;
mod forged;
mod helpers;
mod jwks;
mod legacy;
mod migrations;
mod oidc;
mod openapi;
mod probes;
mod tokens;
mod users;
mod verifier;
