//! `GET /openapi.json`: every route, the OAuth endpoints with their form bodies and RFC 6749
//! error bodies, problem codes elsewhere, and the security schemes.

use common::testkit::TestDatabase;
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_document_lists_every_route_with_its_answers() {
    let app = spawn_app(TestDatabase::sqlite().await).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
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
            "DELETE /v1/admin/clients/{client_id}",
            "GET /.well-known/jwks.json",
            "GET /.well-known/oauth-authorization-server",
            "GET /.well-known/openid-configuration",
            "GET /assets/accounts.css",
            "GET /authorize",
            "GET /healthz",
            "GET /logout",
            "GET /metrics",
            "GET /readyz",
            "GET /signup",
            "GET /userinfo",
            "GET /users/me",
            "GET /v1/admin/clients/{client_id}",
            "GET /v1/admin/users/export",
            "GET /v1/users/me",
            "PATCH /v1/admin/clients/{client_id}",
            "PATCH /v1/admin/users/{id}",
            "POST /authorize",
            "POST /authorize/consent",
            "POST /logout",
            "POST /signup",
            "POST /userinfo",
            "POST /v1/admin/clients",
            "POST /v1/admin/keys/rotate",
            "POST /v1/admin/users/import",
            "POST /v1/token",
            "POST /v1/token/introspect",
            "POST /v1/token/revoke",
            "POST /v1/users",
        ]
    );

    let token = &doc["paths"]["/v1/token"]["post"];
    let content = token["requestBody"]["content"].as_object().unwrap();
    assert!(content.contains_key("application/x-www-form-urlencoded"));
    assert!(content.contains_key("application/json"));
    let grant_types = &doc["components"]["schemas"]["GrantType"]["enum"];
    assert_eq!(
        grant_types,
        &serde_json::json!([
            "authorization_code",
            "password",
            "refresh_token",
            "client_credentials"
        ])
    );
    let invalid_grant = &token["responses"]["400"]["content"];
    assert_eq!(
        invalid_grant["application/json"]["schema"]["$ref"],
        "#/components/schemas/OAuthErrorBody"
    );
    assert!(
        invalid_grant.get("application/problem+json").is_none(),
        "the token endpoint's 400 is an RFC 6749 body only"
    );
    let throttled = &token["responses"]["429"];
    assert!(throttled["content"]["application/json"].is_object());
    assert!(throttled["content"]["application/problem+json"].is_object());
    assert_eq!(throttled["headers"]["Retry-After"]["required"], true);
    assert_eq!(token["security"][1]["client_basic"], serde_json::json!([]));

    let sign_up = &doc["paths"]["/v1/users"]["post"]["responses"];
    let code = |status: &str| {
        sign_up[status]["content"]["application/problem+json"]["schema"]["allOf"][1]
            ["properties"]["code"]["enum"]
            .clone()
    };
    assert_eq!(code("409"), serde_json::json!(["email_taken"]));
    assert_eq!(code("403"), serde_json::json!(["signup_disabled"]));
    assert_eq!(code("422"), serde_json::json!(["validation_failed"]));

    let rotate = &doc["paths"]["/v1/admin/keys/rotate"]["post"];
    assert_eq!(rotate["security"][0]["bearer"][0], "accounts:admin");
    assert!(rotate["responses"]["403"].is_object());
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["oauth2"]["flows"]["clientCredentials"]["tokenUrl"],
        "http://localhost:8080/accounts/v1/token"
    );
    assert_eq!(
        schemes["oauth2"]["flows"]["authorizationCode"]["authorizationUrl"],
        "http://localhost:8080/accounts/authorize"
    );
    assert_eq!(schemes["client_basic"]["scheme"], "basic");
    // The pages answer HTML, also when they fail.
    let login = &doc["paths"]["/authorize"]["post"]["responses"];
    for status in ["400", "403", "429", "503"] {
        assert!(
            login[status]["content"]["text/html"].is_object(),
            "{status}: {}",
            login[status]
        );
    }
}
