//! `/healthz` and `/readyz`, including a database that stops answering.

use serde_json::Value;

use crate::helpers::spawn_app;
use common::testkit::{TestDatabase, assert_live, readiness};

common::both_databases!(
    health_check_passes,
    readiness_follows_the_database,
    migrations_create_the_schema,
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
    let (status, body) = readiness(&app.url("")).await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["database"][0]["status"], "fail");
    assert_live(&app.url("")).await;
    if recoverable {
        app.db.restore().await;
        assert_eq!(
            readiness(&app.url("")).await.0,
            200,
            "recovers without a restart"
        );
    }
}

async fn migrations_create_the_schema(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(app.store.count_payments().await.unwrap(), 0);
}
