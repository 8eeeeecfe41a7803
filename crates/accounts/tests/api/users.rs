//! Sign-up and `GET /users/me`.

use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with};
use common::testkit::TestDatabase;

common::both_databases!(
    users_me,
    sign_up_creates_a_user,
    emails_are_unique_case_insensitively,
    bad_sign_ups_are_422_naming_each_field,
    sign_up_can_be_switched_off,
    a_clients_token_has_no_user_and_a_revoked_one_is_refused,
);

async fn users_me(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("me@example.com").await;
    for path in ["/users/me", "/v1/users/me"] {
        let response = app.get_with_token(path, &token).await;
        assert_eq!(response.status(), 200, "{path}");
        let me: Value = response.json().await.unwrap();
        assert_eq!(me["email"], "me@example.com");
        assert_eq!(me["name"], "Test User");
        assert_eq!(me["roles"], json!(["user"]));
        assert!(me["id"].as_str().unwrap().starts_with("usr_"));
        assert!(me["created_at"].is_string());
        assert!(me.get("password_hash").is_none());

        let anonymous = app.get(path).await;
        assert_eq!(anonymous.status(), 401);
        assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            anonymous.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = anonymous.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");

        let garbage = app.get_with_token(path, "not-a-token").await;
        assert_eq!(garbage.status(), 401);
        assert_eq!(
            garbage.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
}

async fn sign_up_creates_a_user(db: TestDatabase) {
    let app = spawn_app(db).await;
    let response = app.sign_up("New.User@Example.com", "long-enough").await;
    assert_eq!(response.status(), 201);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["email"], "New.User@Example.com");
    assert_eq!(user["roles"], json!(["user"]));
    let stored = app
        .store
        .user_by_email("new.user@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "Argon2id at rest"
    );
    assert!(!stored.password_hash.contains("long-enough"));
}

async fn emails_are_unique_case_insensitively(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.sign_up("dup@example.com", "password-1").await.status(),
        201
    );
    let again = app.sign_up("DUP@Example.COM", "password-2").await;
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["code"], "email_taken");
}

async fn bad_sign_ups_are_422_naming_each_field(db: TestDatabase) {
    let app = spawn_app(db).await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "long-enough"}),
            vec!["email"],
        ),
        (
            json!({"email": "ok@example.com", "password": "short"}),
            vec!["password"],
        ),
        (
            json!({"email": "ok@example.com", "password": "x".repeat(129)}),
            vec!["password"],
        ),
        (
            json!({"email": "bad", "password": "bad"}),
            vec!["email", "password"],
        ),
    ];
    for (body, fields) in cases {
        let response = app
            .client
            .post(app.url("/v1/users"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed");
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields);
    }
    let missing = app
        .client
        .post(app.url("/v1/users"))
        .json(&json!({"email": "a@b.c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400, "a missing field is the wrong shape");
}

async fn sign_up_can_be_switched_off(db: TestDatabase) {
    let app = spawn_app_with(db, &[("ACCOUNTS_SIGNUP_ENABLED", "false")]).await;
    let response = app.sign_up("closed@example.com", "long-enough").await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "signup_disabled");
}

/// `/users/me` reads the user and the token's revocation in one query; a token without a user
/// (a client's) is 404 while it is good and 401 once revoked, and a revoked user token is 401.
async fn a_clients_token_has_no_user_and_a_revoked_one_is_refused(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let service: Value = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "worker", "scopes": ["profile"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let (id, secret) = (
        service["client_id"].as_str().unwrap(),
        service["client_secret"].as_str().unwrap(),
    );
    let issued: Value = app
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .await
        .json()
        .await
        .unwrap();
    let client_token = issued["access_token"].as_str().unwrap();
    let response = app.get_with_token("/users/me", client_token).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    let user_token = app.user_token("revoked@example.com").await;
    assert_eq!(
        app.get_with_token("/users/me", &user_token).await.status(),
        200
    );
    // Each by whom it was issued to: the client's by the client, the user's first-party
    // token by a request from no client.
    for (token, client) in [
        (client_token, Some((id, secret))),
        (user_token.as_str(), None),
    ] {
        let revoked = app
            .post_form_as("/v1/token/revoke", client, &[("token", token)])
            .await;
        assert_eq!(revoked.status(), 200);
    }
    assert_eq!(
        app.get_with_token("/users/me", client_token).await.status(),
        401
    );
    assert_eq!(
        app.get_with_token("/users/me", &user_token).await.status(),
        401
    );
}
