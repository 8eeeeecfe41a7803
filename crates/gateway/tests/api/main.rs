//! The gateway, served for real on port 0 in front of real upstreams on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed test should panic

mod auth;
mod cli;
mod edge;
mod failures;
mod helpers;
mod routing;
mod traffic;
