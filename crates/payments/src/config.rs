//! Payments configuration, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use common::config::{ConfigError, Env, HttpConfig};
use common::db::DatabaseUrl;

use crate::processor::ProcessorSettings;
use crate::relay::RelaySettings;
use crate::webhooks::WebhookSettings;

/// Everything the payments service is configured with.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// `PAYMENTS_ADDR`, default `127.0.0.1:8082`.
    pub addr: SocketAddr,
    /// `PAYMENTS_DATABASE_URL`, default `DATA_DIR/payments.db` (SQLite).
    pub database_url: DatabaseUrl,
    /// `PAYMENTS_DATABASE_MAX_CONNECTIONS`: PostgreSQL connections this process keeps at most
    /// (default 16).
    pub database_max_connections: u32,
    /// Shared HTTP settings.
    pub http: HttpConfig,
    /// `PAYMENTS_JWKS_URL`: accounts' key set, default `http://127.0.0.1:8081/.well-known/jwks.json`.
    pub jwks_url: String,
    /// `ACCOUNTS_ISSUER`: the `iss` tokens must carry.
    pub token_issuer: String,
    /// `PAYMENTS_IDEMPOTENCY_TTL_HOURS`, default 24: how long keys are kept.
    pub idempotency_ttl: Duration,
    /// `PAYMENTS_IDEMPOTENCY_LOCK_TIMEOUT_SECONDS`, default 30: after this a request holding a
    /// key without finishing is presumed dead and its key is taken over by a retry.
    pub idempotency_lock_timeout: Duration,
    /// `PAYMENTS_SANDBOX_LATENCY_MS`, default 0.
    pub sandbox_latency: Duration,
    /// `PAYMENTS_PROCESSOR_ENABLED`, default true: run processing workers in this process.
    pub processor_enabled: bool,
    /// `PAYMENTS_WORKERS`, `PAYMENTS_LEASE_SECONDS`, `PAYMENTS_POLL_INTERVAL_MS`,
    /// `PAYMENTS_RETRY_BASE_MS`, `PAYMENTS_RETRY_MAX_MS`, `PAYMENTS_MAX_ATTEMPTS`,
    /// `PAYMENTS_PROVIDER_TIMEOUT_MS` (10000), `PAYMENTS_AUTHORIZATION_WINDOW_SECONDS` (7 days),
    /// `PAYMENTS_ATTENTION_AFTER_SECONDS` (3600).
    pub processor: ProcessorSettings,
    /// Webhook deliveries: `PAYMENTS_WEBHOOK_ALLOW_PRIVATE` (false), `PAYMENTS_WEBHOOK_ALLOW_HTTP`
    /// (false), `PAYMENTS_WEBHOOK_TIMEOUT_MS` (10000), `PAYMENTS_WEBHOOK_RETRY_SCHEDULE`,
    /// `PAYMENTS_WEBHOOK_DISABLE_AFTER_SECONDS` (5 days), `PAYMENTS_WEBHOOK_SECRET_OVERLAP_HOURS`
    /// (24), `PAYMENTS_WEBHOOK_CONCURRENCY` (16), `PAYMENTS_WEBHOOK_LOG_RETENTION_HOURS` (720).
    pub webhooks: WebhookSettings,
    /// `PAYMENTS_WEBHOOKS_ENABLED`, default true: deliver webhooks from this process.
    pub webhooks_enabled: bool,
    /// `NATS_URL` (unset: no broker; events stay in the feed) with `PAYMENTS_STREAM`,
    /// `PAYMENTS_SUBJECT_PREFIX` (`payments`: subjects `payments.payment.<state>` and
    /// `payments.refund.<state>`; an old-style `x.payment` is read as `x`) and `PAYMENTS_OUTBOX_RETENTION_HOURS` (default 168).
    pub relay: Option<RelaySettings>,
}

impl PaymentsConfig {
    /// Reads and checks the configuration.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let positive = |name: &str, default: u64| -> Result<u64, ConfigError> {
            let value: u64 = env.parse_or(name, default)?;
            if value == 0 {
                return Err(ConfigError::new(name, "must be above 0"));
            }
            Ok(value)
        };
        let jwks_url = env.string_or(
            "PAYMENTS_JWKS_URL",
            "http://127.0.0.1:8081/.well-known/jwks.json",
        );
        url::Url::parse(&jwks_url)
            .map_err(|e| ConfigError::new("PAYMENTS_JWKS_URL", format!("not a URL: {e}")))?;
        let processor = ProcessorSettings {
            workers: usize::try_from(positive("PAYMENTS_WORKERS", 2)?).unwrap_or(2),
            lease: Duration::from_secs(positive("PAYMENTS_LEASE_SECONDS", 30)?),
            poll_interval: Duration::from_millis(positive("PAYMENTS_POLL_INTERVAL_MS", 250)?),
            retry_base: Duration::from_millis(positive("PAYMENTS_RETRY_BASE_MS", 200)?),
            retry_max: Duration::from_millis(positive("PAYMENTS_RETRY_MAX_MS", 30_000)?),
            max_attempts: u32::try_from(positive("PAYMENTS_MAX_ATTEMPTS", 8)?).unwrap_or(8),
            provider_timeout: Duration::from_millis(positive(
                "PAYMENTS_PROVIDER_TIMEOUT_MS",
                10_000,
            )?),
            authorization_window: Duration::from_secs(positive(
                "PAYMENTS_AUTHORIZATION_WINDOW_SECONDS",
                7 * 24 * 3600,
            )?),
            attention_after: Duration::from_secs(
                env.parse_or("PAYMENTS_ATTENTION_AFTER_SECONDS", 3600)?,
            ),
        };
        let relay = match env.get("NATS_URL") {
            None => None,
            Some(url) => {
                if !(url.starts_with("nats://") || url.starts_with("tls://") || url.contains(':')) {
                    return Err(ConfigError::new("NATS_URL", "expected nats://host:port"));
                }
                let stream = env.string_or("PAYMENTS_STREAM", "PAYMENTS");
                if stream.is_empty() || stream.contains(['.', ' ', '*', '>']) {
                    return Err(ConfigError::new(
                        "PAYMENTS_STREAM",
                        "a stream name has no dots, spaces or wildcards",
                    ));
                }
                let subject_prefix = env.string_or("PAYMENTS_SUBJECT_PREFIX", "payments");
                if subject_prefix.is_empty()
                    || subject_prefix.contains([' ', '*', '>'])
                    || subject_prefix.ends_with('.')
                {
                    return Err(ConfigError::new(
                        "PAYMENTS_SUBJECT_PREFIX",
                        "expected a subject prefix like payments",
                    ));
                }
                // The earlier form named the payment subjects (`payments.payment`); refunds
                // publish beside them, so the prefix is now their common root.
                let subject_prefix = subject_prefix
                    .strip_suffix(".payment")
                    .unwrap_or(&subject_prefix)
                    .to_owned();
                Some(RelaySettings {
                    nats_url: url.to_owned(),
                    stream,
                    subject_prefix,
                    batch: 100,
                    retention: Duration::from_secs(
                        positive("PAYMENTS_OUTBOX_RETENTION_HOURS", 168)? * 3600,
                    ),
                })
            }
        };
        let schedule = env.string_or(
            "PAYMENTS_WEBHOOK_RETRY_SCHEDULE",
            crate::webhooks::DEFAULT_SCHEDULE,
        );
        let webhooks = WebhookSettings {
            allow_private: env.flag_or("PAYMENTS_WEBHOOK_ALLOW_PRIVATE", false)?,
            allow_http: env.flag_or("PAYMENTS_WEBHOOK_ALLOW_HTTP", false)?,
            timeout: Duration::from_millis(positive("PAYMENTS_WEBHOOK_TIMEOUT_MS", 10_000)?),
            schedule: crate::webhooks::parse_schedule(&schedule)
                .map_err(|e| ConfigError::new("PAYMENTS_WEBHOOK_RETRY_SCHEDULE", e))?,
            disable_after: Duration::from_secs(positive(
                "PAYMENTS_WEBHOOK_DISABLE_AFTER_SECONDS",
                5 * 24 * 3600,
            )?),
            secret_overlap: Duration::from_secs(
                env.parse_or::<u64>("PAYMENTS_WEBHOOK_SECRET_OVERLAP_HOURS", 24)? * 3600,
            ),
            concurrency: usize::try_from(positive("PAYMENTS_WEBHOOK_CONCURRENCY", 16)?)
                .unwrap_or(16),
            poll_interval: processor.poll_interval,
            log_retention: Duration::from_secs(
                positive("PAYMENTS_WEBHOOK_LOG_RETENTION_HOURS", 30 * 24)? * 3600,
            ),
        };
        Ok(Self {
            webhooks,
            webhooks_enabled: env.flag_or("PAYMENTS_WEBHOOKS_ENABLED", true)?,
            relay,
            addr: env.parse_or("PAYMENTS_ADDR", SocketAddr::from(([127, 0, 0, 1], 8082)))?,
            database_url: DatabaseUrl::from_env(env, "PAYMENTS_DATABASE_URL", "payments.db")?,
            database_max_connections: common::db::max_connections(
                env,
                "PAYMENTS_DATABASE_MAX_CONNECTIONS",
            )?,
            http: HttpConfig::from_env(env)?,
            jwks_url,
            token_issuer: env
                .string_or("ACCOUNTS_ISSUER", "http://localhost:8080/accounts")
                .trim_end_matches('/')
                .to_owned(),
            idempotency_ttl: Duration::from_secs(
                positive("PAYMENTS_IDEMPOTENCY_TTL_HOURS", 24)? * 3600,
            ),
            idempotency_lock_timeout: Duration::from_secs(positive(
                "PAYMENTS_IDEMPOTENCY_LOCK_TIMEOUT_SECONDS",
                30,
            )?),
            sandbox_latency: Duration::from_millis(env.parse_or("PAYMENTS_SANDBOX_LATENCY_MS", 0)?),
            processor_enabled: env.flag_or("PAYMENTS_PROCESSOR_ENABLED", true)?,
            processor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_environment() {
        let config = PaymentsConfig::from_env(&Env::default()).unwrap();
        assert_eq!(config.addr.port(), 8082);
        assert!(matches!(config.database_url, DatabaseUrl::Sqlite(_)));
        assert_eq!(config.idempotency_ttl, Duration::from_secs(24 * 3600));
        assert!(config.processor_enabled);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("PAYMENTS_DATABASE_URL", "mysql://db/payments"),
            ("PAYMENTS_WORKERS", "0"),
            ("PAYMENTS_SANDBOX_LATENCY_MS", "-1"),
            ("PAYMENTS_JWKS_URL", "not a url"),
            ("PAYMENTS_WEBHOOK_RETRY_SCHEDULE", "5d"),
            ("PAYMENTS_WEBHOOK_TIMEOUT_MS", "0"),
            ("PAYMENTS_WEBHOOK_ALLOW_PRIVATE", "maybe"),
        ] {
            let env = Env::from_pairs([(name, value)]);
            assert_eq!(PaymentsConfig::from_env(&env).unwrap_err().variable, name);
        }
    }
}
