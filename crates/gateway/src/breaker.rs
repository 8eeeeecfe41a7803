//! A circuit breaker per upstream: it opens after consecutive failures or a high failure rate,
//! answers at once while open, and after a cool-down lets one trial request through
//! (half-open): success closes it, failure opens it again.
//!
//! A healthy upstream's requests (closed, and nothing but successes in the window) only read
//! one flag: nothing changes when another success is added to a window of successes, so the
//! lock, which every worker would take for every request, is left alone.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures that open it (`GATEWAY_BREAKER_FAILURES`, default 5).
    pub consecutive_failures: u32,
    /// Outcomes remembered for the failure rate.
    pub window: usize,
    /// Failure rate over a full window that opens it (0.5).
    pub failure_rate: f64,
    /// How long it stays open before a trial (`GATEWAY_BREAKER_COOLDOWN_MS`, default 5000).
    pub cooldown: Duration,
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused until the cool-down ends.
    Open,
    /// One trial request is allowed.
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 open, 2 half-open (the metric's value).
    pub fn code(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    open_until: Instant,
    trial_in_flight: bool,
    consecutive: u32,
    recent: VecDeque<bool>,
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    /// Closed, with a full window of successes (kept by whoever holds the lock).
    healthy: AtomicBool,
}

/// A request let through by [`Breaker::try_acquire`]; [`Permit::record`] says how it ended.
/// Dropped without a verdict (the client went away, or its own body failed), it tells the
/// breaker nothing, and a half-open breaker's trial is open to the next request.
#[must_use = "a permit records how the request ended"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    /// Whether this is the one trial request of a half-open breaker.
    trial: bool,
}

impl Permit<'_> {
    /// Records how the request ended.
    pub fn record(mut self, success: bool) {
        // A verdict: nothing for the drop to undo.
        self.trial = false;
        self.breaker.record(success);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial {
            let mut inner = self.breaker.lock();
            if inner.state == BreakerState::HalfOpen {
                inner.trial_in_flight = false;
            }
        }
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                open_until: Instant::now(),
                trial_in_flight: false,
                consecutive: 0,
                recent: VecDeque::with_capacity(settings.window),
            }),
            healthy: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// May a request go to the upstream? `Err(wait)` while open (or while a trial runs).
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        let permit = |trial| Permit {
            breaker: self,
            trial,
        };
        if self.healthy.load(Ordering::Relaxed) {
            return Ok(permit(false));
        }
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.state {
            BreakerState::Closed => Ok(permit(false)),
            BreakerState::Open if now >= inner.open_until => {
                inner.state = BreakerState::HalfOpen;
                inner.trial_in_flight = true;
                Ok(permit(true))
            }
            BreakerState::Open => Err(inner.open_until - now),
            BreakerState::HalfOpen if !inner.trial_in_flight => {
                inner.trial_in_flight = true;
                Ok(permit(true))
            }
            BreakerState::HalfOpen => Err(Duration::from_secs(1)),
        }
    }

    /// Records how a request that was let through ended.
    pub fn record(&self, success: bool) {
        if success && self.healthy.load(Ordering::Relaxed) {
            return;
        }
        let mut inner = self.lock();
        self.record_locked(&mut inner, success);
        let healthy = inner.state == BreakerState::Closed
            && inner.recent.len() == self.settings.window
            && inner.recent.iter().all(|ok| *ok);
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    fn record_locked(&self, inner: &mut Inner, success: bool) {
        if inner.recent.len() == self.settings.window {
            inner.recent.pop_front();
        }
        inner.recent.push_back(success);
        inner.consecutive = if success { 0 } else { inner.consecutive + 1 };
        match (inner.state, success) {
            (BreakerState::HalfOpen, true) => {
                inner.state = BreakerState::Closed;
                inner.trial_in_flight = false;
                inner.recent.clear();
            }
            (BreakerState::HalfOpen, false) => self.open(inner),
            (BreakerState::Closed, false) => {
                let failures = inner.recent.iter().filter(|ok| !**ok).count();
                let rate_tripped = inner.recent.len() == self.settings.window
                    && failures as f64 >= self.settings.failure_rate * self.settings.window as f64;
                if inner.consecutive >= self.settings.consecutive_failures || rate_tripped {
                    self.open(inner);
                }
            }
            _ => {}
        }
    }

    fn open(&self, inner: &mut Inner) {
        inner.state = BreakerState::Open;
        inner.open_until = Instant::now() + self.settings.cooldown;
        inner.trial_in_flight = false;
        inner.consecutive = 0;
        inner.recent.clear();
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        if self.healthy.load(Ordering::Relaxed) {
            return BreakerState::Closed;
        }
        self.lock().state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            consecutive_failures: 3,
            window: 10,
            failure_rate: 0.5,
            cooldown: Duration::from_secs(5),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn it_opens_after_consecutive_failures_then_half_opens_and_closes() {
        let breaker = breaker();
        for _ in 0..3 {
            breaker.try_acquire().unwrap().record(false);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let wait = breaker.try_acquire().unwrap_err();
        assert!(wait <= Duration::from_secs(5) && wait > Duration::from_secs(4));

        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = breaker.try_acquire().expect("one trial");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.try_acquire().is_err(), "only one trial at a time");
        trial.record(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_it_again() {
        let breaker = breaker();
        for _ in 0..3 {
            breaker.record(false);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        breaker.try_acquire().unwrap().record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_that_ends_without_a_verdict_lets_the_next_request_try() {
        let breaker = breaker();
        for _ in 0..3 {
            breaker.record(false);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        // The client went away while the trial was in flight.
        drop(breaker.try_acquire().unwrap());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let trial = breaker
            .try_acquire()
            .expect("the next request is the trial");
        assert!(breaker.try_acquire().is_err());
        trial.record(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_high_failure_rate_opens_it_without_consecutive_failures() {
        let breaker = breaker();
        for n in 0..10 {
            breaker.record(n % 2 == 0);
        }
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "5 of the last 10 failed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_breaker_still_counts_the_first_failures() {
        let breaker = breaker();
        for _ in 0..10 {
            breaker.record(true);
        }
        assert!(
            breaker.healthy.load(Ordering::Relaxed),
            "a full window of successes"
        );
        for ok in [false, true, false, true, false, true, false, true] {
            breaker.record(ok);
            assert!(!breaker.healthy.load(Ordering::Relaxed));
        }
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "4 of the last 10 failed"
        );
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}
