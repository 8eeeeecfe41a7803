//! What every service does the same way: configuration, telemetry, problem responses,
//! extractors, health probes, database selection, serving with graceful shutdown.

pub mod auth;
pub mod config;
pub mod db;
pub mod extract;
pub mod health;
pub mod jwt_crypto;
pub mod logline;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod request;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use problem::Problem;

/// mimalloc for every service (and the all-in-one runner): the services allocate a little per
/// request from every runtime thread, where glibc's allocator showed up as a tenth of the
/// gateway's profile under load (see the README's benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
