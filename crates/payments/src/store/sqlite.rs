//! The SQLite implementation of [`PaymentsStore`](super::PaymentsStore). SQLite serializes
//! writers, so claiming with a plain `UPDATE ... WHERE id = (SELECT ...)` is already exclusive.

use std::path::Path;

use common::db::{StoreError, open_sqlite};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

/// The sqlite schema of payments, embedded in the binary. Applied migrations this release does
/// not know (a newer release's) are accepted, so an older replica still starts during a
/// rolling update or a rollback.
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

/// Payments on an embedded SQLite file.
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

impl super::sql::Backend for SqliteStore {
    type Db = sqlx::Sqlite;
}

impl_payments_store!(
    SqliteStore,
    Sqlite,
    "sqlite",
    "UPDATE payments SET status = 'processing', lease_until = $2, updated_at = $1 WHERE id = ( \
       SELECT id FROM payments WHERE status = 'pending' ORDER BY created_at LIMIT 1) \
     AND status = 'pending' RETURNING *",
    "",
    false
);
