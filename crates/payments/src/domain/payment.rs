//! The payment lifecycle: statuses, the only transitions allowed, and the sandbox payment methods.

use std::fmt;

/// Where a payment is in its life. Terminal states never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Accepted, not yet picked up.
    Pending,
    /// A processor is talking to the provider.
    Processing,
    /// Authorized (`capture_method: manual`): waiting for a capture, or a cancel, or the end
    /// of the authorization window.
    RequiresCapture,
    /// Paid (captured).
    Succeeded,
    /// Declined or failed for good.
    Failed,
    /// Canceled before processing.
    Canceled,
}

/// A transition that the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} payment cannot become {to}")]
pub struct InvalidTransition {
    /// Current status.
    pub from: PaymentStatus,
    /// Requested status.
    pub to: PaymentStatus,
}

impl PaymentStatus {
    /// The stored and serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::RequiresCapture => "requires_capture",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Parses the stored form.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "requires_capture" => Self::RequiresCapture,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }

    /// `pending → processing → succeeded | failed | requires_capture`,
    /// `requires_capture → succeeded | canceled`, `pending → canceled`; nothing else.
    pub fn transition(self, to: Self) -> Result<Self, InvalidTransition> {
        use PaymentStatus::*;
        match (self, to) {
            (Pending, Processing)
            | (Processing, Succeeded)
            | (Processing, Failed)
            | (Processing, RequiresCapture)
            | (RequiresCapture, Succeeded)
            | (RequiresCapture, Canceled)
            | (Pending, Canceled) => Ok(to),
            _ => Err(InvalidTransition { from: self, to }),
        }
    }

    /// Succeeded, failed or canceled.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the money of an approved payment is taken.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    /// At once: an approved payment is `succeeded`.
    Automatic,
    /// Later: an approved payment waits in `requires_capture` for `POST .../capture`.
    Manual,
}

impl CaptureMethod {
    /// The stored and serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::Manual => "manual",
        }
    }
}

/// The sandbox's payment methods (API.md, README).
pub const PAYMENT_METHODS: [&str; 6] = [
    "pm_card_visa",
    "pm_card_declined",
    "pm_card_insufficient_funds",
    "pm_card_flaky",
    "pm_card_refund_declined",
    "pm_card_refund_flaky",
];

/// The method used when none is given.
pub const DEFAULT_PAYMENT_METHOD: &str = "pm_card_visa";

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    #[test]
    fn only_the_lifecycle_transitions_are_allowed() {
        let all = [
            Pending,
            Processing,
            RequiresCapture,
            Succeeded,
            Failed,
            Canceled,
        ];
        let allowed = [
            (Pending, Processing),
            (Processing, Succeeded),
            (Processing, Failed),
            (Processing, RequiresCapture),
            (RequiresCapture, Succeeded),
            (RequiresCapture, Canceled),
            (Pending, Canceled),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.transition(to).is_ok(),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        for terminal in [Succeeded, Failed, Canceled] {
            assert!(terminal.is_terminal());
            assert!(all.iter().all(|to| terminal.transition(*to).is_err()));
        }
        for status in all {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
    }
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Payment {
    /// `pay_...`.
    pub id: String,
    /// The token subject that created it.
    pub owner: String,
    /// Stored status (see [`Payment::status`]).
    pub status: String,
    /// Integer minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Free text from the client.
    pub description: String,
    /// Sandbox method.
    pub payment_method: String,
    /// Why it failed (`card_declined`, ...).
    pub failure_code: Option<String>,
    /// Human explanation of the failure.
    pub failure_message: Option<String>,
    /// Provider calls made so far.
    pub attempts: i32,
    /// A processor holds the payment until then (or: not retried before then).
    pub lease_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Accepted.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last change.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// `automatic` or `manual`.
    pub capture_method: String,
    /// What the provider took (0 until succeeded).
    pub amount_captured_minor: i64,
    /// Pending and succeeded refunds together (a failed refund gives its amount back).
    pub amount_refunded_minor: i64,
    /// A manual capture asked for whose provider call is not confirmed yet.
    pub capture_requested_minor: Option<i64>,
    /// An authorization not captured by then is released.
    pub capture_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Why it was canceled: `requested` or `authorization_expired`.
    pub cancellation_reason: Option<String>,
    /// When it was flagged for a person (its provider outcome unresolved for too long).
    pub attention_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Payment {
    /// The status (an unknown stored value would be a bug; it reads as pending).
    pub fn status(&self) -> PaymentStatus {
        PaymentStatus::parse(&self.status).unwrap_or(PaymentStatus::Pending)
    }

    /// A new payment, `pending`, accepted at `now`.
    pub fn new(
        owner: &str,
        money: super::money::Money,
        description: String,
        payment_method: String,
        capture_method: CaptureMethod,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        Self {
            id: format!("pay_{}", uuid::Uuid::now_v7().simple()),
            owner: owner.to_owned(),
            status: PaymentStatus::Pending.as_str().to_owned(),
            amount_minor: money.minor(),
            currency: money.currency_code().to_owned(),
            description,
            payment_method,
            failure_code: None,
            failure_message: None,
            attempts: 0,
            lease_until: None,
            created_at: now,
            updated_at: now,
            capture_method: capture_method.as_str().to_owned(),
            amount_captured_minor: 0,
            amount_refunded_minor: 0,
            capture_requested_minor: None,
            capture_before: None,
            cancellation_reason: None,
            attention_at: None,
        }
    }

    /// Whether an approved payment waits for a capture.
    pub fn is_manual_capture(&self) -> bool {
        self.capture_method == CaptureMethod::Manual.as_str()
    }

    /// What can still be refunded, in minor units.
    pub fn refundable_minor(&self) -> i64 {
        self.amount_captured_minor - self.amount_refunded_minor
    }

    /// The API representation (also the `data` of its events).
    pub fn view(&self) -> PaymentView {
        let amount = decimal(self.amount_minor, &self.currency);
        PaymentView {
            id: self.id.clone(),
            object: PaymentObject::Payment,
            status: self.status(),
            amount,
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            description: self.description.clone(),
            payment_method: self.payment_method.clone(),
            failure_code: self.failure_code.clone(),
            failure_message: self.failure_message.clone(),
            capture_method: if self.is_manual_capture() {
                CaptureMethod::Manual
            } else {
                CaptureMethod::Automatic
            },
            amount_captured: decimal(self.amount_captured_minor, &self.currency),
            amount_captured_minor: self.amount_captured_minor,
            amount_refunded: decimal(self.amount_refunded_minor, &self.currency),
            amount_refunded_minor: self.amount_refunded_minor,
            refunded: self.amount_captured_minor > 0
                && self.amount_refunded_minor == self.amount_captured_minor,
            capture_before: self.capture_before.map(api_time),
            cancellation_reason: self.cancellation_reason.clone(),
            created_at: api_time(self.created_at),
            updated_at: api_time(self.updated_at),
        }
    }

    /// [`Payment::view`] as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

/// `minor` units of `currency` as the API writes amounts: a decimal string in major units.
pub fn decimal(minor: i64, currency: &str) -> String {
    super::money::Money::from_minor(minor, currency)
        .map_or_else(|_| minor.to_string(), |m| m.to_string())
}

/// Times as the API writes them: RFC 3339 in UTC, milliseconds.
pub fn api_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The `object` of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentObject {
    /// Always `payment`.
    Payment,
}

/// A payment as the API shows it (and as the `data` of its events).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView {
    /// `pay_` and 32 hex digits.
    #[schema(example = "pay_0193a8e27c1f7d2e9b513f0e6c2d9a44")]
    pub id: String,
    /// `payment`.
    pub object: PaymentObject,
    /// Where the payment is in its life.
    pub status: PaymentStatus,
    /// The amount in major units, as a decimal string with the currency's decimal places.
    #[schema(example = "100.00")]
    pub amount: String,
    /// The amount in the currency's minor units (cents).
    #[schema(example = 10000)]
    pub amount_minor: i64,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// The client's description.
    #[schema(example = "Order 1042")]
    pub description: String,
    /// The sandbox payment method.
    #[schema(example = "pm_card_visa")]
    pub payment_method: String,
    /// Why it failed (`card_declined`, `insufficient_funds`, `processing_error`).
    #[schema(example = json!(null))]
    pub failure_code: Option<String>,
    /// The failure, for people.
    #[schema(example = json!(null))]
    pub failure_message: Option<String>,
    /// `automatic` (an approved payment succeeds at once) or `manual` (it waits in
    /// `requires_capture` for a capture).
    pub capture_method: CaptureMethod,
    /// What was captured, in major units (`"0.00"` until the payment succeeds).
    #[schema(example = "100.00")]
    pub amount_captured: String,
    /// What was captured, in minor units.
    #[schema(example = 10000)]
    pub amount_captured_minor: i64,
    /// Refunded so far (pending and succeeded refunds), in major units.
    #[schema(example = "0.00")]
    pub amount_refunded: String,
    /// Refunded so far, in minor units.
    #[schema(example = 0)]
    pub amount_refunded_minor: i64,
    /// Whether all that was captured has been refunded.
    pub refunded: bool,
    /// For an authorization (`requires_capture`): it is released (canceled) if not captured
    /// by then.
    #[schema(format = DateTime, example = json!(null))]
    pub capture_before: Option<String>,
    /// Why a canceled payment was canceled: `requested` or `authorization_expired`.
    #[schema(example = json!(null))]
    pub cancellation_reason: Option<String>,
    /// When it was accepted (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime, example = "2026-12-02T09:15:03.214Z")]
    pub created_at: String,
    /// When it last changed.
    #[schema(format = DateTime, example = "2026-12-02T09:15:03.871Z")]
    pub updated_at: String,
}
