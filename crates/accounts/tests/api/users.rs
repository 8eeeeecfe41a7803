//! `GET /users/me` and the routes of the next milestone.

use serde_json::Value;

use crate::helpers::spawn_app;
use common::testkit::TestDatabase;

common::both_databases!(users_me, token_and_sign_up_say_they_are_not_built_yet);

async fn users_me(db: TestDatabase) {
    let app = spawn_app(db).await;
    for path in ["/users/me", "/v1/users/me"] {
        let anonymous = app.get(path).await;
        assert_eq!(anonymous.status(), 401);
        assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            anonymous.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = anonymous.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");

        let forged = app
            .client
            .get(app.url(path))
            .bearer_auth("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 401);
        assert_eq!(
            forged.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
}

async fn token_and_sign_up_say_they_are_not_built_yet(db: TestDatabase) {
    let app = spawn_app(db).await;
    for path in ["/v1/token", "/v1/users"] {
        let response = app.client.post(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 501, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_implemented");
    }
}
