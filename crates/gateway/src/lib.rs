//! The gateway: the one public entry point, routing `/accounts/*` and `/payments/*` (prefix
//! stripped) to the services over pooled keep-alive connections, and everything else to the
//! fallback upstream if one is configured.

pub mod breaker;
pub mod client;
pub mod config;
pub mod limit;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use common::auth::{HttpJwks, TokenVerifier, VerifierSettings};
use common::health::{HealthCheck, Readiness};
use http::HeaderValue;
use limit::{Decision, Limiter, RateLimitSettings};
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;
use proxy::{Proxy, Upstream};

/// The service's name in logs and spans.
pub const SERVICE: &str = "gateway";

/// A built gateway: listener bound, not yet serving.
pub struct Application {
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    workers: usize,
    grace: Duration,
}

impl Application {
    /// Binds `config.addr` (port 0 picks a free port).
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        for route in &config.routes {
            tracing::info!(prefix = %route.prefix, upstream = %route.upstream, "route");
        }
        let redis = match &config.redis_url {
            Some(url) if config.rate_limit.is_some() => Some((
                limit::connect_redis(url).await?,
                config.redis_prefix.clone(),
            )),
            _ => None,
        };
        let listener = common::server::bind(config.addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on GATEWAY_ADDR {}: {e}", config.addr))?;
        Ok(Self {
            listener,
            gateway: Gateway::new(&config, redis),
            workers: config.workers,
            grace: config.http.shutdown_grace,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires and in-flight requests have finished.
    ///
    /// Like nginx's worker processes, each of the `GATEWAY_WORKERS` threads runs a
    /// single-threaded runtime that accepts from the shared listening socket and keeps its own
    /// upstream connections, so a request never changes threads on its way through; breakers,
    /// rate limits, metrics and the key cache are shared by all of them.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!(service = SERVICE, %addr, workers = self.workers, "listening");
        let listener = self.listener.into_std()?;
        // A worker that fails stops the others; the caller's token is left alone.
        let stop = shutdown.child_token();
        let mut finished = Vec::with_capacity(self.workers);
        for index in 0..self.workers {
            let listener = listener.try_clone()?;
            let router = self.gateway.router();
            let stop = stop.clone();
            let grace = self.grace;
            let (done, finished_rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    let result = serve_worker(listener, router, stop.clone(), grace);
                    if result.is_err() {
                        stop.cancel();
                    }
                    let _ = done.send(result);
                })?;
            finished.push(finished_rx);
        }
        drop(listener);
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

/// One worker thread: a single-threaded runtime serving `router` on `listener`.
fn serve_worker(
    listener: std::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        common::server::serve(listener, router, shutdown, grace)
            .await
            .map_err(|e| anyhow::anyhow!("gateway server failed: {e}"))
    })
}

/// What every worker shares: routes and their breakers, the rate limiter, the token verifier,
/// metrics and readiness. Each worker's [`Gateway::router`] adds a connection pool of its own.
#[derive(Clone)]
pub struct Gateway {
    edge: Edge,
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
        let proxy = Arc::new(Proxy::new(config, &metrics));
        let readiness = proxy
            .upstreams()
            .fold(Readiness::new(), |readiness, upstream| {
                readiness.with(Arc::new(UpstreamCheck {
                    upstream: upstream.clone(),
                    proxy: proxy.clone(),
                }))
            });
        let mut settings = VerifierSettings::new(config.token_issuer.clone(), "accounts");
        settings.audiences.push("payments".to_owned());
        let edge = Edge {
            proxy,
            limiter: config
                .rate_limit
                .map(|settings| Arc::new(Limiter::new(settings, redis, &metrics))),
            verifier: Arc::new(TokenVerifier::new(
                Arc::new(HttpJwks::new(config.jwks_url.clone())),
                settings,
            )),
            rate_limited: metrics.counter(
                "gateway_rate_limited_total",
                "Requests refused with 429 by the rate limiter.",
                &[],
            ),
            trusted_proxies: config.trusted_proxies.clone().into(),
        };
        if let Some(limiter) = &edge.limiter {
            // Forget idle clients now and then, so the in-process table stays small.
            let limiter = Arc::downgrade(limiter);
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_secs(60));
                loop {
                    interval.tick().await;
                    match limiter.upgrade() {
                        Some(limiter) => limiter.shrink(),
                        None => break,
                    }
                }
            });
        }
        Self {
            edge,
            readiness,
            metrics,
            http: config.http.clone(),
        }
    }

    /// A router for one worker: its own probes and metrics, and the proxy (with a connection
    /// pool of its own) for every other path.
    pub fn router(&self) -> Router {
        let edge = Edge {
            proxy: Arc::new(self.edge.proxy.with_own_pool()),
            ..self.edge.clone()
        };
        let routes = Router::new()
            .merge(common::health::routes(self.readiness.clone()))
            .fallback(forward)
            .with_state(Arc::new(edge));
        common::server::finish(routes, SERVICE, &self.http, &self.metrics)
    }
}

/// The edge: rate limiting in front of the proxy.
#[derive(Clone)]
struct Edge {
    proxy: Arc<Proxy>,
    limiter: Option<Arc<Limiter>>,
    verifier: Arc<TokenVerifier>,
    rate_limited: prometheus::IntCounterVec,
    trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl Edge {
    /// Who is asking: the subject of a valid token, else the client's IP.
    async fn client_key(&self, caller: Caller) -> String {
        let Caller { token, ip } = caller;
        if let Some(token) = token
            && let Ok(claims) = self.verifier.verify(&token).await
        {
            return format!("sub:{}", claims.sub);
        }
        format!("ip:{ip}")
    }
}

/// The parts of a request that identify its client.
struct Caller {
    token: Option<String>,
    ip: String,
}

impl Caller {
    fn of(request: &Request, trusted_proxies: &[ipnet::IpNet]) -> Self {
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_owned());
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| {
                client::address(addr.ip(), request.headers(), trusted_proxies).to_string()
            })
            .unwrap_or_default();
        Self { token, ip }
    }
}

async fn forward(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let route = edge.proxy.route_of(request.uri().path());
    let mut quota = None;
    if let (Some(limiter), Some(_)) = (&edge.limiter, &route) {
        let client = edge
            .client_key(Caller::of(&request, &edge.trusted_proxies))
            .await;
        let policy = limiter.settings();
        match limiter.check(&client).await {
            Decision::Allowed { remaining, reset } => quota = Some((policy, remaining, reset)),
            Decision::Limited { retry_after } => {
                edge.rate_limited.with_label_values::<&str>(&[]).inc();
                let seconds = ceil_seconds(retry_after).max(1);
                let mut response = common::Problem::new(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests; retry in {seconds} s"),
                )
                .with_header(http::header::RETRY_AFTER, HeaderValue::from(seconds))
                .into_response();
                rate_limit_headers(response.headers_mut(), policy, 0, retry_after);
                if let Some(route) = route {
                    response.extensions_mut().insert(route);
                }
                return response;
            }
        }
    }
    let mut response = edge.proxy.forward(request).await;
    if let Some((policy, remaining, reset)) = quota {
        rate_limit_headers(response.headers_mut(), policy, remaining, reset);
    }
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

fn ceil_seconds(duration: std::time::Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers): the burst as the
/// quota over the time it takes to refill, what remains now, and when it is full again.
fn rate_limit_headers(
    headers: &mut http::HeaderMap,
    policy: RateLimitSettings,
    remaining: u32,
    reset: std::time::Duration,
) {
    let window = policy.burst.get().div_ceil(policy.rps.get()).max(1);
    let values = [
        (
            "ratelimit-policy",
            format!("\"default\";q={};w={window}", policy.burst),
        ),
        (
            "ratelimit",
            format!("\"default\";r={remaining};t={}", ceil_seconds(reset)),
        ),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// Readiness check `upstream:<name>`: the upstream's own `/readyz` answers 200.
struct UpstreamCheck {
    upstream: Upstream,
    proxy: Arc<Proxy>,
}

#[async_trait::async_trait]
impl HealthCheck for UpstreamCheck {
    fn name(&self) -> String {
        format!("upstream:{}", self.upstream.name)
    }

    fn component_type(&self) -> &'static str {
        "component"
    }

    async fn check(&self) -> Result<(), String> {
        let uri = self.upstream.uri("/readyz").map_err(|e| e.to_string())?;
        let request = Request::get(uri)
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let response = self
            .proxy
            .client()
            .request(request)
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("answered {status}")),
        }
    }
}
