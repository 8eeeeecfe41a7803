//! Payments' domain types, valid once constructed: money, statuses and their transitions,
//! payment methods, refunds, and the CloudEvents a state change produces.

pub mod events;
pub mod money;
pub mod payment;
pub mod refund;
pub mod webhook;
