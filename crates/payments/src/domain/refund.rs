//! Refunds: money given back from a succeeded payment, `pending → succeeded | failed`.

use std::fmt;

use chrono::{DateTime, Utc};

use super::payment::{api_time, decimal};

/// Where a refund is in its life. Succeeded and failed never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Accepted; its amount is already reserved on the payment; the provider is being asked.
    Pending,
    /// The provider gave the money back.
    Succeeded,
    /// The provider refused (or failed for good): the amount can be refunded again.
    Failed,
}

impl RefundStatus {
    /// The stored and serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored form.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => Self::Pending,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a refund was asked for (Stripe's reasons).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// The customer asked.
    RequestedByCustomer,
    /// The payment was made twice.
    Duplicate,
    /// The payment was fraudulent.
    Fraudulent,
}

impl RefundReason {
    /// The stored and serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestedByCustomer => "requested_by_customer",
            Self::Duplicate => "duplicate",
            Self::Fraudulent => "fraudulent",
        }
    }
}

/// A refund as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Refund {
    /// `re_...`.
    pub id: String,
    /// The payment it gives money back from.
    pub payment_id: String,
    /// The payment's owner.
    pub owner: String,
    /// Stored status (see [`Refund::status`]).
    pub status: String,
    /// Integer minor units of the payment's currency.
    pub amount_minor: i64,
    /// The payment's currency.
    pub currency: String,
    /// Why it was asked for.
    pub reason: Option<String>,
    /// Why it failed (`refund_declined`, `processing_error`).
    pub failure_code: Option<String>,
    /// The failure, for people.
    pub failure_message: Option<String>,
    /// Claims so far (each may have called the provider).
    pub attempts: i32,
    /// A processor holds it (or: it is not retried) until then.
    pub lease_until: Option<DateTime<Utc>>,
    /// When it was flagged for a person.
    pub attention_at: Option<DateTime<Utc>>,
    /// Accepted.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Refund {
    /// A new refund, `pending`, of `amount_minor` of `payment`'s money.
    pub fn new(
        payment: &super::payment::Payment,
        amount_minor: i64,
        reason: Option<RefundReason>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: format!("re_{}", uuid::Uuid::now_v7().simple()),
            payment_id: payment.id.clone(),
            owner: payment.owner.clone(),
            status: RefundStatus::Pending.as_str().to_owned(),
            amount_minor,
            currency: payment.currency.clone(),
            reason: reason.map(|r| r.as_str().to_owned()),
            failure_code: None,
            failure_message: None,
            attempts: 0,
            lease_until: None,
            attention_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The status (an unknown stored value would be a bug; it reads as pending).
    pub fn status(&self) -> RefundStatus {
        RefundStatus::parse(&self.status).unwrap_or(RefundStatus::Pending)
    }

    /// The API representation (also the `data` of its events).
    pub fn view(&self) -> RefundView {
        RefundView {
            id: self.id.clone(),
            object: RefundObject::Refund,
            payment_id: self.payment_id.clone(),
            amount: decimal(self.amount_minor, &self.currency),
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            status: self.status(),
            reason: self.reason.clone(),
            failure_code: self.failure_code.clone(),
            failure_message: self.failure_message.clone(),
            created_at: api_time(self.created_at),
            updated_at: api_time(self.updated_at),
        }
    }

    /// [`Refund::view`] as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

/// The `object` of a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefundObject {
    /// Always `refund`.
    Refund,
}

/// A refund as the API shows it (and as the `data` of its events).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Refund)]
pub struct RefundView {
    /// `re_` and 32 hex digits.
    #[schema(example = "re_0193a8e3114c7a0b8f2d6e4c1b7a9d30")]
    pub id: String,
    /// `refund`.
    pub object: RefundObject,
    /// The payment the money comes back from.
    #[schema(example = "pay_0193a8e27c1f7d2e9b513f0e6c2d9a44")]
    pub payment_id: String,
    /// The amount in major units, as a decimal string.
    #[schema(example = "25.00")]
    pub amount: String,
    /// The amount in minor units.
    #[schema(example = 2500)]
    pub amount_minor: i64,
    /// The payment's currency.
    #[schema(example = "USD")]
    pub currency: String,
    /// `pending`, then `succeeded` or `failed`.
    pub status: RefundStatus,
    /// `requested_by_customer`, `duplicate` or `fraudulent`, when given.
    #[schema(example = "requested_by_customer")]
    pub reason: Option<String>,
    /// Why it failed (`refund_declined`, `processing_error`).
    #[schema(example = json!(null))]
    pub failure_code: Option<String>,
    /// The failure, for people.
    #[schema(example = json!(null))]
    pub failure_message: Option<String>,
    /// When it was accepted.
    #[schema(format = DateTime, example = "2026-12-02T10:02:11.512Z")]
    pub created_at: String,
    /// When it last changed.
    #[schema(format = DateTime, example = "2026-12-02T10:02:12.004Z")]
    pub updated_at: String,
}
