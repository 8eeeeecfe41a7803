//! CloudEvents 1.0 for payment and refund state changes; written in the same transaction as
//! the change.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::payment::{Payment, PaymentView, api_time};
use super::refund::{Refund, RefundView};

/// A CloudEvent ready to store: its id, type and the whole JSON object.
#[derive(Debug, Clone)]
pub struct Event {
    /// Stable id (`evt_...`), the `Nats-Msg-Id` when published.
    pub id: String,
    /// `payments.payment.<state>` or `payments.refund.<state>`.
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
    event(
        format!("payments.payment.{state}"),
        &payment.id,
        EventData::Payment(payment.view()),
        time,
    )
}

/// The event for `refund` having just entered its current status (`created` for pending).
pub fn refund_changed(refund: &Refund, time: DateTime<Utc>) -> Event {
    let state = match refund.status.as_str() {
        "pending" => "created",
        other => other,
    };
    event(
        format!("payments.refund.{state}"),
        &refund.id,
        EventData::Refund(refund.view()),
        time,
    )
}

fn event(kind: String, subject: &str, data: EventData, time: DateTime<Utc>) -> Event {
    let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let body = CloudEvent {
        specversion: "1.0",
        id: id.clone(),
        source: SOURCE,
        kind: kind.clone(),
        subject: subject.to_owned(),
        time: api_time(time),
        datacontenttype: "application/json",
        data,
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

/// A CloudEvents 1.0 event about a payment or a refund (JSON format).
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
    /// `payments.payment.<created|processing|requires_capture|succeeded|failed|canceled>` or
    /// `payments.refund.<created|succeeded|failed>`.
    #[serde(rename = "type")]
    #[schema(example = "payments.payment.succeeded")]
    pub kind: String,
    /// The payment's (or the refund's) id.
    #[schema(example = "pay_0193a8e27c1f7d2e9b513f0e6c2d9a44")]
    pub subject: String,
    /// When the state changed (RFC 3339, UTC).
    #[schema(format = DateTime, example = "2026-12-02T09:15:03.871Z")]
    pub time: String,
    /// `application/json`.
    #[schema(value_type = String, example = "application/json")]
    pub datacontenttype: &'static str,
    /// The payment (or the refund) as it was then.
    pub data: EventData,
}

/// What an event is about, as it was then.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EventData {
    /// A payment (`payments.payment.*`).
    Payment(PaymentView),
    /// A refund (`payments.refund.*`).
    Refund(RefundView),
}
