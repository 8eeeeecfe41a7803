//! `/healthz` and `/readyz`, including a database that stops answering.

use serde_json::Value;

use crate::helpers::spawn_app;
use common::testkit::{TestDatabase, assert_live, readiness, wait_for_readiness};

common::both_databases!(
    health_check_passes,
    readiness_passes_when_the_database_answers,
    readiness_fails_when_the_database_is_gone,
);

async fn health_check_passes(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_live(&app.url("")).await;
}

async fn readiness_passes_when_the_database_answers(db: TestDatabase) {
    let app = spawn_app(db).await;
    let (status, body) = readiness(&app.url("")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "pass");
    assert_eq!(body["checks"]["database"][0]["status"], "pass");
}

async fn readiness_fails_when_the_database_is_gone(db: TestDatabase) {
    let app = spawn_app(db).await;
    let recoverable = app.db.take_down(&app.store.database()).await;
    let body = wait_for_readiness(&app.url(""), 503).await;
    assert_eq!(body["status"], "fail");
    assert_eq!(body["checks"]["database"][0]["status"], "fail");

    let jwks = app.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status(), 503, "a store read during the outage");
    let problem: Value = jwks.json().await.unwrap();
    assert_eq!(problem["code"], "dependency_unavailable");
    assert_live(&app.url("")).await;

    if recoverable {
        app.db.restore().await;
        // Recovers without a restart.
        wait_for_readiness(&app.url(""), 200).await;
    }
}
