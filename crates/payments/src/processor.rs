//! The processor: workers that take pending payments, pending refunds and unconfirmed
//! captures (several may run against one database, never on the same item), call the
//! provider, and record the outcome; and a janitor that releases authorizations nobody
//! captured in time.
//!
//! Transient provider errors and timeouts are retried with capped exponential backoff, but an
//! answer that was lost is never guessed: every claim is counted (`attempts`), and a claim
//! after the first (a retry, or a resume after a worker died holding the item) first asks the
//! provider what it did with the earlier call, and calls again only if it did nothing. That
//! lookup is the reconciler. An item whose outcome stays unresolved longer than
//! `PAYMENTS_ATTENTION_AFTER_SECONDS` is flagged for a person (log line and
//! `payments_attention_required_total`) and keeps being asked about; nothing is marked
//! succeeded or failed without the provider's word.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::domain::payment::{Payment, PaymentStatus};
use crate::domain::refund::{Refund, RefundStatus};
use crate::provider::{ChargeOutcome, PaymentProvider, RefundOutcome, TransientError};
use crate::store::{Finish, PaymentsStore, RefundFinish, WorkItem};
use crate::wake::Wake;

/// How the processor works.
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    /// Concurrent workers in this process.
    pub workers: usize,
    /// How long a claimed item is held; a longer provider call loses it.
    pub lease: Duration,
    /// How often idle workers look for work (they are also woken on new payments and refunds).
    pub poll_interval: Duration,
    /// First retry delay; doubled each attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Provider calls before a payment or refund fails with `processing_error` (once the
    /// provider confirms it did nothing).
    pub max_attempts: u32,
    /// A provider call not answered within this is an unknown outcome.
    pub provider_timeout: Duration,
    /// How long an authorization waits for its capture before it is released.
    pub authorization_window: Duration,
    /// An item unresolved for longer than this (since it was accepted) is flagged for a person.
    pub attention_after: Duration,
}

impl ProcessorSettings {
    /// The delay before attempt `attempt + 1`: base × 2^(attempt−1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }
}

/// What the payments workflow counts (shared by the workers and the HTTP handlers).
#[derive(Clone)]
pub struct ProcessorMetrics {
    processed: prometheus::IntCounterVec,
    provider_errors: prometheus::IntCounterVec,
    refunds: prometheus::IntCounterVec,
    captures: prometheus::IntCounterVec,
    released: prometheus::IntCounterVec,
    reconciled: prometheus::IntCounterVec,
    attention: prometheus::IntCounterVec,
}

impl ProcessorMetrics {
    /// Registers the workflow's counters.
    pub fn new(metrics: &common::metrics::Metrics) -> Self {
        let labelled = |name: &str, help: &str, label: &str, values: &[&str]| {
            let counter = metrics.counter(name, help, &[label]);
            for value in values {
                counter.with_label_values(&[*value]);
            }
            counter
        };
        let processed = labelled(
            "payments_processed_total",
            "Payments that reached a final state or an authorization, by outcome (succeeded, authorized, declined, processing_error).",
            "outcome",
            &["succeeded", "authorized", "declined", "processing_error"],
        );
        let provider_errors = metrics.counter(
            "payments_provider_errors_total",
            "Provider calls that failed or timed out (their outcome is asked for before any retry).",
            &[],
        );
        provider_errors.with_label_values::<&str>(&[]);
        let refunds = labelled(
            "payments_refunds_total",
            "Refunds that reached a final state, by outcome (succeeded, declined, processing_error).",
            "outcome",
            &["succeeded", "declined", "processing_error"],
        );
        let captures = labelled(
            "payments_captures_total",
            "Captures of authorizations, by outcome (captured, unconfirmed: finished in the background).",
            "outcome",
            &["captured", "unconfirmed"],
        );
        let released = labelled(
            "payments_authorizations_released_total",
            "Authorizations released without a capture, by reason (requested, authorization_expired).",
            "reason",
            &["requested", "authorization_expired"],
        );
        let reconciled = labelled(
            "payments_reconciled_total",
            "Provider calls whose answer was lost, resolved by asking the provider, by what it had done (done, nothing).",
            "answer",
            &["done", "nothing"],
        );
        let attention = labelled(
            "payments_attention_required_total",
            "Payments and refunds flagged for a person: their provider outcome unresolved for longer than PAYMENTS_ATTENTION_AFTER_SECONDS.",
            "kind",
            &["payment", "refund"],
        );
        Self {
            processed,
            provider_errors,
            refunds,
            captures,
            released,
            reconciled,
            attention,
        }
    }

    /// Counts a capture: `captured` or `unconfirmed`.
    pub fn capture(&self, outcome: &str) {
        self.captures.with_label_values(&[outcome]).inc();
    }

    /// Counts a released authorization, by reason.
    pub fn released(&self, reason: &str) {
        self.released.with_label_values(&[reason]).inc();
    }

    fn reconciled(&self, done: bool) {
        let answer = if done { "done" } else { "nothing" };
        self.reconciled.with_label_values(&[answer]).inc();
    }
}

/// Calls the provider, turning a call slower than `timeout` into an unknown outcome.
pub async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, TransientError>>,
) -> Result<T, TransientError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(TransientError(format!("no answer within {timeout:?}"))))
}

/// Runs the workers.
pub struct Processor {
    store: Arc<dyn PaymentsStore>,
    provider: Arc<dyn PaymentProvider>,
    settings: ProcessorSettings,
    wake: Arc<Wake>,
    metrics: ProcessorMetrics,
}

/// What a worker took.
enum Work {
    Payment(Payment),
    Refund(Refund),
    Capture(Payment),
}

impl Processor {
    /// A processor; `wake` wakes one idle worker when a payment or a refund is accepted.
    pub fn new(
        store: Arc<dyn PaymentsStore>,
        provider: Arc<dyn PaymentProvider>,
        settings: ProcessorSettings,
        wake: Arc<Wake>,
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

    /// Starts the workers and the janitor; they stop after their current item when
    /// `shutdown` fires.
    pub fn spawn(self, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let this = Arc::new(self);
        let mut tasks: Vec<_> = (0..this.settings.workers)
            .map(|worker| {
                let (this, shutdown) = (this.clone(), shutdown.clone());
                tokio::spawn(async move { this.work(worker, shutdown).await })
            })
            .collect();
        let this = this.clone();
        tasks.push(tokio::spawn(async move { this.janitor(shutdown).await }));
        tasks
    }

    async fn work(&self, worker: usize, shutdown: CancellationToken) {
        let mut turn = worker;
        while !shutdown.is_cancelled() {
            // `now` is taken after the shutdown check: a claim only takes items accepted
            // before it, so none accepted after the signal (the store's contract).
            let now = Utc::now();
            // Payments and refunds take turns at being looked for first, so a steady stream
            // of either never starves the other.
            turn = turn.wrapping_add(1);
            match self.claim(now, turn.is_multiple_of(2)).await {
                Ok(Some(work)) => {
                    match work {
                        Work::Payment(payment) => self.process(payment).await,
                        Work::Refund(refund) => self.process_refund(refund).await,
                        Work::Capture(payment) => self.confirm_capture(payment).await,
                    }
                    // Its state changes wrote events: on their way now, not at the next poll.
                    self.wake.events_written();
                }
                Ok(None) => {
                    tokio::select! {
                        () = self.wake.work() => {}
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

    /// The next item: a payment or a refund (`refunds_first` says which is looked for
    /// first), else a capture nobody confirmed.
    async fn claim(
        &self,
        now: DateTime<Utc>,
        refunds_first: bool,
    ) -> Result<Option<Work>, common::db::StoreError> {
        let lease = self.settings.lease;
        if refunds_first && let Some(refund) = self.store.claim_next_refund(now, lease).await? {
            return Ok(Some(Work::Refund(refund)));
        }
        if let Some(payment) = self.store.claim_next_payment(now, lease).await? {
            return Ok(Some(Work::Payment(payment)));
        }
        if !refunds_first && let Some(refund) = self.store.claim_next_refund(now, lease).await? {
            return Ok(Some(Work::Refund(refund)));
        }
        Ok(self
            .store
            .claim_unconfirmed_capture(now, lease)
            .await?
            .map(Work::Capture))
    }

    /// Releases expired authorizations, every poll interval until `shutdown`.
    async fn janitor(&self, shutdown: CancellationToken) {
        let mut interval =
            tokio::time::interval(self.settings.poll_interval.max(Duration::from_millis(200)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match self
                .store
                .release_expired_authorizations(Utc::now(), 100)
                .await
            {
                Ok(released) => {
                    for payment in released {
                        self.metrics.released("authorization_expired");
                        tracing::info!(payment_id = %payment.id, "authorization expired uncaptured; released");
                        release_at_provider(
                            &*self.provider,
                            &payment,
                            self.settings.provider_timeout,
                        )
                        .await;
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot release expired authorizations"),
            }
        }
    }

    /// Flags `id` for a person once it has been unresolved (since `since`) for too long.
    async fn watch(&self, item: WorkItem, id: &str, since: DateTime<Utc>) {
        let now = Utc::now();
        let unresolved = (now - since).to_std().unwrap_or(Duration::MAX);
        if unresolved < self.settings.attention_after {
            return;
        }
        match self.store.flag_for_attention(item, id, now).await {
            Ok(true) => {
                self.metrics
                    .attention
                    .with_label_values(&[item.as_str()])
                    .inc();
                tracing::error!(
                    kind = item.as_str(),
                    id,
                    unresolved_seconds = unresolved.as_secs(),
                    "the provider's outcome is still unresolved: needs a person (still being asked)"
                );
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot flag for attention"),
        }
    }

    fn count_error<T>(&self, result: &Result<T, TransientError>) {
        if result.is_err() {
            self.metrics
                .provider_errors
                .with_label_values::<&str>(&[])
                .inc();
        }
    }

    /// Asks the provider first when an earlier claim may have called it (`attempt > 1`), and
    /// acts only if it did nothing.
    async fn resolve<T, L, A>(&self, attempt: u32, lookup: L, act: A) -> Result<T, TransientError>
    where
        L: Future<Output = Result<Option<T>, TransientError>>,
        A: Future<Output = Result<T, TransientError>>,
    {
        let timeout = self.settings.provider_timeout;
        if attempt > 1 {
            let known = within(timeout, lookup).await;
            self.count_error(&known);
            match known? {
                Some(outcome) => {
                    self.metrics.reconciled(true);
                    tracing::info!(attempt, "the provider had done it; outcome recorded");
                    return Ok(outcome);
                }
                None => self.metrics.reconciled(false),
            }
        }
        let result = within(timeout, act).await;
        self.count_error(&result);
        result
    }

    #[tracing::instrument(name = "process_payment", skip_all, fields(payment_id = %payment.id))]
    async fn process(&self, payment: Payment) {
        let attempt = u32::try_from(payment.attempts).unwrap_or(1).max(1);
        // One line per provider call: what an operator reconciles against the provider.
        tracing::info!(attempt, "charging");
        let provider = &*self.provider;
        let mut outcome = self
            .resolve(
                attempt,
                provider.charge_status(&payment),
                provider.charge(&payment, attempt),
            )
            .await;
        if outcome.is_err() && attempt >= self.settings.max_attempts {
            // Give up only on the provider's word that it took no charge.
            let known = within(
                self.settings.provider_timeout,
                provider.charge_status(&payment),
            )
            .await;
            match known {
                Ok(Some(found)) => outcome = Ok(found),
                Ok(None) => {
                    tracing::warn!(attempt, "giving up on the provider, which took no charge");
                    let message = "The provider failed repeatedly; no charge was made.";
                    let failure = Some(("processing_error", message));
                    return self.finish(&payment, PaymentStatus::Failed, failure).await;
                }
                Err(error) => outcome = Err(error),
            }
        }
        match outcome {
            Ok(ChargeOutcome::Approved) if payment.is_manual_capture() => {
                self.finish(&payment, PaymentStatus::RequiresCapture, None)
                    .await
            }
            Ok(ChargeOutcome::Approved) => {
                self.finish(&payment, PaymentStatus::Succeeded, None).await
            }
            Ok(ChargeOutcome::Declined { code, message }) => {
                self.finish(&payment, PaymentStatus::Failed, Some((code, message)))
                    .await
            }
            Err(error) => {
                let now = Utc::now();
                let delay = self.settings.backoff(attempt);
                tracing::info!(%error, attempt, ?delay, "provider outcome unknown; will ask and retry");
                if let Err(error) = self
                    .store
                    .retry_payment_later(&payment.id, payment.attempts, now + delay, now)
                    .await
                {
                    tracing::warn!(%error, "cannot schedule the retry; the lease runs out instead");
                }
                self.watch(WorkItem::Payment, &payment.id, payment.created_at)
                    .await;
            }
        }
    }

    async fn finish(
        &self,
        payment: &Payment,
        status: PaymentStatus,
        failure: Option<(&str, &str)>,
    ) {
        // Only processing → succeeded | failed | requires_capture here; the store enforces it too.
        if PaymentStatus::Processing.transition(status).is_err() {
            return;
        }
        let now = Utc::now();
        let capture_before = (status == PaymentStatus::RequiresCapture).then(|| {
            now + chrono::Duration::from_std(self.settings.authorization_window)
                .unwrap_or(chrono::Duration::days(7))
        });
        let finish = Finish {
            status,
            failure,
            attempts: payment.attempts,
            capture_before,
        };
        match self.store.finish_payment(&payment.id, finish, now).await {
            Ok(Some(finished)) => {
                let outcome = match (status, failure) {
                    (PaymentStatus::RequiresCapture, _) => "authorized",
                    (_, None) => "succeeded",
                    (_, Some(("processing_error", _))) => "processing_error",
                    (_, Some(_)) => "declined",
                };
                self.metrics.processed.with_label_values(&[outcome]).inc();
                tracing::info!(status = %finished.status, attempts = payment.attempts, outcome, "payment processed")
            }
            Ok(None) => tracing::warn!("the payment was no longer processing; outcome dropped"),
            // The lease runs out and another attempt asks the provider again.
            Err(error) => {
                tracing::warn!(%error, "cannot record the outcome; the payment will be retried")
            }
        }
    }

    #[tracing::instrument(name = "process_refund", skip_all, fields(refund_id = %refund.id, payment_id = %refund.payment_id))]
    async fn process_refund(&self, refund: Refund) {
        let attempt = u32::try_from(refund.attempts).unwrap_or(1).max(1);
        let payment = match self.store.payment(&refund.payment_id).await {
            Ok(Some(payment)) => payment,
            Ok(None) => return tracing::error!("a refund of a payment that does not exist"),
            Err(error) => {
                return tracing::warn!(%error, "cannot read the refund's payment; the lease runs out");
            }
        };
        tracing::info!(attempt, amount_minor = refund.amount_minor, "refunding");
        let provider = &*self.provider;
        let mut outcome = self
            .resolve(
                attempt,
                provider.refund_status(&refund),
                provider.refund(&refund, &payment, attempt),
            )
            .await;
        if outcome.is_err() && attempt >= self.settings.max_attempts {
            match within(
                self.settings.provider_timeout,
                provider.refund_status(&refund),
            )
            .await
            {
                Ok(Some(found)) => outcome = Ok(found),
                Ok(None) => {
                    tracing::warn!(attempt, "giving up on the provider, which refunded nothing");
                    let message = "The provider failed repeatedly; nothing was refunded.";
                    return self
                        .finish_refund(
                            &refund,
                            RefundStatus::Failed,
                            Some(("processing_error", message)),
                        )
                        .await;
                }
                Err(error) => outcome = Err(error),
            }
        }
        match outcome {
            Ok(RefundOutcome::Refunded) => {
                self.finish_refund(&refund, RefundStatus::Succeeded, None)
                    .await
            }
            Ok(RefundOutcome::Declined { code, message }) => {
                self.finish_refund(&refund, RefundStatus::Failed, Some((code, message)))
                    .await
            }
            Err(error) => {
                let now = Utc::now();
                let delay = self.settings.backoff(attempt);
                tracing::info!(%error, attempt, ?delay, "provider outcome unknown; will ask and retry");
                if let Err(error) = self
                    .store
                    .retry_refund_later(&refund.id, now + delay, now)
                    .await
                {
                    tracing::warn!(%error, "cannot schedule the retry; the lease runs out instead");
                }
                self.watch(WorkItem::Refund, &refund.id, refund.created_at)
                    .await;
            }
        }
    }

    async fn finish_refund(
        &self,
        refund: &Refund,
        status: RefundStatus,
        failure: Option<(&str, &str)>,
    ) {
        let finish = RefundFinish { status, failure };
        match self
            .store
            .finish_refund(&refund.id, finish, Utc::now())
            .await
        {
            Ok(Some(finished)) => {
                let outcome = match failure {
                    None => "succeeded",
                    Some(("processing_error", _)) => "processing_error",
                    Some(_) => "declined",
                };
                self.metrics.refunds.with_label_values(&[outcome]).inc();
                tracing::info!(status = %finished.status, attempts = refund.attempts, outcome, "refund processed");
            }
            Ok(None) => tracing::warn!("the refund was no longer pending; outcome dropped"),
            Err(error) => {
                tracing::warn!(%error, "cannot record the outcome; the refund will be retried")
            }
        }
    }

    /// Finishes a capture whose requester never confirmed it (timed out, or died).
    #[tracing::instrument(name = "confirm_capture", skip_all, fields(payment_id = %payment.id))]
    async fn confirm_capture(&self, payment: Payment) {
        let attempt = u32::try_from(payment.attempts).unwrap_or(1).max(1);
        let amount = payment
            .capture_requested_minor
            .unwrap_or(payment.amount_minor);
        let provider = &*self.provider;
        let captured = async { Ok(provider.capture_status(&payment).await?.then_some(())) };
        // Every claim here follows a call that may have reached the provider: ask first.
        let outcome = self
            .resolve(
                attempt.max(2),
                captured,
                provider.capture(&payment, amount, attempt),
            )
            .await;
        match outcome {
            Ok(()) => match self
                .store
                .finish_capture(&payment.id, Utc::now(), None)
                .await
            {
                Ok(Some(_)) => {
                    self.metrics.capture("captured");
                    tracing::info!(amount_minor = amount, "capture confirmed");
                }
                Ok(None) => tracing::warn!("the capture was no longer pending; nothing to confirm"),
                Err(error) => {
                    tracing::warn!(%error, "cannot record the capture; it will be asked about again")
                }
            },
            Err(error) => {
                let now = Utc::now();
                let delay = self.settings.backoff(attempt);
                tracing::info!(%error, attempt, ?delay, "capture outcome unknown; will ask and retry");
                if let Err(error) = self
                    .store
                    .retry_payment_later(&payment.id, payment.attempts, now + delay, now)
                    .await
                {
                    tracing::warn!(%error, "cannot schedule the retry; the lease runs out instead");
                }
                // A capture may come days after the payment: it is flagged after the
                // configured number of attempts rather than by age.
                if attempt >= self.settings.max_attempts {
                    self.watch(WorkItem::Payment, &payment.id, DateTime::<Utc>::MIN_UTC)
                        .await;
                }
            }
        }
    }
}

/// Tells the provider an authorization will not be captured. Best effort: the provider
/// releases an authorization by itself when it expires, so a failure is logged, not retried.
pub async fn release_at_provider(
    provider: &dyn PaymentProvider,
    payment: &Payment,
    timeout: Duration,
) {
    if let Err(error) = within(timeout, provider.release(payment)).await {
        tracing::warn!(%error, payment_id = %payment.id, "the provider did not confirm the release; the authorization lapses there by itself");
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
            provider_timeout: Duration::from_secs(10),
            authorization_window: Duration::from_secs(3600),
            attention_after: Duration::from_secs(3600),
        };
        let delays: Vec<u128> = (1..=6).map(|a| settings.backoff(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(settings.backoff(u32::MAX), Duration::from_secs(1));
    }
}
