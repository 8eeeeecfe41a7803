//! A circuit breaker per upstream: it opens after consecutive failures or a high failure rate,
//! answers at once while open, and after a cool-down lets one trial request through
//! (half-open): success closes it, failure opens it again.

use std::collections::VecDeque;
use std::sync::Mutex;
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
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// May a request go to the upstream? `Err(wait)` while open (or while a trial runs).
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open if now >= inner.open_until => {
                inner.state = BreakerState::HalfOpen;
                inner.trial_in_flight = true;
                Ok(())
            }
            BreakerState::Open => Err(inner.open_until - now),
            BreakerState::HalfOpen if !inner.trial_in_flight => {
                inner.trial_in_flight = true;
                Ok(())
            }
            BreakerState::HalfOpen => Err(Duration::from_secs(1)),
        }
    }

    /// Records how a request that was let through ended.
    pub fn record(&self, success: bool) {
        let mut inner = self.lock();
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
            (BreakerState::HalfOpen, false) => self.open(&mut inner),
            (BreakerState::Closed, false) => {
                let failures = inner.recent.iter().filter(|ok| !**ok).count();
                let rate_tripped = inner.recent.len() == self.settings.window
                    && failures as f64 >= self.settings.failure_rate * self.settings.window as f64;
                if inner.consecutive >= self.settings.consecutive_failures || rate_tripped {
                    self.open(&mut inner);
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
            assert!(breaker.try_acquire().is_ok());
            breaker.record(false);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let wait = breaker.try_acquire().unwrap_err();
        assert!(wait <= Duration::from_secs(5) && wait > Duration::from_secs(4));

        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.try_acquire().is_ok(), "one trial");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.try_acquire().is_err(), "only one trial at a time");
        breaker.record(true);
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
        assert!(breaker.try_acquire().is_ok());
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.try_acquire().is_err());
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
}
