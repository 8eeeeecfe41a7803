//! Payment providers: the adapter trait the processor calls, and the deterministic sandbox.
//!
//! Every action (charge, capture, release, refund) must be idempotent per payment or refund
//! id, like a real provider's API with its own idempotency keys. An action whose answer was
//! lost (the call timed out, or the process calling it died) is never guessed at: the
//! provider is asked what it did (`*_status`), and only an answer of "nothing" lets the
//! action be tried again.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::payment::Payment;
use crate::domain::refund::Refund;
use crate::store::{PaymentsStore, SandboxCall};

/// A provider's final answer about a charge (an authorization, for manual capture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money moved (or, for manual capture, is held).
    Approved,
    /// Refused for good.
    Declined {
        /// Stable code (`card_declined`, `insufficient_funds`).
        code: &'static str,
        /// Human explanation.
        message: &'static str,
    },
}

/// A provider's final answer about a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money went back.
    Refunded,
    /// Refused for good.
    Declined {
        /// Stable code (`refund_declined`).
        code: &'static str,
        /// Human explanation.
        message: &'static str,
    },
}

/// A failure whose outcome is not known (timeouts, the provider's 5xx): ask, then retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transient provider error: {0}")]
pub struct TransientError(pub String);

/// What the processor needs from a payment provider.
#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Charges (or, for manual capture, authorizes) `payment`; `attempt` counts from 1.
    async fn charge(
        &self,
        payment: &Payment,
        attempt: u32,
    ) -> Result<ChargeOutcome, TransientError>;
    /// Captures `amount_minor` of an authorization.
    async fn capture(
        &self,
        payment: &Payment,
        amount_minor: i64,
        attempt: u32,
    ) -> Result<(), TransientError>;
    /// Releases an authorization that will not be captured.
    async fn release(&self, payment: &Payment) -> Result<(), TransientError>;
    /// Gives `refund`'s amount of `payment` back.
    async fn refund(
        &self,
        refund: &Refund,
        payment: &Payment,
        attempt: u32,
    ) -> Result<RefundOutcome, TransientError>;
    /// What became of the charges of `payment`: `None` if the provider took none.
    async fn charge_status(
        &self,
        payment: &Payment,
    ) -> Result<Option<ChargeOutcome>, TransientError>;
    /// Whether the provider captured `payment`.
    async fn capture_status(&self, payment: &Payment) -> Result<bool, TransientError>;
    /// What became of `refund`: `None` if the provider took no such refund.
    async fn refund_status(&self, refund: &Refund)
    -> Result<Option<RefundOutcome>, TransientError>;
}

/// How many times `pm_card_flaky` (charges) and `pm_card_refund_flaky` (refunds) fail before
/// they succeed.
pub const SANDBOX_FLAKY_FAILURES: u32 = 2;

/// The sandbox: the outcome is chosen by `payment_method` (API.md, README). Like a real
/// provider it keeps its own record of the calls it received and what it answered
/// (`sandbox_calls`, written as each call arrives, before the configured latency), which a
/// caller killed mid-call cannot lose, and which its `*_status` lookups read.
#[derive(Clone)]
pub struct Sandbox {
    /// Added to every action (`PAYMENTS_SANDBOX_LATENCY_MS`); lookups answer at once.
    pub latency: Duration,
    /// How many times the flaky methods fail before they succeed.
    pub flaky_failures: u32,
    /// Where the calls are recorded.
    pub ledger: Arc<dyn PaymentsStore>,
}

const DECLINES: [(&str, &str); 3] = [
    ("card_declined", "The card was declined."),
    ("insufficient_funds", "The card has insufficient funds."),
    ("refund_declined", "The provider refused the refund."),
];

/// The declined outcome with `code`, as the ledger names it.
fn decline(code: &str) -> (&'static str, &'static str) {
    DECLINES
        .iter()
        .find(|(known, _)| *known == code)
        .copied()
        .unwrap_or(("card_declined", "The card was declined."))
}

impl Sandbox {
    /// Records the call (a provider that cannot record it does not take it), then answers
    /// after the latency.
    async fn act(
        &self,
        operation: &str,
        reference: &str,
        attempt: u32,
        outcome: &str,
    ) -> Result<(), TransientError> {
        self.ledger
            .record_sandbox_call(
                SandboxCall {
                    operation,
                    reference,
                    attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
                    outcome,
                },
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| TransientError(format!("sandbox: {e}")))?;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if outcome == "error" {
            return Err(TransientError(format!(
                "sandbox: simulated outage on attempt {attempt}"
            )));
        }
        Ok(())
    }

    async fn outcome(
        &self,
        operation: &str,
        reference: &str,
    ) -> Result<Option<String>, TransientError> {
        self.ledger
            .sandbox_outcome(operation, reference)
            .await
            .map_err(|e| TransientError(format!("sandbox: {e}")))
    }
}

fn charge_outcome(recorded: &str) -> ChargeOutcome {
    match recorded.strip_prefix("declined:") {
        Some(code) => {
            let (code, message) = decline(code);
            ChargeOutcome::Declined { code, message }
        }
        None => ChargeOutcome::Approved,
    }
}

fn refund_outcome(recorded: &str) -> RefundOutcome {
    match recorded.strip_prefix("declined:") {
        Some(code) => {
            let (code, message) = decline(code);
            RefundOutcome::Declined { code, message }
        }
        None => RefundOutcome::Refunded,
    }
}

#[async_trait::async_trait]
impl PaymentProvider for Sandbox {
    async fn charge(
        &self,
        payment: &Payment,
        attempt: u32,
    ) -> Result<ChargeOutcome, TransientError> {
        let outcome = match payment.payment_method.as_str() {
            "pm_card_declined" => "declined:card_declined",
            "pm_card_insufficient_funds" => "declined:insufficient_funds",
            "pm_card_flaky" if attempt <= self.flaky_failures => "error",
            _ => "approved",
        };
        self.act("charge", &payment.id, attempt, outcome).await?;
        Ok(charge_outcome(outcome))
    }

    async fn capture(
        &self,
        payment: &Payment,
        _amount_minor: i64,
        attempt: u32,
    ) -> Result<(), TransientError> {
        self.act("capture", &payment.id, attempt, "captured").await
    }

    async fn release(&self, payment: &Payment) -> Result<(), TransientError> {
        self.act("release", &payment.id, 1, "released").await
    }

    async fn refund(
        &self,
        refund: &Refund,
        payment: &Payment,
        attempt: u32,
    ) -> Result<RefundOutcome, TransientError> {
        let outcome = match payment.payment_method.as_str() {
            "pm_card_refund_declined" => "declined:refund_declined",
            "pm_card_refund_flaky" if attempt <= self.flaky_failures => "error",
            _ => "refunded",
        };
        self.act("refund", &refund.id, attempt, outcome).await?;
        Ok(refund_outcome(outcome))
    }

    async fn charge_status(
        &self,
        payment: &Payment,
    ) -> Result<Option<ChargeOutcome>, TransientError> {
        Ok(self
            .outcome("charge", &payment.id)
            .await?
            .map(|recorded| charge_outcome(&recorded)))
    }

    async fn capture_status(&self, payment: &Payment) -> Result<bool, TransientError> {
        Ok(self.outcome("capture", &payment.id).await?.is_some())
    }

    async fn refund_status(
        &self,
        refund: &Refund,
    ) -> Result<Option<RefundOutcome>, TransientError> {
        Ok(self
            .outcome("refund", &refund.id)
            .await?
            .map(|recorded| refund_outcome(&recorded)))
    }
}
