//! Forwarding: prefix routing with the prefix stripped, pooled keep-alive connections,
//! hop-by-hop headers removed, `X-Forwarded-*` and `traceparent` set, bodies streamed.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use common::Problem;
use common::metrics::RouteLabel;
use common::request::{PassThrough, RequestContext, TRACEPARENT};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::GatewayConfig;

/// An upstream: where requests go and under which name they are reported.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name in logs and readiness.
    pub name: String,
    /// `http://host:port`, no path.
    origin: String,
    /// Base path of the upstream, without a trailing slash (usually empty).
    base_path: String,
}

impl Upstream {
    /// An upstream at `url` (`http://host:port[/base]`).
    pub fn new(name: &str, url: &url::Url) -> Self {
        let host = url.host_str().unwrap_or("localhost");
        let origin = match url.port() {
            Some(port) => format!("http://{host}:{port}"),
            None => format!("http://{host}"),
        };
        Self {
            name: name.to_owned(),
            origin,
            base_path: url.path().trim_end_matches('/').to_owned(),
        }
    }

    /// The URI of `path_and_query` on this upstream.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Ok(Uri::try_from(format!(
            "{}{}{}",
            self.origin, self.base_path, path_and_query
        ))?)
    }
}

/// A prefix route.
#[derive(Debug, Clone)]
struct Route {
    prefix: String,
    upstream: Upstream,
}

/// The forwarding half of the gateway: its routes and its connection pool.
#[derive(Clone)]
pub struct Proxy {
    routes: Vec<Route>,
    fallback: Option<Upstream>,
    client: Client<HttpConnector, Body>,
    upstream_timeout: Duration,
    max_body_bytes: usize,
}

/// Where a request goes: the upstream, the path to ask it for, and the prefix that was removed.
struct Target<'a> {
    upstream: &'a Upstream,
    path: String,
    prefix: Option<&'a str>,
}

impl Proxy {
    /// Builds the routes and one keep-alive connection pool shared by all upstreams.
    pub fn new(config: &GatewayConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| Route {
                prefix: r.prefix.trim_end_matches('/').to_owned(),
                upstream: Upstream::new(&r.name, &r.upstream),
            })
            .collect();
        // Longest prefix first, so `/a/b` wins over `/a`.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self {
            routes,
            fallback: config
                .fallback
                .as_ref()
                .map(|url| Upstream::new("fallback", url)),
            client,
            upstream_timeout: config.upstream_timeout,
            max_body_bytes: config.http.max_body_bytes,
        }
    }

    /// The prefix-routed upstreams (the fallback excluded), for readiness.
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.routes.iter().map(|r| &r.upstream)
    }

    /// The shared client, for readiness probes.
    pub fn client(&self) -> &Client<HttpConnector, Body> {
        &self.client
    }

    fn resolve<'a>(&'a self, path: &str) -> Option<Target<'a>> {
        for route in &self.routes {
            if let Some(rest) = path.strip_prefix(route.prefix.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                let rest = if rest.is_empty() { "/" } else { rest };
                return Some(Target {
                    upstream: &route.upstream,
                    path: rest.to_owned(),
                    prefix: Some(route.prefix.as_str()),
                });
            }
        }
        self.fallback.as_ref().map(|upstream| Target {
            upstream,
            path: path.to_owned(),
            prefix: None,
        })
    }

    /// Forwards `request` to its upstream and streams the answer back.
    pub async fn forward(&self, request: Request) -> Response {
        let Some(target) = self.resolve(request.uri().path()) else {
            return Problem::not_found(format!("no route for {}", request.uri().path()))
                .into_response();
        };
        if content_length(request.headers()).is_some_and(|len| len > self.max_body_bytes as u64) {
            return Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response();
        }
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{}?{query}", target.path),
            None => target.path.clone(),
        };
        let uri = match target.upstream.uri(&path_and_query) {
            Ok(uri) => uri,
            Err(_) => {
                return Problem::malformed("the request path cannot be forwarded").into_response();
            }
        };
        let upstream_name = target.upstream.name.clone();
        // The route template the metrics and logs name: `/accounts/{*rest}`, or `{*fallback}`.
        let route_label = RouteLabel(match target.prefix {
            Some(prefix) => format!("{prefix}/{{*rest}}"),
            None => "{*fallback}".to_owned(),
        });
        tracing::Span::current().record("http.route", route_label.0.as_str());
        let outgoing = self.outgoing_request(request, uri, target.prefix);
        let mut response = match tokio::time::timeout(
            self.upstream_timeout,
            self.client.request(outgoing),
        )
        .await
        {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.extensions.insert(PassThrough);
                Response::from_parts(parts, Body::new(body))
            }
            Ok(Err(error)) => {
                tracing::warn!(upstream = %upstream_name, error = %error_chain(&error), "upstream request failed");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    format!("the {upstream_name} service could not be reached"),
                )
                .into_response()
            }
            Err(_) => {
                tracing::warn!(upstream = %upstream_name, timeout = ?self.upstream_timeout, "upstream timed out");
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!("the {upstream_name} service did not answer in time"),
                )
                .into_response()
            }
        };
        response.extensions_mut().insert(route_label);
        response
    }

    fn outgoing_request(&self, request: Request, uri: Uri, prefix: Option<&str>) -> Request {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let trace = request
            .extensions()
            .get::<RequestContext>()
            .map(|ctx| ctx.trace);
        let (mut parts, body) = request.into_parts();
        let original_host = parts.headers.get(header::HOST).cloned();
        strip_hop_by_hop(&mut parts.headers);
        let headers = &mut parts.headers;
        // Let the client set Host to the upstream; keep the original in X-Forwarded-Host.
        headers.remove(header::HOST);
        if let Some(ip) = peer {
            let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        match original_host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
        match prefix.map(HeaderValue::from_str) {
            Some(Ok(value)) => headers.insert(X_FORWARDED_PREFIX, value),
            _ => headers.remove(X_FORWARDED_PREFIX),
        };
        if let Some(trace) = trace {
            headers.insert(TRACEPARENT, trace.to_header());
        }
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let body = Body::new(http_body_util::Limited::new(body, self.max_body_bytes));
        Request::from_parts(parts, body)
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Removes RFC 9110 §7.6.1 connection-specific headers, including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::Env;

    fn proxy(fallback: Option<&str>) -> Proxy {
        let mut env = Env::default();
        if let Some(url) = fallback {
            env = env.with("GATEWAY_FALLBACK_URL", url);
        }
        Proxy::new(&GatewayConfig::from_env(&env).unwrap())
    }

    #[test]
    fn prefixes_are_stripped_only_at_segment_boundaries() {
        let proxy = proxy(None);
        let target = proxy.resolve("/accounts/healthz").unwrap();
        assert_eq!(
            (target.upstream.name.as_str(), target.path.as_str()),
            ("accounts", "/healthz")
        );
        assert_eq!(proxy.resolve("/payments").unwrap().path, "/");
        assert_eq!(proxy.resolve("/payments/").unwrap().path, "/");
        assert!(proxy.resolve("/paymentsx/1").is_none());
        assert!(proxy.resolve("/other").is_none());
    }

    #[test]
    fn other_paths_go_to_the_fallback_unchanged() {
        let proxy = proxy(Some("http://127.0.0.1:9000/legacy/"));
        let target = proxy.resolve("/admin/login/").unwrap();
        assert_eq!(target.upstream.name, "fallback");
        assert_eq!(
            target
                .upstream
                .uri(&format!("{}?next=/", target.path))
                .unwrap(),
            "http://127.0.0.1:9000/legacy/admin/login/?next=/"
        );
        assert!(target.prefix.is_none());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }
}
