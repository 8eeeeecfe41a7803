//! CloudEvents 1.0 for payment state changes; written in the same transaction as the change.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::payment::{Payment, PaymentView, api_time};

/// A CloudEvent ready to store: its id, type and the whole JSON object.
#[derive(Debug, Clone)]
pub struct Event {
    /// Stable id (`evt_...`), the `Nats-Msg-Id` when published.
    pub id: String,
    /// `payments.payment.<state>`.
    pub kind: String,
    /// The CloudEvent.
    pub body: serde_json::Value,
    /// When it happened.
    pub time: DateTime<Utc>,
}

/// The event for `payment` having just entered its current status (`created` for pending).
pub fn state_changed(payment: &Payment, time: DateTime<Utc>) -> Event {
    let state = match payment.status.as_str() {
        "pending" => "created",
        other => other,
    };
    let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let kind = format!("payments.payment.{state}");
    let body = CloudEvent {
        specversion: "1.0",
        id: id.clone(),
        source: SOURCE,
        kind: kind.clone(),
        subject: payment.id.clone(),
        time: api_time(time),
        datacontenttype: "application/json",
        data: payment.view(),
    };
    Event {
        id,
        kind,
        body: serde_json::to_value(body).unwrap_or_default(),
        time,
    }
}

/// The `source` of every event.
const SOURCE: &str = "/payments";

/// A CloudEvents 1.0 event about a payment (JSON format).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CloudEvent {
    /// `1.0`.
    #[schema(value_type = String, example = "1.0")]
    pub specversion: &'static str,
    /// `evt_` and 32 hex digits; stable across redeliveries.
    #[schema(example = "evt_0193a8e27c2a7b1c8d4e5f60718293a4")]
    pub id: String,
    /// `/payments`.
    #[schema(value_type = String, example = "/payments")]
    pub source: &'static str,
    /// `payments.payment.<created|processing|succeeded|failed|canceled>`.
    #[serde(rename = "type")]
    #[schema(example = "payments.payment.succeeded")]
    pub kind: String,
    /// The payment's id.
    #[schema(example = "pay_0193a8e27c1f7d2e9b513f0e6c2d9a44")]
    pub subject: String,
    /// When the state changed (RFC 3339, UTC).
    #[schema(format = DateTime, example = "2026-12-02T09:15:03.871Z")]
    pub time: String,
    /// `application/json`.
    #[schema(value_type = String, example = "application/json")]
    pub datacontenttype: &'static str,
    /// The payment as it was then.
    pub data: PaymentView,
}
