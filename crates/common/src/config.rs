//! Typed configuration read once from the environment; a bad value names its variable.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

/// A configuration value that could not be accepted; start-up stops with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: String,
    /// What is wrong with its value.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `variable`.
    pub fn new(variable: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            message: message.into(),
        }
    }
}

/// A snapshot of the environment, so configuration is read once and tests can supply their own.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// Snapshot of the process environment (variables that are not valid UTF-8 are ignored).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment made of the given pairs only.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Returns a copy with `name` set to `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// The trimmed value of `name`; empty counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name` or `default`.
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// Parses `name` if it is set.
    pub fn parse_opt<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(name)
            .map(|raw| {
                raw.parse::<T>()
                    .map_err(|e| ConfigError::new(name, format!("cannot parse {raw:?}: {e}")))
            })
            .transpose()
    }

    /// Parses `name`, or returns `default` when it is unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse_opt(name)?.unwrap_or(default))
    }

    /// A boolean flag: `true/false`, `1/0`, `yes/no`, `on/off`.
    pub fn flag_or(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::new(
                name,
                format!("expected true or false, got {other:?}"),
            )),
        }
    }

    /// `DATA_DIR`: where SQLite files and generated secrets live.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.string_or("DATA_DIR", "./data"))
    }
}

/// HTTP settings every service shares.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish at shutdown (`SHUTDOWN_GRACE_SECONDS`).
    pub shutdown_grace: std::time::Duration,
    /// Where `/docs` loads Swagger UI from (`DOCS_ASSETS_URL`): a URL under which
    /// `swagger-ui-bundle.js` and `swagger-ui.css` are found, without a trailing slash.
    pub docs_assets_url: String,
}

/// Swagger UI on a public CDN, pinned to one version (as FastAPI does); an air-gapped
/// deployment sets `DOCS_ASSETS_URL` to its own copy of the `swagger-ui-dist` package.
pub const DEFAULT_DOCS_ASSETS_URL: &str = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.35.0";

impl HttpConfig {
    /// Reads the shared HTTP settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_body_bytes = env.parse_or("MAX_BODY_BYTES", 1024 * 1024usize)?;
        if max_body_bytes == 0 {
            return Err(ConfigError::new("MAX_BODY_BYTES", "must be above 0"));
        }
        let grace: u64 = env.parse_or("SHUTDOWN_GRACE_SECONDS", 30)?;
        let docs_assets_url = env.string_or("DOCS_ASSETS_URL", DEFAULT_DOCS_ASSETS_URL);
        let parsed = url::Url::parse(&docs_assets_url).map_err(|e| {
            ConfigError::new(
                "DOCS_ASSETS_URL",
                format!("not a URL ({e}): {docs_assets_url:?}"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
        {
            return Err(ConfigError::new(
                "DOCS_ASSETS_URL",
                "must be an http or https URL without query, fragment or credentials",
            ));
        }
        Ok(Self {
            max_body_bytes,
            shutdown_grace: std::time::Duration::from_secs(grace),
            docs_assets_url: docs_assets_url.trim_end_matches('/').to_owned(),
        })
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            shutdown_grace: std::time::Duration::from_secs(30),
            docs_assets_url: DEFAULT_DOCS_ASSETS_URL.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_names_its_variable() {
        let env = Env::from_pairs([("MAX_BODY_BYTES", "lots")]);
        let err = HttpConfig::from_env(&env).unwrap_err();
        assert_eq!(err.variable, "MAX_BODY_BYTES");
        assert!(err.to_string().contains("MAX_BODY_BYTES"));
    }

    #[test]
    fn the_docs_assets_url_must_be_a_plain_http_url() {
        let config = HttpConfig::from_env(&Env::from_pairs([(
            "DOCS_ASSETS_URL",
            "http://assets.internal/swagger/",
        )]))
        .unwrap();
        assert_eq!(config.docs_assets_url, "http://assets.internal/swagger");
        for bad in [
            "file:///etc",
            "javascript:alert(1)",
            "http://x/?a=b",
            "not a url",
        ] {
            let env = Env::from_pairs([("DOCS_ASSETS_URL", bad)]);
            assert_eq!(
                HttpConfig::from_env(&env).unwrap_err().variable,
                "DOCS_ASSETS_URL",
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("DATA_DIR", "  ")]);
        assert_eq!(env.data_dir(), PathBuf::from("./data"));
    }

    #[test]
    fn flags_accept_the_usual_spellings() {
        let env = Env::from_pairs([("A", "Yes"), ("B", "0"), ("C", "maybe")]);
        assert!(env.flag_or("A", false).unwrap());
        assert!(!env.flag_or("B", true).unwrap());
        assert_eq!(env.flag_or("C", true).unwrap_err().variable, "C");
        assert!(env.flag_or("D", true).unwrap());
    }
}
