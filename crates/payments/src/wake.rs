//! Waking the background loops when a request writes work for them: the processing workers
//! (a payment or a refund to take) and the event loops (the webhook deliverer, the outbox
//! relay), without letting a busy service turn every write into more rounds of queries.
//!
//! - **Work** wakes one idle worker ([`Notify::notify_one`]; a wake-up with no worker idle is
//!   kept for the next one that looks). Waking every idle worker for each payment made all of
//!   them claim (a transaction each, three when nothing is found) for the one payment: with 16
//!   workers, PostgreSQL counted 12.5 transactions per payment, and payments were taken more
//!   slowly for it.
//! - **Events** wake the deliverer and the relay; each of them, woken sooner than
//!   [`MIN_ROUND_GAP`] after the start of its previous round (a claim: a round trip to the
//!   database), waits out the rest of the gap. So it runs at most one round per gap however
//!   many writes woke it, and an event is on its way within this gap of being written. A
//!   deliverer woken by every payment had added a claim transaction to nearly every payment,
//!   most of them finding nothing to deliver.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The least time between the starts of two rounds of an event loop woken by writes.
pub const MIN_ROUND_GAP: Duration = Duration::from_millis(20);

/// The wake-ups of one process's background loops.
#[derive(Debug, Default)]
pub struct Wake {
    work: Notify,
    events: Notify,
}

impl Wake {
    /// A payment or a refund was accepted: one idle worker takes it, and its event is sent.
    pub fn work_accepted(&self) {
        self.work.notify_one();
        self.events.notify_waiters();
    }

    /// Events were written with nothing to process (a state change, a redelivery).
    pub fn events_written(&self) {
        self.events.notify_waiters();
    }

    /// Waits until work is accepted (or was, while no worker was idle).
    pub async fn work(&self) {
        self.work.notified().await;
    }

    /// Waits until events are written and [`MIN_ROUND_GAP`] has passed since `round_started`.
    pub async fn events(&self, round_started: Instant) {
        self.events.notified().await;
        tokio::time::sleep_until(round_started + MIN_ROUND_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A task waiting for events (already registered); it answers when it woke.
    async fn events_waiter(wake: &Arc<Wake>, started: Instant) -> tokio::task::JoinHandle<Instant> {
        let wake = wake.clone();
        let task = tokio::spawn(async move {
            wake.events(started).await;
            Instant::now()
        });
        tokio::task::yield_now().await;
        task
    }

    #[tokio::test(start_paused = true)]
    async fn events_within_the_gap_wait_out_the_rest_of_it() {
        let wake = Arc::new(Wake::default());
        let started = Instant::now();
        let task = events_waiter(&wake, started).await;
        tokio::time::advance(Duration::from_millis(5)).await;
        wake.events_written();
        assert_eq!(task.await.unwrap() - started, MIN_ROUND_GAP);
    }

    #[tokio::test(start_paused = true)]
    async fn events_after_the_gap_are_answered_at_once() {
        let wake = Arc::new(Wake::default());
        let started = Instant::now();
        tokio::time::advance(MIN_ROUND_GAP * 3).await;
        let task = events_waiter(&wake, started).await;
        let notified_at = Instant::now();
        wake.work_accepted();
        assert_eq!(task.await.unwrap(), notified_at);
    }

    #[tokio::test(start_paused = true)]
    async fn without_events_the_loops_keep_waiting() {
        let wake = Wake::default();
        // Work alone is not an event... (it always comes with one: `work_accepted`).
        wake.work.notify_one();
        let waited = tokio::time::timeout(Duration::from_secs(60), wake.events(Instant::now()));
        assert!(waited.await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn accepted_work_wakes_one_idle_worker_and_is_kept_when_none_is() {
        let wake = Arc::new(Wake::default());
        let woke = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (wake, woke) = (wake.clone(), woke.clone());
                tokio::spawn(async move {
                    wake.work().await;
                    woke.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        tokio::task::yield_now().await;
        wake.work_accepted();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            woke.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one worker per item"
        );
        for worker in workers {
            worker.abort();
        }
        // Accepted while no worker waits: the next worker to look finds it at once.
        let wake = Wake::default();
        wake.work_accepted();
        let waited = tokio::time::timeout(Duration::from_millis(1), wake.work());
        assert!(waited.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn events_written_wake_no_worker() {
        let wake = Wake::default();
        wake.events_written();
        let waited = tokio::time::timeout(Duration::from_secs(60), wake.work());
        assert!(waited.await.is_err());
    }
}
