//! `/healthz` and `/readyz`, including a database that stops answering.

use serde_json::Value;

use crate::helpers::spawn_app;
use common::testkit::{TestDatabase, assert_live, readiness, wait_for_readiness};

common::both_databases!(
    shutdown_lets_an_in_flight_request_finish,
    health_check_passes,
    readiness_follows_the_database,
    migrations_create_the_schema,
    an_older_release_starts_on_a_newer_schema,
);

async fn health_check_passes(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_live(&app.url("")).await;
}

async fn readiness_follows_the_database(db: TestDatabase) {
    let app = spawn_app(db).await;
    let (status, body) = readiness(&app.url("")).await;
    assert_eq!((status, body["status"].clone()), (200, Value::from("pass")));

    let recoverable = app.db.take_down(&app.store.database()).await;
    let body = wait_for_readiness(&app.url(""), 503).await;
    assert_eq!(body["checks"]["database"][0]["status"], "fail");
    assert_live(&app.url("")).await;
    if recoverable {
        app.db.restore().await;
        // Recovers without a restart.
        wait_for_readiness(&app.url(""), 200).await;
    }
}

async fn migrations_create_the_schema(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(app.store.count_payments().await.unwrap(), 0);
}

/// Rolling updates and rollbacks start old replicas on a schema a newer release migrated.
async fn an_older_release_starts_on_a_newer_schema(db: TestDatabase) {
    let max = common::db::DEFAULT_MAX_CONNECTIONS;
    let store = payments::store::open(&db.url, max).await.unwrap();
    common::testkit::record_newer_migration(&store.database()).await;
    store.database().close().await;
    drop(store);
    let reopened = payments::store::open(&db.url, max)
        .await
        .expect("a newer schema is accepted");
    assert_eq!(
        reopened.count_payments().await.unwrap(),
        0,
        "and the store works"
    );
}

/// Shutdown stops taking connections but lets a request already being served finish.
async fn shutdown_lets_an_in_flight_request_finish(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("draining@example.com").await;
    let (body, request_body) = common::testkit::SlowBody::new();
    let request = app
        .client
        .post(app.url("/v1/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", "draining-1")
        .header("content-type", "application/json")
        .body(request_body)
        .send();
    let in_flight = tokio::spawn(request);
    body.send(br#"{"amount": "12.50", "#).await;
    common::testkit::wait_for_active_requests(&app.url(""), 2).await;
    app.server.begin_shutdown();
    body.finish(br#""currency": "EUR", "description": "late"}"#)
        .await;
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 202, "served to its end");
    let crate::helpers::TestApp { server, store, .. } = app;
    server.stop().await.expect("a clean stop");
    drop(store);
}
