//! The all-in-one stack for the end-to-end test binaries: started in-process on port 0 with
//! databases of its own, and a signed-up user's token.

use common::config::Env;
use common::testkit::{self, Running, TestDatabase};
use stack::{Stack, StackConfig};

/// A running stack and the databases it owns.
pub struct TestStack {
    pub gateway: Running,
    /// Where payments listens (behind the gateway).
    pub payments: std::net::SocketAddr,
    /// Payments' database.
    pub payments_db: common::db::DatabaseUrl,
    pub data_dir: tempfile::TempDir,
    pub _databases: Vec<TestDatabase>,
}

impl TestStack {
    pub fn url(&self, path: &str) -> String {
        self.gateway.url(path)
    }
}

/// Starts the stack. SQLite: nothing but `DATA_DIR` is set, as on a new laptop. PostgreSQL:
/// accounts and payments each get their own database.
pub async fn spawn_stack(db: TestDatabase) -> TestStack {
    spawn_stack_with(db, &[]).await
}

pub async fn spawn_stack_with(db: TestDatabase, extra: &[(&str, &str)]) -> TestStack {
    let data_dir = tempfile::tempdir().unwrap();
    let mut env = Env::from_pairs([
        ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("ACCOUNTS_ADDR", "127.0.0.1:0".to_owned()),
        ("PAYMENTS_ADDR", "127.0.0.1:0".to_owned()),
        ("DATA_DIR", data_dir.path().display().to_string()),
    ]);
    for (name, value) in extra {
        env = env.with(*name, *value);
    }
    let mut databases = Vec::new();
    let mut payments_db_url = common::db::DatabaseUrl::Sqlite(data_dir.path().join("payments.db"));
    if db.is_postgres() {
        let payments_db = TestDatabase::postgres().await;
        env = env
            .with("ACCOUNTS_DATABASE_URL", db.url_string())
            .with("PAYMENTS_DATABASE_URL", payments_db.url_string());
        databases.push(payments_db);
        payments_db_url = databases[0].url.clone();
    }
    databases.push(db);
    let config = StackConfig::from_env(&env).expect("config");
    let stack = Stack::build(config).await.expect("stack builds");
    let addr = stack.gateway_addr().unwrap();
    let payments = stack.payments_addr().unwrap();
    let gateway = Running::spawn(addr, |shutdown| stack.run(shutdown));
    TestStack {
        gateway,
        payments,
        payments_db: payments_db_url,
        data_dir,
        _databases: databases,
    }
}

/// Signs a user up and logs in through the gateway; returns the access token.
pub async fn user_token(stack: &TestStack, email: &str) -> String {
    let client = reqwest::Client::new();
    let accounts = stack.url("/accounts");
    testkit::sign_up(&client, &accounts, email, "password-123").await;
    testkit::password_token(&client, &accounts, email, "password-123").await
}
