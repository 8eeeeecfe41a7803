//! The PostgreSQL implementation of [`PaymentsStore`](super::PaymentsStore). Claiming uses
//! `FOR UPDATE SKIP LOCKED`, so processors on several replicas never take the same payment.

use common::db::{StoreError, open_postgres};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The postgres schema of payments, embedded in the binary. Applied migrations this release does
/// not know (a newer release's) are accepted, so an older replica still starts during a
/// rolling update or a rollback.
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator
}

/// Payments on a PostgreSQL server.
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

impl super::sql::Backend for PgStore {
    type Db = sqlx::Postgres;
}

impl_payments_store!(
    PgStore,
    Postgres,
    "postgresql",
    "UPDATE payments SET status = 'processing', lease_until = $2, updated_at = $1 WHERE id = ( \
       SELECT id FROM payments WHERE status = 'pending' ORDER BY created_at LIMIT 1 \
       FOR UPDATE SKIP LOCKED) \
     AND status = 'pending' RETURNING *",
    "FOR UPDATE SKIP LOCKED",
    true
);
