//! Payments, served for real on port 0 (with a real accounts service issuing the tokens), each
//! test on a fresh SQLite file and a fresh PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed test should panic

mod capture;
mod cli;
mod create;
mod events;
mod helpers;
mod idempotency;
mod lifecycle;
mod openapi;
mod probes;
mod refunds;
mod webhooks;
