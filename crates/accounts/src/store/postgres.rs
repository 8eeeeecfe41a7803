//! The PostgreSQL implementation of [`AccountsStore`](super::AccountsStore).

use common::db::{StoreError, open_postgres};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The postgres schema of accounts, embedded in the binary. Applied migrations this release does
/// not know (a newer release's) are accepted, so an older replica still starts during a
/// rolling update or a rollback.
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator
}

/// Accounts on a PostgreSQL server.
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and migrates (migrations take an advisory lock, so replicas may start together).
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Ok(Self {
            pool: open_postgres(url, max_connections, &migrator()).await?,
        })
    }
}

impl_accounts_store!(PgStore, Postgres, "postgresql");
