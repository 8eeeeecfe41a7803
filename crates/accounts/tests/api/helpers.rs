//! `spawn_app`: the accounts service on port 0 with its own database.

use std::sync::Arc;

use accounts::store::AccountsStore;
use accounts::{AccountsConfig, Application};
use common::config::Env;
use common::testkit::{Running, TestDatabase};

/// A running accounts service and what a test needs to poke at it.
pub struct TestApp {
    pub server: Running,
    pub store: Arc<dyn AccountsStore>,
    pub client: reqwest::Client,
    pub db: TestDatabase,
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
}

pub async fn spawn_app(db: TestDatabase) -> TestApp {
    let env = Env::from_pairs([
        ("ACCOUNTS_ADDR", "127.0.0.1:0".to_owned()),
        ("ACCOUNTS_DATABASE_URL", db.url_string()),
    ]);
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
    }
}
