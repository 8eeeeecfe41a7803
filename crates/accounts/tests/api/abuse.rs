//! What an attacker tries against logins and sign-ups: parallel guesses, bursts, hashes that
//! ask for unbounded work, timing, confusable emails, refresh tokens of another client.

use chrono::Utc;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use accounts::store::UserRecord;
use common::testkit::TestDatabase;

common::both_databases!(
    parallel_guesses_are_counted_before_any_password_is_checked,
    a_burst_of_logins_beyond_the_hashing_queue_is_shed_with_503,
    every_failing_login_costs_one_argon2id_verification,
    a_stored_hash_over_the_limits_is_never_computed,
    a_refresh_token_stays_bound_to_its_confidential_client,
    confusable_emails_cannot_squat_an_account,
);

/// The value of a counter series in `/metrics` (`name{labels}` exactly as exposed).
async fn counter(app: &TestApp, series: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in /metrics"))
}

async fn password_grant(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.token(&[
        ("grant_type", "password"),
        ("username", email),
        ("password", password),
    ])
    .await
}

/// `password_grant` with owned arguments, for bursts of futures.
async fn owned_grant(app: &TestApp, email: String, password: String) -> reqwest::Response {
    password_grant(app, &email, &password).await
}

/// A user inserted straight into the store, as an import of older code could have left it.
async fn insert_user_with_hash(app: &TestApp, email: &str, password_hash: &str) {
    let now = Utc::now();
    app.store
        .insert_user(&UserRecord {
            id: format!("usr_{}", uuid::Uuid::now_v7().simple()),
            email: email.to_owned(),
            email_normalized: email.to_owned(),
            name: None,
            password_hash: password_hash.to_owned(),
            role: "user".into(),
            disabled: false,
            created_at: now,
            updated_at: now,
            legacy: Default::default(),
            last_login_at: None,
        })
        .await
        .unwrap();
}

async fn parallel_guesses_are_counted_before_any_password_is_checked(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.sign_up("target@example.com", "password-123")
            .await
            .status(),
        201
    );
    let guesses =
        (0..40).map(|n| owned_grant(&app, "target@example.com".into(), format!("guess-{n}")));
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .into_iter()
        .map(|response| response.status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|s| **s == 400).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + refused, 40, "{statuses:?}");
    // Five free failures, the fifth locking the account; a lock running out while the burst
    // is still arriving (a slow machine) could let one more through.
    assert!(
        (5..=6).contains(&checked),
        "{checked} guesses were checked: {statuses:?}"
    );
    let throttle = app
        .store
        .throttle("login:target@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        throttle.failures,
        i64::try_from(checked).unwrap(),
        "every checked guess was counted"
    );
    assert_eq!(
        password_grant(&app, "target@example.com", "password-123")
            .await
            .status(),
        429,
        "the right password waits out the lock too"
    );
}

async fn a_burst_of_logins_beyond_the_hashing_queue_is_shed_with_503(db: TestDatabase) {
    // One hash at a time, nobody may wait for it: a burst is refused at once, not queued.
    let app = spawn_app_with(
        db,
        &[
            ("ACCOUNTS_HASHING_SLOTS", "1"),
            ("ACCOUNTS_HASHING_QUEUE", "0"),
        ],
    )
    .await;
    let burst =
        (0..20).map(|n| owned_grant(&app, format!("nobody{n}@example.com"), "guess-guess".into()));
    let responses = futures_util::future::join_all(burst).await;
    let mut shed = 0;
    for response in responses {
        match response.status().as_u16() {
            400 => {}
            503 => {
                shed += 1;
                assert_eq!(response.headers()["retry-after"], "1");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"], "temporarily_unavailable");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(shed > 0, "nothing was shed");
    assert_eq!(
        counter(&app, "accounts_password_hashing_shed_total").await,
        shed
    );
    // The service itself stays up: probes and keys answer.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/.well-known/jwks.json").await.status(), 200);
    // Sign-up hashes too: shed as a problem.
    let app = &app;
    let burst = (0..20).map(|n| {
        let email = format!("new{n}@example.com");
        async move { app.sign_up(&email, "password-123").await }
    });
    let mut problems = 0;
    for response in futures_util::future::join_all(burst).await {
        if response.status() == 503 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "temporarily_unavailable");
            problems += 1;
        } else {
            assert_eq!(response.status(), 201);
        }
    }
    assert!(problems > 0, "no sign-up was shed");
}

async fn every_failing_login_costs_one_argon2id_verification(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.sign_up("real@example.com", "password-123")
            .await
            .status(),
        201
    );
    insert_user_with_hash(&app, "unusable@example.com", "!").await;
    insert_user_with_hash(&app, "unsupported@example.com", "md5$salt$0123456789abcdef").await;
    const DUMMY: &str = r#"accounts_password_verifications_total{scheme="dummy"}"#;
    const ARGON2ID: &str = r#"accounts_password_verifications_total{scheme="argon2id"}"#;
    // A wrong password for a real user: one Argon2id verification of the user's hash.
    let before = counter(&app, ARGON2ID).await;
    assert_eq!(
        password_grant(&app, "real@example.com", "wrong-one")
            .await
            .status(),
        400
    );
    assert_eq!(counter(&app, ARGON2ID).await, before + 1);
    // Every other failure: one Argon2id verification at the same parameters (the dummy).
    for email in [
        "unknown@example.com",
        "unusable@example.com",
        "unsupported@example.com",
    ] {
        let before = counter(&app, DUMMY).await;
        let response = password_grant(&app, email, "wrong-one").await;
        assert_eq!(response.status(), 400, "{email}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            "invalid_grant"
        );
        assert_eq!(counter(&app, DUMMY).await, before + 1, "{email}");
    }
}

async fn a_stored_hash_over_the_limits_is_never_computed(db: TestDatabase) {
    let app = spawn_app(db).await;
    // 4 TiB of Argon2 memory, or four billion PBKDF2 iterations: hours of work, or an
    // allocation that takes the process down, if computed.
    insert_user_with_hash(
        &app,
        "hog@example.com",
        "argon2$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
    )
    .await;
    insert_user_with_hash(
        &app,
        "slow@example.com",
        "pbkdf2_sha256$4294967295$salt$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w=",
    )
    .await;
    for email in ["hog@example.com", "slow@example.com"] {
        let before = counter(
            &app,
            r#"accounts_password_verifications_total{scheme="dummy"}"#,
        )
        .await;
        assert_eq!(
            password_grant(&app, email, "anything-at-all")
                .await
                .status(),
            400
        );
        assert_eq!(
            counter(
                &app,
                r#"accounts_password_verifications_total{scheme="dummy"}"#
            )
            .await,
            before + 1,
            "{email}: the dummy was verified instead"
        );
    }
    assert_eq!(
        counter(
            &app,
            r#"accounts_password_verifications_total{scheme="argon2"}"#
        )
        .await
            + counter(
                &app,
                r#"accounts_password_verifications_total{scheme="pbkdf2_sha256"}"#
            )
            .await,
        0
    );
}

async fn a_refresh_token_stays_bound_to_its_confidential_client(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let mut clients = Vec::new();
    for name in ["web", "other"] {
        let created: Value = app
            .post_json(
                "/v1/admin/clients",
                &admin,
                &json!({"name": name, "scopes": ["payments:read"]}),
            )
            .await
            .json()
            .await
            .unwrap();
        clients.push((
            created["client_id"].as_str().unwrap().to_owned(),
            created["client_secret"].as_str().unwrap().to_owned(),
        ));
    }
    let (web_id, web_secret) = &clients[0];
    let (other_id, other_secret) = &clients[1];
    assert_eq!(
        app.sign_up("bound@example.com", "password-123")
            .await
            .status(),
        201
    );
    let refresh_with = |auth: Option<(&str, &str)>, token: String| {
        let request = app.client.post(app.url("/v1/token")).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token.as_str()),
        ]);
        let request = match auth {
            Some((id, secret)) => request.basic_auth(id, Some(secret)),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    let issued: Value = app
        .client
        .post(app.url("/v1/token"))
        .basic_auth(web_id, Some(web_secret))
        .form(&[
            ("grant_type", "password"),
            ("username", "bound@example.com"),
            ("password", "password-123"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["refresh_token"].as_str().unwrap().to_owned();
    // No client authentication, or a wrong secret: 401 invalid_client.
    for auth in [None, Some((web_id.as_str(), "wrong-secret"))] {
        let response = refresh_with(auth, token.clone()).await;
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            "invalid_client"
        );
    }
    // Another client, authenticated: the token is not its own.
    let response = refresh_with(Some((other_id, other_secret)), token.clone()).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    // The failed attempts did not spend it: its own client redeems it.
    let response = refresh_with(Some((web_id, web_secret)), token).await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    // A token of the public client is not redeemed by a confidential one either.
    let public = app.login("bound@example.com", "password-123").await;
    let response = refresh_with(
        Some((web_id, web_secret)),
        public["refresh_token"].as_str().unwrap().to_owned(),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(rotated["refresh_token"].is_string());
}

async fn confusable_emails_cannot_squat_an_account(db: TestDatabase) {
    let app = spawn_app(db).await;
    // The Kelvin sign folds into "k": refused rather than taking kevin@'s canonical form.
    for (email, why) in [
        ("\u{212A}evin@example.com", "compatibility characters"),
        (
            "ke\u{200B}vin@example.com",
            "invisible or control characters",
        ),
        (
            "kevin\u{202E}@example.com",
            "invisible or control characters",
        ),
        (
            "kev\u{0007}in@example.com",
            "invisible or control characters",
        ),
    ] {
        let response = app.sign_up(email, "password-123").await;
        assert_eq!(response.status(), 422, "{email:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "email");
        assert!(
            body["errors"][0]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    assert_eq!(
        app.sign_up("kevin@example.com", "password-123")
            .await
            .status(),
        201
    );
    // Case folding beyond ASCII: one account per canonical form.
    assert_eq!(
        app.sign_up("strasse@example.com", "password-123")
            .await
            .status(),
        201
    );
    assert_eq!(
        app.sign_up("STRAßE@example.com", "password-123")
            .await
            .status(),
        409
    );
    // Logging in with any spelling of the same canonical address finds the account.
    for spelling in [
        "KEVIN@EXAMPLE.COM",
        "\u{212A}evin@example.com",
        " kevin@Example.com ",
    ] {
        assert_eq!(
            password_grant(&app, spelling, "password-123")
                .await
                .status(),
            200,
            "{spelling:?}"
        );
    }
}
