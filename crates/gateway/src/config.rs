//! Gateway configuration, read once from the environment.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use common::config::{ConfigError, Env, HttpConfig};

use crate::breaker::BreakerSettings;
use crate::limit::RateLimitSettings;

/// A path prefix and the upstream that serves it (the prefix is stripped before forwarding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// `/accounts`: no trailing slash.
    pub prefix: String,
    /// Name in logs, metrics and readiness (`accounts`).
    pub name: String,
    /// Base URL of the upstream, e.g. `http://127.0.0.1:8081`.
    pub upstream: url::Url,
}

/// Everything the gateway is configured with.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `GATEWAY_ADDR`, default `0.0.0.0:8080`.
    pub addr: SocketAddr,
    /// Prefix routes: `/accounts` → `GATEWAY_ACCOUNTS_URL`, `/payments` → `GATEWAY_PAYMENTS_URL`.
    pub routes: Vec<RouteConfig>,
    /// `GATEWAY_FALLBACK_URL`: where every other path goes (the monolith); unset → 404.
    pub fallback: Option<url::Url>,
    /// `GATEWAY_CONNECT_TIMEOUT_MS`, default 1000.
    pub connect_timeout: Duration,
    /// `GATEWAY_UPSTREAM_TIMEOUT_MS`: time allowed for an upstream's response headers, default 30000.
    pub upstream_timeout: Duration,
    /// Shared HTTP settings.
    pub http: HttpConfig,
    /// `GATEWAY_RATE_LIMIT_RPS` / `GATEWAY_RATE_LIMIT_BURST` per client (default 1000 / 2000;
    /// `0` switches limiting off).
    pub rate_limit: Option<RateLimitSettings>,
    /// `GATEWAY_REDIS_URL`: share rate limits between gateways through Redis.
    pub redis_url: Option<String>,
    /// `GATEWAY_REDIS_PREFIX` (default `gateway:ratelimit:`): the keys' prefix, so several
    /// environments can share one Redis.
    pub redis_prefix: String,
    /// `GATEWAY_JWKS_URL`: accounts' keys, to limit per token subject (default the local accounts).
    pub jwks_url: String,
    /// `ACCOUNTS_ISSUER`: the `iss` of tokens the gateway recognizes.
    pub token_issuer: String,
    /// `GATEWAY_BREAKER_FAILURES`, `GATEWAY_BREAKER_COOLDOWN_MS`.
    pub breaker: BreakerSettings,
    /// `GATEWAY_RETRIES` (default 2): retries of connection failures, for safe methods and
    /// requests with an `Idempotency-Key` only.
    pub retries: u32,
}

impl GatewayConfig {
    /// Reads and checks the configuration.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let routes = vec![
            RouteConfig {
                prefix: "/accounts".into(),
                name: "accounts".into(),
                upstream: upstream_url(env, "GATEWAY_ACCOUNTS_URL", "http://127.0.0.1:8081")?,
            },
            RouteConfig {
                prefix: "/payments".into(),
                name: "payments".into(),
                upstream: upstream_url(env, "GATEWAY_PAYMENTS_URL", "http://127.0.0.1:8082")?,
            },
        ];
        let fallback = match env.get("GATEWAY_FALLBACK_URL") {
            Some(_) => Some(upstream_url(env, "GATEWAY_FALLBACK_URL", "")?),
            None => None,
        };
        let millis = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let value: u64 = env.parse_or(name, default)?;
            if value == 0 {
                return Err(ConfigError::new(name, "must be above 0"));
            }
            Ok(Duration::from_millis(value))
        };
        let rps: u32 = env.parse_or("GATEWAY_RATE_LIMIT_RPS", 1000)?;
        let burst: u32 = env.parse_or("GATEWAY_RATE_LIMIT_BURST", rps.saturating_mul(2))?;
        let rate_limit = match (NonZeroU32::new(rps), NonZeroU32::new(burst)) {
            (Some(rps), Some(burst)) => Some(RateLimitSettings { rps, burst }),
            _ => None,
        };
        let redis_url = env.get("GATEWAY_REDIS_URL").map(str::to_owned);
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::new(
                "GATEWAY_REDIS_URL",
                "expected redis://host:port",
            ));
        }
        let failures: u32 = env.parse_or("GATEWAY_BREAKER_FAILURES", 5)?;
        if failures == 0 {
            return Err(ConfigError::new(
                "GATEWAY_BREAKER_FAILURES",
                "must be above 0",
            ));
        }
        Ok(Self {
            rate_limit,
            redis_url,
            redis_prefix: env.string_or("GATEWAY_REDIS_PREFIX", "gateway:ratelimit:"),
            jwks_url: env.string_or(
                "GATEWAY_JWKS_URL",
                "http://127.0.0.1:8081/.well-known/jwks.json",
            ),
            token_issuer: env
                .string_or("ACCOUNTS_ISSUER", "http://localhost:8080/accounts")
                .trim_end_matches('/')
                .to_owned(),
            breaker: BreakerSettings {
                consecutive_failures: failures,
                window: 20,
                failure_rate: 0.5,
                cooldown: millis("GATEWAY_BREAKER_COOLDOWN_MS", 5000)?,
            },
            retries: env.parse_or("GATEWAY_RETRIES", 2)?,
            addr: env.parse_or("GATEWAY_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            routes,
            fallback,
            connect_timeout: millis("GATEWAY_CONNECT_TIMEOUT_MS", 1000)?,
            upstream_timeout: millis("GATEWAY_UPSTREAM_TIMEOUT_MS", 30_000)?,
            http: HttpConfig::from_env(env)?,
        })
    }

    /// Points the route named `name` at `upstream` (the all-in-one runner uses the ports it got).
    pub fn set_upstream(&mut self, name: &str, upstream: url::Url) {
        for route in self.routes.iter_mut().filter(|r| r.name == name) {
            route.upstream = upstream.clone();
        }
    }
}

fn upstream_url(env: &Env, name: &str, default: &str) -> Result<url::Url, ConfigError> {
    let raw = env.string_or(name, default);
    let url =
        url::Url::parse(&raw).map_err(|e| ConfigError::new(name, format!("not a URL: {e}")))?;
    if url.scheme() != "http" {
        return Err(ConfigError::new(
            name,
            "only http:// upstreams are supported",
        ));
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            name,
            "expected http://host[:port][/base-path]",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_route_both_services_and_no_fallback() {
        let config = GatewayConfig::from_env(&Env::default()).unwrap();
        assert_eq!(config.addr.port(), 8080);
        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.routes[0].upstream.as_str(), "http://127.0.0.1:8081/");
        assert!(config.fallback.is_none());
        assert_eq!(
            config.rate_limit.map(|r| (r.rps.get(), r.burst.get())),
            Some((1000, 2000))
        );
        let off =
            GatewayConfig::from_env(&Env::from_pairs([("GATEWAY_RATE_LIMIT_RPS", "0")])).unwrap();
        assert!(off.rate_limit.is_none());
    }

    #[test]
    fn a_bad_upstream_names_its_variable() {
        for (name, value) in [
            ("GATEWAY_FALLBACK_URL", "not a url"),
            ("GATEWAY_PAYMENTS_URL", "https://payments"),
            ("GATEWAY_UPSTREAM_TIMEOUT_MS", "0"),
            ("GATEWAY_RATE_LIMIT_RPS", "lots"),
            ("GATEWAY_REDIS_URL", "localhost:6379"),
            ("GATEWAY_BREAKER_FAILURES", "0"),
        ] {
            let env = Env::from_pairs([(name, value)]);
            assert_eq!(GatewayConfig::from_env(&env).unwrap_err().variable, name);
        }
    }
}
