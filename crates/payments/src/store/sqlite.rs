//! The SQLite implementation of [`PaymentsStore`](super::PaymentsStore). SQLite serializes
//! writers, so claiming with a plain `UPDATE ... WHERE id = (SELECT ...)` is already exclusive.

use std::path::Path;

use common::db::{StoreError, open_sqlite};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

/// The sqlite schema of payments, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Payments on an embedded SQLite file.
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
