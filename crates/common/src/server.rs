//! Serving a service: the standard layers, binding, graceful shutdown, and what every
//! binary's `main` shares: the subcommands every service has (`serve`, `healthcheck` for
//! container probes, `migrate`) and running them.

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream as TcpStreamTokio};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::{ConfigError, Env, HttpConfig};
use crate::db::Pool;
use crate::metrics::{Metrics, metrics_endpoint};
use crate::problem::Problem;
use crate::request::{RequestObserver, RequestSpans, record_route, request_context};
use crate::telemetry::{self, LogConfig};

/// Adds what every service's router needs, outermost first: the request context (request id,
/// trace, span, access log, problem+json for bare errors such as an unknown path's 404), panic
/// recovery, the body limit, route templates on spans and metrics, and `GET /metrics`. Call it last.
pub fn finish(
    router: Router,
    service: &'static str,
    http: &HttpConfig,
    metrics: &Metrics,
) -> Router {
    router
        .route(
            "/metrics",
            get(metrics_endpoint).with_state(metrics.clone()),
        )
        .route_layer(from_fn(record_route))
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_problem))
        .layer(from_fn_with_state(
            RequestObserver {
                service,
                metrics: metrics.clone(),
                spans: RequestSpans::Always,
            },
            request_context,
        ))
}

fn panic_problem(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    Problem::internal().into_response()
}

/// A bound service that is not serving yet: its listener, its router and its database.
pub struct Service {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    database: Option<Pool>,
    grace: Duration,
}

impl Service {
    /// A service that will serve `router` on `listener`.
    pub fn new(
        name: &'static str,
        listener: TcpListener,
        router: Router,
        http: &HttpConfig,
    ) -> Self {
        Self {
            name,
            listener,
            router,
            database: None,
            grace: http.shutdown_grace,
        }
    }

    /// Binds `addr` (the value of the variable `variable`, named if binding fails) for `router`.
    pub async fn bind(
        name: &'static str,
        variable: &str,
        addr: SocketAddr,
        router: Router,
        http: &HttpConfig,
    ) -> anyhow::Result<Self> {
        let listener = bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {variable} {addr}: {e}"))?;
        Ok(Self::new(name, listener, router, http))
    }

    /// The database to close once the last request has finished.
    pub fn with_database(mut self, database: Pool) -> Self {
        self.database = Some(database);
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires, lets in-flight requests finish, then closes the database.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(service = self.name, addr = %self.listener.local_addr()?, "listening");
        let result = serve(self.listener, self.router, shutdown, self.grace).await;
        if let Some(database) = self.database {
            database.close().await;
        }
        tracing::info!(service = self.name, "stopped");
        result.map_err(|e| anyhow::anyhow!("{} server failed: {e}", self.name))
    }
}

/// Binds `addr` (port 0 picks a free port; ask the listener which).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `router` until `shutdown` is cancelled, then lets in-flight requests finish for up
/// to `grace` before giving up on them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    serve_with(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
        shutdown,
        grace,
    )
    .await
}

/// The listener [`serve_with`] accepts from: a TCP listener whose connections have
/// `TCP_NODELAY` set.
pub type Listener = TapIo<TcpListener, fn(&mut TcpStreamTokio)>;

/// Serves what `make_service` makes for each connection (axum's server: HTTP/1.1 and h2c,
/// graceful shutdown), as [`serve`] does for a router.
pub async fn serve_with<M, S>(
    listener: TcpListener,
    make_service: M,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()>
where
    M: for<'a> tower::Service<
            axum::serve::IncomingStream<'a, Listener>,
            Error = Infallible,
            Response = S,
        > + Send
        + 'static,
    for<'a> <M as tower::Service<axum::serve::IncomingStream<'a, Listener>>>::Future: Send,
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    // Responses go out at once (no Nagle delay behind an unacknowledged segment).
    let listener: Listener = listener.tap_io(set_nodelay as fn(&mut TcpStreamTokio));
    let server = axum::serve(listener, make_service)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        result = server => result,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

fn set_nodelay(stream: &mut TcpStreamTokio) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// A cancellation token that fires on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    token
}

/// The subcommands every service binary has (each adds its own, e.g. `import-users`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum CommonCommand {
    /// Serve until Ctrl-C or SIGTERM (the default).
    Serve(ServeArgs),
    /// Probe a running instance's `/healthz` on the configured address: exit 0 when it answers
    /// 200 (a container health check, no curl needed).
    Healthcheck,
    /// Apply the database migrations, then exit (a Kubernetes Job before a rollout).
    Migrate,
}

/// The options of `serve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ServeArgs {
    /// Once listening, write the address bound (`127.0.0.1:43125`) to this file: for a
    /// supervisor or a test that asked for port 0.
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<std::path::PathBuf>,
}

impl ServeArgs {
    /// Writes `addr` to the `--addr-file`, if one was asked for (whole or not at all: written
    /// beside it, then renamed).
    pub fn announce(&self, addr: SocketAddr) -> anyhow::Result<()> {
        let Some(path) = &self.addr_file else {
            return Ok(());
        };
        let partial = path.with_extension("partial");
        std::fs::write(&partial, addr.to_string())
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|e| anyhow::anyhow!("cannot write --addr-file {}: {e}", path.display()))
    }
}

/// The configuration, or exit code 2 with a message naming the variable at fault.
fn configuration<C>(
    service: &'static str,
    load: impl FnOnce(&Env) -> Result<C, ConfigError>,
) -> Result<C, ExitCode> {
    load(&Env::from_process()).map_err(|error| {
        eprintln!("{service}: {error}");
        ExitCode::from(2)
    })
}

/// `healthcheck`: exit 0 when the service configured by the environment answers `/healthz`.
pub fn run_healthcheck<C>(
    service: &'static str,
    load: impl FnOnce(&Env) -> Result<C, ConfigError>,
    probe_addr: impl FnOnce(&C) -> SocketAddr,
) -> ExitCode {
    match configuration(service, load) {
        Ok(config) if probe(probe_addr(&config)) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(code) => code,
    }
}

/// `serve`, the whole `main` of a service: read the configuration, start logging, and run
/// `start` until a signal. Configuration errors print the variable at fault and exit 2.
pub fn run_binary<C, F, Fut>(
    service: &'static str,
    load: impl FnOnce(&Env) -> Result<C, ConfigError>,
    start: F,
) -> ExitCode
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_task(service, load, |config| async move {
        let shutdown = shutdown_on_signal();
        start(config, shutdown).await
    })
}

/// A command of a service binary that runs once (`serve` until a signal, `migrate`,
/// `import-users`): the configuration read (exit 2 naming the variable at fault), logging
/// started, `task` run on a runtime; an error is logged and printed, and exits 1.
pub fn run_task<C, F, Fut>(
    service: &'static str,
    load: impl FnOnce(&Env) -> Result<C, ConfigError>,
    task: F,
) -> ExitCode
where
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = match configuration(service, load) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let log = match LogConfig::from_env(&Env::from_process()) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("{service}: {error}");
            return ExitCode::from(2);
        }
    };
    let log_guard = match telemetry::init(&log, service) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{service}: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{service}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(task(config));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "{service} stopped with an error"
            );
            eprintln!("{service}: {error:#}");
            ExitCode::FAILURE
        }
    };
    // The runtime first (its tasks may still log), then the log writer, which writes out the rest.
    drop(runtime);
    drop(log_guard);
    code
}

/// `GET /healthz` on a local address; true on 200. A wildcard address is probed on loopback.
pub fn probe(addr: SocketAddr) -> bool {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200")
    };
    attempt().unwrap_or(false)
}
