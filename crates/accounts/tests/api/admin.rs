//! Administration: key rotation, service clients, the monolith's users, discovery.

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_EMAIL, ADMIN_PASSWORD, backdate_next_keys, decode_jwt, published_kids, spawn_app,
};
use common::testkit::TestDatabase;

common::both_databases!(
    a_key_too_recently_published_signs_only_once_caches_have_it,
    an_emergency_replacement_unpublishes_the_old_key_at_once,
    a_replica_with_another_encryption_key_is_unready_and_rotates_nothing,
    rotation_keeps_old_tokens_valid_until_they_expire,
    admin_routes_need_the_admin_scope,
    client_creation_validates_its_input,
    django_users_import_and_are_rehashed_at_first_login,
    the_cli_imports_a_dumpdata_file,
    discovery_lists_the_endpoints,
);

async fn rotation_keeps_old_tokens_valid_until_they_expire(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let old_kid = decode_jwt(&admin).0["kid"].as_str().unwrap().to_owned();
    let published = published_kids(&app).await;
    assert_eq!(
        published.len(),
        2,
        "the active key and the next one: {published:?}"
    );
    let next_kid = published.iter().find(|k| **k != old_kid).unwrap().clone();
    // The next key has been published longer than any cache keeps the JWKS.
    backdate_next_keys(&app.store.database(), chrono::Duration::hours(2)).await;

    let response = app
        .post_json("/v1/admin/keys/rotate", &admin, &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let rotation: Value = response.json().await.unwrap();
    assert_eq!(
        rotation["kid"],
        next_kid.as_str(),
        "the pre-published key signs now"
    );
    let new_next = rotation["next_kid"].as_str().unwrap().to_owned();

    let published = published_kids(&app).await;
    for kid in [&old_kid, &next_kid, &new_next] {
        assert!(published.contains(kid), "{kid} in {published:?}");
    }
    assert_eq!(
        app.get_with_token("/users/me", &admin).await.status(),
        200,
        "old token still verifies"
    );
    let fresh = app.admin_token().await;
    assert_eq!(
        decode_jwt(&fresh).0["kid"],
        next_kid.as_str(),
        "new tokens use the new key"
    );
    assert_eq!(app.get_with_token("/users/me", &fresh).await.status(), 200);

    // Once every token the old key signed has expired (15 min + leeway), it leaves the set.
    let later = chrono::Utc::now() + chrono::Duration::minutes(17);
    let mut then: Vec<String> = app
        .store
        .published_keys(later)
        .await
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    then.sort();
    let mut expected = vec![next_kid, new_next];
    expected.sort();
    assert_eq!(then, expected);
}

async fn a_key_too_recently_published_signs_only_once_caches_have_it(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let old_kid = decode_jwt(&admin).0["kid"].as_str().unwrap().to_owned();
    // The next key was published at start, moments ago.
    let rotation: Value = app
        .post_json("/v1/admin/keys/rotate", &admin, &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let activates_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(rotation["activates_at"].clone()).unwrap();
    let wait = activates_at - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::minutes(59),
        "scheduled an hour after it was published: {rotation}"
    );
    let fresh = app.admin_token().await;
    assert_eq!(
        decode_jwt(&fresh).0["kid"],
        old_kid.as_str(),
        "the old key signs until then"
    );
}

async fn an_emergency_replacement_unpublishes_the_old_key_at_once(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let old_kid = decode_jwt(&admin).0["kid"].as_str().unwrap().to_owned();
    let response = app
        .post_json("/v1/admin/keys/rotate", &admin, &json!({"emergency": true}))
        .await;
    assert_eq!(response.status(), 200);
    let replaced: Value = response.json().await.unwrap();
    let new_kid = replaced["kid"].as_str().unwrap();
    assert_ne!(new_kid, old_kid);
    assert!(
        !published_kids(&app).await.contains(&old_kid),
        "unpublished at once"
    );
    assert_eq!(
        app.get_with_token("/users/me", &admin).await.status(),
        401,
        "tokens of the replaced key no longer verify"
    );
    let fresh = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(decode_jwt(&fresh).0["kid"], new_kid);
    assert_eq!(app.get_with_token("/users/me", &fresh).await.status(), 200);
}

async fn a_replica_with_another_encryption_key_is_unready_and_rotates_nothing(db: TestDatabase) {
    let app = spawn_app(db).await;
    let keys_before = app
        .store
        .live_signing_keys(chrono::Utc::now())
        .await
        .unwrap()
        .len();
    // A second replica on the same database, configured with a different key-encryption key.
    let data_dir = tempfile::tempdir().unwrap();
    let env = common::config::Env::from_pairs([
        ("ACCOUNTS_ADDR", "127.0.0.1:0".to_owned()),
        ("ACCOUNTS_DATABASE_URL", app.db.url_string()),
        ("DATA_DIR", data_dir.path().display().to_string()),
        ("ACCOUNTS_SIGNING_ALG", "EdDSA".to_owned()),
        (
            "ACCOUNTS_KEY_ENCRYPTION_KEY",
            "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=".to_owned(),
        ),
        // Due for rotation at once: it must still not rotate over keys it cannot read.
        ("ACCOUNTS_KEY_ROTATION_HOURS", "1".to_owned()),
    ]);
    let config = accounts::AccountsConfig::from_env(&env).unwrap();
    let other = accounts::Application::build(config).await.expect("starts");
    let addr = other.local_addr().unwrap();
    let other = common::testkit::Running::spawn(addr, |shutdown| other.run(shutdown));
    let body = common::testkit::wait_for_readiness(&other.url(""), 503).await;
    let output = body["checks"]["signing_key"][0]["output"].as_str().unwrap();
    assert!(output.contains("ACCOUNTS_KEY_ENCRYPTION_KEY"), "{output}");
    let refused = reqwest::Client::new()
        .post(other.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(
        app.store
            .live_signing_keys(chrono::Utc::now())
            .await
            .unwrap()
            .len(),
        keys_before,
        "no key was made over the unreadable ones"
    );
    // The replica that can read them is unaffected.
    common::testkit::wait_for_readiness(&app.url(""), 200).await;
    app.admin_token().await;
}

async fn admin_routes_need_the_admin_scope(db: TestDatabase) {
    let app = spawn_app(db).await;
    let user = app.user_token("nobody@example.com").await;
    for path in [
        "/v1/admin/keys/rotate",
        "/v1/admin/clients",
        "/v1/admin/users/import",
    ] {
        let body = if path.ends_with("import") {
            json!([])
        } else {
            json!({"name": "x", "scopes": ["payments:read"]})
        };
        let response = app.post_json(path, &user, &body).await;
        assert_eq!(response.status(), 403, "{path}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("insufficient_scope")
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "forbidden");
        let anonymous = app
            .client
            .post(app.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
    }
}

async fn client_creation_validates_its_input(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    for body in [
        json!({"name": "", "scopes": ["payments:read"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["root"]}),
    ] {
        let response = app.post_json("/v1/admin/clients", &admin, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed", "{body}");
        let field = problem["errors"][0]["field"].as_str().unwrap();
        assert!(["name", "scopes"].contains(&field), "{problem}");
    }
    let created = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "worker", "scopes": ["payments:read"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    let stored = app
        .store
        .client_by_id(body["client_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        stored.secret_hash,
        body["client_secret"].as_str().unwrap(),
        "the secret is stored hashed"
    );
}

fn dumpdata() -> Value {
    json!([
        {"model": "auth.user", "pk": 1, "fields": {
            "password": "pbkdf2_sha256$36000$xIEozuZVAoYm$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w=",
            "last_login": null, "is_superuser": false, "username": "legacy", "first_name": "Leg",
            "last_name": "Acy", "email": "legacy@example.com", "is_staff": false, "is_active": true,
            "date_joined": "2018-05-01T12:00:00Z", "groups": [], "user_permissions": []}},
        {"model": "auth.user", "pk": 2, "fields": {
            "password": "!unusable", "username": "locked", "email": "locked@example.com", "is_active": true}},
        {"model": "auth.user", "pk": 3, "fields": {"password": "x", "username": "no-email", "email": ""}},
        {"model": "auth.user", "pk": 4, "fields": {
            "password": "pbkdf2_sha256$36000$xIEozuZVAoYm$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w=",
            "username": "gone", "email": "gone@example.com", "is_active": false}},
        {"model": "auth.user", "pk": 5, "fields": {
            "password": "argon2$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "username": "hog", "email": "hog@example.com"}},
        {"model": "auth.user", "pk": 6, "fields": {
            "password": "md5$salt$0123456789abcdef0123456789abcdef", "username": "old", "email": "old@example.com"}},
        {"model": "auth.group", "pk": 1, "fields": {"name": "staff"}}
    ])
}

/// The entries of [`dumpdata`] the import refuses, each with (a part of) its reason.
fn refused_entries(report: &Value) -> Vec<(i64, String)> {
    report["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["pk"].as_i64().unwrap(),
                entry["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn assert_refused_with_reasons(report: &Value) {
    let refused = refused_entries(report);
    assert_eq!(
        refused.iter().map(|(pk, _)| *pk).collect::<Vec<_>>(),
        [3, 5, 6],
        "{report}"
    );
    for ((_, reason), why) in refused.iter().zip([
        "no usable email",
        "argon2 memory (KiB) 4294967295 is above the limit",
        "unsupported password hasher \"md5\"",
    ]) {
        assert!(reason.contains(why), "{reason}");
    }
}

async fn django_users_import_and_are_rehashed_at_first_login(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let response = app
        .post_json("/v1/admin/users/import", &admin, &dumpdata())
        .await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(
        (&report["imported"], &report["skipped"]),
        (&json!(3), &json!(1))
    );
    assert_refused_with_reasons(&report);
    assert!(
        app.store
            .user_by_email("hog@example.com")
            .await
            .unwrap()
            .is_none(),
        "an over-limit hash is not imported"
    );
    let again: Value = app
        .post_json("/v1/admin/users/import", &admin, &dumpdata())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&again["imported"], &again["unchanged"], &again["skipped"]),
        (&json!(0), &json!(3), &json!(1)),
        "idempotent: {again}"
    );
    assert_refused_with_reasons(&again);

    let before = app
        .store
        .user_by_email("legacy@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(before.password_hash.starts_with("pbkdf2_sha256$"));
    let tokens = app
        .login("legacy@example.com", "eicieY7ahchaoCh0eeTa")
        .await;
    let after = app
        .store
        .user_by_email("legacy@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.password_hash.starts_with("$argon2id$"),
        "re-hashed at login"
    );
    app.login("legacy@example.com", "eicieY7ahchaoCh0eeTa")
        .await;
    let me: Value = app
        .get_with_token("/users/me", tokens["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "Leg Acy");

    let unusable = app
        .token(&[
            ("grant_type", "password"),
            ("username", "locked@example.com"),
            ("password", "!unusable"),
        ])
        .await;
    assert_eq!(unusable.status(), 400, "a '!' hash never verifies");
    let disabled = app
        .token(&[
            ("grant_type", "password"),
            ("username", "gone@example.com"),
            ("password", "eicieY7ahchaoCh0eeTa"),
        ])
        .await;
    assert_eq!(
        disabled.status(),
        400,
        "a disabled user cannot log in, even with the right password"
    );
}

async fn the_cli_imports_a_dumpdata_file(db: TestDatabase) {
    let app = spawn_app(db).await;
    let file = app.data_dir.path().join("users.json");
    std::fs::write(&file, dumpdata().to_string()).unwrap();
    let env = common::config::Env::from_pairs([
        ("ACCOUNTS_DATABASE_URL", app.db.url_string()),
        ("DATA_DIR", app.data_dir.path().display().to_string()),
    ]);
    let config = accounts::AccountsConfig::from_env(&env).unwrap();
    let report = accounts::import_file(config, &file, |_| {}).await.unwrap();
    assert_eq!((report.imported, report.skipped), (3, 1));
    assert_refused_with_reasons(&serde_json::to_value(&report).unwrap());
    app.login("legacy@example.com", "eicieY7ahchaoCh0eeTa")
        .await;
}

async fn discovery_lists_the_endpoints(db: TestDatabase) {
    let app = spawn_app(db).await;
    let doc: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    let issuer = "http://localhost:8080/accounts";
    assert_eq!(doc["issuer"], issuer);
    assert_eq!(doc["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
    assert_eq!(doc["token_endpoint"], format!("{issuer}/v1/token"));
    assert_eq!(
        doc["revocation_endpoint"],
        format!("{issuer}/v1/token/revoke")
    );
    assert_eq!(
        doc["introspection_endpoint"],
        format!("{issuer}/v1/token/introspect")
    );
    assert_eq!(
        doc["grant_types_supported"],
        json!([
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "password"
        ])
    );
    assert_eq!(doc["authorization_endpoint"], format!("{issuer}/authorize"));
    assert_eq!(doc["userinfo_endpoint"], format!("{issuer}/userinfo"));
    assert_eq!(doc["end_session_endpoint"], format!("{issuer}/logout"));
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert!(
        doc["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("RS256"))
    );
    for claim in ["sub", "email", "email_verified", "name", "nonce", "sid"] {
        assert!(
            doc["claims_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(claim)),
            "{claim}"
        );
    }
    assert!(
        doc["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("payments:write"))
    );
}
