//! `POST /v1/token` and its grants, revocation and introspection.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, decode_jwt, spawn_app, spawn_app_with};
use common::testkit::TestDatabase;

common::both_databases!(
    the_password_grant_issues_a_signed_access_token_and_a_refresh_token,
    tokens_are_rs256_by_default_and_eddsa_when_chosen,
    unknown_user_and_wrong_password_get_the_same_answer,
    repeated_failures_are_throttled_and_a_success_resets_the_count,
    refresh_tokens_rotate_and_a_reused_one_revokes_its_family,
    client_credentials_work_with_basic_and_form_authentication,
    malformed_token_requests_get_rfc_6749_errors,
    scopes_are_granted_within_the_role,
    revocation_and_introspection,
    only_the_client_a_token_was_issued_to_revokes_it,
    logins_and_issued_tokens_are_counted,
);

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn the_password_grant_issues_a_signed_access_token_and_a_refresh_token(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.sign_up("grant@example.com", "password-123")
            .await
            .status(),
        201
    );
    let response = app
        .token(&[
            ("grant_type", "password"),
            ("username", "Grant@Example.com"),
            ("password", "password-123"),
        ])
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "payments:read payments:write");
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);

    let (header, claims) = decode_jwt(body["access_token"].as_str().unwrap());
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], "http://localhost:8080/accounts");
    assert!(claims["sub"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(claims["aud"], json!(["accounts", "payments"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert!(claims["jti"].is_string());
    assert_eq!(claims["client_id"], "public");
    assert_eq!(claims["scope"], "payments:read payments:write");

    // JSON bodies are accepted too.
    let json_body = app
        .client
        .post(app.url("/v1/token"))
        .json(&json!({"grant_type": "password", "username": "grant@example.com", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 200);
}

async fn tokens_are_rs256_by_default_and_eddsa_when_chosen(db: TestDatabase) {
    let app = spawn_app_with(db, &[("ACCOUNTS_SIGNING_ALG", "RS256")]).await;
    let token = app.admin_token().await;
    let (header, _) = decode_jwt(&token);
    assert_eq!(header["alg"], "RS256");
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == header["kid"])
        .expect("the token's key is published");
    assert_eq!(
        (
            key["kty"].as_str(),
            key["alg"].as_str(),
            key["use"].as_str()
        ),
        (Some("RSA"), Some("RS256"), Some("sig"))
    );
    assert!(key["n"].is_string() && key["e"].is_string() && key.get("d").is_none());
    assert_eq!(app.get_with_token("/users/me", &token).await.status(), 200);
    drop(app);

    let app = spawn_app(TestDatabase::sqlite().await).await;
    let token = app.admin_token().await;
    assert_eq!(decode_jwt(&token).0["alg"], "EdDSA");
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert_eq!(app.get_with_token("/users/me", &token).await.status(), 200);
}

async fn unknown_user_and_wrong_password_get_the_same_answer(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.sign_up("known@example.com", "password-123")
            .await
            .status(),
        201
    );
    let wrong = app
        .token(&[
            ("grant_type", "password"),
            ("username", "known@example.com"),
            ("password", "nope-nope"),
        ])
        .await;
    let unknown = app
        .token(&[
            ("grant_type", "password"),
            ("username", "ghost@example.com"),
            ("password", "nope-nope"),
        ])
        .await;
    assert_eq!(wrong.status(), 400);
    assert_eq!(unknown.status(), 400);
    let wrong: Value = wrong.json().await.unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown, "indistinguishable bodies");
    assert_eq!(wrong["error"], "invalid_grant");
}

async fn repeated_failures_are_throttled_and_a_success_resets_the_count(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.sign_up("victim@example.com", "password-123")
            .await
            .status(),
        201
    );
    let bad = [
        ("grant_type", "password"),
        ("username", "victim@example.com"),
        ("password", "guess-guess"),
    ];
    for attempt in 1..=4 {
        let (status, error) = error_of(app.token(&bad).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_grant"),
            "attempt {attempt}"
        );
    }
    // The fifth failure locks the account for a second.
    assert_eq!(error_of(app.token(&bad).await).await.0, 400);
    let locked = app.token(&bad).await;
    assert_eq!(locked.status(), 429);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(error_of(locked).await.1, "temporarily_unavailable");
    // Even the right password waits out the lock.
    let good = [
        ("grant_type", "password"),
        ("username", "victim@example.com"),
        ("password", "password-123"),
    ];
    assert_eq!(app.token(&good).await.status(), 429);

    // Once the lock runs out (Retry-After), the right password gets in: retried until then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = app.token(&good).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "only the lock stands in the way");
        assert!(
            std::time::Instant::now() < deadline,
            "the lock never ran out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let throttle = app
        .store
        .throttle("login:victim@example.com")
        .await
        .unwrap();
    assert_eq!(throttle, None, "a success resets the count");
}

async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.sign_up("rotate@example.com", "password-123")
            .await
            .status(),
        201
    );
    let first = app.login("rotate@example.com", "password-123").await;
    let r1 = first["refresh_token"].as_str().unwrap();
    let second: Value = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", r1)])
        .await
        .json()
        .await
        .unwrap();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2, "rotated");
    assert!(second["access_token"].is_string());
    assert_eq!(
        app.get_with_token("/users/me", second["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );

    // r1 again: reuse. It fails, and so does r2 from now on.
    let (status, error) = error_of(
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", r1)])
            .await,
    )
    .await;
    assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    let (status, error) = error_of(
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", r2)])
            .await,
    )
    .await;
    assert_eq!(
        (status, error.as_str()),
        (400, "invalid_grant"),
        "the family is revoked"
    );

    let (status, _) = error_of(
        app.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "made-up"),
        ])
        .await,
    )
    .await;
    assert_eq!(status, 400);
}

async fn create_client(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let admin = app.admin_token().await;
    let response = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "billing-worker", "scopes": scopes}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["client_id"].as_str().unwrap().to_owned(),
        body["client_secret"].as_str().unwrap().to_owned(),
    )
}

async fn client_credentials_work_with_basic_and_form_authentication(db: TestDatabase) {
    let app = spawn_app(db).await;
    let (id, secret) = create_client(&app, &["payments:read", "payments:write"]).await;

    let basic = app
        .client
        .post(app.url("/v1/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "payments:read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let body: Value = basic.json().await.unwrap();
    assert!(body.get("refresh_token").is_none());
    assert_eq!(body["scope"], "payments:read");
    let (_, claims) = decode_jwt(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["aud"], json!(["payments"]));

    let form = app
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ])
        .await;
    assert_eq!(form.status(), 200);

    let bad = app
        .client
        .post(app.url("/v1/token"))
        .basic_auth(&id, Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(
        bad.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(error_of(bad).await.1, "invalid_client");

    let unknown = app
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "cli_nobody"),
            ("client_secret", "x"),
        ])
        .await;
    assert_eq!(error_of(unknown).await, (401, "invalid_client".to_owned()));

    let too_much = app
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "accounts:admin"),
        ])
        .await;
    assert_eq!(error_of(too_much).await, (400, "invalid_scope".to_owned()));
}

async fn malformed_token_requests_get_rfc_6749_errors(db: TestDatabase) {
    let app = spawn_app(db).await;
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("username", "a@b.c")], "invalid_request"),
        (
            &[("grant_type", "implicit"), ("code", "x")],
            "unsupported_grant_type",
        ),
        (
            &[("grant_type", "authorization_code"), ("code", "x")],
            "invalid_request",
        ),
        (
            &[("grant_type", "password"), ("username", "a@b.c")],
            "invalid_request",
        ),
        (&[("grant_type", "refresh_token")], "invalid_request"),
    ];
    for (form, expected) in cases {
        let (status, error) = error_of(app.token(form).await).await;
        assert_eq!((status, error.as_str()), (400, expected), "{form:?}");
    }
    let text = app
        .client
        .post(app.url("/v1/token"))
        .header("content-type", "text/plain")
        .body("grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(text).await, (400, "invalid_request".to_owned()));
}

async fn scopes_are_granted_within_the_role(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app
        .token(&[
            ("grant_type", "password"),
            ("username", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
        ])
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        admin["scope"],
        "accounts:admin payments:admin payments:read payments:write"
    );
    assert_eq!(
        app.sign_up("plain@example.com", "password-123")
            .await
            .status(),
        201
    );
    let narrowed = app
        .token(&[
            ("grant_type", "password"),
            ("username", "plain@example.com"),
            ("password", "password-123"),
            ("scope", "payments:read"),
        ])
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(narrowed["scope"], "payments:read");
    let escalated = app
        .token(&[
            ("grant_type", "password"),
            ("username", "plain@example.com"),
            ("password", "password-123"),
            ("scope", "accounts:admin"),
        ])
        .await;
    assert_eq!(error_of(escalated).await, (400, "invalid_scope".to_owned()));
}

async fn revocation_and_introspection(db: TestDatabase) {
    let app = spawn_app(db).await;
    let (id, secret) = create_client(&app, &["payments:read"]).await;
    assert_eq!(
        app.sign_up("intro@example.com", "password-123")
            .await
            .status(),
        201
    );
    let tokens = app.login("intro@example.com", "password-123").await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    let introspect = |token: String| {
        let (app, id, secret) = (&app, id.clone(), secret.clone());
        async move {
            app.client
                .post(app.url("/v1/token/introspect"))
                .basic_auth(id, Some(secret))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
        }
    };
    let active: Value = introspect(access.to_owned()).await.json().await.unwrap();
    assert_eq!(active["active"], true);
    assert_eq!(active["scope"], "payments:read payments:write");
    assert!(active["sub"].as_str().unwrap().starts_with("usr_"));
    let active_refresh: Value = introspect(refresh.to_owned()).await.json().await.unwrap();
    assert_eq!(active_refresh["active"], true);
    let unknown: Value = introspect("nonsense".into()).await.json().await.unwrap();
    assert_eq!(unknown, json!({"active": false}));

    let anonymous = app
        .client
        .post(app.url("/v1/token/introspect"))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(anonymous).await,
        (401, "invalid_client".to_owned())
    );

    for token in [access, refresh, "never-issued"] {
        let response = app
            .client
            .post(app.url("/v1/token/revoke"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "revoke {token}");
    }
    assert_eq!(
        introspect(access.to_owned())
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!({"active": false})
    );
    assert_eq!(
        introspect(refresh.to_owned())
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!({"active": false})
    );
    assert_eq!(app.get_with_token("/users/me", access).await.status(), 401);
    let (status, _) = error_of(
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
            .await,
    )
    .await;
    assert_eq!(status, 400);
}

/// RFC 7009 §2.1: a client's tokens are revoked by that client alone (authenticated); a
/// first-party token (a password login without a client) by a request from no client.
async fn only_the_client_a_token_was_issued_to_revokes_it(db: TestDatabase) {
    let app = spawn_app(db).await;
    let (a, a_secret) = create_client(&app, &["payments:read"]).await;
    let (b, b_secret) = create_client(&app, &["payments:read"]).await;
    assert_eq!(
        app.sign_up("owner@example.com", "password-123")
            .await
            .status(),
        201
    );
    let as_a: Value = app
        .post_form_as(
            "/v1/token",
            Some((&a, &a_secret)),
            &[
                ("grant_type", "password"),
                ("username", "owner@example.com"),
                ("password", "password-123"),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    let (a_access, a_refresh) = (
        as_a["access_token"].as_str().unwrap().to_owned(),
        as_a["refresh_token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(decode_jwt(&a_access).1["client_id"], a.as_str());
    let first_party = app.login("owner@example.com", "password-123").await;
    let first_party_refresh = first_party["refresh_token"].as_str().unwrap().to_owned();

    let active = |token: String| {
        let (app, a, a_secret) = (&app, a.clone(), a_secret.clone());
        async move {
            let body: Value = app
                .post_form_as(
                    "/v1/token/introspect",
                    Some((&a, &a_secret)),
                    &[("token", &token)],
                )
                .await
                .json()
                .await
                .unwrap();
            body["active"] == true
        }
    };

    let b_creds = Some((b.as_str(), b_secret.as_str()));
    for token in [&a_access, &a_refresh, &first_party_refresh] {
        let refused = app
            .post_form_as("/v1/token/revoke", b_creds, &[("token", token)])
            .await;
        assert_eq!(
            error_of(refused).await,
            (400, "unauthorized_client".to_owned()),
            "another client"
        );
    }
    for token in [&a_access, &a_refresh] {
        let anonymous = app
            .post_form_as("/v1/token/revoke", None, &[("token", token)])
            .await;
        assert_eq!(
            error_of(anonymous).await,
            (401, "invalid_client".to_owned()),
            "the client must authenticate"
        );
    }
    for token in [&a_access, &a_refresh, &first_party_refresh] {
        assert!(active(token.clone()).await, "still active");
    }
    let unknown = app
        .post_form_as("/v1/token/revoke", b_creds, &[("token", "never-issued")])
        .await;
    assert_eq!(unknown.status(), 200, "unknown tokens are not an error");

    let a_creds = Some((a.as_str(), a_secret.as_str()));
    for (client, token) in [
        (a_creds, &a_access),
        (a_creds, &a_refresh),
        (None, &first_party_refresh),
    ] {
        assert_eq!(
            app.post_form_as("/v1/token/revoke", client, &[("token", token)])
                .await
                .status(),
            200
        );
        assert!(!active(token.clone()).await, "revoked");
    }
}

async fn logins_and_issued_tokens_are_counted(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.sign_up("count@example.com", "password-123")
            .await
            .status(),
        201
    );
    let tokens = app.login("count@example.com", "password-123").await;
    let wrong = app
        .token(&[
            ("grant_type", "password"),
            ("username", "count@example.com"),
            ("password", "wrong-password"),
        ])
        .await;
    assert_eq!(wrong.status(), 400);
    let refreshed = app
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(app.token(&[("grant_type", "magic")]).await.status(), 400);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for series in [
        r#"accounts_logins_total{outcome="success"} 1"#,
        r#"accounts_logins_total{outcome="invalid_credentials"} 1"#,
        r#"accounts_logins_total{outcome="throttled"} 0"#,
        r#"accounts_tokens_issued_total{grant_type="password"} 1"#,
        r#"accounts_tokens_issued_total{grant_type="refresh_token"} 1"#,
        r#"accounts_tokens_issued_total{grant_type="client_credentials"} 0"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    assert!(!metrics.contains("magic"), "unknown grants add no series");
}
