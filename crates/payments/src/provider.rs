//! Payment providers: the adapter trait the processor calls, and the deterministic sandbox.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::payment::Payment;
use crate::store::PaymentsStore;

/// A provider's final answer about a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money moved.
    Approved,
    /// Refused for good.
    Declined {
        /// Stable code (`card_declined`, `insufficient_funds`).
        code: &'static str,
        /// Human explanation.
        message: &'static str,
    },
}

/// A failure worth retrying (timeouts, the provider's 5xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transient provider error: {0}")]
pub struct TransientError(pub String);

/// What the processor needs from a payment provider.
#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Charges `payment`; `attempt` counts from 1. Must be idempotent per payment id.
    async fn charge(
        &self,
        payment: &Payment,
        attempt: u32,
    ) -> Result<ChargeOutcome, TransientError>;
}

/// How many times `pm_card_flaky` fails before it succeeds.
pub const SANDBOX_FLAKY_FAILURES: u32 = 2;

/// The sandbox: the outcome is chosen by `payment_method` (API.md). Like a real provider it
/// keeps its own record of the calls it received (`sandbox_calls`, written as each call
/// arrives), which a caller killed mid-call cannot lose.
#[derive(Clone)]
pub struct Sandbox {
    /// Added to every call (`PAYMENTS_SANDBOX_LATENCY_MS`).
    pub latency: Duration,
    /// How many times `pm_card_flaky` fails before it succeeds.
    pub flaky_failures: u32,
    /// Where the calls are recorded.
    pub ledger: Arc<dyn PaymentsStore>,
}

#[async_trait::async_trait]
impl PaymentProvider for Sandbox {
    async fn charge(
        &self,
        payment: &Payment,
        attempt: u32,
    ) -> Result<ChargeOutcome, TransientError> {
        // A provider that cannot record the call does not take it.
        let attempt_number = i32::try_from(attempt).unwrap_or(i32::MAX);
        self.ledger
            .record_sandbox_call(&payment.id, attempt_number, chrono::Utc::now())
            .await
            .map_err(|e| TransientError(format!("sandbox: {e}")))?;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        match payment.payment_method.as_str() {
            "pm_card_declined" => Ok(ChargeOutcome::Declined {
                code: "card_declined",
                message: "The card was declined.",
            }),
            "pm_card_insufficient_funds" => Ok(ChargeOutcome::Declined {
                code: "insufficient_funds",
                message: "The card has insufficient funds.",
            }),
            "pm_card_flaky" if attempt <= self.flaky_failures => Err(TransientError(format!(
                "sandbox: simulated outage on attempt {attempt}"
            ))),
            _ => Ok(ChargeOutcome::Approved),
        }
    }
}
