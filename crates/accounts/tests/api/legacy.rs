//! Imported users keep the monolith's identity: its primary key (`legacy_user_id`), username,
//! names, staff flag and groups; their access tokens, ID tokens, `/users/me` and userinfo carry
//! `legacy_user_id`, so a Django project maps a token to its own user by claim alone.

use serde_json::{Value, json};

use crate::helpers::{decode_jwt, spawn_app};
use common::testkit::TestDatabase;

common::both_databases!(
    imported_users_carry_their_legacy_identity,
    reimports_follow_the_monolith_until_accounts_holds_the_password,
    the_export_gives_django_its_users_back,
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

async fn the_export_gives_django_its_users_back(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let password = fixture["password"].as_str().unwrap().to_owned();
    let hashes = &fixture["hashes"];
    let dump = json!([
        entry(
            11,
            "kept@example.com",
            &hashes["bcrypt_sha256"],
            "Kay",
            true
        ),
        entry(
            12,
            "moved@example.com",
            &hashes["pbkdf2_sha256"],
            "Mo",
            false
        ),
    ]);
    app.post_json("/v1/admin/users/import", &admin, &dump).await;
    // One logs in here (rehashed); one user is created here.
    let moved = app
        .store
        .user_by_email("moved@example.com")
        .await
        .unwrap()
        .unwrap();
    app.store
        .set_user_disabled(&moved.id, false, chrono::Utc::now())
        .await
        .unwrap();
    app.login("moved@example.com", &password).await;
    app.user_token("native@example.com").await;

    let response = app.get_with_token("/v1/admin/users/export", &admin).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let exported: Vec<Value> = response.json().await.unwrap();
    let by_email = |email: &str| {
        exported
            .iter()
            .find(|e| e["fields"]["email"] == email)
            .unwrap_or_else(|| panic!("{email} exported"))
            .clone()
    };
    let kept = by_email("kept@example.com");
    assert_eq!(kept["model"], "auth.user");
    assert_eq!(kept["pk"], 11);
    assert_eq!(kept["fields"]["username"], "user11");
    assert_eq!(
        kept["fields"]["password"], hashes["bcrypt_sha256"],
        "as it came"
    );
    let moved = by_email("moved@example.com");
    assert_eq!(moved["pk"], 12);
    let hash = moved["fields"]["password"].as_str().unwrap();
    assert!(hash.starts_with("argon2$argon2id$v=19$"), "{hash}");
    assert!(moved["fields"]["last_login"].is_string());
    let native = by_email("native@example.com");
    assert_eq!(native["pk"], Value::Null);
    assert_eq!(native["fields"]["username"], "native@example.com");
    let root = by_email(crate::helpers::ADMIN_EMAIL);
    assert_eq!(root["fields"]["is_superuser"], true);
    assert_eq!(exported.len(), 4);
    let user = app.user_token("nosy@example.com").await;
    assert_eq!(
        app.get_with_token("/v1/admin/users/export", &user)
            .await
            .status(),
        403
    );

    // The command line writes the same.
    let file = app.data_dir.path().join("export.json");
    let env = common::config::Env::from_pairs([
        ("ACCOUNTS_DATABASE_URL", app.db.url_string()),
        ("DATA_DIR", app.data_dir.path().display().to_string()),
    ]);
    let config = accounts::AccountsConfig::from_env(&env).unwrap();
    let written = accounts::export_file(config, Some(&file)).await.unwrap();
    assert_eq!(written, 5);
    let from_file: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(from_file.len(), 5);
}
