//! Logging: one JSON object a line (or human-readable with `LOG_FORMAT=pretty`), with the
//! fields of the request span (`request_id`, `trace_id`, ...) on every line.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{ConfigError, Env};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line (default; for machines).
    Json,
    /// Human-readable lines (for a developer's terminal).
    Pretty,
}

/// Logging configuration: `LOG_FORMAT` and `RUST_LOG`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// An `EnvFilter` directive, `info` by default.
    pub filter: String,
}

impl LogConfig {
    /// Reads `LOG_FORMAT` (`json`/`pretty`) and `RUST_LOG`, checking both.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let format = match env
            .string_or("LOG_FORMAT", "json")
            .to_ascii_lowercase()
            .as_str()
        {
            "json" => LogFormat::Json,
            "pretty" | "text" => LogFormat::Pretty,
            other => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("expected json or pretty, got {other:?}"),
                ));
            }
        };
        let filter = env.string_or("RUST_LOG", "info");
        EnvFilter::try_new(&filter).map_err(|e| ConfigError::new("RUST_LOG", e.to_string()))?;
        Ok(Self { format, filter })
    }
}

/// Installs the process-wide subscriber. Calling it again is harmless (the first one stays).
pub fn init(config: &LogConfig) -> Result<(), ConfigError> {
    let filter = EnvFilter::try_new(&config.filter)
        .map_err(|e| ConfigError::new("RUST_LOG", e.to_string()))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Json => {
            let mut layer = json_subscriber::JsonLayer::stdout();
            layer
                .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
                .with_level("level")
                .with_target("target")
                .with_flattened_event()
                .with_top_level_flattened_span_list();
            registry.with(layer).try_init()
        }
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    // An already-installed subscriber (tests, the all-in-one runner) is fine.
    drop(result);
    Ok(())
}
