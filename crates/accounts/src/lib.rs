//! The accounts service: users, login, JWT issuance and the JWKS that lets others verify them.

pub mod config;
pub mod http;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use common::server::Service;
use tokio_util::sync::CancellationToken;

pub use config::AccountsConfig;
use store::AccountsStore;

/// The service's name in logs and spans.
pub const SERVICE: &str = "accounts";

/// A built accounts service: database opened and migrated, listener bound, not yet serving.
pub struct Application {
    service: Service,
    store: Arc<dyn AccountsStore>,
}

impl Application {
    /// Opens (and migrates) the database and binds `config.addr` (port 0 picks a free port).
    pub async fn build(config: AccountsConfig) -> anyhow::Result<Self> {
        let store = store::open(&config.database_url).await.with_context(|| {
            format!(
                "cannot open the accounts database {}",
                config.database_url.redacted()
            )
        })?;
        let (http, addr) = (config.http.clone(), config.addr);
        let router = http::router(http::AppState {
            store: store.clone(),
            config: Arc::new(config),
        });
        let service = Service::bind(SERVICE, "ACCOUNTS_ADDR", addr, router, &http)
            .await?
            .with_database(store.database());
        Ok(Self { service, store })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    /// The store, for tests and the runner.
    pub fn store(&self) -> Arc<dyn AccountsStore> {
        self.store.clone()
    }

    /// Serves until `shutdown` fires, lets in-flight requests finish, then closes the database.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run(shutdown).await
    }
}
