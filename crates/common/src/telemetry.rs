//! Logging: one JSON object a line (or human-readable with `LOG_FORMAT=pretty`), with the
//! fields of the request span (`request_id`, `trace_id`, ...) on every line.

use std::io::{BufWriter, Stdout, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
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

/// Writes out what is still buffered when dropped: hold it until the process is about to exit.
#[must_use = "dropping the guard flushes the log; hold it until exit"]
pub struct LogGuard(Buffer);

type Buffer = Arc<Mutex<BufWriter<Stdout>>>;

/// The subscriber's writer: each line is appended to the shared buffer under its lock.
#[derive(Clone)]
struct BufferedStdout(Buffer);

/// One line's hold on the buffer.
struct Line<'a>(MutexGuard<'a, BufWriter<Stdout>>);

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes)
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Lines are flushed by size and time, not one by one.
        Ok(())
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        flush(&self.0);
    }
}

/// How long a log line may wait in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Installs the process-wide subscriber. Calling it again is harmless (the first one stays).
///
/// Lines are formatted on the thread that logs and appended to a 64 KiB buffer in front of
/// stdout, which goes out when it is full, every [`FLUSH_INTERVAL`], and when the [`LogGuard`]
/// is dropped (as nginx's `access_log ... buffer=64k flush=...`): under load thousands of
/// lines leave in one `write` instead of one each.
pub fn init(config: &LogConfig) -> Result<LogGuard, ConfigError> {
    let filter = EnvFilter::try_new(&config.filter)
        .map_err(|e| ConfigError::new("RUST_LOG", e.to_string()))?;
    let buffer = Arc::new(Mutex::new(BufWriter::with_capacity(
        64 * 1024,
        std::io::stdout(),
    )));
    let flusher = Arc::downgrade(&buffer);
    std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(move || {
            while let Some(buffer) = flusher.upgrade() {
                flush(&buffer);
                drop(buffer);
                std::thread::sleep(FLUSH_INTERVAL);
            }
        })
        .map_err(|e| ConfigError::new("RUST_LOG", format!("cannot start the log flusher: {e}")))?;
    let writer = BufferedStdout(buffer.clone());
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Json => registry.with(json_layer(writer)).try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init(),
    };
    // An already-installed subscriber (tests, the all-in-one runner) is fine.
    drop(result);
    Ok(LogGuard(buffer))
}

/// The JSON line format: `timestamp`, `level`, `target`, `message`, the event's fields and
/// those of every enclosing span (`request_id`, `trace_id`, `span_id`, ...) at the top level.
pub fn json_layer<S, W>(writer: W) -> json_subscriber::JsonLayer<S, W>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    let mut layer = json_subscriber::JsonLayer::new(writer);
    layer
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_flattened_event()
        .with_top_level_flattened_span_list();
    layer
}

fn flush(buffer: &Mutex<BufWriter<Stdout>>) {
    let mut buffer = buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Nowhere to report a failing stdout; the next flush tries again.
    let _ = buffer.flush();
}
