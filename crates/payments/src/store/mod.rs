//! Payments storage: one trait, one implementation generic over the database (SQLite or
//! PostgreSQL, in `sql.rs`), the same tests for both. Claiming work differs (PostgreSQL uses
//! `FOR UPDATE SKIP LOCKED` so several processors never take the same payment).

mod sql;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::db::{DatabaseUrl, Migrations, Pool, StoreError};

use crate::domain::events::Event;
use crate::domain::payment::{Payment, PaymentStatus};
use crate::domain::refund::{Refund, RefundStatus};
use crate::domain::webhook::{Attempt, Delivery, WebhookEndpoint};

pub use sql::SqlStore;

/// What an idempotency key allows the request to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is ours (new, or taken over from a request that died): execute.
    Proceed,
    /// Finished before: send this response again.
    Replay {
        /// HTTP status.
        status: u16,
        /// The exact body.
        body: String,
        /// The payment it created.
        payment_id: Option<String>,
    },
    /// The first request with this key is still running.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// The response to save with a key, in the same transaction as the payment.
#[derive(Debug, Clone, Copy)]
pub struct SavedResponse<'a> {
    /// Whose key.
    pub principal: &'a str,
    /// The key.
    pub key: &'a str,
    /// HTTP status.
    pub status: u16,
    /// The exact body.
    pub body: &'a str,
    /// When this request claimed the key (the `now` it passed to
    /// [`PaymentsStore::claim_idempotency_key`]): the lock it holds. A request whose lock was
    /// taken over (it ran past the lock timeout) saves nothing.
    pub locked_at: DateTime<Utc>,
}

/// A key claimed already finished, in the same write as what its request creates: for a
/// request whose response is known before it runs (a new payment's id and body are made by the
/// service), most keys being new, claiming and saving are one write instead of two.
#[derive(Debug, Clone, Copy)]
pub struct FinishedKey<'a> {
    /// Whose key.
    pub principal: &'a str,
    /// The key.
    pub key: &'a str,
    /// The request's fingerprint (method, path, body).
    pub fingerprint: &'a str,
    /// HTTP status of the response.
    pub status: u16,
    /// The response's exact body.
    pub body: &'a str,
    /// Now: when the key is claimed (an expired key is taken afresh only if it expired by then).
    pub created_at: DateTime<Utc>,
    /// When the key is forgotten.
    pub expires_at: DateTime<Utc>,
}

/// How a provider call ended, for [`PaymentsStore::finish_payment`].
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// `Succeeded`, `Failed`, or `RequiresCapture` (an authorization).
    pub status: PaymentStatus,
    /// `(code, message)` for failures.
    pub failure: Option<(&'a str, &'a str)>,
    /// Provider calls made.
    pub attempts: i32,
    /// For an authorization: when it is released if not captured.
    pub capture_before: Option<DateTime<Utc>>,
}

/// How a refund's provider call ended, for [`PaymentsStore::finish_refund`].
#[derive(Debug, Clone, Copy)]
pub struct RefundFinish<'a> {
    /// `Succeeded` or `Failed`.
    pub status: RefundStatus,
    /// `(code, message)` for failures.
    pub failure: Option<(&'a str, &'a str)>,
}

/// What [`PaymentsStore::create_refund`] did.
#[derive(Debug, Clone)]
pub enum RefundCreated {
    /// The refund is stored (pending), its amount reserved on the payment (as it now is).
    Created(Payment),
    /// The payment is not `succeeded` (as it is).
    NotRefundable(Payment),
    /// More than what is left to refund (the payment, as it is).
    TooLarge(Payment),
    /// No such payment.
    NoPayment,
}

/// How many webhook attempts may be in flight at once, for
/// [`PaymentsStore::claim_deliveries`]: counted across every deliverer from the leases held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryShares {
    /// Per endpoint (one while the endpoint is failing).
    pub per_endpoint: i64,
    /// For all failing endpoints together, so that healthy endpoints always have slots.
    pub failing: i64,
}

/// How a webhook attempt ended, for [`PaymentsStore::record_attempt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// When it was sent (or given up).
    pub attempted_at: DateTime<Utc>,
    /// The endpoint's HTTP status, if it answered.
    pub status_code: Option<i32>,
    /// How long it took.
    pub latency_ms: i64,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Set when delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Set when another attempt is planned; neither this nor `delivered_at`: failed for good.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Whether the endpoint was tried (and a failure counts towards disabling it).
    pub reached_out: bool,
}

impl AttemptOutcome {
    /// A 2xx.
    pub fn delivered(at: DateTime<Utc>, status: Option<i32>, latency_ms: i64) -> Self {
        Self {
            attempted_at: at,
            status_code: status,
            latency_ms,
            error: None,
            delivered_at: Some(at),
            next_attempt_at: None,
            reached_out: true,
        }
    }

    /// Anything else; retried at `next` if there is one.
    pub fn failed(
        at: DateTime<Utc>,
        status: Option<i32>,
        latency_ms: i64,
        error: String,
        next: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            attempted_at: at,
            status_code: status,
            latency_ms,
            error: Some(error),
            delivered_at: None,
            next_attempt_at: next,
            reached_out: true,
        }
    }

    /// Not attempted, and not to be: `reason`.
    pub fn give_up(at: DateTime<Utc>, reason: &str) -> Self {
        Self {
            attempted_at: at,
            status_code: None,
            latency_ms: 0,
            error: Some(reason.to_owned()),
            delivered_at: None,
            next_attempt_at: None,
            reached_out: false,
        }
    }
}

/// What the workers hold: a payment or a refund (tables `payments` and `refunds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkItem {
    /// A payment (its charge or its capture).
    Payment,
    /// A refund.
    Refund,
}

impl WorkItem {
    /// The table, and the label of metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
        }
    }
}

/// One call as the sandbox provider's ledger records it.
#[derive(Debug, Clone, Copy)]
pub struct SandboxCall<'a> {
    /// `charge`, `capture`, `release` or `refund`.
    pub operation: &'a str,
    /// The payment (or refund) id the call was about.
    pub reference: &'a str,
    /// The caller's attempt number.
    pub attempt: i32,
    /// What the sandbox answered: `approved`, `declined:<code>`, `captured`, `released`,
    /// `refunded`, `refund_declined`, or `error` (a transient failure: nothing was done).
    pub outcome: &'a str,
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxEvent {
    /// Position in the log.
    pub seq: i64,
    /// The CloudEvent id (`Nats-Msg-Id`).
    pub id: String,
    /// `payments.payment.<state>`.
    #[sqlx(rename = "type")]
    pub kind: String,
    /// The payment it is about.
    pub payment_id: String,
    /// The CloudEvent.
    #[sqlx(json)]
    pub event: serde_json::Value,
    /// When the state changed.
    pub created_at: DateTime<Utc>,
}

/// Everything payments keeps in its database.
#[async_trait::async_trait]
pub trait PaymentsStore: Send + Sync {
    /// The pool behind the store, for readiness checks and shutdown.
    fn database(&self) -> Pool;

    /// Claims `(principal, key)` for a request with `fingerprint`. Expired keys count as new;
    /// a key locked longer than `lock_timeout` without a response belonged to a request that
    /// died, and is taken over.
    async fn claim_idempotency_key(
        &self,
        principal: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        lock_timeout: Duration,
    ) -> Result<KeyClaim, StoreError>;
    /// Forgets a key claimed at `locked_at` whose request failed before saving a response (a
    /// lock another request has taken over since is left alone).
    async fn release_idempotency_key(
        &self,
        principal: &str,
        key: &str,
        locked_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Deletes expired keys; returns how many.
    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// In one transaction: the payment, its `created` event, and the response of its key.
    /// [`StoreError::Conflict`] and nothing written when the key's lock is no longer the
    /// response's (another request took it over).
    async fn create_payment(
        &self,
        payment: &Payment,
        event: &Event,
        response: Option<SavedResponse<'_>>,
    ) -> Result<(), StoreError>;
    /// The payment, its `created` event, and `key` (new, or expired) saved with its response,
    /// in one write (one statement on PostgreSQL, one transaction on SQLite). `Ok(false)` and
    /// nothing written when the key is live: another request's, finished or running (or this
    /// request's, sent again); the request then claims it with
    /// [`PaymentsStore::claim_idempotency_key`], to replay, wait or be refused.
    async fn create_payment_under_new_key(
        &self,
        payment: &Payment,
        event: &Event,
        key: FinishedKey<'_>,
    ) -> Result<bool, StoreError>;
    /// A payment by id.
    async fn payment(&self, id: &str) -> Result<Option<Payment>, StoreError>;
    /// Newest first, of `owner` (or everyone's), strictly before the cursor `(created_at, id)`.
    async fn list_payments(
        &self,
        owner: Option<&str>,
        before: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<Payment>, StoreError>;
    /// Cancels a pending payment, or releases an authorization (`requires_capture`, no
    /// capture asked for), with its event and `cancellation_reason: requested`; `None` if it
    /// was neither.
    async fn cancel_payment(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Payment>, StoreError>;
    /// Releases (cancels, `authorization_expired`) up to `limit` authorizations whose
    /// `capture_before` has passed and that no capture was asked for, each with its event.
    async fn release_expired_authorizations(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Payment>, StoreError>;
    /// Asks for the capture of `amount_minor` of an authorization: only once (`None` if the
    /// payment is not `requires_capture` or a capture was already asked for). The payment is
    /// leased to the caller until `now + lease`; if its provider call is never confirmed, a
    /// worker takes it over after that ([`PaymentsStore::claim_unconfirmed_capture`]).
    async fn begin_capture(
        &self,
        id: &str,
        amount_minor: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Payment>, StoreError>;
    /// The provider confirmed the capture asked for: `requires_capture → succeeded` with the
    /// captured amount, its event, and (fenced like [`PaymentsStore::create_payment`]) the
    /// response of the request's key, in one transaction; `None` if there was nothing to
    /// confirm.
    async fn finish_capture(
        &self,
        id: &str,
        now: DateTime<Utc>,
        response: Option<SavedResponse<'_>>,
    ) -> Result<Option<Payment>, StoreError>;
    /// A capture asked for whose caller never confirmed it (its lease ran out), leased to
    /// the caller until `now + lease`.
    async fn claim_unconfirmed_capture(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Payment>, StoreError>;

    /// Takes the next payment to work on, leased until `now + lease` (counting the claim in its
    /// `attempts`: a claim may call the provider), whichever is due first:
    /// a pending one accepted at or before `now` (due when it was accepted; it becomes
    /// processing, with its event; a payment accepted after the claim began is left for the
    /// next one, so a worker that checked for shutdown before claiming never takes a payment
    /// accepted after the signal), or a
    /// processing one whose lease ran out (its processor died) or whose retry is due (due at
    /// its `lease_until`). So retries and abandoned payments never wait behind new work.
    async fn claim_next_payment(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Payment>, StoreError>;
    /// Ends processing (with its event); `None` if the payment was not processing.
    async fn finish_payment(
        &self,
        id: &str,
        finish: Finish<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Payment>, StoreError>;
    /// Leaves a payment processing (or its unconfirmed capture), to be retried from `retry_at`.
    async fn retry_payment_later(
        &self,
        id: &str,
        attempts: i32,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Flags a payment or refund for a person (its provider outcome unresolved for too long);
    /// `true` the first time.
    async fn flag_for_attention(
        &self,
        item: WorkItem,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// In one transaction: reserves the refund's amount on its payment (only a `succeeded`
    /// payment, never beyond what was captured: the update is conditional and a CHECK holds
    /// the line), stores the refund and its `created` event, and the response of its key.
    /// Nothing is written unless it is [`RefundCreated::Created`].
    async fn create_refund(
        &self,
        refund: &Refund,
        response: Option<SavedResponse<'_>>,
    ) -> Result<RefundCreated, StoreError>;
    /// A refund by id.
    async fn refund(&self, id: &str) -> Result<Option<Refund>, StoreError>;
    /// A payment's refunds, newest first, strictly before the cursor `(created_at, id)`.
    async fn list_refunds(
        &self,
        payment_id: &str,
        before: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<Refund>, StoreError>;
    /// Takes the next pending refund that is due (new, a retry that is due, or one whose
    /// worker died), accepted at or before `now`, leased until `now + lease`, counting the
    /// claim in its `attempts`.
    async fn claim_next_refund(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Refund>, StoreError>;
    /// Ends a pending refund (with its event); a failed one gives its amount back to the
    /// payment. `None` if it was not pending.
    async fn finish_refund(
        &self,
        id: &str,
        finish: RefundFinish<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Refund>, StoreError>;
    /// Leaves a refund pending, to be retried from `retry_at`.
    async fn retry_refund_later(
        &self,
        id: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Registers a webhook endpoint.
    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;
    /// A webhook endpoint by id.
    async fn webhook_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// Webhook endpoints, newest first, strictly before the cursor `(created_at, id)`.
    async fn list_webhook_endpoints(
        &self,
        before: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<WebhookEndpoint>, StoreError>;
    /// Saves an endpoint's changeable fields (url, description, events, status and its
    /// reason, secrets, failing_since); `false` if it does not exist.
    async fn update_webhook_endpoint(&self, endpoint: &WebhookEndpoint)
    -> Result<bool, StoreError>;
    /// Deletes an endpoint with its deliveries and their log; `false` if it did not exist.
    async fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError>;
    /// Claims up to `limit` due deliveries (pending, due, not held) for `lease`, counting
    /// the attempt; other deliverers skip them until the lease runs out. In flight at most
    /// (counting what is already held): `shares.per_endpoint` deliveries per endpoint, one
    /// while it is failing, and `shares.failing` for all failing endpoints together; healthy
    /// endpoints' deliveries come first, then the longest due. A claim made at the same
    /// moment as another may come back short (it skips what the other is taking rather than
    /// wait); the next claim finds what it left.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
        shares: DeliveryShares,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// In one transaction: logs the attempt, moves the delivery on (delivered, pending until
    /// `next_attempt_at`, or failed), and keeps the endpoint's `failing_since`, disabling an
    /// endpoint failing for longer than `disable_after`. Returns whether it was disabled now.
    async fn record_attempt(
        &self,
        delivery_id: i64,
        endpoint_id: &str,
        outcome: &AttemptOutcome,
        disable_after: chrono::Duration,
    ) -> Result<bool, StoreError>;
    /// An endpoint's deliveries, newest first, before the delivery row `before`, with every
    /// attempt of each (oldest first).
    async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<Delivery>, Vec<Attempt>), StoreError>;
    /// Sends `event_id` to `endpoint_id` again: its delivery (made now if there was none) is
    /// pending and due at once. `None` if no such event is kept.
    async fn redeliver(
        &self,
        endpoint_id: &str,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>, StoreError>;
    /// An event's CloudEvent JSON, as delivered.
    async fn event_body(&self, event_id: &str) -> Result<Option<String>, StoreError>;
    /// Deletes finished (delivered or failed) deliveries, with their log, last changed before
    /// `before`; returns how many.
    async fn prune_webhook_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Pending deliveries: how many, and when the oldest was made.
    async fn webhook_backlog(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError>;

    /// The CloudEvents of one payment, oldest first (its history).
    async fn payment_events(&self, payment_id: &str) -> Result<Vec<serde_json::Value>, StoreError>;
    /// Claims the oldest unsent events for `lease` (at most one per payment, the payment's
    /// earliest unsent one, so order per payment holds): other relays skip them until the
    /// lease runs out. The claim is one short transaction; nothing is held while they are
    /// published.
    async fn claim_outbox_batch(
        &self,
        limit: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<OutboxEvent>, StoreError>;
    /// Marks these events sent (their publish was acknowledged).
    async fn mark_published(&self, ids: &[String], now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Deletes events sent before `before`; returns how many.
    async fn prune_published_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Events not yet sent.
    async fn outbox_backlog(&self) -> Result<i64, StoreError>;
    /// The event feed: `(seq, CloudEvent)` after `after`, oldest first, of `owner` (or all).
    async fn events_page(
        &self,
        owner: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, serde_json::Value)>, StoreError>;

    /// How many payments the store holds.
    async fn count_payments(&self) -> Result<i64, StoreError>;

    /// The sandbox provider's ledger: records a call, and what it answered, as it arrives.
    async fn record_sandbox_call(
        &self,
        call: SandboxCall<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The sandbox provider's ledger: the answer (not `error`) last given to `operation` on
    /// `reference`, if the provider got such a call.
    async fn sandbox_outcome(
        &self,
        operation: &str,
        reference: &str,
    ) -> Result<Option<String>, StoreError>;
    /// The sandbox provider's ledger: `operation` calls per reference.
    async fn sandbox_calls(&self, operation: &str) -> Result<Vec<(String, i64)>, StoreError>;
}

/// Opens the database named by `url` (PostgreSQL: with a pool of up to `max_connections`) and
/// applies its migrations.
pub async fn open(
    url: &DatabaseUrl,
    max_connections: u32,
) -> Result<Arc<dyn PaymentsStore>, StoreError> {
    Ok(
        match common::db::open(url, max_connections, &migrations()).await? {
            Pool::Sqlite(pool) => Arc::new(SqlStore::new(pool)),
            Pool::Postgres(pool) => Arc::new(SqlStore::new(pool)),
        },
    )
}

/// The payments schema for each backend, embedded in the binary.
pub fn migrations() -> Migrations {
    Migrations::new(
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
}
