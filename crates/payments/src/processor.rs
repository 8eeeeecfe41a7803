//! The processor: workers that take pending payments (several may run against one database,
//! never on the same payment), call the provider, and record the outcome. Transient provider
//! errors are retried with capped exponential backoff; a worker that dies leaves a lease that
//! runs out, after which another worker resumes the payment.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::payment::{Payment, PaymentStatus};
use crate::provider::{ChargeOutcome, PaymentProvider};
use crate::store::{Finish, PaymentsStore};

/// How the processor works.
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    /// Concurrent workers in this process.
    pub workers: usize,
    /// How long a claimed payment is held; a longer provider call loses it.
    pub lease: Duration,
    /// How often idle workers look for work (they are also woken on new payments).
    pub poll_interval: Duration,
    /// First retry delay; doubled each attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Provider calls before a payment fails with `processing_error`.
    pub max_attempts: u32,
}

impl ProcessorSettings {
    /// The delay before attempt `attempt + 1`: base × 2^(attempt−1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }
}

/// What the processor counts.
#[derive(Clone)]
pub struct ProcessorMetrics {
    processed: prometheus::IntCounterVec,
    provider_errors: prometheus::IntCounterVec,
}

impl ProcessorMetrics {
    /// Registers `payments_processed_total{outcome}` and `payments_provider_errors_total`.
    pub fn new(metrics: &common::metrics::Metrics) -> Self {
        let processed = metrics.counter(
            "payments_processed_total",
            "Payments that reached a final state, by outcome (succeeded, declined, processing_error).",
            &["outcome"],
        );
        for outcome in ["succeeded", "declined", "processing_error"] {
            processed.with_label_values(&[outcome]);
        }
        let provider_errors = metrics.counter(
            "payments_provider_errors_total",
            "Transient provider errors (each one retried later, or the last one failing the payment).",
            &[],
        );
        provider_errors.with_label_values::<&str>(&[]);
        Self {
            processed,
            provider_errors,
        }
    }
}

/// Runs the workers.
pub struct Processor {
    store: Arc<dyn PaymentsStore>,
    provider: Arc<dyn PaymentProvider>,
    settings: ProcessorSettings,
    wake: Arc<Notify>,
    metrics: ProcessorMetrics,
}

impl Processor {
    /// A processor; `wake` is notified when a payment is created.
    pub fn new(
        store: Arc<dyn PaymentsStore>,
        provider: Arc<dyn PaymentProvider>,
        settings: ProcessorSettings,
        wake: Arc<Notify>,
        metrics: ProcessorMetrics,
    ) -> Self {
        Self {
            store,
            provider,
            settings,
            wake,
            metrics,
        }
    }

    /// Starts the workers; they stop after their current payment when `shutdown` fires.
    pub fn spawn(self, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let this = Arc::new(self);
        (0..this.settings.workers)
            .map(|worker| {
                let (this, shutdown) = (this.clone(), shutdown.clone());
                tokio::spawn(async move { this.work(worker, shutdown).await })
            })
            .collect()
    }

    async fn work(&self, worker: usize, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            // `now` is taken after the shutdown check: the claim only takes payments accepted
            // before it, so none accepted after the signal (the store's contract).
            let now = Utc::now();
            match self
                .store
                .claim_next_payment(now, self.settings.lease)
                .await
            {
                Ok(Some(payment)) => self.process(payment).await,
                Ok(None) => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(worker, %error, "cannot claim work; backing off");
                    tokio::select! {
                        () = tokio::time::sleep(self.settings.poll_interval * 4) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    #[tracing::instrument(name = "process_payment", skip_all, fields(payment_id = %payment.id))]
    async fn process(&self, payment: Payment) {
        let attempt = u32::try_from(payment.attempts).unwrap_or(0) + 1;
        let attempts = i32::try_from(attempt).unwrap_or(i32::MAX);
        // One line per provider call: what an operator reconciles against the provider.
        tracing::info!(attempt, "charging");
        let outcome = self.provider.charge(&payment, attempt).await;
        if outcome.is_err() {
            self.metrics
                .provider_errors
                .with_label_values::<&str>(&[])
                .inc();
        }
        let now = Utc::now();
        let result = match outcome {
            Ok(ChargeOutcome::Approved) => {
                self.finish(&payment.id, PaymentStatus::Succeeded, None, attempts)
                    .await
            }
            Ok(ChargeOutcome::Declined { code, message }) => {
                self.finish(
                    &payment.id,
                    PaymentStatus::Failed,
                    Some((code, message)),
                    attempts,
                )
                .await
            }
            Err(error) if attempt >= self.settings.max_attempts => {
                tracing::warn!(%error, attempt, "giving up on the provider");
                let message = "The provider failed repeatedly; no charge was made.";
                self.finish(
                    &payment.id,
                    PaymentStatus::Failed,
                    Some(("processing_error", message)),
                    attempts,
                )
                .await
            }
            Err(error) => {
                let delay = self.settings.backoff(attempt);
                tracing::info!(%error, attempt, ?delay, "transient provider error; will retry");
                self.store
                    .retry_payment_later(&payment.id, attempts, now + delay, now)
                    .await
                    .map(drop)
            }
        };
        if let Err(error) = result {
            // The lease runs out and another attempt picks the payment up.
            tracing::warn!(%error, "cannot record the outcome; the payment will be retried");
        }
    }

    async fn finish(
        &self,
        id: &str,
        status: PaymentStatus,
        failure: Option<(&str, &str)>,
        attempts: i32,
    ) -> Result<(), common::db::StoreError> {
        // Only processing → succeeded | failed is possible here; the store enforces it too.
        if PaymentStatus::Processing.transition(status).is_err() {
            return Ok(());
        }
        let finished = self
            .store
            .finish_payment(
                id,
                Finish {
                    status,
                    failure,
                    attempts,
                },
                Utc::now(),
            )
            .await?;
        match finished {
            Some(payment) => {
                let outcome = match failure {
                    None => "succeeded",
                    Some(("processing_error", _)) => "processing_error",
                    Some(_) => "declined",
                };
                self.metrics.processed.with_label_values(&[outcome]).inc();
                tracing::info!(status = %payment.status, attempts, outcome, "payment processed")
            }
            None => tracing::warn!("the payment was no longer processing; outcome dropped"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let settings = ProcessorSettings {
            workers: 1,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            max_attempts: 8,
        };
        let delays: Vec<u128> = (1..=6).map(|a| settings.backoff(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(settings.backoff(u32::MAX), Duration::from_secs(1));
    }
}
