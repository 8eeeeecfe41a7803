//! Accounts storage: one trait, a SQLite and a PostgreSQL implementation, the same tests for both.

mod postgres;
mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::db::{DatabaseUrl, Pool, StoreError};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Everything accounts keeps in its database.
#[async_trait::async_trait]
pub trait AccountsStore: Send + Sync {
    /// The pool behind the store, for readiness checks and shutdown.
    fn database(&self) -> Pool;

    /// Public JWKs of every signing key whose tokens may still be alive at `now`
    /// (not yet expired), newest first.
    async fn published_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, StoreError>;
}

/// Opens the database named by `url` and applies its migrations.
pub async fn open(url: &DatabaseUrl) -> Result<Arc<dyn AccountsStore>, StoreError> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        DatabaseUrl::Postgres(url) => Arc::new(PgStore::open(url).await?),
    })
}
