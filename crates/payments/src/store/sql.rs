//! [`PaymentsStore`] on SQLite and PostgreSQL: one implementation, generic over the sqlx
//! database (`SqlStore<Sqlite>`, `SqlStore<Postgres>`). The SQL is the same for both but for
//! claiming work, where [`Backend::SKIP_LOCKED`] and [`Backend::ROW_LOCKS`] name what differs:
//! PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so processors and relays on several
//! replicas never take the same row; SQLite serializes writers instead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::db::{Backend, Pool, StoreError};
use sqlx::{AssertSqlSafe, Decode, Encode, Executor, FromRow, Type};

use super::{Finish, KeyClaim, OutboxEvent, PaymentsStore, SavedResponse};
use crate::domain::events::{self, Event};
use crate::domain::payment::Payment;

/// Payments in an sqlx database: `SqlStore<sqlx::Sqlite>` or `SqlStore<sqlx::Postgres>`.
pub struct SqlStore<DB: Backend> {
    pool: sqlx::Pool<DB>,
}

impl<DB: Backend> SqlStore<DB> {
    /// A store over an opened and migrated pool.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        Self { pool }
    }
}

/// Writes `event` about `payment` to `payment_events` (the history and the outbox), on
/// `executor`: the transaction of the change it records.
async fn insert_event<'c, DB: Backend>(
    executor: impl Executor<'c, Database = DB>,
    event: &Event,
    payment: &Payment,
) -> Result<(), sqlx::Error>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> sqlx::types::Json<&'q serde_json::Value>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO payment_events (id, payment_id, owner, type, event, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&event.id)
    .bind(&payment.id)
    .bind(&payment.owner)
    .bind(&event.kind)
    .bind(sqlx::types::Json(&event.body))
    .bind(event.time)
    .execute(executor)
    .await
    .map(drop)
}

#[async_trait::async_trait]
impl<DB> PaymentsStore for SqlStore<DB>
where
    DB: Backend,
    // What the queries below need of the database: to run on a pool or a transaction, to
    // bind these types, and to read these rows.
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> sqlx::types::Json<&'q serde_json::Value>: Encode<'q, DB> + Type<DB>,
    for<'q> sqlx::types::Json<serde_json::Value>: Decode<'q, DB> + Type<DB>,
    for<'r> Payment: FromRow<'r, DB::Row>,
    for<'r> OutboxEvent: FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String, DateTime<Utc>): FromRow<'r, DB::Row>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'r> (sqlx::types::Json<serde_json::Value>,): FromRow<'r, DB::Row>,
    for<'r> (i64, sqlx::types::Json<serde_json::Value>): FromRow<'r, DB::Row>,
    for<'r> (
        String,
        Option<DateTime<Utc>>,
        Option<i32>,
        Option<String>,
        Option<String>,
    ): FromRow<'r, DB::Row>,
{
    fn database(&self) -> Pool {
        DB::into_pool(self.pool.clone())
    }

    #[tracing::instrument(name = "db claim_idempotency_key", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "claim_idempotency_key"))]
    async fn claim_idempotency_key(
        &self,
        principal: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        lock_timeout: Duration,
    ) -> Result<KeyClaim, StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND expires_at <= $3",
        )
        .bind(principal)
        .bind(key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (principal, key, fingerprint, locked_at, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (principal, key) DO NOTHING",
            )
            .bind(principal)
            .bind(key)
            .bind(fingerprint)
            .bind(now)
            .bind(now + ttl)
            .execute(&self.pool)
            .await?;
        if DB::rows_affected(&inserted) == 1 {
            return Ok(KeyClaim::Proceed);
        }
        let row: Option<(
            String,
            Option<DateTime<Utc>>,
            Option<i32>,
            Option<String>,
            Option<String>,
        )> = sqlx::query_as(
            "SELECT fingerprint, locked_at, response_status, response_body, payment_id \
                     FROM idempotency_keys WHERE principal = $1 AND key = $2",
        )
        .bind(principal)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some((stored_fingerprint, locked_at, status, body, payment_id)) = row else {
            // Purged between our insert and our read: the client may simply retry.
            return Ok(KeyClaim::InFlight);
        };
        if stored_fingerprint != fingerprint {
            return Ok(KeyClaim::Mismatch);
        }
        if let (Some(status), Some(body)) = (status, body) {
            return Ok(KeyClaim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                body,
                payment_id,
            });
        }
        match locked_at {
            Some(locked_at)
                if (now - locked_at)
                    .to_std()
                    .is_ok_and(|held| held >= lock_timeout) =>
            {
                // The request that held it died: take it over, unless someone else just did.
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET locked_at = $1 WHERE principal = $2 AND key = $3 \
                         AND locked_at = $4 AND response_status IS NULL",
                )
                .bind(now)
                .bind(principal)
                .bind(key)
                .bind(locked_at)
                .execute(&self.pool)
                .await?;
                Ok(if DB::rows_affected(&taken) == 1 {
                    KeyClaim::Proceed
                } else {
                    KeyClaim::InFlight
                })
            }
            _ => Ok(KeyClaim::InFlight),
        }
    }

    #[tracing::instrument(name = "db release_idempotency_key", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "release_idempotency_key"))]
    async fn release_idempotency_key(
        &self,
        principal: &str,
        key: &str,
        locked_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND locked_at = $3 \
                 AND response_status IS NULL",
        )
        .bind(principal)
        .bind(key)
        .bind(locked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db purge_idempotency_keys", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "purge_idempotency_keys"))]
    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&result))
    }

    #[tracing::instrument(name = "db create_payment", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "create_payment"))]
    async fn create_payment(
        &self,
        payment: &Payment,
        event: &Event,
        response: Option<SavedResponse<'_>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
                "INSERT INTO payments (id, owner, status, amount_minor, currency, description, payment_method, \
                 attempts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
            )
            .bind(&payment.id)
            .bind(&payment.owner)
            .bind(&payment.status)
            .bind(payment.amount_minor)
            .bind(&payment.currency)
            .bind(&payment.description)
            .bind(&payment.payment_method)
            .bind(payment.created_at)
            .execute(&mut *tx)
            .await?;
        insert_event::<DB>(&mut *tx, event, payment).await?;
        if let Some(response) = response {
            // Fenced by the lock: a request that ran past the lock timeout, whose key
            // another request has taken over since, must not create a second payment.
            let saved = sqlx::query(
                    "UPDATE idempotency_keys SET response_status = $1, response_body = $2, payment_id = $3, \
                     locked_at = NULL WHERE principal = $4 AND key = $5 AND locked_at = $6 \
                     AND response_status IS NULL",
                )
                .bind(i32::from(response.status))
                .bind(response.body)
                .bind(&payment.id)
                .bind(response.principal)
                .bind(response.key)
                .bind(response.locked_at)
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&saved) != 1 {
                // Dropping the transaction rolls the payment and its event back.
                return Err(StoreError::Conflict(
                    "the idempotency key's lock was taken over by another request".into(),
                ));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "db payment", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "payment"))]
    async fn payment(&self, id: &str) -> Result<Option<Payment>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM payments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    #[tracing::instrument(name = "db list_payments", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "list_payments"))]
    async fn list_payments(
        &self,
        owner: Option<&str>,
        before: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<Payment>, StoreError> {
        let (before_time, before_id) = match before {
            Some((time, id)) => (Some(time), Some(id)),
            None => (None, None),
        };
        Ok(sqlx::query_as(
            "SELECT * FROM payments WHERE ($1 IS NULL OR owner = $1) \
                 AND ($2 IS NULL OR created_at < $2 OR (created_at = $2 AND id < $3)) \
                 ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(owner)
        .bind(before_time)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    #[tracing::instrument(name = "db cancel_payment", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "cancel_payment"))]
    async fn cancel_payment(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Payment>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let canceled: Option<Payment> = sqlx::query_as(
            "UPDATE payments SET status = 'canceled', lease_until = NULL, updated_at = $1 \
                 WHERE id = $2 AND status = 'pending' RETURNING *",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(payment) = &canceled {
            let event = events::state_changed(payment, now);
            insert_event::<DB>(&mut *tx, &event, payment).await?;
        }
        tx.commit().await?;
        Ok(canceled)
    }

    #[tracing::instrument(name = "db claim_next_payment", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "claim_next_payment"))]
    async fn claim_next_payment(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Payment>, StoreError> {
        let lease_until = now + lease;
        let pending = format!(
            "SELECT id, created_at FROM payments WHERE status = 'pending' AND created_at <= $1 \
             ORDER BY created_at LIMIT 1 {}",
            DB::SKIP_LOCKED
        );
        let lapsed = format!(
            "SELECT id, lease_until FROM payments WHERE status = 'processing' AND lease_until < $1 \
             ORDER BY lease_until LIMIT 1 {}",
            DB::SKIP_LOCKED
        );
        // SQLite has no row locks: another worker may claim the payment between our look and
        // our (conditional) claim, and we look again.
        for _ in 0..3 {
            let mut tx = self.pool.begin().await?;
            let (first_pending, first_lapsed): (
                Option<(String, DateTime<Utc>)>,
                Option<(String, DateTime<Utc>)>,
            ) = if DB::ROW_LOCKS {
                let pending = sqlx::query_as(AssertSqlSafe(pending.clone()))
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                let lapsed = sqlx::query_as(AssertSqlSafe(lapsed.clone()))
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                (pending, lapsed)
            } else {
                let pending = sqlx::query_as(AssertSqlSafe(pending.clone()))
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                let lapsed = sqlx::query_as(AssertSqlSafe(lapsed.clone()))
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                (pending, lapsed)
            };
            // Whichever is due first: a new payment (due when accepted), or one whose lease ran
            // out (its worker died) or whose retry is due (due at `lease_until`).
            let (id, was_pending) = match (first_pending, first_lapsed) {
                (None, None) => return Ok(None),
                (Some((id, _)), None) => (id, true),
                (None, Some((id, _))) => (id, false),
                (Some((pending, created)), Some((lapsed, due))) => {
                    if due < created {
                        (lapsed, false)
                    } else {
                        (pending, true)
                    }
                }
            };
            let claimed: Option<Payment> = if was_pending {
                sqlx::query_as(
                    "UPDATE payments SET status = 'processing', lease_until = $2, updated_at = $1 \
                     WHERE id = $3 AND status = 'pending' RETURNING *",
                )
                .bind(now)
                .bind(lease_until)
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?
            } else {
                sqlx::query_as(
                    "UPDATE payments SET lease_until = $2, updated_at = $1 \
                     WHERE id = $3 AND status = 'processing' AND lease_until < $1 RETURNING *",
                )
                .bind(now)
                .bind(lease_until)
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?
            };
            let Some(payment) = claimed else {
                continue;
            };
            if was_pending {
                let event = events::state_changed(&payment, now);
                insert_event::<DB>(&mut *tx, &event, &payment).await?;
            }
            tx.commit().await?;
            return Ok(Some(payment));
        }
        Ok(None)
    }

    #[tracing::instrument(name = "db finish_payment", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "finish_payment"))]
    async fn finish_payment(
        &self,
        id: &str,
        finish: Finish<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Payment>, StoreError> {
        let (code, message) = finish.failure.unzip();
        let mut tx = self.pool.begin().await?;
        let finished: Option<Payment> = sqlx::query_as(
                "UPDATE payments SET status = $1, failure_code = $2, failure_message = $3, attempts = $4, \
                 lease_until = NULL, updated_at = $5 WHERE id = $6 AND status = 'processing' RETURNING *",
            )
            .bind(finish.status.as_str())
            .bind(code)
            .bind(message)
            .bind(finish.attempts)
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(payment) = &finished {
            let event = events::state_changed(payment, now);
            insert_event::<DB>(&mut *tx, &event, payment).await?;
        }
        tx.commit().await?;
        Ok(finished)
    }

    #[tracing::instrument(name = "db retry_payment_later", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "retry_payment_later"))]
    async fn retry_payment_later(
        &self,
        id: &str,
        attempts: i32,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE payments SET attempts = $1, lease_until = $2, updated_at = $3 \
                 WHERE id = $4 AND status = 'processing'",
        )
        .bind(attempts)
        .bind(retry_at)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db payment_events", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "payment_events"))]
    async fn payment_events(&self, payment_id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows: Vec<(sqlx::types::Json<serde_json::Value>,)> =
            sqlx::query_as("SELECT event FROM payment_events WHERE payment_id = $1 ORDER BY seq")
                .bind(payment_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(event,)| event.0).collect())
    }

    #[tracing::instrument(name = "db claim_outbox_batch", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "claim_outbox_batch"))]
    async fn claim_outbox_batch(
        &self,
        limit: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let eligible = format!(
            "SELECT seq, id, type, payment_id, event, created_at FROM payment_events e \
             WHERE published_at IS NULL AND (relay_lease_until IS NULL OR relay_lease_until < $1) \
             AND NOT EXISTS ( \
               SELECT 1 FROM payment_events earlier WHERE earlier.payment_id = e.payment_id \
               AND earlier.published_at IS NULL AND earlier.seq < e.seq) \
             ORDER BY seq LIMIT $2 {}",
            DB::SKIP_LOCKED
        );
        let mut tx = self.pool.begin().await?;
        // PostgreSQL: the rows stay locked (skipped by other relays) until the claim commits.
        // SQLite: read first, then claim each row only if it is still unclaimed (the first
        // write takes the database's write lock).
        let candidates: Vec<OutboxEvent> = if DB::ROW_LOCKS {
            sqlx::query_as(AssertSqlSafe(eligible))
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        } else {
            sqlx::query_as(AssertSqlSafe(eligible))
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
        };
        let mut claimed = Vec::with_capacity(candidates.len());
        for event in candidates {
            let taken = sqlx::query(
                "UPDATE payment_events SET relay_lease_until = $1 WHERE seq = $2 \
                 AND published_at IS NULL AND (relay_lease_until IS NULL OR relay_lease_until < $3)",
            )
            .bind(now + lease)
            .bind(event.seq)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if DB::rows_affected(&taken) == 1 {
                claimed.push(event);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    #[tracing::instrument(name = "db mark_published", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "mark_published"))]
    async fn mark_published(&self, ids: &[String], now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query(
                "UPDATE payment_events SET published_at = $1, relay_lease_until = NULL WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "db prune_published_events", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "prune_published_events"))]
    async fn prune_published_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM payment_events WHERE published_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&result))
    }

    #[tracing::instrument(name = "db outbox_backlog", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "outbox_backlog"))]
    async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM payment_events WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(count)
    }

    #[tracing::instrument(name = "db events_page", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "events_page"))]
    async fn events_page(
        &self,
        owner: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, serde_json::Value)>, StoreError> {
        let rows: Vec<(i64, sqlx::types::Json<serde_json::Value>)> = sqlx::query_as(
            "SELECT seq, event FROM payment_events WHERE ($1 IS NULL OR owner = $1) AND seq > $2 \
                 ORDER BY seq LIMIT $3",
        )
        .bind(owner)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, event)| (seq, event.0))
            .collect())
    }

    #[tracing::instrument(name = "db count_payments", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "count_payments"))]
    async fn count_payments(&self) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments")
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }

    #[tracing::instrument(name = "db record_sandbox_call", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "record_sandbox_call"))]
    async fn record_sandbox_call(
        &self,
        payment_id: &str,
        attempt: i32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sandbox_calls (payment_id, attempt, received_at) VALUES ($1, $2, $3)",
        )
        .bind(payment_id)
        .bind(attempt)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db sandbox_calls", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "sandbox_calls"))]
    async fn sandbox_calls(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT payment_id, COUNT(*) FROM sandbox_calls GROUP BY payment_id ORDER BY payment_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
