//! CloudEvents 1.0 for payment state changes; written in the same transaction as the change.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::payment::Payment;

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
    let body = json!({
        "specversion": "1.0",
        "id": id,
        "source": "/payments",
        "type": kind,
        "subject": payment.id,
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": payment.to_json(),
    });
    Event {
        id,
        kind,
        body,
        time,
    }
}
