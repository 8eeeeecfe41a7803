//! `/healthz` and `/readyz`, including a database that stops answering.

use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};
use common::testkit::{TestDatabase, assert_live, readiness, wait_for_readiness};

common::both_databases!(
    shutdown_lets_an_in_flight_request_finish,
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

/// Shutdown stops taking connections but lets a request already being served finish.
async fn shutdown_lets_an_in_flight_request_finish(db: TestDatabase) {
    let app = spawn_app(db).await;
    let (body, request_body) = common::testkit::SlowBody::new();
    let request = app
        .client
        .post(app.url("/v1/users"))
        .header("content-type", "application/json")
        .body(request_body)
        .send();
    let in_flight = tokio::spawn(request);
    body.send(br#"{"email": "draining@example.com", "#).await;
    // It has reached the service (the scrape is the other request being served).
    common::testkit::wait_for_active_requests(&app.url(""), 2).await;
    app.server.begin_shutdown();
    body.finish(br#""password": "password-123"}"#).await;
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 201, "served to its end");
    let TestApp { server, .. } = app;
    server.stop().await.expect("a clean stop");
}
