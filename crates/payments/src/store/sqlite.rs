//! The SQLite implementation of [`PaymentsStore`](super::PaymentsStore).

use std::path::Path;

use common::db::{Pool, StoreError, open_sqlite};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

/// The sqlite schema of payments, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Payments on an embedded SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            pool: open_sqlite(path, &MIGRATOR).await?,
        })
    }
}

#[async_trait::async_trait]
impl super::PaymentsStore for SqliteStore {
    fn database(&self) -> Pool {
        Pool::Sqlite(self.pool.clone())
    }

    async fn count_payments(&self) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments")
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }
}
