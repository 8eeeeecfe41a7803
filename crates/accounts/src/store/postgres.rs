//! The PostgreSQL implementation of [`AccountsStore`](super::AccountsStore).

use chrono::{DateTime, Utc};
use common::db::{Pool, StoreError, connect_postgres};
use sqlx::PgPool;

/// Accounts on a PostgreSQL server.
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and migrates (migrations take an advisory lock, so replicas may start together).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = connect_postgres(url).await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(sqlx::Error::from)?;
        Ok(Self { pool })
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
