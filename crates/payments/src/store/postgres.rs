//! The PostgreSQL implementation of [`PaymentsStore`](super::PaymentsStore).

use common::db::{Pool, StoreError, open_postgres};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The postgres schema of payments, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Payments on a PostgreSQL server.
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
