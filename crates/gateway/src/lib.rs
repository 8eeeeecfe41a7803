//! The gateway: the one public entry point, routing `/accounts/*` and `/payments/*` (prefix
//! stripped) to the services over pooled keep-alive connections, and everything else to the
//! fallback upstream if one is configured.

pub mod breaker;
pub mod config;
pub mod limit;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use common::auth::{HttpJwks, TokenVerifier, VerifierSettings};
use common::health::{HealthCheck, Readiness};
use common::server::Service;
use http::HeaderValue;
use limit::{Decision, Limiter, RateLimitSettings};
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;
use proxy::{Proxy, Upstream};

/// The service's name in logs and spans.
pub const SERVICE: &str = "gateway";

/// A built gateway: listener bound, not yet serving.
pub struct Application {
    service: Service,
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
        let router = router(&config, redis);
        Ok(Self {
            service: Service::bind(SERVICE, "GATEWAY_ADDR", config.addr, router, &config.http)
                .await?,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    /// Serves until `shutdown` fires and in-flight requests have finished.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run(shutdown).await
    }
}

/// The gateway's router: its own probes and metrics, and the proxy for every other path.
/// `redis`, when given, holds the rate limits shared by every gateway.
pub fn router(
    config: &GatewayConfig,
    redis: Option<(redis::aio::ConnectionManager, String)>,
) -> Router {
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
    let edge = Arc::new(Edge {
        proxy,
        limiter: config
            .rate_limit
            .map(|settings| Arc::new(Limiter::new(settings, redis))),
        verifier: TokenVerifier::new(Arc::new(HttpJwks::new(config.jwks_url.clone())), settings),
        rate_limited: metrics.counter(
            "gateway_rate_limited_total",
            "Requests refused with 429 by the rate limiter.",
            &[],
        ),
    });
    if let Some(limiter) = edge.limiter.clone() {
        // Forget idle clients now and then, so the in-process table stays small.
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                interval.tick().await;
                limiter.shrink();
            }
        });
    }
    let routes = Router::new()
        .merge(common::health::routes(readiness))
        .fallback(forward)
        .with_state(edge);
    common::server::finish(routes, SERVICE, &config.http, &metrics)
}

/// The edge: rate limiting in front of the proxy.
struct Edge {
    proxy: Arc<Proxy>,
    limiter: Option<Arc<Limiter>>,
    verifier: TokenVerifier,
    rate_limited: prometheus::IntCounterVec,
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
    fn of(request: &Request) -> Self {
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
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_default();
        Self { token, ip }
    }
}

async fn forward(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let route = edge.proxy.route_of(request.uri().path());
    let mut quota = None;
    if let (Some(limiter), Some(_)) = (&edge.limiter, &route) {
        let client = edge.client_key(Caller::of(&request)).await;
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
