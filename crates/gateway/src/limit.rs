//! Rate limiting per client (token subject when a valid token is present, else IP) with GCRA:
//! in process by default (governor), or shared by every gateway through Redis (one atomic Lua
//! script) when `GATEWAY_REDIS_URL` is set; if Redis stops answering, the in-process limiter
//! takes over until it is back.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Requests per second and burst per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Sustained requests per second.
    pub rps: NonZeroU32,
    /// How many may come at once.
    pub burst: NonZeroU32,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `remaining` more may come now, the bucket is full again in `reset`.
    Allowed {
        /// Requests still allowed right now.
        remaining: u32,
        /// Until the full burst is available again.
        reset: Duration,
    },
    /// Refused; try again after `retry_after`.
    Limited {
        /// Until one more request is allowed.
        retry_after: Duration,
    },
}

/// Whom a limit is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The subject of a valid access token.
    Subject(String),
    /// The client's address, when it has no valid token.
    Ip(IpAddr),
}

impl std::fmt::Display for ClientKey {
    /// `sub:<subject>` or `ip:<address>`, as the Redis keys name them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subject(subject) => write!(f, "sub:{subject}"),
            Self::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

type Local = RateLimiter<
    ClientKey,
    governor::state::keyed::DefaultKeyedStateStore<ClientKey>,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
>;

/// The limiter: local, or Redis with the local one as fallback.
pub struct Limiter {
    settings: RateLimitSettings,
    local: Local,
    redis: Option<RedisGcra>,
}

/// The Redis that keeps every limit of every gateway: its connection, the keys' prefix
/// (`GATEWAY_REDIS_PREFIX`), and the gauge that says whether it answers.
#[derive(Clone)]
pub struct SharedRedis {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    up: prometheus::IntGauge,
}

impl SharedRedis {
    /// Limits kept under `prefix` through `connection`; `gateway_rate_limit_redis_up` in
    /// `metrics` tells whether they are shared (1) or kept in process while Redis does not
    /// answer (0).
    pub fn new(
        connection: redis::aio::ConnectionManager,
        prefix: String,
        metrics: &common::metrics::Metrics,
    ) -> Self {
        let up = metrics.gauge(
            "gateway_rate_limit_redis_up",
            "1 while rate limits are kept in Redis (shared by every gateway), 0 while Redis does not answer and they are kept in process.",
        );
        up.set(1);
        Self {
            connection,
            prefix,
            up,
        }
    }
}

impl Limiter {
    /// An in-process limiter, or a Redis-backed one when `redis` is given. `scope` sets a
    /// limit's keys apart from the default limit's (`<prefix><scope>:ip:...`).
    pub fn new(
        settings: RateLimitSettings,
        redis: Option<SharedRedis>,
        scope: Option<&str>,
    ) -> Self {
        let quota = Quota::per_second(settings.rps).allow_burst(settings.burst);
        let local: DefaultKeyedRateLimiter<ClientKey> = RateLimiter::keyed(quota);
        Self {
            settings,
            local: local.with_middleware::<StateInformationMiddleware>(),
            redis: redis.map(|shared| RedisGcra {
                connection: shared.connection,
                prefix: match scope {
                    Some(scope) => format!("{}{scope}:", shared.prefix),
                    None => shared.prefix,
                },
                script: Arc::new(redis::Script::new(GCRA_LUA)),
                down_until: std::sync::Mutex::new(None),
                up: shared.up,
            }),
        }
    }

    /// Its rate and burst.
    pub fn settings(&self) -> RateLimitSettings {
        self.settings
    }

    /// Counts one request of `client` and decides at once when limits are kept in process
    /// (no Redis, or Redis resting after a failure); `None` when Redis is to be asked
    /// ([`Limiter::check`]).
    pub fn check_now(&self, client: &ClientKey) -> Option<Decision> {
        match &self.redis {
            Some(redis) if redis.available() => None,
            _ => Some(self.check_local(client)),
        }
    }

    /// Counts one request of `client` and decides.
    pub async fn check(&self, client: &ClientKey) -> Decision {
        if let Some(redis) = &self.redis
            && redis.available()
        {
            match redis.check(client, self.settings).await {
                Ok(decision) => {
                    redis.succeeded();
                    return decision;
                }
                Err(error) => redis.failed(&error),
            }
        }
        self.check_local(client)
    }

    fn check_local(&self, client: &ClientKey) -> Decision {
        let emission = Duration::from_secs(1) / self.settings.rps.get();
        match self.local.check_key(client) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision::Allowed {
                    remaining,
                    reset: emission * (self.settings.burst.get() - remaining),
                }
            }
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                )),
            },
        }
    }

    /// Forgets idle clients (call now and then).
    pub fn shrink(&self) {
        self.local.retain_recent();
        self.local.shrink_to_fit();
    }
}

/// GCRA in Redis: the theoretical arrival time per key, updated atomically. Times come from
/// Redis' clock, so gateways with skewed clocks still agree.
/// ARGV: emission interval (µs), burst. Returns {allowed, remaining, wait µs}.
const GCRA_LUA: &str = r#"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if allow_at > now then
  return {0, 0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now + emission * burst - new_tat) / emission), new_tat - now}
"#;

struct RedisGcra {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    script: Arc<redis::Script>,
    /// Set when Redis failed: until then requests are limited in process without asking it.
    down_until: std::sync::Mutex<Option<std::time::Instant>>,
    up: prometheus::IntGauge,
}

/// How long the gateway limits in process after Redis failed before asking it again.
pub const REDIS_RETRY_AFTER: Duration = Duration::from_secs(2);

impl RedisGcra {
    fn down_until(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether to ask Redis now (not within [`REDIS_RETRY_AFTER`] of a failure).
    fn available(&self) -> bool {
        self.down_until()
            .is_none_or(|until| std::time::Instant::now() >= until)
    }

    fn succeeded(&self) {
        if self.down_until().take().is_some() {
            self.up.set(1);
            tracing::info!("Redis rate limiter is back; limits are shared again");
        }
    }

    fn failed(&self, error: &redis::RedisError) {
        let was_up = self
            .down_until()
            .replace(std::time::Instant::now() + REDIS_RETRY_AFTER)
            .is_none();
        if was_up {
            self.up.set(0);
            tracing::warn!(%error, "Redis rate limiter unavailable; limiting in process until it is back");
        }
    }
}

impl RedisGcra {
    async fn check(
        &self,
        client: &ClientKey,
        settings: RateLimitSettings,
    ) -> Result<Decision, redis::RedisError> {
        let emission_us = 1_000_000 / u64::from(settings.rps.get());
        let mut connection = self.connection.clone();
        let (allowed, remaining, wait_us): (i64, i64, i64) = tokio::time::timeout(
            Duration::from_millis(250),
            self.script
                .key(format!("{}{client}", self.prefix))
                .arg(emission_us)
                .arg(settings.burst.get())
                .invoke_async(&mut connection),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::IoError, "Redis did not answer in time"))
        })??;
        let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
        Ok(if allowed == 1 {
            Decision::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
                reset: wait,
            }
        } else {
            Decision::Limited { retry_after: wait }
        })
    }
}

/// Connects to Redis (`GATEWAY_REDIS_URL`), reconnecting by itself after failures.
pub async fn connect_redis(url: &str) -> anyhow::Result<redis::aio::ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("GATEWAY_REDIS_URL: {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_millis(250));
    redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| anyhow::anyhow!("GATEWAY_REDIS_URL {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: u32, burst: u32) -> Limiter {
        Limiter::new(
            RateLimitSettings {
                rps: NonZeroU32::new(rps).unwrap(),
                burst: NonZeroU32::new(burst).unwrap(),
            },
            None,
            None,
        )
    }

    #[tokio::test]
    async fn a_burst_is_allowed_then_limited_per_client() {
        let limiter = limiter(1, 3);
        let one = ClientKey::Ip([10, 0, 0, 1].into());
        let mut remaining = Vec::new();
        for _ in 0..3 {
            match limiter.check_now(&one).unwrap() {
                Decision::Allowed { remaining: r, .. } => remaining.push(r),
                Decision::Limited { .. } => panic!("within the burst"),
            }
        }
        assert_eq!(remaining, [2, 1, 0]);
        match limiter.check(&one).await {
            Decision::Limited { retry_after } => assert!(retry_after <= Duration::from_secs(1)),
            Decision::Allowed { .. } => panic!("over the burst"),
        }
        let two = ClientKey::Ip([10, 0, 0, 2].into());
        assert!(
            matches!(limiter.check(&two).await, Decision::Allowed { .. }),
            "per client"
        );
        let subject = ClientKey::Subject("usr_1".into());
        assert!(matches!(
            limiter.check(&subject).await,
            Decision::Allowed { .. }
        ));
        assert_eq!(subject.to_string(), "sub:usr_1");
        assert_eq!(one.to_string(), "ip:10.0.0.1");
    }
}
