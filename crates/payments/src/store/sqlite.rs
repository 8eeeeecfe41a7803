//! The SQLite implementation of [`PaymentsStore`](super::PaymentsStore).

use std::path::Path;

use common::db::{Pool, StoreError, connect_sqlite};
use sqlx::SqlitePool;

/// Payments on an embedded SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let pool = connect_sqlite(path).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(sqlx::Error::from)?;
        Ok(Self { pool })
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
