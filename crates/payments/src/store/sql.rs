//! [`PaymentsStore`] on SQLite and PostgreSQL: one implementation, generic over the sqlx
//! database (`SqlStore<Sqlite>`, `SqlStore<Postgres>`). The SQL is the same for both but for
//! claiming work, where [`Backend::SKIP_LOCKED`] and [`Backend::ROW_LOCKS`] name what differs:
//! PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so processors and relays on several
//! replicas never take the same row; SQLite serializes writers instead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::db::{Backend, Pool, StoreError};
use sqlx::{AssertSqlSafe, Decode, Encode, Executor, FromRow, Type};

use super::{
    AttemptOutcome, DeliveryShares, Finish, FinishedKey, KeyClaim, OutboxEvent, PaymentsStore,
    RefundCreated, RefundFinish, SandboxCall, SavedResponse, WorkItem,
};
use crate::domain::events::{self, Event};
use crate::domain::payment::{Payment, PaymentStatus};
use crate::domain::refund::{Refund, RefundStatus};
use crate::domain::webhook::{Attempt, Delivery, WebhookEndpoint};

/// The statement that claims a key (`INSERT`, or on a conflict with an expired key the same
/// values over it; a live key is left alone, and no row is affected), with the SQL of each
/// value: the caller's placeholders, or `NULL`. Used alone, or as the first step of a payment's
/// one statement.
macro_rules! upsert_key {
    ($principal:literal, $key:literal, $fingerprint:literal, $locked_at:literal,
     $status:literal, $body:literal, $payment_id:literal, $created_at:literal,
     $expires_at:literal) => {
        concat!(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, locked_at, \
             response_status, response_body, payment_id, created_at, expires_at) VALUES (",
            $principal,
            ", ",
            $key,
            ", ",
            $fingerprint,
            ", ",
            $locked_at,
            ", ",
            $status,
            ", ",
            $body,
            ", ",
            $payment_id,
            ", ",
            $created_at,
            ", ",
            $expires_at,
            ") ON CONFLICT (principal, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             locked_at = excluded.locked_at, response_status = excluded.response_status, \
             response_body = excluded.response_body, payment_id = excluded.payment_id, \
             created_at = excluded.created_at, expires_at = excluded.expires_at \
             WHERE idempotency_keys.expires_at <= excluded.created_at"
        )
    };
}

/// The rest of a payment's one statement after the key's step `$source` (a CTE returning one
/// row if the key is this request's, none if not): the payment ($1-$9), its event ($10-$13)
/// and its webhook deliveries (`$14`: [`subscribers_pattern`]), each from the rows of the one
/// before; the statement returns how many rows `$source` returned.
macro_rules! payment_writes {
    ($source:literal) => {
        concat!(
            "payment AS (INSERT INTO payments (id, owner, status, amount_minor, currency, \
             description, payment_method, attempts, created_at, updated_at, capture_method) \
             SELECT $1, $2, $3, $4, $5, $6, $7, 0, $8, $8, $9 FROM ",
            $source,
            " RETURNING id, owner), \
             event AS (INSERT INTO payment_events (id, payment_id, owner, type, event, created_at) \
             SELECT $10, id, owner, $11, $12, $13 FROM payment RETURNING id), \
             deliveries AS (INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, \
             status, attempts, next_attempt_at, created_at, updated_at) \
             SELECT endpoint.id, event.id, $11, 'pending', 0, $13, $13, $13 \
             FROM webhook_endpoints endpoint, event WHERE endpoint.status = 'enabled' \
             AND (endpoint.enabled_events = '*' \
             OR (' ' || endpoint.enabled_events || ' ') LIKE $14 ESCAPE '\\')) \
             SELECT count(*) FROM ",
            $source
        )
    };
}

/// Payments in an sqlx database: `SqlStore<sqlx::Sqlite>` or `SqlStore<sqlx::Postgres>`.
pub struct SqlStore<DB: Backend> {
    pool: sqlx::Pool<DB>,
}

impl<DB: Backend> SqlStore<DB> {
    /// A store over an opened and migrated pool.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        Self { pool }
    }

    /// A new payment on a backend with [`Backend::WRITING_CTES`]: the writes of its
    /// transaction (the key, the payment, its event, a webhook delivery for each endpoint that
    /// subscribes to it) in one statement, each write taking its rows from the one before, so
    /// that nothing is written unless the key is this request's: its lock still held (`saved`
    /// by [`PaymentsStore::create_payment`]) or the key new (`claimed` by
    /// [`PaymentsStore::create_payment_under_new_key`]). One round trip instead of six
    /// (`BEGIN`, four statements, `COMMIT`), or eight with the claim: most of the service's
    /// cost per payment beyond PostgreSQL's own is sending and waiting for statements.
    /// `Ok(false)`: nothing written.
    async fn create_payment_in_one_statement(
        &self,
        payment: &Payment,
        event: &Event,
        key: KeyWrite<'_>,
    ) -> Result<bool, StoreError>
    where
        for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> i32: Encode<'q, DB> + Type<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
        for<'q> sqlx::types::Json<&'q serde_json::Value>: Encode<'q, DB> + Type<DB>,
        for<'r> (i64,): FromRow<'r, DB::Row>,
    {
        // $1-$14: the payment's writes, taking their rows from the key's ($15-).
        let sql = match key {
            KeyWrite::Fenced(_) => concat!(
                "WITH saved AS (UPDATE idempotency_keys SET response_status = $15, \
                 response_body = $16, payment_id = $1, locked_at = NULL WHERE principal = $17 \
                 AND key = $18 AND locked_at = $19 AND response_status IS NULL RETURNING 1), ",
                payment_writes!("saved")
            ),
            KeyWrite::New(_) => concat!(
                "WITH claimed AS (",
                upsert_key!(
                    "$15", "$16", "$17", "NULL", "$18", "$19", "$1", "$20", "$21"
                ),
                " RETURNING 1), ",
                payment_writes!("claimed")
            ),
        };
        let query = sqlx::query_as(sql)
            .bind(payment.id.clone())
            .bind(payment.owner.clone())
            .bind(payment.status.clone())
            .bind(payment.amount_minor)
            .bind(payment.currency.clone())
            .bind(payment.description.clone())
            .bind(payment.payment_method.clone())
            .bind(payment.created_at)
            .bind(payment.capture_method.clone())
            .bind(event.id.clone())
            .bind(event.kind.clone())
            .bind(sqlx::types::Json(&event.body))
            .bind(event.time)
            .bind(subscribers_pattern(&event.kind));
        let query = match key {
            KeyWrite::Fenced(response) => query
                .bind(i32::from(response.status))
                .bind(response.body.to_owned())
                .bind(response.principal.to_owned())
                .bind(response.key.to_owned())
                .bind(response.locked_at),
            KeyWrite::New(key) => query
                .bind(key.principal.to_owned())
                .bind(key.key.to_owned())
                .bind(key.fingerprint.to_owned())
                .bind(i32::from(key.status))
                .bind(key.body.to_owned())
                .bind(key.created_at)
                .bind(key.expires_at),
        };
        let (written,): (i64,) = query.fetch_one(&self.pool).await?;
        Ok(written == 1)
    }
}

/// How [`SqlStore::create_payment_in_one_statement`] writes the key.
#[derive(Clone, Copy)]
enum KeyWrite<'a> {
    /// Saves the response under the key this request locked, if it still holds the lock.
    Fenced(SavedResponse<'a>),
    /// Claims the key already finished, if it is new or expired.
    New(FinishedKey<'a>),
}

/// Writes a new `payment` and its `created` `event` (with its webhook deliveries) on `conn`:
/// the transaction that also saves its key's response.
async fn insert_payment<DB: Backend>(
    conn: &mut DB::Connection,
    payment: &Payment,
    event: &Event,
) -> Result<(), sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> sqlx::types::Json<&'q serde_json::Value>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO payments (id, owner, status, amount_minor, currency, description, \
         payment_method, attempts, created_at, updated_at, capture_method) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8, $9)",
    )
    .bind(&payment.id)
    .bind(&payment.owner)
    .bind(&payment.status)
    .bind(payment.amount_minor)
    .bind(&payment.currency)
    .bind(&payment.description)
    .bind(&payment.payment_method)
    .bind(payment.created_at)
    .bind(&payment.capture_method)
    .execute(&mut *conn)
    .await?;
    insert_event::<DB>(conn, event, of_payment(payment)).await
}

/// Writes `event` about a payment (or one of its refunds) to `payment_events` (the history
/// and the outbox), and a webhook delivery of it for every enabled endpoint that subscribes
/// to its type, on `conn`: the transaction of the change it records.
async fn insert_event<DB: Backend>(
    conn: &mut DB::Connection,
    event: &Event,
    (payment_id, owner): (&str, &str),
) -> Result<(), sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> sqlx::types::Json<&'q serde_json::Value>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO payment_events (id, payment_id, owner, type, event, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&event.id)
    .bind(payment_id.to_owned())
    .bind(owner.to_owned())
    .bind(&event.kind)
    .bind(sqlx::types::Json(&event.body))
    .bind(event.time)
    .execute(&mut *conn)
    .await?;
    let word = subscribers_pattern(&event.kind);
    sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, status, attempts, \
         next_attempt_at, created_at, updated_at) \
         SELECT id, $1, $2, 'pending', 0, $3, $3, $3 FROM webhook_endpoints \
         WHERE status = 'enabled' AND (enabled_events = '*' \
         OR (' ' || enabled_events || ' ') LIKE $4 ESCAPE '\\')",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(event.time)
    .bind(word)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The `LIKE` pattern (escape `\`) matching an endpoint's `enabled_events` that subscribes to
/// events of `kind`: the list is space-separated, so the type as a whole word (its `_`
/// escaped, LIKE's one-character wildcard).
fn subscribers_pattern(kind: &str) -> String {
    format!("% {} %", kind.replace('_', "\\_"))
}

/// A duration for people: `5 days`, `3 hours`, `90 seconds`.
fn humane(duration: chrono::Duration) -> String {
    let seconds = duration.num_seconds();
    match seconds {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{} hours", s / 3_600),
        s => format!("{s} seconds"),
    }
}

/// Where a payment's events go.
fn of_payment(payment: &Payment) -> (&str, &str) {
    (&payment.id, &payment.owner)
}

/// Where a refund's events go: its payment's history.
fn of_refund(refund: &Refund) -> (&str, &str) {
    (&refund.payment_id, &refund.owner)
}

/// Saves `response` under its key, on `executor` (the transaction of what the request made),
/// naming `resource_id`; fenced by the lock: `false` (save nothing) when the request ran past
/// the lock timeout and another request has taken its key over since.
async fn save_response<'c, DB: Backend>(
    executor: impl Executor<'c, Database = DB>,
    response: SavedResponse<'_>,
    resource_id: &str,
) -> Result<bool, sqlx::Error>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    let saved = sqlx::query(
        "UPDATE idempotency_keys SET response_status = $1, response_body = $2, payment_id = $3, \
         locked_at = NULL WHERE principal = $4 AND key = $5 AND locked_at = $6 \
         AND response_status IS NULL",
    )
    .bind(i32::from(response.status))
    .bind(response.body.to_owned())
    .bind(resource_id.to_owned())
    .bind(response.principal.to_owned())
    .bind(response.key.to_owned())
    .bind(response.locked_at)
    .execute(executor)
    .await?;
    Ok(DB::rows_affected(&saved) == 1)
}

/// The error that rolls a request's writes back when its key was taken over.
fn taken_over() -> StoreError {
    StoreError::Conflict("the idempotency key's lock was taken over by another request".into())
}

/// Claims one row: `select` (bound to `$1` = now) names the first candidate's id; `update`
/// (bound to `$1` = now, `$2` = the lease's end, `$3` = the id) takes it only if it is still
/// a candidate, returning the row. PostgreSQL locks the candidate (`SKIP LOCKED`, so other
/// workers pass it by); SQLite has no row locks, so another worker may take it between our
/// look and our claim, and we look again.
async fn claim_one<DB, T>(
    pool: &sqlx::Pool<DB>,
    select: &str,
    update: &'static str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<T>, StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> T: FromRow<'r, DB::Row> + Send + Unpin,
{
    for _ in 0..3 {
        let mut tx = pool.begin().await?;
        let candidate: Option<(String,)> = if DB::ROW_LOCKS {
            sqlx::query_as(AssertSqlSafe(select.to_owned()))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
        } else {
            sqlx::query_as(AssertSqlSafe(select.to_owned()))
                .bind(now)
                .fetch_optional(pool)
                .await?
        };
        let Some((id,)) = candidate else {
            return Ok(None);
        };
        let claimed: Option<T> = sqlx::query_as(update)
            .bind(now)
            .bind(lease_until)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        if claimed.is_some() {
            return Ok(claimed);
        }
    }
    Ok(None)
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
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'r> Payment: FromRow<'r, DB::Row>,
    for<'r> Refund: FromRow<'r, DB::Row>,
    for<'r> WebhookEndpoint: FromRow<'r, DB::Row>,
    for<'r> Delivery: FromRow<'r, DB::Row>,
    for<'r> Attempt: FromRow<'r, DB::Row>,
    for<'r> (i64, Option<DateTime<Utc>>): FromRow<'r, DB::Row>,
    for<'r> (String, sqlx::types::Json<serde_json::Value>): FromRow<'r, DB::Row>,
    for<'q> Option<i32>: Encode<'q, DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (Option<String>,): FromRow<'r, DB::Row>,
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
        // A new key is inserted; an expired one is claimed afresh in the same statement, as
        // if deleted and inserted again (one round trip); a live one is left alone and read.
        let inserted = sqlx::query(upsert_key!(
            "$1", "$2", "$3", "$4", "NULL", "NULL", "NULL", "$4", "$5"
        ))
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
        if DB::WRITING_CTES
            && let Some(response) = response
        {
            let saved = self
                .create_payment_in_one_statement(payment, event, KeyWrite::Fenced(response))
                .await?;
            return if saved { Ok(()) } else { Err(taken_over()) };
        }
        let mut tx = self.pool.begin().await?;
        insert_payment::<DB>(&mut *tx, payment, event).await?;
        // Fenced by the lock: a request that ran past the lock timeout, whose key another
        // request has taken over since, must not create a second payment (dropping the
        // transaction rolls the payment and its event back).
        if let Some(response) = response
            && !save_response::<DB>(&mut *tx, response, &payment.id).await?
        {
            return Err(taken_over());
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "db create_payment_under_new_key", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "create_payment_under_new_key"))]
    async fn create_payment_under_new_key(
        &self,
        payment: &Payment,
        event: &Event,
        key: FinishedKey<'_>,
    ) -> Result<bool, StoreError> {
        if DB::WRITING_CTES {
            return self
                .create_payment_in_one_statement(payment, event, KeyWrite::New(key))
                .await;
        }
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(upsert_key!(
            "$1", "$2", "$3", "NULL", "$4", "$5", "$6", "$7", "$8"
        ))
        .bind(key.principal)
        .bind(key.key)
        .bind(key.fingerprint)
        .bind(i32::from(key.status))
        .bind(key.body)
        .bind(&payment.id)
        .bind(key.created_at)
        .bind(key.expires_at)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&claimed) == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_payment::<DB>(&mut *tx, payment, event).await?;
        tx.commit().await?;
        Ok(true)
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
            "UPDATE payments SET status = 'canceled', cancellation_reason = 'requested', \
                 lease_until = NULL, updated_at = $1 WHERE id = $2 AND (status = 'pending' \
                 OR (status = 'requires_capture' AND capture_requested_minor IS NULL)) RETURNING *",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(payment) = &canceled {
            let event = events::state_changed(payment, now);
            insert_event::<DB>(&mut *tx, &event, of_payment(payment)).await?;
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
                    "UPDATE payments SET status = 'processing', attempts = attempts + 1, \
                     lease_until = $2, updated_at = $1 WHERE id = $3 AND status = 'pending' RETURNING *",
                )
                .bind(now)
                .bind(lease_until)
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?
            } else {
                sqlx::query_as(
                    "UPDATE payments SET attempts = attempts + 1, lease_until = $2, updated_at = $1 \
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
                insert_event::<DB>(&mut *tx, &event, of_payment(&payment)).await?;
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
                 lease_until = NULL, updated_at = $5, capture_before = $7, \
                 amount_captured_minor = CASE WHEN $1 = 'succeeded' THEN amount_minor ELSE 0 END \
                 WHERE id = $6 AND status = 'processing' RETURNING *",
            )
            .bind(finish.status.as_str())
            .bind(code)
            .bind(message)
            .bind(finish.attempts)
            .bind(now)
            .bind(id)
            .bind(finish.capture_before)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(payment) = &finished {
            let event = events::state_changed(payment, now);
            insert_event::<DB>(&mut *tx, &event, of_payment(payment)).await?;
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
                 WHERE id = $4 AND (status = 'processing' \
                 OR (status = 'requires_capture' AND capture_requested_minor IS NOT NULL))",
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
        call: SandboxCall<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sandbox_calls (payment_id, attempt, received_at, operation, outcome) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(call.reference)
        .bind(call.attempt)
        .bind(now)
        .bind(call.operation)
        .bind(call.outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db sandbox_outcome", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "sandbox_outcome"))]
    async fn sandbox_outcome(
        &self,
        operation: &str,
        reference: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT outcome FROM sandbox_calls WHERE operation = $1 AND payment_id = $2 \
             AND outcome IS NOT NULL AND outcome <> 'error' ORDER BY id DESC LIMIT 1",
        )
        .bind(operation)
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(outcome,)| outcome))
    }

    #[tracing::instrument(name = "db sandbox_calls", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "sandbox_calls"))]
    async fn sandbox_calls(&self, operation: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT payment_id, COUNT(*) FROM sandbox_calls WHERE operation = $1 \
             GROUP BY payment_id ORDER BY payment_id",
        )
        .bind(operation)
        .fetch_all(&self.pool)
        .await?)
    }

    #[tracing::instrument(name = "db release_expired_authorizations", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "release_expired_authorizations"))]
    async fn release_expired_authorizations(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Payment>, StoreError> {
        let expired = format!(
            "SELECT id FROM payments WHERE status = 'requires_capture' \
             AND capture_requested_minor IS NULL AND capture_before < $1 \
             ORDER BY capture_before LIMIT $2 {}",
            DB::SKIP_LOCKED
        );
        let mut tx = self.pool.begin().await?;
        let ids: Vec<(String,)> = if DB::ROW_LOCKS {
            sqlx::query_as(AssertSqlSafe(expired))
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        } else {
            sqlx::query_as(AssertSqlSafe(expired))
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
        };
        let mut released = Vec::with_capacity(ids.len());
        for (id,) in ids {
            let payment: Option<Payment> = sqlx::query_as(
                "UPDATE payments SET status = 'canceled', cancellation_reason = 'authorization_expired', \
                 lease_until = NULL, updated_at = $1 WHERE id = $2 AND status = 'requires_capture' \
                 AND capture_requested_minor IS NULL AND capture_before < $1 RETURNING *",
            )
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(payment) = payment {
                let event = events::state_changed(&payment, now);
                insert_event::<DB>(&mut *tx, &event, of_payment(&payment)).await?;
                released.push(payment);
            }
        }
        tx.commit().await?;
        Ok(released)
    }

    #[tracing::instrument(name = "db begin_capture", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "begin_capture"))]
    async fn begin_capture(
        &self,
        id: &str,
        amount_minor: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Payment>, StoreError> {
        Ok(sqlx::query_as(
            "UPDATE payments SET capture_requested_minor = $1, attempts = attempts + 1, \
             lease_until = $2, updated_at = $3 WHERE id = $4 AND status = 'requires_capture' \
             AND capture_requested_minor IS NULL AND $1 <= amount_minor RETURNING *",
        )
        .bind(amount_minor)
        .bind(now + lease)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    #[tracing::instrument(name = "db finish_capture", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "finish_capture"))]
    async fn finish_capture(
        &self,
        id: &str,
        now: DateTime<Utc>,
        response: Option<SavedResponse<'_>>,
    ) -> Result<Option<Payment>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let captured: Option<Payment> = sqlx::query_as(
            "UPDATE payments SET status = 'succeeded', amount_captured_minor = capture_requested_minor, \
             capture_requested_minor = NULL, lease_until = NULL, updated_at = $1 \
             WHERE id = $2 AND status = 'requires_capture' AND capture_requested_minor IS NOT NULL \
             RETURNING *",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(payment) = captured else {
            return Ok(None);
        };
        let event = events::state_changed(&payment, now);
        insert_event::<DB>(&mut *tx, &event, of_payment(&payment)).await?;
        if let Some(response) = response
            && !save_response::<DB>(&mut *tx, response, &payment.id).await?
        {
            // The capture is the provider's fact: record it; the key belongs to the request
            // that took it over, which finds the payment captured.
            tracing::warn!("idempotency key taken over while the capture ran; response not saved");
        }
        tx.commit().await?;
        Ok(Some(payment))
    }

    #[tracing::instrument(name = "db claim_unconfirmed_capture", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "claim_unconfirmed_capture"))]
    async fn claim_unconfirmed_capture(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Payment>, StoreError> {
        let select = format!(
            "SELECT id FROM payments WHERE status = 'requires_capture' \
             AND capture_requested_minor IS NOT NULL AND lease_until < $1 \
             ORDER BY lease_until LIMIT 1 {}",
            DB::SKIP_LOCKED
        );
        claim_one::<DB, Payment>(
            &self.pool,
            &select,
            "UPDATE payments SET attempts = attempts + 1, lease_until = $2 WHERE id = $3 \
             AND status = 'requires_capture' AND capture_requested_minor IS NOT NULL \
             AND lease_until < $1 RETURNING *",
            now,
            now + lease,
        )
        .await
    }

    #[tracing::instrument(name = "db flag_for_attention", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "flag_for_attention"))]
    async fn flag_for_attention(
        &self,
        item: WorkItem,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = match item {
            WorkItem::Payment => {
                "UPDATE payments SET attention_at = $1 WHERE id = $2 AND attention_at IS NULL"
            }
            WorkItem::Refund => {
                "UPDATE refunds SET attention_at = $1 WHERE id = $2 AND attention_at IS NULL"
            }
        };
        let flagged = sqlx::query(sql)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&flagged) == 1)
    }

    #[tracing::instrument(name = "db create_refund", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "create_refund"))]
    async fn create_refund(
        &self,
        refund: &Refund,
        response: Option<SavedResponse<'_>>,
    ) -> Result<RefundCreated, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The reservation: one conditional update of the payment's row. Concurrent refunds
        // of one payment queue on its row lock (PostgreSQL re-checks the condition against
        // the row as the one before left it; SQLite has one writer at a time).
        let reserved: Option<Payment> = sqlx::query_as(
            "UPDATE payments SET amount_refunded_minor = amount_refunded_minor + $1, updated_at = $2 \
             WHERE id = $3 AND status = 'succeeded' \
             AND amount_refunded_minor + $1 <= amount_captured_minor RETURNING *",
        )
        .bind(refund.amount_minor)
        .bind(refund.created_at)
        .bind(&refund.payment_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(payment) = reserved else {
            drop(tx);
            let current: Option<Payment> = sqlx::query_as("SELECT * FROM payments WHERE id = $1")
                .bind(&refund.payment_id)
                .fetch_optional(&self.pool)
                .await?;
            return Ok(match current {
                None => RefundCreated::NoPayment,
                Some(payment) if payment.status() != PaymentStatus::Succeeded => {
                    RefundCreated::NotRefundable(payment)
                }
                Some(payment) => RefundCreated::TooLarge(payment),
            });
        };
        sqlx::query(
            "INSERT INTO refunds (id, payment_id, owner, status, amount_minor, currency, reason, \
             attempts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
        )
        .bind(&refund.id)
        .bind(&refund.payment_id)
        .bind(&refund.owner)
        .bind(&refund.status)
        .bind(refund.amount_minor)
        .bind(&refund.currency)
        .bind(refund.reason.as_deref())
        .bind(refund.created_at)
        .execute(&mut *tx)
        .await?;
        let event = events::refund_changed(refund, refund.created_at);
        insert_event::<DB>(&mut *tx, &event, of_refund(refund)).await?;
        if let Some(response) = response
            && !save_response::<DB>(&mut *tx, response, &refund.id).await?
        {
            return Err(taken_over());
        }
        tx.commit().await?;
        Ok(RefundCreated::Created(payment))
    }

    #[tracing::instrument(name = "db refund", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "refund"))]
    async fn refund(&self, id: &str) -> Result<Option<Refund>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM refunds WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    #[tracing::instrument(name = "db list_refunds", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "list_refunds"))]
    async fn list_refunds(
        &self,
        payment_id: &str,
        before: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<Refund>, StoreError> {
        let (before_time, before_id) = before.unzip();
        Ok(sqlx::query_as(
            "SELECT * FROM refunds WHERE payment_id = $1 \
             AND ($2 IS NULL OR created_at < $2 OR (created_at = $2 AND id < $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(payment_id)
        .bind(before_time)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    #[tracing::instrument(name = "db claim_next_refund", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "claim_next_refund"))]
    async fn claim_next_refund(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Refund>, StoreError> {
        let select = format!(
            "SELECT id FROM refunds WHERE status = 'pending' AND created_at <= $1 \
             AND (lease_until IS NULL OR lease_until < $1) \
             ORDER BY COALESCE(lease_until, created_at) LIMIT 1 {}",
            DB::SKIP_LOCKED
        );
        claim_one::<DB, Refund>(
            &self.pool,
            &select,
            "UPDATE refunds SET attempts = attempts + 1, lease_until = $2 WHERE id = $3 \
             AND status = 'pending' AND (lease_until IS NULL OR lease_until < $1) RETURNING *",
            now,
            now + lease,
        )
        .await
    }

    #[tracing::instrument(name = "db finish_refund", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "finish_refund"))]
    async fn finish_refund(
        &self,
        id: &str,
        finish: RefundFinish<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Refund>, StoreError> {
        let (code, message) = finish.failure.unzip();
        let mut tx = self.pool.begin().await?;
        let finished: Option<Refund> = sqlx::query_as(
            "UPDATE refunds SET status = $1, failure_code = $2, failure_message = $3, \
             lease_until = NULL, updated_at = $4 WHERE id = $5 AND status = 'pending' RETURNING *",
        )
        .bind(finish.status.as_str())
        .bind(code)
        .bind(message)
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(refund) = finished else {
            return Ok(None);
        };
        if finish.status == RefundStatus::Failed {
            // Its reservation is given back: the amount can be refunded again.
            sqlx::query(
                "UPDATE payments SET amount_refunded_minor = amount_refunded_minor - $1, \
                 updated_at = $2 WHERE id = $3",
            )
            .bind(refund.amount_minor)
            .bind(now)
            .bind(&refund.payment_id)
            .execute(&mut *tx)
            .await?;
        }
        let event = events::refund_changed(&refund, now);
        insert_event::<DB>(&mut *tx, &event, of_refund(&refund)).await?;
        tx.commit().await?;
        Ok(Some(refund))
    }

    #[tracing::instrument(name = "db retry_refund_later", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "retry_refund_later"))]
    async fn retry_refund_later(
        &self,
        id: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refunds SET lease_until = $1, updated_at = $2 WHERE id = $3 AND status = 'pending'",
        )
        .bind(retry_at)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db create_webhook_endpoint", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "create_webhook_endpoint"))]
    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, description, enabled_events, status, secret, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(&endpoint.enabled_events)
        .bind(&endpoint.status)
        .bind(&endpoint.secret)
        .bind(endpoint.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db webhook_endpoint", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "webhook_endpoint"))]
    async fn webhook_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM webhook_endpoints WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(name = "db list_webhook_endpoints", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "list_webhook_endpoints"))]
    async fn list_webhook_endpoints(
        &self,
        before: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let (before_time, before_id) = before.unzip();
        Ok(sqlx::query_as(
            "SELECT * FROM webhook_endpoints \
             WHERE ($1 IS NULL OR created_at < $1 OR (created_at = $1 AND id < $2)) \
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(before_time)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    #[tracing::instrument(name = "db update_webhook_endpoint", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "update_webhook_endpoint"))]
    async fn update_webhook_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE webhook_endpoints SET url = $1, description = $2, enabled_events = $3, \
             status = $4, disabled_reason = $5, secret = $6, previous_secret = $7, \
             previous_secret_until = $8, failing_since = $9, updated_at = $10 WHERE id = $11",
        )
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(&endpoint.enabled_events)
        .bind(&endpoint.status)
        .bind(endpoint.disabled_reason.as_deref())
        .bind(&endpoint.secret)
        .bind(endpoint.previous_secret.as_deref())
        .bind(endpoint.previous_secret_until)
        .bind(endpoint.failing_since)
        .bind(endpoint.updated_at)
        .bind(&endpoint.id)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&updated) == 1)
    }

    #[tracing::instrument(name = "db delete_webhook_endpoint", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "delete_webhook_endpoint"))]
    async fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        // Deliveries and their attempts go with it (ON DELETE CASCADE).
        let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&deleted) == 1)
    }

    #[tracing::instrument(name = "db claim_deliveries", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "claim_deliveries"))]
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
        shares: DeliveryShares,
    ) -> Result<Vec<Delivery>, StoreError> {
        // One statement, one round trip. Every pending delivery that came due (those in
        // flight too: they were due when claimed) is ranked within its endpoint, the ones in
        // flight first, so that a due delivery's place counts what its endpoint already has
        // under way: an endpoint gets at most `per_endpoint` at a time, a failing one (its
        // last attempt failed) one, and failing endpoints together `failing` less what they
        // hold. Healthy endpoints' deliveries come before failing ones', then the longest
        // due: neither one endpoint's backlog nor endpoints that time out hold up the others.
        // The chosen rows are locked with the due test repeated (on PostgreSQL a row another
        // deliverer leased meanwhile is re-read and dropped, or skipped while it holds it)
        // and leased. The CTEs are materialized so that each runs once. The cost is one pass
        // over the due and in-flight deliveries (an index range).
        let claim = format!(
            "WITH pending AS MATERIALIZED (SELECT d.id, d.next_attempt_at, \
             e.failing_since IS NOT NULL AS failing, \
             d.lease_until IS NOT NULL AND d.lease_until >= $1 AS held, \
             ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY \
             d.lease_until IS NOT NULL AND d.lease_until >= $1 DESC, d.next_attempt_at, d.id) AS place \
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1), \
             eligible AS MATERIALIZED (SELECT id, failing, next_attempt_at, \
             ROW_NUMBER() OVER (PARTITION BY failing ORDER BY next_attempt_at, id) AS nth \
             FROM pending WHERE NOT held AND place <= CASE WHEN failing THEN 1 ELSE $4 END), \
             chosen AS MATERIALIZED (SELECT id FROM eligible WHERE NOT failing \
             OR nth <= $5 - (SELECT COUNT(*) FROM pending WHERE held AND failing) \
             ORDER BY failing, next_attempt_at, id LIMIT $2), \
             due AS MATERIALIZED (SELECT id FROM webhook_deliveries WHERE id IN (SELECT id FROM chosen) \
             AND status = 'pending' AND (lease_until IS NULL OR lease_until < $1) {}) \
             UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = $3 \
             WHERE id IN (SELECT id FROM due) RETURNING *",
            DB::SKIP_LOCKED
        );
        let mut claimed: Vec<Delivery> = sqlx::query_as(AssertSqlSafe(claim))
            .bind(now)
            .bind(limit)
            .bind(now + lease)
            .bind(shares.per_endpoint)
            .bind(shares.failing)
            .fetch_all(&self.pool)
            .await?;
        // RETURNING keeps no order: the longest due first.
        claimed.sort_by_key(|delivery| (delivery.next_attempt_at, delivery.id));
        Ok(claimed)
    }

    #[tracing::instrument(name = "db record_attempt", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "record_attempt"))]
    async fn record_attempt(
        &self,
        delivery_id: i64,
        endpoint_id: &str,
        outcome: &AttemptOutcome,
        disable_after: chrono::Duration,
    ) -> Result<bool, StoreError> {
        let now = outcome.attempted_at;
        let status = if outcome.delivered_at.is_some() {
            "delivered"
        } else if outcome.next_attempt_at.is_some() {
            "pending"
        } else {
            "failed"
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms, error) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(delivery_id)
        .bind(now)
        .bind(outcome.status_code)
        .bind(outcome.latency_ms)
        .bind(outcome.error.as_deref())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, lease_until = NULL, \
             last_status_code = $3, last_error = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(outcome.next_attempt_at)
        .bind(outcome.status_code)
        .bind(outcome.error.as_deref())
        .bind(Utc::now())
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?;
        let mut disabled = false;
        if outcome.delivered_at.is_some() {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
            )
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await?;
        } else if outcome.reached_out {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = $1 WHERE id = $2 AND failing_since IS NULL",
            )
            .bind(now)
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await?;
            let reason = format!(
                "failing for more than {}: {}",
                humane(disable_after),
                outcome.error.as_deref().unwrap_or("")
            );
            let switched_off = sqlx::query(
                "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $1, updated_at = $2 \
                 WHERE id = $3 AND status = 'enabled' AND failing_since < $4",
            )
            .bind(reason)
            .bind(now)
            .bind(endpoint_id)
            .bind(now - disable_after)
            .execute(&mut *tx)
            .await?;
            disabled = DB::rows_affected(&switched_off) == 1;
        }
        tx.commit().await?;
        Ok(disabled)
    }

    #[tracing::instrument(name = "db webhook_deliveries", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "webhook_deliveries"))]
    async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<Delivery>, Vec<Attempt>), StoreError> {
        let deliveries: Vec<Delivery> = sqlx::query_as(
            "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(endpoint_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let (Some(newest), Some(oldest)) = (deliveries.first(), deliveries.last()) else {
            return Ok((deliveries, Vec::new()));
        };
        let attempts: Vec<Attempt> = sqlx::query_as(
            "SELECT a.* FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
             WHERE d.endpoint_id = $1 AND a.delivery_id BETWEEN $2 AND $3 ORDER BY a.id",
        )
        .bind(endpoint_id)
        .bind(oldest.id)
        .bind(newest.id)
        .fetch_all(&self.pool)
        .await?;
        Ok((deliveries, attempts))
    }

    #[tracing::instrument(name = "db redeliver", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "redeliver"))]
    async fn redeliver(
        &self,
        endpoint_id: &str,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>, StoreError> {
        let kind: Option<(String,)> =
            sqlx::query_as("SELECT type FROM payment_events WHERE id = $1")
                .bind(event_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((kind,)) = kind else {
            return Ok(None);
        };
        Ok(sqlx::query_as(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, status, attempts, \
             next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4) \
             ON CONFLICT (endpoint_id, event_id) DO UPDATE SET status = 'pending', \
             next_attempt_at = $4, lease_until = NULL, updated_at = $4 RETURNING *",
        )
        .bind(endpoint_id)
        .bind(event_id)
        .bind(kind)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    #[tracing::instrument(name = "db event_body", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "event_body"))]
    async fn event_body(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String, sqlx::types::Json<serde_json::Value>)> =
            sqlx::query_as("SELECT id, event FROM payment_events WHERE id = $1")
                .bind(event_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(_, event)| event.0.to_string()))
    }

    #[tracing::instrument(name = "db prune_webhook_deliveries", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "prune_webhook_deliveries"))]
    async fn prune_webhook_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let pruned = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&pruned))
    }

    #[tracing::instrument(name = "db webhook_backlog", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "webhook_backlog"))]
    async fn webhook_backlog(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
