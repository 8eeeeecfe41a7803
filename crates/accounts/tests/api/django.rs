//! Hashes made by real Django (`tests/fixtures/django_hashes.py`, each of its hashers at its
//! default cost) import, verify at login, and are replaced by Argon2id there; the weak ones are
//! refused at import with their reason.

use serde_json::{Value, json};

use crate::helpers::spawn_app;
use common::testkit::TestDatabase;

common::both_databases!(every_hash_django_makes_verifies_and_is_rehashed_at_login);

const FIXTURE: &str = include_str!("../fixtures/django_hashes.json");

async fn every_hash_django_makes_verifies_and_is_rehashed_at_login(db: TestDatabase) {
    let app = spawn_app(db).await;
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let password = fixture["password"].as_str().unwrap();
    let hashes = fixture["hashes"].as_object().unwrap();
    let dump: Vec<Value> = hashes
        .iter()
        .enumerate()
        .map(|(pk, (hasher, hash))| {
            json!({"model": "auth.user", "pk": pk + 1, "fields": {
                "username": hasher, "email": format!("{hasher}@example.com"),
                "password": hash, "is_active": true}})
        })
        .collect();
    let admin = app.admin_token().await;
    let report: Value = app
        .post_json("/v1/admin/users/import", &admin, &Value::Array(dump))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["imported"], hashes.len() - 1, "{report}");
    let refused = &report["refused"][0];
    assert_eq!(refused["username"], "md5");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("unsupported password hasher \"md5\""),
        "{refused}"
    );
    for hasher in hashes.keys().filter(|h| *h != "md5") {
        let email = format!("{hasher}@example.com");
        let before = app.store.user_by_email(&email).await.unwrap().unwrap();
        assert!(
            before.password_hash.starts_with(&format!("{hasher}$")),
            "{hasher}"
        );
        let wrong = app
            .token(&[
                ("grant_type", "password"),
                ("username", &email),
                ("password", "not the password"),
            ])
            .await;
        assert_eq!(wrong.status(), 400, "{hasher}: a wrong password is refused");
        app.login(&email, password).await;
        let after = app.store.user_by_email(&email).await.unwrap().unwrap();
        assert!(
            after
                .password_hash
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hasher}: re-hashed with Argon2id at login, not {}",
            after.password_hash
        );
        app.login(&email, password).await;
    }
}
