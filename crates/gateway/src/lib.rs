//! The gateway: the one public entry point, routing `/accounts/*` and `/payments/*` (prefix
//! stripped) to the services over pooled keep-alive connections, and everything else to the
//! fallback upstream if one is configured.

pub mod config;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use common::health::{HealthCheck, Readiness};
use common::server::Service;
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
        let router = router(&config);
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

/// The gateway's router: its own probes, and the proxy for every other path.
pub fn router(config: &GatewayConfig) -> Router {
    let proxy = Arc::new(Proxy::new(config));
    let readiness = proxy
        .upstreams()
        .fold(Readiness::new(), |readiness, upstream| {
            readiness.with(Arc::new(UpstreamCheck {
                upstream: upstream.clone(),
                proxy: proxy.clone(),
            }))
        });
    let routes = Router::new()
        .merge(common::health::routes(readiness))
        .fallback(forward)
        .with_state(proxy);
    common::server::finish(
        routes,
        SERVICE,
        &config.http,
        &common::metrics::Metrics::new(),
    )
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    proxy.forward(request).await
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
