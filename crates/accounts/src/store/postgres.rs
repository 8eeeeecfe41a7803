//! The PostgreSQL implementation of [`AccountsStore`](super::AccountsStore).

use chrono::{DateTime, Utc};
use common::db::{Pool, StoreError, open_postgres};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The postgres schema of accounts, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Accounts on a PostgreSQL server.
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and migrates (migrations take an advisory lock, so replicas may start together).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            pool: open_postgres(url, &MIGRATOR).await?,
        })
    }
}

#[async_trait::async_trait]
impl super::AccountsStore for PgStore {
    fn database(&self) -> Pool {
        Pool::Postgres(self.pool.clone())
    }

    async fn published_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
            "SELECT public_jwk FROM signing_keys \
             WHERE expires_at IS NULL OR expires_at > $1 ORDER BY created_at DESC",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(jwk,)| jwk).collect())
    }
}
