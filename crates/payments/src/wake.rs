//! Waking the background loops (the webhook deliverer, the outbox relay) when a request writes
//! work for them, without letting a busy service turn every write into another round of
//! queries.
//!
//! Every payment, refund and state change notifies one [`Notify`]; under load that is every
//! request, and a loop that started a round (a claim: a transaction of its own on the
//! database) at each notification would add a database round trip or three to every payment,
//! whether or not there was anything to deliver. A loop woken sooner than [`MIN_ROUND_GAP`]
//! after the start of its previous round waits out the rest of the gap, so it runs at most one
//! round per gap however many writes woke it, and what a write gave it is on its way within
//! this gap of being written.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The least time between the starts of two rounds of a loop woken by writes.
pub const MIN_ROUND_GAP: Duration = Duration::from_millis(20);

/// Waits until `wake` is notified and [`MIN_ROUND_GAP`] has passed since `round_started`.
pub async fn woken(wake: &Notify, round_started: Instant) {
    wake.notified().await;
    tokio::time::sleep_until(round_started + MIN_ROUND_GAP).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A task waiting in [`woken`] (already registered with `wake`); it answers when it woke.
    async fn waiter(wake: &Arc<Notify>, started: Instant) -> tokio::task::JoinHandle<Instant> {
        let wake = wake.clone();
        let task = tokio::spawn(async move {
            woken(&wake, started).await;
            Instant::now()
        });
        tokio::task::yield_now().await;
        task
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_within_the_gap_waits_out_the_rest_of_it() {
        let wake = Arc::new(Notify::new());
        let started = Instant::now();
        let task = waiter(&wake, started).await;
        tokio::time::advance(Duration::from_millis(5)).await;
        wake.notify_waiters();
        assert_eq!(task.await.unwrap() - started, MIN_ROUND_GAP);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_after_the_gap_is_answered_at_once() {
        let wake = Arc::new(Notify::new());
        let started = Instant::now();
        tokio::time::advance(MIN_ROUND_GAP * 3).await;
        let task = waiter(&wake, started).await;
        let notified_at = Instant::now();
        wake.notify_waiters();
        assert_eq!(task.await.unwrap(), notified_at);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_wake_it_keeps_waiting() {
        let wake = Notify::new();
        let waited = tokio::time::timeout(Duration::from_secs(60), woken(&wake, Instant::now()));
        assert!(waited.await.is_err());
    }
}
