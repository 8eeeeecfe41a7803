//! The payment routes of the next milestone say so, as problems.

use serde_json::Value;

use crate::helpers::spawn_app;
use common::testkit::TestDatabase;

common::both_databases!(payment_routes_answer_501_problems);

async fn payment_routes_answer_501_problems(db: TestDatabase) {
    let app = spawn_app(db).await;
    let requests = [
        app.client.post(app.url("/payments")),
        app.client.post(app.url("/v1/payments")),
        app.client.get(app.url("/v1/payments")),
        app.client.get(app.url("/v1/payments/pay_1")),
        app.client.post(app.url("/v1/payments/pay_1/cancel")),
        app.client.get(app.url("/v1/events")),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 501);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_implemented");
    }
}
