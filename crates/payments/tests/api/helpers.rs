//! `spawn_app`: payments on port 0 with its own database, and an accounts service to issue
//! the tokens it verifies.

use std::sync::Arc;
use std::time::Duration;

use common::config::Env;
use common::testkit::{self, Running, TestDatabase};
use payments::store::PaymentsStore;
use payments::{Application, PaymentsConfig};
use serde_json::{Value, json};

/// Payments, the accounts service that issues its tokens, and helpers.
pub struct TestApp {
    pub server: Running,
    pub store: Arc<dyn PaymentsStore>,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    pub accounts: Running,
    pub extra: Vec<(String, String)>,
    _accounts_db: TestDatabase,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// A new user's access token (signed up and logged in at accounts).
    pub async fn user_token(&self, email: &str) -> String {
        testkit::sign_up(&self.client, &self.accounts.url(""), email, "password-123").await;
        self.login(email, "password-123").await
    }

    /// The access token of a password login.
    pub async fn login(&self, email: &str, password: &str) -> String {
        testkit::password_token(&self.client, &self.accounts.url(""), email, password).await
    }

    /// The bootstrap admin's token (`payments:admin`).
    pub async fn admin_token(&self) -> String {
        self.login("root@example.com", "admin-password-1").await
    }

    /// `POST /v1/payments` with a key and a JSON body.
    pub async fn create(&self, token: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/payments"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `POST` with an optional key and an optional JSON body.
    pub async fn post(
        &self,
        token: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).bearer_auth(token);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// `POST /v1/payments/{payment}/refunds` with a key and a body.
    pub async fn refund(
        &self,
        token: &str,
        payment: &str,
        key: &str,
        body: &Value,
    ) -> reqwest::Response {
        let path = format!("/v1/payments/{payment}/refunds");
        self.post(token, &path, Some(key), Some(body)).await
    }

    /// Polls `path` until its `status` is one of `statuses` (or 15 s pass).
    pub async fn wait_for(&self, token: &str, path: &str, statuses: &[&str]) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self.get(token, path).await.json().await.unwrap();
            if statuses.contains(&last["status"].as_str().unwrap_or_default()) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} never reached {statuses:?}: {last}");
    }

    /// Creates a payment with `body` and waits until it is processed (succeeded, failed or
    /// authorized); returns it.
    pub async fn processed_payment(&self, token: &str, key: &str, body: &Value) -> Value {
        let created = self.create(token, key, body).await;
        assert_eq!(created.status(), 202);
        let id = created.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.wait_for(
            token,
            &format!("/v1/payments/{id}"),
            &["succeeded", "failed", "requires_capture"],
        )
        .await
    }

    /// This service's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls a payment until it reaches a terminal status (or 10 s pass).
    pub async fn settled(&self, token: &str, id: &str) -> Value {
        for _ in 0..200 {
            let payment: Value = self
                .get(token, &format!("/v1/payments/{id}"))
                .await
                .json()
                .await
                .unwrap();
            if ["succeeded", "failed", "canceled"]
                .contains(&payment["status"].as_str().unwrap_or_default())
            {
                return payment;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("payment {id} did not settle");
    }
}

pub fn usd(amount: Value) -> Value {
    json!({"amount": amount, "currency": "USD", "description": "test"})
}

/// A USD payment body with `fields` added (`payment_method`, `capture_method`).
pub fn usd_with(amount: Value, fields: Value) -> Value {
    let mut body = usd(amount);
    for (name, value) in fields.as_object().unwrap() {
        body[name] = value.clone();
    }
    body
}

/// The `id` of a JSON object.
pub fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

/// Starts accounts (SQLite, EdDSA) and payments on `db` with fast processor timings.
pub async fn spawn_app_with(db: TestDatabase, extra: &[(&str, &str)]) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let accounts_db = TestDatabase::sqlite().await;
    let accounts_env = Env::from_pairs([
        ("ACCOUNTS_ADDR", "127.0.0.1:0".to_owned()),
        ("ACCOUNTS_DATABASE_URL", accounts_db.url_string()),
        ("DATA_DIR", data_dir.path().display().to_string()),
        ("ACCOUNTS_SIGNING_ALG", "EdDSA".to_owned()),
        (
            "ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL",
            "root@example.com".to_owned(),
        ),
        (
            "ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD",
            "admin-password-1".to_owned(),
        ),
    ]);
    let accounts =
        accounts::Application::build(accounts::AccountsConfig::from_env(&accounts_env).unwrap())
            .await
            .expect("accounts builds");
    let accounts_addr = accounts.local_addr().unwrap();
    let accounts = Running::spawn(accounts_addr, |shutdown| accounts.run(shutdown));

    let extra = owned(extra);
    let (server, store) = start_payments(&db, accounts_addr, &extra).await;
    TestApp {
        server,
        store,
        client: reqwest::Client::new(),
        db,
        accounts,
        extra,
        _accounts_db: accounts_db,
        _data_dir: data_dir,
    }
}

/// Starts a payments process on `db` (also used to "restart" one).
pub async fn start_payments(
    db: &TestDatabase,
    accounts: std::net::SocketAddr,
    extra: &[(String, String)],
) -> (Running, Arc<dyn PaymentsStore>) {
    let mut env = Env::from_pairs([
        ("PAYMENTS_ADDR", "127.0.0.1:0".to_owned()),
        ("PAYMENTS_DATABASE_URL", db.url_string()),
        (
            "PAYMENTS_JWKS_URL",
            format!("http://{accounts}/.well-known/jwks.json"),
        ),
        ("PAYMENTS_POLL_INTERVAL_MS", "50".to_owned()),
        ("PAYMENTS_RETRY_BASE_MS", "50".to_owned()),
    ]);
    for (name, value) in extra {
        env = env.with(name.clone(), value.clone());
    }
    let config = PaymentsConfig::from_env(&env).expect("config");
    let app = Application::build(config).await.expect("payments builds");
    let addr = app.local_addr().unwrap();
    let store = app.store();
    (Running::spawn(addr, |shutdown| app.run(shutdown)), store)
}

/// A payments process of its own (the real binary, so it can be killed) on `db`, with `env`
/// on top of a free port, a data directory and quiet logs.
pub fn spawn_payments_process(
    db: &TestDatabase,
    data: &std::path::Path,
    env: &[(&str, &str)],
) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_payments"));
    command
        .arg("serve")
        .env_clear()
        .env("PAYMENTS_ADDR", "127.0.0.1:0")
        .env("PAYMENTS_DATABASE_URL", db.url_string())
        .env("DATA_DIR", data)
        .env("PAYMENTS_POLL_INTERVAL_MS", "50")
        .env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Settings as [`start_payments`] takes them.
pub fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub async fn spawn_app(db: TestDatabase) -> TestApp {
    spawn_app_with(db, &[]).await
}
