//! The PostgreSQL implementation of [`PaymentsStore`](super::PaymentsStore).

use common::db::{Pool, StoreError, connect_postgres};
use sqlx::PgPool;

/// Payments on a PostgreSQL server.
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
impl super::PaymentsStore for PgStore {
    fn database(&self) -> Pool {
        Pool::Postgres(self.pool.clone())
    }

    async fn count_payments(&self) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments")
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }
}
