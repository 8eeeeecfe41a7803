//! `spawn_app`: the accounts service on port 0 with its own database, and typed helpers.

use std::sync::Arc;

use accounts::store::AccountsStore;
use accounts::{AccountsConfig, Application};
use common::config::Env;
use common::testkit::{Running, TestDatabase};
use serde_json::Value;

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// A running accounts service and what a test needs to poke at it.
pub struct TestApp {
    pub server: Running,
    pub store: Arc<dyn AccountsStore>,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    pub data_dir: tempfile::TempDir,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request failed")
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request failed")
    }

    /// `POST /v1/token` with form parameters.
    pub async fn token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.url("/v1/token"))
            .form(form)
            .send()
            .await
            .expect("request failed")
    }

    /// `POST {path}` with form parameters, as `client` (HTTP Basic `(id, secret)`) or as no
    /// client.
    pub async fn post_form_as(
        &self,
        path: &str,
        client: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).form(form);
        if let Some((id, secret)) = client {
            request = request.basic_auth(id, Some(secret));
        }
        request.send().await.expect("request failed")
    }

    /// A successful password grant's body.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let response = self
            .token(&[
                ("grant_type", "password"),
                ("username", email),
                ("password", password),
            ])
            .await;
        assert_eq!(response.status(), 200, "login as {email}");
        response.json().await.unwrap()
    }

    /// The bootstrap admin's access token.
    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn sign_up(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/v1/users"))
            .json(&serde_json::json!({"email": email, "password": password, "name": "Test User"}))
            .send()
            .await
            .expect("request failed")
    }

    /// Signs a user up and returns their access token.
    pub async fn user_token(&self, email: &str) -> String {
        assert_eq!(self.sign_up(email, "password-123").await.status(), 201);
        self.login(email, "password-123").await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `POST` a JSON body with a Bearer token.
    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request failed")
    }
}

/// Accounts with EdDSA keys (fast to generate), a known bootstrap admin, and `extra` settings.
pub async fn spawn_app_with(db: TestDatabase, extra: &[(&str, &str)]) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let mut env = Env::from_pairs([
        ("ACCOUNTS_ADDR", "127.0.0.1:0".to_owned()),
        ("ACCOUNTS_DATABASE_URL", db.url_string()),
        ("DATA_DIR", data_dir.path().display().to_string()),
        ("ACCOUNTS_SIGNING_ALG", "EdDSA".to_owned()),
        ("ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        (
            "ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD",
            ADMIN_PASSWORD.to_owned(),
        ),
    ]);
    for (name, value) in extra {
        env = env.with(*name, *value);
    }
    let config = AccountsConfig::from_env(&env).expect("config");
    let app = Application::build(config).await.expect("accounts builds");
    let addr = app.local_addr().expect("bound");
    let store = app.store();
    let server = Running::spawn(addr, |shutdown| app.run(shutdown));
    TestApp {
        server,
        store,
        client: reqwest::Client::new(),
        db,
        data_dir,
    }
}

pub async fn spawn_app(db: TestDatabase) -> TestApp {
    spawn_app_with(db, &[]).await
}

/// The header and claims of a JWT, without verifying it.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    use base64::Engine;
    let part = |i: usize| -> Value {
        let segment = token.split('.').nth(i).expect("three segments");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (part(0), part(1))
}

/// Inserts a published signing key, as retired (`expires_in` set) or without expiry.
pub async fn insert_key(
    pool: &common::db::Pool,
    jwk: &Value,
    expires_in: Option<chrono::Duration>,
) {
    use common::db::Pool;
    let now = chrono::Utc::now();
    let kid = jwk["kid"].as_str().expect("kid");
    let alg = jwk["alg"].as_str().expect("alg");
    let retired_at = expires_in.map(|_| now);
    let expires_at = expires_in.map(|d| now + d);
    let sql = "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, retired_at, expires_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let json = sqlx::types::Json(jwk);
    match pool {
        Pool::Sqlite(pool) => sqlx::query(sql)
            .bind(kid)
            .bind(alg)
            .bind(json)
            .bind(vec![0u8])
            .bind(now)
            .bind(retired_at)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(drop),
        Pool::Postgres(pool) => sqlx::query(sql)
            .bind(kid)
            .bind(alg)
            .bind(json)
            .bind(vec![0u8])
            .bind(now)
            .bind(retired_at)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(drop),
    }
    .expect("insert signing key");
}

/// Makes the keys published but not yet signing (the next keys) look published `age` ago,
/// so that a rotation may activate them at once.
pub async fn backdate_next_keys(pool: &common::db::Pool, age: chrono::Duration) {
    use common::db::Pool;
    let when = chrono::Utc::now() - age;
    let sql = "UPDATE signing_keys SET created_at = $1 WHERE activates_at IS NULL";
    match pool {
        Pool::Sqlite(pool) => sqlx::query(sql).bind(when).execute(pool).await.map(drop),
        Pool::Postgres(pool) => sqlx::query(sql).bind(when).execute(pool).await.map(drop),
    }
    .expect("backdate the next keys");
}

/// The `kid`s the JWKS serves.
pub async fn published_kids(app: &TestApp) -> Vec<String> {
    let body: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("JWKS");
    body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}
