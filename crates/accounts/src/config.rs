//! Accounts configuration, read once from the environment.

use std::net::SocketAddr;

use common::config::{ConfigError, Env, HttpConfig};
use common::db::DatabaseUrl;

/// Everything the accounts service is configured with.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// `ACCOUNTS_ADDR`, default `127.0.0.1:8081`.
    pub addr: SocketAddr,
    /// `ACCOUNTS_DATABASE_URL`, default `DATA_DIR/accounts.db` (SQLite).
    pub database_url: DatabaseUrl,
    /// `ACCOUNTS_ISSUER`: the public URL of accounts, the `iss` of every token.
    pub issuer: String,
    /// Shared HTTP settings.
    pub http: HttpConfig,
}

impl AccountsConfig {
    /// Reads and checks the configuration.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let issuer = env.string_or("ACCOUNTS_ISSUER", "http://localhost:8080/accounts");
        let parsed = url::Url::parse(&issuer)
            .map_err(|e| ConfigError::new("ACCOUNTS_ISSUER", format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(ConfigError::new(
                "ACCOUNTS_ISSUER",
                "must be an http(s) URL without a query",
            ));
        }
        Ok(Self {
            addr: env.parse_or("ACCOUNTS_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            database_url: DatabaseUrl::from_env(env, "ACCOUNTS_DATABASE_URL", "accounts.db")?,
            issuer: issuer.trim_end_matches('/').to_owned(),
            http: HttpConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_environment() {
        let config = AccountsConfig::from_env(&Env::default()).unwrap();
        assert_eq!(config.addr.port(), 8081);
        assert_eq!(config.issuer, "http://localhost:8080/accounts");
        assert!(matches!(config.database_url, DatabaseUrl::Sqlite(_)));
    }

    #[test]
    fn a_bad_address_names_the_variable() {
        let env = Env::from_pairs([("ACCOUNTS_ADDR", "localhost")]);
        assert_eq!(
            AccountsConfig::from_env(&env).unwrap_err().variable,
            "ACCOUNTS_ADDR"
        );
    }
}
