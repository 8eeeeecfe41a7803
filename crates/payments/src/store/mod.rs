//! Payments storage: one trait, a SQLite and a PostgreSQL implementation, the same tests for both.

mod postgres;
mod sqlite;

use std::sync::Arc;

use common::db::{DatabaseUrl, Pool, StoreError};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Everything payments keeps in its database.
#[async_trait::async_trait]
pub trait PaymentsStore: Send + Sync {
    /// The pool behind the store, for readiness checks and shutdown.
    fn database(&self) -> Pool;

    /// How many payments the store holds.
    async fn count_payments(&self) -> Result<i64, StoreError>;
}

/// Opens the database named by `url` and applies its migrations.
pub async fn open(url: &DatabaseUrl) -> Result<Arc<dyn PaymentsStore>, StoreError> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        DatabaseUrl::Postgres(url) => Arc::new(PgStore::open(url).await?),
    })
}
