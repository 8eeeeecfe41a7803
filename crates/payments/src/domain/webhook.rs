//! Webhook endpoints, their deliveries and the delivery log (Standard Webhooks).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::payment::api_time;

/// Every event type an endpoint can subscribe to (besides `*`).
pub const EVENT_TYPES: [&str; 9] = [
    "payments.payment.created",
    "payments.payment.processing",
    "payments.payment.requires_capture",
    "payments.payment.succeeded",
    "payments.payment.failed",
    "payments.payment.canceled",
    "payments.refund.created",
    "payments.refund.succeeded",
    "payments.refund.failed",
];

/// A webhook endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookEndpoint {
    /// `we_...`.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Space-separated event types, or `*`.
    pub enabled_events: String,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Why it was disabled (by an operator, or for failing for days).
    pub disabled_reason: Option<String>,
    /// `whsec_...`: signs every delivery.
    pub secret: String,
    /// The secret before the last rotation, which signs beside the new one until
    /// `previous_secret_until`.
    pub previous_secret: Option<String>,
    /// When the previous secret stops signing.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// The first failed attempt since the last delivered one.
    pub failing_since: Option<DateTime<Utc>>,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

impl WebhookEndpoint {
    /// A new, enabled endpoint.
    pub fn new(url: String, description: String, events: &[String], now: DateTime<Utc>) -> Self {
        Self {
            id: format!("we_{}", uuid::Uuid::now_v7().simple()),
            url,
            description,
            enabled_events: events.join(" "),
            status: "enabled".into(),
            disabled_reason: None,
            secret: new_secret(),
            previous_secret: None,
            previous_secret_until: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The event types it subscribes to (`*`: all).
    pub fn events(&self) -> Vec<String> {
        self.enabled_events
            .split(' ')
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether it is enabled.
    pub fn is_enabled(&self) -> bool {
        self.status == "enabled"
    }

    /// The secrets that sign a delivery at `now`: the current one, and the previous one
    /// during a rotation's overlap.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_secret_until)
            && now < until
        {
            secrets.push(previous);
        }
        secrets
    }

    /// The API representation; the secret only when it is shown (at creation, at rotation).
    pub fn view(&self, show_secret: bool) -> EndpointView {
        EndpointView {
            id: self.id.clone(),
            object: "webhook_endpoint",
            url: self.url.clone(),
            description: self.description.clone(),
            enabled_events: self.events(),
            status: self.status.clone(),
            disabled_reason: self.disabled_reason.clone(),
            secret: show_secret.then(|| self.secret.clone()),
            previous_secret_expires_at: self.previous_secret_until.map(api_time),
            created_at: api_time(self.created_at),
            updated_at: api_time(self.updated_at),
        }
    }
}

/// A webhook endpoint as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub struct EndpointView {
    /// `we_` and 32 hex digits.
    #[schema(example = "we_0193a8e3114c7a0b8f2d6e4c1b7a9d30")]
    pub id: String,
    /// `webhook_endpoint`.
    #[schema(value_type = String, example = "webhook_endpoint")]
    pub object: &'static str,
    /// Where deliveries are POSTed.
    #[schema(example = "https://shop.example.com/webhooks/payments")]
    pub url: String,
    /// Free text.
    pub description: String,
    /// Event types, or `["*"]` for all.
    #[schema(example = json!(["payments.payment.succeeded", "payments.refund.succeeded"]))]
    pub enabled_events: Vec<String>,
    /// `enabled` or `disabled`.
    #[schema(example = "enabled")]
    pub status: String,
    /// Why it is disabled: by request, or failing for days.
    #[schema(example = json!(null))]
    pub disabled_reason: Option<String>,
    /// The signing secret (`whsec_...`): only in the answers to creation and rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: Option<String>,
    /// After a rotation: until when the previous secret still signs beside the new one.
    #[schema(format = DateTime, example = json!(null))]
    pub previous_secret_expires_at: Option<String>,
    /// Registered.
    #[schema(format = DateTime, example = "2026-12-02T09:15:03.214Z")]
    pub created_at: String,
    /// Last change.
    #[schema(format = DateTime, example = "2026-12-02T09:15:03.214Z")]
    pub updated_at: String,
}

/// One event to deliver to one endpoint, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    /// Its row.
    pub id: i64,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event (`webhook-id`).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// A deliverer holds it until then.
    pub lease_until: Option<DateTime<Utc>>,
    /// The last attempt's HTTP status.
    pub last_status_code: Option<i32>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// Created with its event.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One attempt, as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Attempt {
    /// Its row.
    pub id: i64,
    /// The delivery it was for.
    pub delivery_id: i64,
    /// When it was sent.
    pub attempted_at: DateTime<Utc>,
    /// The endpoint's HTTP status, if it answered.
    pub status_code: Option<i32>,
    /// How long it took.
    pub latency_ms: i64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl Delivery {
    /// The API representation with its attempts.
    pub fn view(&self, attempts: &[Attempt]) -> DeliveryView {
        DeliveryView {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            status: self.status.clone(),
            attempts: attempts
                .iter()
                .filter(|a| a.delivery_id == self.id)
                .map(|a| AttemptView {
                    attempted_at: api_time(a.attempted_at),
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    error: a.error.clone(),
                })
                .collect(),
            next_attempt_at: self.next_attempt_at.map(api_time),
            created_at: api_time(self.created_at),
            updated_at: api_time(self.updated_at),
        }
    }
}

/// A delivery as the API shows it: the event, where it stands, and every attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The event (also the `webhook-id` header).
    #[schema(example = "evt_0193a8e27c2a7b1c8d4e5f60718293a4")]
    pub event_id: String,
    /// The event's type.
    #[schema(example = "payments.payment.succeeded")]
    pub event_type: String,
    /// `pending` (will be tried at `next_attempt_at`), `delivered`, or `failed` (no more tries).
    #[schema(example = "delivered")]
    pub status: String,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
    /// When the next attempt is due.
    #[schema(format = DateTime, example = json!(null))]
    pub next_attempt_at: Option<String>,
    /// When the event happened.
    #[schema(format = DateTime, example = "2026-12-02T09:15:03.871Z")]
    pub created_at: String,
    /// Last change.
    #[schema(format = DateTime, example = "2026-12-02T09:15:04.020Z")]
    pub updated_at: String,
}

/// One attempt in the delivery log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    /// When it was sent.
    #[schema(format = DateTime, example = "2026-12-02T09:15:04.011Z")]
    pub attempted_at: String,
    /// The endpoint's HTTP status, if it answered.
    #[schema(example = 200)]
    pub status_code: Option<i32>,
    /// How long it took, in milliseconds.
    #[schema(example = 42)]
    pub latency_ms: i64,
    /// What went wrong (`timeout`, `connect`, `status 500`, `refused: ...`).
    #[schema(example = json!(null))]
    pub error: Option<String>,
}
