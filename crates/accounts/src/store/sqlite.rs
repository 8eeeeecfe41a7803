//! The SQLite implementation of [`AccountsStore`](super::AccountsStore).

use std::path::Path;

use chrono::{DateTime, Utc};
use common::db::{Pool, StoreError, open_sqlite};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

/// The sqlite schema of accounts, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Accounts on an embedded SQLite file.
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
impl super::AccountsStore for SqliteStore {
    fn database(&self) -> Pool {
        Pool::Sqlite(self.pool.clone())
    }

    async fn published_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT public_jwk FROM signing_keys \
             WHERE expires_at IS NULL OR expires_at > $1 ORDER BY created_at DESC",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(jwk,)| serde_json::from_str(&jwk).map_err(|e| StoreError::Other(e.to_string())))
            .collect()
    }
}
