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

/// Logging configuration: `LOG_FORMAT` and `RUST_LOG`, and trace export (`OTEL_*`).
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// An `EnvFilter` directive, `info` by default.
    pub filter: String,
    /// Where spans are exported, if anywhere.
    pub traces: Option<TraceExport>,
}

/// OTLP trace export, configured by the standard OpenTelemetry variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The OTLP/HTTP traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    pub endpoint: String,
    /// `OTEL_SERVICE_NAME`, else the service's own name.
    pub service_name: Option<String>,
}

impl TraceExport {
    /// Reads the `OTEL_*` variables: export is on when an endpoint is set, unless
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Only `http/protobuf` is spoken.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        if env.flag_or("OTEL_SDK_DISABLED", false)?
            || env
                .get("OTEL_TRACES_EXPORTER")
                .is_some_and(|e| e.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        for variable in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = env.get(variable)
                && protocol != "http/protobuf"
            {
                return Err(ConfigError::new(
                    variable,
                    format!(
                        "{protocol:?} is not supported; use http/protobuf (the collector's port 4318)"
                    ),
                ));
            }
        }
        let endpoint = match (
            env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.to_owned()),
            (None, Some(base)) => (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("{}/v1/traces", base.trim_end_matches('/')),
            ),
            (None, None) => return Ok(None),
        };
        let (variable, endpoint) = endpoint;
        match url::Url::parse(&endpoint) {
            // The exporter's HTTP client has no TLS provider: an https:// endpoint would fail
            // on every export, silently. Say so at start instead.
            Ok(url) if url.scheme() == "http" => {}
            _ => {
                return Err(ConfigError::new(
                    variable,
                    format!(
                        "expected an http:// URL (a local or sidecar collector; TLS is not built in), got {endpoint:?}"
                    ),
                ));
            }
        }
        Ok(Some(Self {
            endpoint,
            service_name: env.get("OTEL_SERVICE_NAME").map(str::to_owned),
        }))
    }

    /// A tracer provider exporting in batches to the endpoint. Build it outside any async
    /// runtime (its HTTP client runs on a thread of its own).
    pub fn provider(
        &self,
        service: &str,
    ) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, ConfigError> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(self.endpoint.clone())
            .build()
            .map_err(|e| ConfigError::new("OTEL_EXPORTER_OTLP_ENDPOINT", e.to_string()))?;
        let name = self
            .service_name
            .clone()
            .unwrap_or_else(|| service.to_owned());
        Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(name)
                    .build(),
            )
            .build())
    }
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported (an [`otel_layer`] was made): without export, request handling
/// skips the work that only exported spans need.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The `tracing` layer that turns spans into OpenTelemetry spans for `provider`.
pub fn otel_layer<S>(
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
    service: &'static str,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_tracked_inactivity(false)
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
        Ok(Self {
            format,
            filter,
            traces: TraceExport::from_env(env)?,
        })
    }
}

/// Writes out what is still buffered when dropped: hold it until the process is about to exit.
#[must_use = "dropping the guard flushes the log; hold it until exit"]
pub struct LogGuard {
    buffer: Buffer,
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

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
        if let Some(provider) = self.traces.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "not every span could be exported");
        }
        flush(&self.buffer);
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
pub fn init(config: &LogConfig, service: &'static str) -> Result<LogGuard, ConfigError> {
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
    let traces = config
        .traces
        .as_ref()
        .map(|export| export.provider(service))
        .transpose()?;
    let registry = tracing_subscriber::registry().with(filter).with(
        traces
            .as_ref()
            .map(|provider| otel_layer(provider, service)),
    );
    let result = match config.format {
        LogFormat::Json => {
            let installed = registry.with(json_layer(writer)).try_init();
            if installed.is_ok() {
                // Only the process's first subscriber owns the buffer the access log shares.
                let _ = ACCESS_LOG.set(buffer.clone());
            }
            installed
        }
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init(),
    };
    // An already-installed subscriber (tests, the all-in-one runner) is fine.
    drop(result);
    Ok(LogGuard { buffer, traces })
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

/// The JSON log's buffer, for [`write_json_line`]; set when the JSON subscriber is installed.
static ACCESS_LOG: std::sync::OnceLock<Buffer> = std::sync::OnceLock::new();

/// Writes one JSON log line, put together by `write` (newline included), straight into the
/// JSON log's buffer, bypassing the subscriber's generic formatting (the gateway's access log,
/// as nginx's `access_log` is apart from its `error_log`). Returns false, writing nothing,
/// when the JSON log is not the installed subscriber (plain-text logs, tests), so the caller
/// logs through `tracing`.
pub fn write_json_line(write: impl FnOnce(&mut Vec<u8>)) -> bool {
    thread_local! {
        /// The line being put together, kept for the next one.
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Some(buffer) = ACCESS_LOG.get() else {
        return false;
    };
    LINE.with_borrow_mut(|line| {
        line.clear();
        write(line);
        let mut buffer = buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nowhere to report a failing stdout; the flusher tries again.
        let _ = buffer.write_all(line);
    });
    true
}

fn flush(buffer: &Mutex<BufWriter<Stdout>>) {
    let mut buffer = buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Nowhere to report a failing stdout; the next flush tries again.
    let _ = buffer.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(pairs: &[(&str, &str)]) -> Result<Option<TraceExport>, ConfigError> {
        TraceExport::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn trace_export_follows_the_standard_variables() {
        assert_eq!(export(&[]).unwrap(), None, "off without an endpoint");
        let base = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(base.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(base.service_name, None);
        let traces = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://tempo:4318/otlp/v1/traces",
            ),
            ("OTEL_SERVICE_NAME", "payments-eu"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(traces.endpoint, "http://tempo:4318/otlp/v1/traces");
        assert_eq!(traces.service_name.as_deref(), Some("payments-eu"));
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), off]).unwrap(),
                None
            );
        }
    }

    #[test]
    fn unsupported_trace_export_settings_name_their_variable() {
        for (pairs, variable) in [
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "not a url")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
        ] {
            assert_eq!(export(&pairs).unwrap_err().variable, variable);
        }
    }
}
