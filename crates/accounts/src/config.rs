//! Accounts configuration, read once from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::config::{ConfigError, Env, HttpConfig};
use common::db::DatabaseUrl;

use crate::passwords::HashingSettings;

/// Everything the accounts service is configured with.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// `ACCOUNTS_ADDR`, default `127.0.0.1:8081`.
    pub addr: SocketAddr,
    /// `ACCOUNTS_DATABASE_URL`, default `DATA_DIR/accounts.db` (SQLite).
    pub database_url: DatabaseUrl,
    /// `ACCOUNTS_DATABASE_MAX_CONNECTIONS`: PostgreSQL connections this process keeps at most
    /// (default 16).
    pub database_max_connections: u32,
    /// `ACCOUNTS_ISSUER`: the public URL of accounts, the `iss` of every token.
    pub issuer: String,
    /// Shared HTTP settings.
    pub http: HttpConfig,
    /// `ACCOUNTS_SIGNUP_ENABLED`, default true: whether `POST /v1/users` is open.
    pub signup_enabled: bool,
    /// `ACCOUNTS_PASSWORD_GRANT_ENABLED`, default true: whether the token endpoint accepts
    /// `grant_type=password` (for the migration; browsers sign in at the login page).
    pub password_grant_enabled: bool,
    /// `ACCOUNTS_SESSION_IDLE_SECONDS`, default 1800: a browser session unused this long ends.
    pub session_idle: Duration,
    /// `ACCOUNTS_SESSION_MAX_SECONDS`, default 36000 (10 hours): a browser session ends this
    /// long after its login, used or not.
    pub session_lifetime: Duration,
    /// `ACCOUNTS_SIGNING_ALG`: `RS256` (default) or `EdDSA`, for keys generated from now on.
    pub signing_algorithm: SigningAlgorithm,
    /// `ACCOUNTS_ACCESS_TOKEN_TTL_SECONDS`, default 900 (15 minutes).
    pub access_token_ttl: Duration,
    /// `ACCOUNTS_REFRESH_TOKEN_TTL_SECONDS`, default 30 days.
    pub refresh_token_ttl: Duration,
    /// `ACCOUNTS_KEY_ROTATION_HOURS`, default 720 (30 days): the signing key's age at which a
    /// new one replaces it.
    pub key_rotation_period: Duration,
    /// `ACCOUNTS_KEY_PREPUBLISH_SECONDS`, default 3600: how long a key is published in the
    /// JWKS before it signs (at least the JWKS `max-age`, 300 s, plus a minute).
    pub key_prepublish: Duration,
    /// Where the key that encrypts signing keys at rest comes from.
    pub key_encryption: KeyEncryptionSource,
    /// `ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL` / `ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD`: the first admin.
    pub bootstrap_admin: Option<(String, String)>,
    /// `ACCOUNTS_HASHING_SLOTS` (default one per CPU), `ACCOUNTS_HASHING_QUEUE` (default 16
    /// per slot), `ACCOUNTS_HASHING_MAX_WAIT_MS` (default 1000): how many password hashes run
    /// at once, how many requests may wait for one, and for how long, before a request is
    /// refused with 503.
    pub hashing: HashingSettings,
}

/// The shortest time a key may be published before it signs: the JWKS `max-age` (300 s) plus
/// a minute of margin.
pub const MIN_KEY_PREPUBLISH_SECONDS: u64 = 360;

/// The algorithm new signing keys use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// RSA 2048 with SHA-256 (default; what every verifier supports).
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl std::str::FromStr for SigningAlgorithm {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_uppercase().as_str() {
            "RS256" => Ok(Self::Rs256),
            "EDDSA" | "ED25519" => Ok(Self::EdDsa),
            _ => Err("expected RS256 or EdDSA".into()),
        }
    }
}

/// The 32-byte key that encrypts signing keys at rest.
#[derive(Clone)]
pub enum KeyEncryptionSource {
    /// `ACCOUNTS_KEY_ENCRYPTION_KEY`: base64 of 32 bytes.
    Given([u8; 32]),
    /// A file in `DATA_DIR`, generated (mode 0600) at first start.
    File(PathBuf),
}

impl std::fmt::Debug for KeyEncryptionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Given(_) => f.write_str("Given(****)"),
            Self::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

impl AccountsConfig {
    /// Whether the issuer is served over https: session cookies are then `Secure` and named
    /// with the `__Host-` prefix.
    pub fn secure_cookies(&self) -> bool {
        self.issuer.starts_with("https://")
    }

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
        let seconds = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let value: u64 = env.parse_or(name, default)?;
            if value == 0 {
                return Err(ConfigError::new(name, "must be above 0"));
            }
            Ok(Duration::from_secs(value))
        };
        let key_encryption = match env.get("ACCOUNTS_KEY_ENCRYPTION_KEY") {
            Some(raw) => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        ConfigError::new(
                            "ACCOUNTS_KEY_ENCRYPTION_KEY",
                            "expected base64 of exactly 32 bytes (openssl rand -base64 32)",
                        )
                    })?;
                KeyEncryptionSource::Given(bytes)
            }
            None => KeyEncryptionSource::File(env.data_dir().join("accounts-key-encryption.key")),
        };
        let bootstrap_admin = match (
            env.get("ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL"),
            env.get("ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD"),
        ) {
            (Some(email), Some(password)) => Some((email.to_owned(), password.to_owned())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD",
                    "must be set together with ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL",
                    "must be set together with ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD",
                ));
            }
        };
        let rotation_hours: u64 = env.parse_or("ACCOUNTS_KEY_ROTATION_HOURS", 720)?;
        if rotation_hours == 0 {
            return Err(ConfigError::new(
                "ACCOUNTS_KEY_ROTATION_HOURS",
                "must be above 0",
            ));
        }
        let machine = HashingSettings::for_this_machine();
        let slots: usize = env.parse_or("ACCOUNTS_HASHING_SLOTS", machine.slots)?;
        if slots == 0 {
            return Err(ConfigError::new(
                "ACCOUNTS_HASHING_SLOTS",
                "must be above 0",
            ));
        }
        let hashing = HashingSettings {
            slots,
            max_waiting: env.parse_or("ACCOUNTS_HASHING_QUEUE", 16 * slots)?,
            max_wait: Duration::from_millis(env.parse_or("ACCOUNTS_HASHING_MAX_WAIT_MS", 1000u64)?),
        };
        let prepublish: u64 = env.parse_or("ACCOUNTS_KEY_PREPUBLISH_SECONDS", 3600)?;
        if prepublish < MIN_KEY_PREPUBLISH_SECONDS {
            return Err(ConfigError::new(
                "ACCOUNTS_KEY_PREPUBLISH_SECONDS",
                format!(
                    "must be at least {MIN_KEY_PREPUBLISH_SECONDS} (the JWKS max-age, 300 s, plus a minute)"
                ),
            ));
        }
        Ok(Self {
            key_prepublish: Duration::from_secs(prepublish),
            hashing,
            signup_enabled: env.flag_or("ACCOUNTS_SIGNUP_ENABLED", true)?,
            password_grant_enabled: env.flag_or("ACCOUNTS_PASSWORD_GRANT_ENABLED", true)?,
            session_idle: seconds("ACCOUNTS_SESSION_IDLE_SECONDS", 1800)?,
            session_lifetime: seconds("ACCOUNTS_SESSION_MAX_SECONDS", 36_000)?,
            signing_algorithm: env.parse_or("ACCOUNTS_SIGNING_ALG", SigningAlgorithm::Rs256)?,
            access_token_ttl: seconds("ACCOUNTS_ACCESS_TOKEN_TTL_SECONDS", 900)?,
            refresh_token_ttl: seconds("ACCOUNTS_REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600)?,
            key_rotation_period: Duration::from_secs(rotation_hours * 3600),
            key_encryption,
            bootstrap_admin,
            addr: env.parse_or("ACCOUNTS_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            database_url: DatabaseUrl::from_env(env, "ACCOUNTS_DATABASE_URL", "accounts.db")?,
            database_max_connections: common::db::max_connections(
                env,
                "ACCOUNTS_DATABASE_MAX_CONNECTIONS",
            )?,
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
    fn secrets_and_algorithms_are_checked() {
        for (name, value) in [
            ("ACCOUNTS_KEY_ENCRYPTION_KEY", "c2hvcnQ="),
            ("ACCOUNTS_SIGNING_ALG", "HS256"),
            ("ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com"),
            ("ACCOUNTS_ACCESS_TOKEN_TTL_SECONDS", "0"),
        ] {
            let env = Env::from_pairs([(name, value)]);
            let err = AccountsConfig::from_env(&env).unwrap_err();
            assert!(err.variable.starts_with("ACCOUNTS_"), "{name}: {err}");
        }
        let config =
            AccountsConfig::from_env(&Env::from_pairs([("ACCOUNTS_SIGNING_ALG", "EdDSA")]))
                .unwrap();
        assert_eq!(config.signing_algorithm, SigningAlgorithm::EdDsa);
        assert!(
            !format!(
                "{:?}",
                AccountsConfig::from_env(&Env::from_pairs([(
                    "ACCOUNTS_KEY_ENCRYPTION_KEY",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
                )]))
                .unwrap()
            )
            .contains("AAAA")
        );
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
