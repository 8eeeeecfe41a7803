//! The build script of every package whose tests need PostgreSQL, NATS or Redis: it tells the
//! compiler which of the servers' variables are set, so that a test needing an unset one is
//! compiled as `#[ignore]` (reported as ignored, with what to set, never as passed):
//!
//! | variable | cfg | tests |
//! | --- | --- | --- |
//! | `TEST_DATABASE_URL` | `test_postgres` | every `<name>::postgres` store test, the replica test |
//! | `TEST_NATS_URL` | `test_nats` | the JetStream relay tests, the replica test |
//! | `TEST_REDIS_URL` | `test_redis` | shared rate limits, the replica test |
//!
//! An empty variable counts as unset. With `TEST_SERVERS_REQUIRED=1` (CI sets it) an unset
//! one is a build error instead, so no server test can be skipped by a misspelt variable.
//! Changing any of them rebuilds the tests.

fn main() {
    let required = std::env::var("TEST_SERVERS_REQUIRED").is_ok_and(|v| v.trim() == "1");
    println!("cargo::rerun-if-env-changed=TEST_SERVERS_REQUIRED");
    let mut missing = Vec::new();
    for (variable, cfg) in [
        ("TEST_DATABASE_URL", "test_postgres"),
        ("TEST_NATS_URL", "test_nats"),
        ("TEST_REDIS_URL", "test_redis"),
    ] {
        println!("cargo::rerun-if-env-changed={variable}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if std::env::var(variable).is_ok_and(|v| !v.trim().is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        } else {
            missing.push(variable);
        }
    }
    if required && !missing.is_empty() {
        panic!(
            "TEST_SERVERS_REQUIRED=1 but {} unset: every server test must run",
            missing.join(", ")
        );
    }
}
