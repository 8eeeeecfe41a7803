//! The gateway: the one public entry point, routing `/accounts/*` and `/payments/*` (prefix
//! stripped) to the services over pooled keep-alive connections, and everything else to the
//! fallback upstream if one is configured.

#[macro_use]
mod request_log;

pub mod body;
pub mod breaker;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod edge;
pub mod error;
pub mod h1;
pub mod limit;
pub mod mirror;
pub mod pool;
pub mod proxy;
pub mod real_ip;
pub mod routes_file;
pub mod routing;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use common::health::Readiness;
use tokio_util::sync::CancellationToken;

pub use body::EdgeBody;
pub use config::GatewayConfig;
use edge::{Edge, Worker};
use routing::{Routing, UpstreamCheck};

/// The service's name in logs and spans.
pub const SERVICE: &str = "gateway";

/// `gateway serve`: the configuration from the environment, then serve until a signal.
pub fn serve(args: common::server::ServeArgs) -> std::process::ExitCode {
    common::server::run_binary(
        SERVICE,
        GatewayConfig::from_env,
        |config, shutdown| async move {
            let app = Application::build(config).await?;
            args.announce(app.local_addr()?)?;
            app.run(shutdown).await
        },
    )
}

/// A built gateway: listening sockets bound, not yet serving.
pub struct Application {
    /// One listening socket per worker, all on the same address.
    listeners: Vec<std::net::TcpListener>,
    gateway: Gateway,
    serving: connections::ServeSettings,
}

impl Application {
    /// Binds `config.addr` (port 0 picks a free port).
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let redis = match &config.redis_url {
            Some(url) if config.rate_limit.is_some() => Some((
                limit::connect_redis(url).await?,
                config.redis_prefix.clone(),
            )),
            _ => None,
        };
        let cannot = |e| anyhow::anyhow!("cannot listen on GATEWAY_ADDR {}: {e}", config.addr);
        let first = worker_listener(config.addr).map_err(cannot)?;
        // The others on the port the first one got (GATEWAY_ADDR may ask for port 0).
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..config.workers {
            listeners.push(worker_listener(addr).map_err(cannot)?);
        }
        Ok(Self {
            listeners,
            gateway: Gateway::new(&config, redis),
            serving: connections::ServeSettings {
                h2c: config.h2c,
                client_timeout: config.client_timeout,
                grace: config.http.shutdown_grace,
            },
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.listeners.first() {
            Some(listener) => listener.local_addr(),
            None => Err(std::io::Error::other("no listening socket")),
        }
    }

    /// Serves until `shutdown` fires and in-flight requests have finished.
    ///
    /// Like nginx's worker processes, each of the `GATEWAY_WORKERS` threads runs a
    /// single-threaded runtime that accepts from a listening socket of its own (`SO_REUSEPORT`:
    /// the kernel spreads new connections evenly over them, where one shared socket lets
    /// whichever worker wakes first take a whole burst) and keeps its own upstream connections,
    /// so a request never changes threads on its way through; breakers, rate limits, metrics
    /// and the key cache are shared by all of them.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let workers = self.listeners.len();
        tracing::info!(service = SERVICE, %addr, workers, "listening");
        // A worker that fails stops the others; the caller's token is left alone.
        let stop = shutdown.child_token();
        // Reloads, health checks and DNS refreshes, on the caller's runtime.
        self.gateway.routing.maintain(stop.clone());
        let mut finished = Vec::with_capacity(workers);
        for (index, listener) in self.listeners.into_iter().enumerate() {
            let service = self.gateway.worker(index);
            let stop = stop.clone();
            let serving = self.serving;
            let (done, finished_rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    let result = serve_worker(listener, service, serving, stop.clone());
                    if result.is_err() {
                        stop.cancel();
                    }
                    let _ = done.send(result);
                })?;
            finished.push(finished_rx);
        }
        let mut result = Ok(());
        for worker in finished {
            let outcome = worker
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a gateway worker panicked")));
            if let Err(error) = outcome {
                stop.cancel();
                result = Err(error);
            }
        }
        tracing::info!(service = SERVICE, "stopped");
        result
    }
}

/// A nonblocking listening socket on `addr` that other sockets may share (`SO_REUSEPORT`), with
/// the backlog tokio's own `bind` gives.
fn worker_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// One worker thread: a single-threaded runtime serving `service` on `listener`.
fn serve_worker(
    listener: std::net::TcpListener,
    service: Worker,
    serving: connections::ServeSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        connections::serve(listener, service, serving, shutdown).await;
        Ok(())
    })
}

/// What every worker shares: routes and their breakers, the rate limiter, the token verifier,
/// metrics and readiness. Each worker's [`Gateway::worker`] adds connections of its own.
#[derive(Clone)]
pub struct Gateway {
    edge: Edge,
    routing: Arc<Routing>,
    readiness: Readiness,
    metrics: common::metrics::Metrics,
    http: common::config::HttpConfig,
}

impl Gateway {
    /// The shared state. `redis`, when given, holds the rate limits shared by every gateway.
    pub fn new(
        config: &GatewayConfig,
        redis: Option<(redis::aio::ConnectionManager, String)>,
    ) -> Self {
        let metrics = common::metrics::Metrics::new();
        let routing = Routing::new(config, &metrics);
        // The upstreams of routes that readiness waits for (those of the routes at start).
        let readiness = routing
            .table()
            .routes()
            .filter(|route| route.readiness)
            .fold(Readiness::new(), |readiness, route| {
                readiness.with(Arc::new(UpstreamCheck {
                    routing: routing.clone(),
                    name: route.primary.name.clone(),
                }))
            });
        let edge = Edge::new(config, routing.clone(), redis, &metrics);
        Self {
            edge,
            routing,
            readiness,
            metrics,
            http: config.http.clone(),
        }
    }

    /// What worker `index` serves: the proxy (with connections of its own) and the
    /// gateway's own probes and metrics.
    pub fn worker(&self, index: usize) -> Worker {
        let own = Router::new().merge(common::health::routes(self.readiness.clone()));
        self.edge.worker(
            common::server::finish(own, SERVICE, &self.http, &self.metrics),
            index,
        )
    }
}

#[cfg(test)]
mod tests {
    use common::request::{RequestObserver, RequestSpans};
    use common::testkit::CapturedLog;

    #[test]
    fn worker_sockets_share_one_address_and_a_port_taken_otherwise_is_refused() {
        let first = super::worker_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = super::worker_listener(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        // A port another program holds (without SO_REUSEPORT) stays its own.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(super::worker_listener(taken.local_addr().unwrap()).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lines_logged_while_forwarding_carry_the_request_ids() {
        let (log, _guard) = CapturedLog::install();
        let observer = RequestObserver {
            service: "gateway",
            metrics: common::metrics::Metrics::new(),
            spans: RequestSpans::WhenExported,
        };
        let mut request = http::Request::get("/accounts/x")
            .header("x-request-id", "rid-7")
            .body(())
            .unwrap();
        let observation = observer.begin(&mut request);
        let context = observation.context();
        request_event!(context, warn!(upstream = "accounts", "upstream timed out"));
        // With spans exported the request's span carries the ids; they are not repeated.
        let span = tracing::info_span!("http_request", request_id = "rid-7");
        span.in_scope(|| request_event!(context, info!("retrying")));
        let failed = log
            .lines()
            .into_iter()
            .find(|line| line["message"] == "upstream timed out")
            .unwrap();
        assert_eq!(failed["request_id"], "rid-7");
        assert_eq!(failed["upstream"], "accounts");
        assert_eq!(failed["trace_id"], context.trace.trace_id_hex().as_str());
        let text = log.text();
        let retrying = text.lines().find(|line| line.contains("retrying")).unwrap();
        assert_eq!(retrying.matches("\"request_id\"").count(), 1, "{retrying}");
    }
}
