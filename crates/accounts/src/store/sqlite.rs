//! The SQLite implementation of [`AccountsStore`](super::AccountsStore).

use std::path::Path;

use common::db::{StoreError, open_sqlite};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

/// The sqlite schema of accounts, embedded in the binary. Applied migrations this release does
/// not know (a newer release's) are accepted, so an older replica still starts during a
/// rolling update or a rollback.
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

/// Accounts on an embedded SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            pool: open_sqlite(path, &migrator()).await?,
        })
    }
}

impl_accounts_store!(SqliteStore, Sqlite, "sqlite");
