//! `spawn_app`: the payments service on port 0 with its own database.

use std::sync::Arc;

use common::config::Env;
use common::testkit::{Running, TestDatabase};
use payments::store::PaymentsStore;
use payments::{Application, PaymentsConfig};

/// A running payments service and what a test needs to poke at it.
pub struct TestApp {
    pub server: Running,
    pub store: Arc<dyn PaymentsStore>,
    pub client: reqwest::Client,
    pub db: TestDatabase,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }
}

pub async fn spawn_app(db: TestDatabase) -> TestApp {
    let env = Env::from_pairs([
        ("PAYMENTS_ADDR", "127.0.0.1:0".to_owned()),
        ("PAYMENTS_DATABASE_URL", db.url_string()),
    ]);
    let config = PaymentsConfig::from_env(&env).expect("config");
    let app = Application::build(config).await.expect("payments builds");
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
