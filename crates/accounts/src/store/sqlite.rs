//! The SQLite implementation of [`AccountsStore`](super::AccountsStore).

use std::path::Path;

use common::db::{StoreError, open_sqlite};
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

impl_accounts_store!(SqliteStore, Sqlite, "sqlite");
