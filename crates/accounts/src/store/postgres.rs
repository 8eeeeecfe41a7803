//! The PostgreSQL implementation of [`AccountsStore`](super::AccountsStore).

use common::db::{StoreError, open_postgres};
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

impl_accounts_store!(PgStore, Postgres, "postgresql");
