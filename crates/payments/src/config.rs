//! Payments configuration, read once from the environment.

use std::net::SocketAddr;

use common::config::{ConfigError, Env, HttpConfig};
use common::db::DatabaseUrl;

/// Everything the payments service is configured with.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// `PAYMENTS_ADDR`, default `127.0.0.1:8082`.
    pub addr: SocketAddr,
    /// `PAYMENTS_DATABASE_URL`, default `DATA_DIR/payments.db` (SQLite).
    pub database_url: DatabaseUrl,
    /// Shared HTTP settings.
    pub http: HttpConfig,
}

impl PaymentsConfig {
    /// Reads and checks the configuration.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            addr: env.parse_or("PAYMENTS_ADDR", SocketAddr::from(([127, 0, 0, 1], 8082)))?,
            database_url: DatabaseUrl::from_env(env, "PAYMENTS_DATABASE_URL", "payments.db")?,
            http: HttpConfig::from_env(env)?,
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
    }

    #[test]
    fn a_bad_database_url_names_the_variable() {
        let env = Env::from_pairs([("PAYMENTS_DATABASE_URL", "mysql://db/payments")]);
        assert_eq!(
            PaymentsConfig::from_env(&env).unwrap_err().variable,
            "PAYMENTS_DATABASE_URL"
        );
    }
}
