//! `GET /openapi.json` and `GET /docs`: the document lists every route with what it can
//! answer, names the gateway when fetched through it, and the page loads under a strict policy.

use common::testkit::TestDatabase;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with};

async fn document(app: &crate::helpers::TestApp, headers: &[(&str, &str)]) -> Value {
    let mut request = app.client.get(app.url("/openapi.json"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

fn codes(doc: &Value, path: &str, method: &str, status: &str) -> Vec<String> {
    let schema = &doc["paths"][path][method]["responses"][status]["content"]["application/problem+json"]
        ["schema"];
    schema["allOf"][1]["properties"]["code"]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} {status} has no problem codes: {schema}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_document_lists_every_route_with_its_problems() {
    let app = spawn_app(TestDatabase::sqlite().await).await;
    let doc = document(&app, &[]).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        [
            "DELETE /v1/webhook_endpoints/{id}",
            "GET /healthz",
            "GET /metrics",
            "GET /readyz",
            "GET /v1/events",
            "GET /v1/payments",
            "GET /v1/payments/{id}",
            "GET /v1/payments/{id}/refunds",
            "GET /v1/refunds/{id}",
            "GET /v1/webhook_endpoints",
            "GET /v1/webhook_endpoints/{id}",
            "GET /v1/webhook_endpoints/{id}/deliveries",
            "PATCH /v1/webhook_endpoints/{id}",
            "POST /payments",
            "POST /v1/payments",
            "POST /v1/payments/{id}/cancel",
            "POST /v1/payments/{id}/capture",
            "POST /v1/payments/{id}/refunds",
            "POST /v1/webhook_endpoints",
            "POST /v1/webhook_endpoints/{id}/deliveries/{event_id}/redeliver",
            "POST /v1/webhook_endpoints/{id}/rotate_secret",
        ]
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} has an operationId"
            );
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert_eq!(
                    response["headers"]["X-Request-ID"]["required"], true,
                    "{method} {path} {status} documents X-Request-ID"
                );
            }
        }
    }

    let create = "/v1/payments";
    assert_eq!(
        codes(&doc, create, "post", "400"),
        [
            "missing_idempotency_key",
            "invalid_idempotency_key",
            "malformed_request"
        ]
    );
    assert_eq!(
        codes(&doc, create, "post", "422"),
        ["idempotency_key_reused", "validation_failed"]
    );
    assert_eq!(
        codes(&doc, create, "post", "409"),
        ["idempotency_key_in_use"]
    );
    assert_eq!(codes(&doc, create, "post", "401"), ["unauthorized"]);
    assert_eq!(codes(&doc, create, "post", "403"), ["forbidden"]);
    assert_eq!(codes(&doc, create, "post", "429"), ["rate_limited"]);
    let responses = &doc["paths"][create]["post"]["responses"];
    assert!(responses["202"]["headers"]["Location"].is_object());
    assert!(responses["202"]["headers"]["Idempotent-Replayed"].is_object());
    assert!(responses["409"]["headers"]["Retry-After"].is_object());
    assert!(responses["429"]["headers"]["RateLimit"].is_object());
    let key = doc["paths"][create]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("the Idempotency-Key header is documented");
    assert_eq!(
        (key["in"].as_str(), key["required"].as_bool()),
        (Some("header"), Some(true))
    );
    assert_eq!(
        codes(&doc, "/v1/payments/{id}/cancel", "post", "409"),
        ["invalid_state"]
    );
    assert_eq!(
        codes(&doc, "/v1/payments/{id}", "get", "404"),
        ["not_found"]
    );
    let refunds = "/v1/payments/{id}/refunds";
    assert_eq!(
        codes(&doc, refunds, "post", "422"),
        [
            "amount_too_large",
            "validation_failed",
            "idempotency_key_reused"
        ]
    );
    assert_eq!(
        codes(&doc, refunds, "post", "409"),
        ["invalid_state", "idempotency_key_in_use"]
    );
    assert_eq!(
        codes(&doc, "/v1/payments/{id}/capture", "post", "422"),
        [
            "amount_too_large",
            "validation_failed",
            "idempotency_key_reused"
        ]
    );
    assert!(doc["paths"][refunds]["post"]["responses"]["202"]["headers"]["Location"].is_object());
    let limit = doc["paths"]["/v1/payments"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], 100);

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let token_url = schemes["oauth2"]["flows"]["password"]["tokenUrl"]
        .as_str()
        .unwrap();
    assert!(token_url.ends_with("/v1/token"), "{token_url}");
    assert_eq!(
        doc["paths"][create]["post"]["security"][0]["bearer"][0],
        "payments:write"
    );
    assert_eq!(doc["servers"][0]["url"], app.url(""));
}

#[tokio::test]
async fn through_the_gateway_the_servers_name_its_prefix() {
    let app = spawn_app(TestDatabase::sqlite().await).await;
    let doc = document(
        &app,
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
            ("x-forwarded-prefix", "/payments"),
        ],
    )
    .await;
    assert_eq!(doc["servers"][0]["url"], "https://api.example.com/payments");
}

#[tokio::test]
async fn the_docs_page_loads_its_assets_under_a_strict_policy() {
    let app = spawn_app_with(
        TestDatabase::sqlite().await,
        &[("DOCS_ASSETS_URL", "http://assets.internal:9000/swagger-ui/")],
    )
    .await;
    let response = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'self' http://assets.internal:9000;"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"src="http://assets.internal:9000/swagger-ui/swagger-ui-bundle.js""#));
    assert!(page.contains(r#"src="docs/swagger-initializer.js""#));
    assert!(!page.contains("<script>"), "no inline script");
    let script = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().await.unwrap().contains("openapi.json"));
}
