//! Imported users keep the monolith's identity: its primary key (`legacy_user_id`), username,
//! names, staff flag and groups; their access tokens, ID tokens, `/users/me` and userinfo carry
//! `legacy_user_id`, so a Django project maps a token to its own user by claim alone.

use serde_json::{Value, json};

use crate::helpers::{decode_jwt, spawn_app};
use common::testkit::TestDatabase;

common::both_databases!(
    imported_users_carry_their_legacy_identity,
    reimports_follow_the_monolith_until_accounts_holds_the_password,
);

/// Hashes made by Django itself, and their password.
const FIXTURE: &str = include_str!("../fixtures/django_hashes.json");

async fn imported_users_carry_their_legacy_identity(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let password = fixture["password"].as_str().unwrap().to_owned();
    let dump = json!([
        {"model": "auth.user", "pk": 42, "fields": {
            "password": fixture["hashes"]["pbkdf2_sha256"], "last_login": "2026-11-30T08:00:00Z", "is_superuser": false,
            "username": "grace", "first_name": "Grace", "last_name": "Hopper",
            "email": "grace@example.com", "is_staff": true, "is_active": true,
            "date_joined": "2020-01-02T03:04:05Z", "groups": [3, 5], "user_permissions": []}},
        {"model": "auth.user", "pk": "not-a-number", "fields": {
            "username": "odd", "email": "odd@example.com"}}
    ]);
    let report: Value = app
        .post_json("/v1/admin/users/import", &admin, &dump)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["imported"], 2, "{report}");
    let stored = app
        .store
        .user_by_email("grace@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.legacy.legacy_user_id, Some(42));
    assert_eq!(stored.legacy.username.as_deref(), Some("grace"));
    assert_eq!(stored.legacy.first_name.as_deref(), Some("Grace"));
    assert_eq!(stored.legacy.groups, "[3,5]");
    assert!(stored.legacy.legacy_last_login.is_some());
    assert!(stored.last_login_at.is_none());
    let tokens = app.login("grace@example.com", &password).await;
    let access = tokens["access_token"].as_str().unwrap();
    let (_, claims) = decode_jwt(access);
    assert_eq!(claims["legacy_user_id"], 42);
    let me: Value = app
        .get_with_token("/users/me", access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["legacy_user_id"], 42);
    assert_eq!(me["username"], "grace");
    assert_eq!(me["roles"], json!(["user", "staff"]));
    let after = app
        .store
        .user_by_email("grace@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.last_login_at.is_some(),
        "a login at accounts is recorded"
    );

    // A pk that is not an integer: imported, without a legacy id.
    let odd = app
        .store
        .user_by_email("odd@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(odd.legacy.legacy_user_id, None);
    // Users created here have none, and their tokens no such claim.
    let own = app.user_token("fresh@example.com").await;
    let (_, claims) = decode_jwt(&own);
    assert!(claims.get("legacy_user_id").is_none(), "{claims}");
    let me: Value = app
        .get_with_token("/users/me", &own)
        .await
        .json()
        .await
        .unwrap();
    assert!(me.get("legacy_user_id").is_none(), "{me}");
}

fn entry(pk: i64, email: &str, hash: &Value, first_name: &str, active: bool) -> Value {
    json!({"model": "auth.user", "pk": pk, "fields": {
        "password": hash, "username": format!("user{pk}"), "first_name": first_name,
        "last_name": "", "email": email, "is_active": active, "is_staff": false,
        "is_superuser": false, "groups": [], "date_joined": "2021-01-01T00:00:00Z"}})
}

async fn reimports_follow_the_monolith_until_accounts_holds_the_password(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let password = fixture["password"].as_str().unwrap().to_owned();
    let hashes = &fixture["hashes"];
    let import = |dump: Value| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let response = app.post_json("/v1/admin/users/import", &admin, &dump).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let counts = |report: &Value| {
        (
            report["imported"].as_u64().unwrap(),
            report["updated"].as_u64().unwrap(),
            report["unchanged"].as_u64().unwrap(),
            report["conflicts"].as_array().unwrap().len(),
        )
    };

    let first = import(json!([entry(
        7,
        "a@example.com",
        &hashes["pbkdf2_sha1"],
        "Al",
        true
    )]))
    .await;
    assert_eq!(counts(&first), (1, 0, 0, 0), "{first}");
    let again = import(json!([entry(
        7,
        "a@example.com",
        &hashes["pbkdf2_sha1"],
        "Al",
        true
    )]))
    .await;
    assert_eq!(counts(&again), (0, 0, 1, 0), "{again}");

    // The monolith changed the email, the name and the password; the user never logged in
    // here: all of it follows.
    let changed = import(json!([entry(
        7,
        "b@example.com",
        &hashes["pbkdf2_sha256"],
        "Bea",
        true
    )]))
    .await;
    assert_eq!(counts(&changed), (0, 1, 0, 0), "{changed}");
    assert!(
        app.store
            .user_by_email("a@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let user = app
        .store
        .user_by_email("b@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.legacy.legacy_user_id, Some(7));
    assert_eq!(user.name.as_deref(), Some("Bea"));
    assert_eq!(
        user.password_hash,
        hashes["pbkdf2_sha256"].as_str().unwrap()
    );

    // Once they log in here, accounts holds the password: a later change in the monolith
    // does not replace it, but the rest still follows (the account disabled there).
    app.login("b@example.com", &password).await;
    let ours = app
        .store
        .user_by_email("b@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(ours.password_hash.starts_with("$argon2id$"));
    let later = import(json!([entry(
        7,
        "b@example.com",
        &hashes["bcrypt_sha256"],
        "Bea",
        false
    )]))
    .await;
    assert_eq!(counts(&later), (0, 1, 0, 0), "{later}");
    let kept = app
        .store
        .user_by_email("b@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.password_hash, ours.password_hash,
        "accounts' password is kept"
    );
    assert!(kept.disabled, "the active flag follows");

    // Conflicts change nothing: an email of another imported user, and an email someone
    // signed up with here (unverified: it must not inherit the monolith's identity).
    assert_eq!(
        app.sign_up("c@example.com", "password-123").await.status(),
        201
    );
    let conflicts = import(json!([
        entry(8, "c@example.com", &hashes["pbkdf2_sha256"], "Cy", true),
        entry(9, "b@example.com", &hashes["pbkdf2_sha256"], "Di", true),
    ]))
    .await;
    assert_eq!(counts(&conflicts), (0, 0, 0, 2), "{conflicts}");
    let reasons: Vec<&str> = conflicts["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("created in accounts"), "{reasons:?}");
    assert!(reasons[1].contains("monolith's user 7"), "{reasons:?}");
    let signed_up = app
        .store
        .user_by_email("c@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(signed_up.legacy.legacy_user_id, None);
    assert!(app.store.user_by_legacy_id(9).await.unwrap().is_none());
}
