//! Gateway configuration, read once from the environment.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use common::config::{ConfigError, Env, HttpConfig};

use crate::breaker::BreakerSettings;
use crate::limit::RateLimitSettings;

pub use crate::routes_file::{
    AuthMode, Balance, HealthCheckConfig, MirrorConfig, PathLimit, RouteConfig, SplitConfig,
    UpstreamConfig,
};

/// The routes in force: the prefix routes (longest prefix need not come first) and the
/// fallback. What a routes-file reload replaces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteSet {
    /// Prefix routes.
    pub routes: Vec<RouteConfig>,
    /// Where every other path goes (the monolith); `None` → 404.
    pub fallback: Option<UpstreamConfig>,
}

/// The names of the headers that carry a verified caller to upstreams (`GATEWAY_AUTH_*_HEADER`).
/// Whatever a client sends under these names is always removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// The token's `sub` (default `X-Auth-Subject`).
    pub subject: http::HeaderName,
    /// Its scopes, space-separated (default `X-Auth-Scopes`).
    pub scopes: http::HeaderName,
    /// Its `client_id` (default `X-Auth-Client-Id`).
    pub client_id: http::HeaderName,
    /// Its `legacy_user_id`, when it has one (default `X-Auth-Legacy-User-Id`).
    pub legacy_user_id: http::HeaderName,
}

impl IdentityHeaders {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        // Leaked once per process start: names built from static text are copied for free
        // with every request, where shared ones would touch a count every core shares.
        let name = |variable: &str,
                    default: &'static str|
         -> Result<http::HeaderName, ConfigError> {
            let Some(raw) = env.get(variable) else {
                return Ok(http::HeaderName::from_static(default));
            };
            let lower = raw.trim().to_ascii_lowercase();
            http::HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| ConfigError::new(variable, format!("{raw:?} is not a header name")))?;
            Ok(http::HeaderName::from_static(Box::leak(
                lower.into_boxed_str(),
            )))
        };
        let headers = Self {
            subject: name("GATEWAY_AUTH_SUBJECT_HEADER", "x-auth-subject")?,
            scopes: name("GATEWAY_AUTH_SCOPES_HEADER", "x-auth-scopes")?,
            client_id: name("GATEWAY_AUTH_CLIENT_ID_HEADER", "x-auth-client-id")?,
            legacy_user_id: name(
                "GATEWAY_AUTH_LEGACY_USER_ID_HEADER",
                "x-auth-legacy-user-id",
            )?,
        };
        let all = headers.all();
        if all.iter().enumerate().any(|(i, a)| all[..i].contains(a)) {
            return Err(ConfigError::new(
                "GATEWAY_AUTH_SUBJECT_HEADER",
                "the four identity headers need four different names",
            ));
        }
        Ok(headers)
    }

    /// All four names.
    pub fn all(&self) -> [&http::HeaderName; 4] {
        [
            &self.subject,
            &self.scopes,
            &self.client_id,
            &self.legacy_user_id,
        ]
    }
}

/// Everything the gateway is configured with.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `GATEWAY_ADDR`, default `0.0.0.0:8080`.
    pub addr: SocketAddr,
    /// Prefix routes: `/accounts` → `GATEWAY_ACCOUNTS_URL`, `/payments` → `GATEWAY_PAYMENTS_URL`,
    /// and those of `GATEWAY_ROUTES_FILE` (a file route with the same prefix replaces one of
    /// these two); and the fallback, `GATEWAY_FALLBACK_URL` (or `fallback` in the routes file;
    /// the variable wins): where every other path goes (the monolith); unset → 404.
    pub routes: RouteSet,
    /// The routes the environment gives (before the file's), kept for reloads.
    env_routes: Vec<RouteConfig>,
    /// `GATEWAY_FALLBACK_URL`, kept for reloads.
    env_fallback: Option<url::Url>,
    /// `GATEWAY_ROUTES_FILE`: re-read on `SIGHUP` and when it changes.
    pub routes_file: Option<std::path::PathBuf>,
    /// `GATEWAY_ROUTES_POLL_MS` (default 2000; `0`: only on `SIGHUP`): how often the routes
    /// file is looked at for a change.
    pub routes_poll: Option<Duration>,
    /// `GATEWAY_AUTH_*_HEADER`: where a verified caller goes.
    pub identity_headers: IdentityHeaders,
    /// `GATEWAY_MIRROR_CONCURRENCY` (default 256 per worker): mirrored requests under way at
    /// once; past it, copies are dropped (and counted), never queued.
    pub mirror_concurrency: usize,
    /// `GATEWAY_CONNECT_TIMEOUT_MS`, default 1000.
    pub connect_timeout: Duration,
    /// `GATEWAY_UPSTREAM_IDLE_TIMEOUT_MS` (default 60000): how long an upstream connection is
    /// kept idle for the next request; below the upstream's own keep-alive timeout, the
    /// gateway closes idle connections before the upstream does, so none is picked just as
    /// the upstream closes it.
    pub upstream_idle_timeout: Duration,
    /// `GATEWAY_UPSTREAM_TIMEOUT_MS`: time allowed for an upstream's response headers, default 30000.
    pub upstream_timeout: Duration,
    /// `GATEWAY_UPSTREAM_READ_TIMEOUT_MS` (default 30000, nginx's `proxy_read_timeout`): time
    /// allowed between two reads of an upstream's response body (and for its first bytes,
    /// which go out with the response's head).
    pub upstream_read_timeout: Duration,
    /// `GATEWAY_CLIENT_TIMEOUT_MS` (default 75000, nginx's `keepalive_timeout`, longer than
    /// the 60 s idle timeout of the usual load balancers in front, so that they are the ones
    /// to close an idle connection): how long a client may take to send a
    /// request's headers, counted from the end of its previous request on a kept-alive
    /// connection (as nginx's `client_header_timeout` and `keepalive_timeout`); then the
    /// connection is closed. `0` (`None`): no limit, for a gateway behind a load balancer
    /// that enforces one.
    pub client_timeout: Option<Duration>,
    /// Shared HTTP settings.
    pub http: HttpConfig,
    /// `GATEWAY_RATE_LIMIT_RPS` / `GATEWAY_RATE_LIMIT_BURST` per client (default 1000 / 2000;
    /// `0` switches limiting off).
    pub rate_limit: Option<RateLimitSettings>,
    /// `[[limits]]` of the routes file: paths with a limit of their own, which replaces the
    /// default one for their requests (longest path first).
    pub path_limits: Vec<PathLimit>,
    /// `GATEWAY_REDIS_URL`: share rate limits between gateways through Redis.
    pub redis_url: Option<String>,
    /// `GATEWAY_REDIS_PREFIX` (default `gateway:ratelimit:`): the keys' prefix, so several
    /// environments can share one Redis.
    pub redis_prefix: String,
    /// `GATEWAY_JWKS_URL`: accounts' keys, to limit per token subject (default the local accounts).
    pub jwks_url: String,
    /// `ACCOUNTS_ISSUER`: the `iss` of tokens the gateway recognizes.
    pub token_issuer: String,
    /// `GATEWAY_BREAKER_FAILURES`, `GATEWAY_BREAKER_COOLDOWN_MS`.
    pub breaker: BreakerSettings,
    /// `GATEWAY_WORKERS`: worker threads, each with its own runtime and upstream connections
    /// (default: one per CPU).
    pub workers: usize,
    /// `GATEWAY_H2C` (default true): also accept HTTP/2 with prior knowledge (h2c) from
    /// clients that speak it; `false` serves HTTP/1.1 only.
    pub h2c: bool,
    /// `GATEWAY_RETRIES` (default 2): retries of connection failures, for safe methods and
    /// requests with an `Idempotency-Key` only.
    pub retries: u32,
    /// `GATEWAY_TRUSTED_PROXIES`: addresses and networks (`10.0.0.0/8,127.0.0.1`) of the load
    /// balancers in front of the gateway. A request from one of them is limited by the client
    /// address it reports in `X-Forwarded-For`; unset, the TCP peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `GATEWAY_BLOCKED_PATHS`: upstream paths never forwarded (`/metrics`: the services'
    /// operational endpoints, for a gateway facing the internet), matched after the prefix is
    /// stripped, on the path and everything under it; 404 as for no route. Unset: none.
    pub blocked_paths: Vec<String>,
}

impl GatewayConfig {
    /// Reads and checks the configuration.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let env_routes = vec![
            RouteConfig::plain(
                "/accounts",
                "accounts",
                upstream_url(env, "GATEWAY_ACCOUNTS_URL", "http://127.0.0.1:8081")?,
            ),
            RouteConfig::plain(
                "/payments",
                "payments",
                upstream_url(env, "GATEWAY_PAYMENTS_URL", "http://127.0.0.1:8082")?,
            ),
        ];
        let env_fallback = match env.get("GATEWAY_FALLBACK_URL") {
            Some(_) => Some(upstream_url(env, "GATEWAY_FALLBACK_URL", "")?),
            None => None,
        };
        let routes_file = env.get("GATEWAY_ROUTES_FILE").map(std::path::PathBuf::from);
        let (routes, path_limits) =
            load_routes(&env_routes, env_fallback.as_ref(), routes_file.as_deref())?;
        let millis = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let value: u64 = env.parse_or(name, default)?;
            if value == 0 {
                return Err(ConfigError::new(name, "must be above 0"));
            }
            Ok(Duration::from_millis(value))
        };
        let rps: u32 = env.parse_or("GATEWAY_RATE_LIMIT_RPS", 1000)?;
        let burst: u32 = env.parse_or("GATEWAY_RATE_LIMIT_BURST", rps.saturating_mul(2))?;
        let rate_limit = match (NonZeroU32::new(rps), NonZeroU32::new(burst)) {
            (Some(rps), Some(burst)) => Some(RateLimitSettings { rps, burst }),
            _ => None,
        };
        let redis_url = env.get("GATEWAY_REDIS_URL").map(str::to_owned);
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::new(
                "GATEWAY_REDIS_URL",
                "expected redis://host:port",
            ));
        }
        let failures: u32 = env.parse_or("GATEWAY_BREAKER_FAILURES", 5)?;
        if failures == 0 {
            return Err(ConfigError::new(
                "GATEWAY_BREAKER_FAILURES",
                "must be above 0",
            ));
        }
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let workers: usize = env.parse_or("GATEWAY_WORKERS", cpus)?;
        if workers == 0 {
            return Err(ConfigError::new("GATEWAY_WORKERS", "must be above 0"));
        }
        Ok(Self {
            workers,
            h2c: env.flag_or("GATEWAY_H2C", true)?,
            rate_limit,
            path_limits,
            redis_url,
            redis_prefix: env.string_or("GATEWAY_REDIS_PREFIX", "gateway:ratelimit:"),
            jwks_url: env.string_or(
                "GATEWAY_JWKS_URL",
                "http://127.0.0.1:8081/.well-known/jwks.json",
            ),
            token_issuer: env
                .string_or("ACCOUNTS_ISSUER", "http://localhost:8080/accounts")
                .trim_end_matches('/')
                .to_owned(),
            breaker: BreakerSettings {
                consecutive_failures: failures,
                window: 20,
                failure_rate: 0.5,
                cooldown: millis("GATEWAY_BREAKER_COOLDOWN_MS", 5000)?,
            },
            retries: env.parse_or("GATEWAY_RETRIES", 2)?,
            trusted_proxies: trusted_proxies(env)?,
            blocked_paths: blocked_paths(env)?,
            addr: env.parse_or("GATEWAY_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            routes,
            env_routes,
            env_fallback,
            routes_file,
            routes_poll: match env.parse_or("GATEWAY_ROUTES_POLL_MS", 2000u64)? {
                0 => None,
                millis => Some(Duration::from_millis(millis)),
            },
            identity_headers: IdentityHeaders::from_env(env)?,
            mirror_concurrency: match env.parse_or("GATEWAY_MIRROR_CONCURRENCY", 256usize)? {
                0 => {
                    return Err(ConfigError::new(
                        "GATEWAY_MIRROR_CONCURRENCY",
                        "must be above 0",
                    ));
                }
                n => n,
            },
            connect_timeout: millis("GATEWAY_CONNECT_TIMEOUT_MS", 1000)?,
            upstream_idle_timeout: millis("GATEWAY_UPSTREAM_IDLE_TIMEOUT_MS", 60_000)?,
            upstream_timeout: millis("GATEWAY_UPSTREAM_TIMEOUT_MS", 30_000)?,
            upstream_read_timeout: millis("GATEWAY_UPSTREAM_READ_TIMEOUT_MS", 30_000)?,
            client_timeout: match env.parse_or("GATEWAY_CLIENT_TIMEOUT_MS", 75_000u64)? {
                0 => None,
                millis => Some(Duration::from_millis(millis)),
            },
            http: HttpConfig::from_env(env)?,
        })
    }

    /// Points the route named `name` at `upstream` (the all-in-one runner uses the ports it got).
    pub fn set_upstream(&mut self, name: &str, upstream: url::Url) {
        for route in self
            .routes
            .routes
            .iter_mut()
            .chain(self.env_routes.iter_mut())
            .filter(|r| r.name == name)
        {
            route.upstream.urls = vec![upstream.clone()];
        }
    }

    /// The routes again: the environment's, then the routes file read anew (a reload). A
    /// file that cannot be read or is not valid is an error that says why; nothing of it is
    /// used. (Path limits are read at start only.)
    pub fn reload_routes(&self) -> Result<RouteSet, ConfigError> {
        load_routes(
            &self.env_routes,
            self.env_fallback.as_ref(),
            self.routes_file.as_deref(),
        )
        .map(|(routes, _)| routes)
    }
}

/// The environment's routes with those of the routes file at `path` (if any), and the file's
/// path limits.
fn load_routes(
    env_routes: &[RouteConfig],
    env_fallback: Option<&url::Url>,
    path: Option<&std::path::Path>,
) -> Result<(RouteSet, Vec<PathLimit>), ConfigError> {
    const VARIABLE: &str = "GATEWAY_ROUTES_FILE";
    let file = match path {
        None => crate::routes_file::FileRoutes::default(),
        Some(path) => {
            let at = |message: String| {
                ConfigError::new(VARIABLE, format!("{}: {message}", path.display()))
            };
            let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
            crate::routes_file::parse(&text).map_err(at)?
        }
    };
    let at = |message: String| ConfigError::new(VARIABLE, message);
    let routes = crate::routes_file::merge(env_routes.to_vec(), file.routes).map_err(at)?;
    let fallback = env_fallback
        .cloned()
        .or(file.fallback)
        .map(UpstreamConfig::single);
    Ok((RouteSet { routes, fallback }, file.limits))
}

/// The comma-separated items of `name`, trimmed (none when unset).
fn items<'a>(env: &'a Env, name: &str) -> impl Iterator<Item = &'a str> {
    env.get(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// `GATEWAY_BLOCKED_PATHS`: comma-separated absolute paths (`/metrics,/internal`).
fn blocked_paths(env: &Env) -> Result<Vec<String>, ConfigError> {
    items(env, "GATEWAY_BLOCKED_PATHS")
        .map(|item| {
            if item.starts_with('/') && item.len() > 1 {
                Ok(item.trim_end_matches('/').to_owned())
            } else {
                Err(ConfigError::new(
                    "GATEWAY_BLOCKED_PATHS",
                    format!("{item:?} is not an absolute path such as /metrics"),
                ))
            }
        })
        .collect()
}

/// `GATEWAY_TRUSTED_PROXIES`: comma-separated addresses or CIDR networks.
fn trusted_proxies(env: &Env) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    items(env, "GATEWAY_TRUSTED_PROXIES")
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "GATEWAY_TRUSTED_PROXIES",
                        format!("{item:?} is not an IP address or network (10.0.0.0/8)"),
                    )
                })
        })
        .collect()
}

fn upstream_url(env: &Env, name: &str, default: &str) -> Result<url::Url, ConfigError> {
    crate::routes_file::parse_upstream(&env.string_or(name, default))
        .map_err(|message| ConfigError::new(name, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_timeout_defaults_to_75_s_and_zero_switches_it_off() {
        let default = GatewayConfig::from_env(&Env::default()).unwrap();
        assert_eq!(default.client_timeout, Some(Duration::from_secs(75)));
        let off = Env::from_pairs([("GATEWAY_CLIENT_TIMEOUT_MS", "0")]);
        assert_eq!(GatewayConfig::from_env(&off).unwrap().client_timeout, None);
        let bad = Env::from_pairs([("GATEWAY_CLIENT_TIMEOUT_MS", "soon")]);
        let error = GatewayConfig::from_env(&bad).unwrap_err();
        assert_eq!(error.variable, "GATEWAY_CLIENT_TIMEOUT_MS");
    }

    #[test]
    fn blocked_paths_are_absolute() {
        let env = Env::from_pairs([("GATEWAY_BLOCKED_PATHS", "/metrics, /internal/")]);
        let config = GatewayConfig::from_env(&env).unwrap();
        assert_eq!(config.blocked_paths, ["/metrics", "/internal"]);
        for bad in ["metrics", "/"] {
            let env = Env::from_pairs([("GATEWAY_BLOCKED_PATHS", bad)]);
            let error = GatewayConfig::from_env(&env).unwrap_err();
            assert_eq!(error.variable, "GATEWAY_BLOCKED_PATHS", "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let env = Env::from_pairs([("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,::1")]);
        let config = GatewayConfig::from_env(&env).unwrap();
        let shown: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
        let bad = Env::from_pairs([("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local")]);
        let error = GatewayConfig::from_env(&bad).unwrap_err();
        assert_eq!(error.variable, "GATEWAY_TRUSTED_PROXIES");
        assert!(
            GatewayConfig::from_env(&Env::default())
                .unwrap()
                .trusted_proxies
                .is_empty()
        );
    }

    #[test]
    fn defaults_route_both_services_and_no_fallback() {
        let config = GatewayConfig::from_env(&Env::default()).unwrap();
        assert_eq!(config.addr.port(), 8080);
        assert_eq!(config.routes.routes.len(), 2);
        assert_eq!(
            config.routes.routes[0].upstream.urls[0].as_str(),
            "http://127.0.0.1:8081/"
        );
        assert!(config.routes.fallback.is_none());
        assert_eq!(
            config.rate_limit.map(|r| (r.rps.get(), r.burst.get())),
            Some((1000, 2000))
        );
        let off =
            GatewayConfig::from_env(&Env::from_pairs([("GATEWAY_RATE_LIMIT_RPS", "0")])).unwrap();
        assert!(off.rate_limit.is_none());
    }

    #[test]
    fn a_bad_upstream_names_its_variable() {
        for (name, value) in [
            ("GATEWAY_FALLBACK_URL", "not a url"),
            ("GATEWAY_PAYMENTS_URL", "https://payments"),
            ("GATEWAY_UPSTREAM_TIMEOUT_MS", "0"),
            ("GATEWAY_RATE_LIMIT_RPS", "lots"),
            ("GATEWAY_REDIS_URL", "localhost:6379"),
            ("GATEWAY_BREAKER_FAILURES", "0"),
            ("GATEWAY_WORKERS", "0"),
        ] {
            let env = Env::from_pairs([(name, value)]);
            assert_eq!(GatewayConfig::from_env(&env).unwrap_err().variable, name);
        }
    }

    fn with_routes_file(text: &str) -> (tempfile::NamedTempFile, Env) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let env = Env::from_pairs([("GATEWAY_ROUTES_FILE", file.path().to_str().unwrap())]);
        (file, env)
    }

    #[test]
    fn a_routes_file_adds_routes_replaces_a_prefix_and_sets_the_fallback() {
        let (_file, env) = with_routes_file(
            r#"
            fallback = "http://monolith:8000"

            [[routes]]
            prefix = "/reports/v2/"
            upstream = "http://reports:8083/base"
            readiness = false

            [[routes]]
            prefix = "/payments"
            upstream = "http://payments-canary:8082"
            name = "payments-canary"
            "#,
        );
        let config = GatewayConfig::from_env(&env).unwrap();
        let routes: Vec<_> = config
            .routes
            .routes
            .iter()
            .map(|r| {
                (
                    r.prefix.as_str(),
                    r.name.as_str(),
                    r.upstream.urls[0].as_str(),
                    r.readiness,
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("/accounts", "accounts", "http://127.0.0.1:8081/", true),
                (
                    "/reports/v2",
                    "reports-v2",
                    "http://reports:8083/base",
                    false
                ),
                (
                    "/payments",
                    "payments-canary",
                    "http://payments-canary:8082/",
                    true
                ),
            ]
        );
        assert_eq!(
            config.routes.fallback.unwrap().urls[0].as_str(),
            "http://monolith:8000/"
        );

        let env = env.with("GATEWAY_FALLBACK_URL", "http://other:9000");
        let config = GatewayConfig::from_env(&env).unwrap();
        assert_eq!(
            config.routes.fallback.unwrap().urls[0].as_str(),
            "http://other:9000/",
            "the variable wins over the file"
        );
    }

    #[test]
    fn a_routes_file_gives_paths_limits_of_their_own() {
        let (_file, env) = with_routes_file(
            r#"
            [[limits]]
            path = "/accounts/v1/token/"
            rps = 1
            burst = 5

            [[limits]]
            path = "/accounts"
            rps = 50
            name = "accounts-all"
            "#,
        );
        let limits = GatewayConfig::from_env(&env).unwrap().path_limits;
        let shown: Vec<_> = limits
            .iter()
            .map(|l| {
                (
                    l.path.as_str(),
                    l.name.as_str(),
                    l.settings.rps.get(),
                    l.settings.burst.get(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("/accounts/v1/token", "accounts-v1-token", 1, 5),
                ("/accounts", "accounts-all", 50, 100),
            ]
        );
    }

    #[test]
    fn a_route_may_list_hosts_check_tokens_split_and_mirror() {
        let (_file, env) = with_routes_file(
            r#"
            [[routes]]
            prefix = "/orders"
            upstream = ["http://a:8000/orders", "http://b:8000/orders"]
            balance = "least_request"
            max_fails = 3
            fail_timeout_ms = 10000
            dns_refresh_ms = 5000
            health_check = { path = "/healthz", interval_ms = 500 }
            auth = "required"
            scopes = ["orders:read"]
            strip_prefix = false
            split = { upstream = "http://orders:9000", weight = 12.5 }
            mirror = { upstream = "http://shadow:9000", methods = ["get", "POST"] }
            "#,
        );
        let config = GatewayConfig::from_env(&env).unwrap();
        let route = config
            .routes
            .routes
            .iter()
            .find(|r| r.prefix == "/orders")
            .unwrap();
        assert_eq!(route.upstream.urls.len(), 2);
        assert_eq!(route.upstream.balance, Balance::LeastRequest);
        assert_eq!(route.upstream.max_fails, Some(3));
        assert_eq!(route.upstream.fail_timeout, Some(Duration::from_secs(10)));
        assert_eq!(route.upstream.dns_refresh, Some(Duration::from_secs(5)));
        let check = route.upstream.health_check.as_ref().unwrap();
        assert_eq!(
            (check.path.as_str(), check.interval, check.timeout),
            (
                "/healthz",
                Duration::from_millis(500),
                Duration::from_millis(500)
            )
        );
        assert_eq!(route.auth, AuthMode::Required);
        assert_eq!(route.scopes, ["orders:read"]);
        assert!(!route.strip_prefix);
        let split = route.split.as_ref().unwrap();
        assert_eq!((split.name.as_str(), split.per_10k), ("orders-split", 1250));
        let mirror = route.mirror.as_ref().unwrap();
        assert_eq!(mirror.name, "orders-mirror");
        assert_eq!(mirror.methods, [http::Method::GET, http::Method::POST]);
        // Reading the file again gives the same routes.
        assert_eq!(config.reload_routes().unwrap(), config.routes);
    }

    #[test]
    fn identity_header_names_are_checked() {
        let env = Env::from_pairs([("GATEWAY_AUTH_SCOPES_HEADER", "X-Scopes")]);
        let config = GatewayConfig::from_env(&env).unwrap();
        assert_eq!(config.identity_headers.scopes.as_str(), "x-scopes");
        assert_eq!(config.identity_headers.subject.as_str(), "x-auth-subject");
        for (name, value) in [
            ("GATEWAY_AUTH_SUBJECT_HEADER", "not a header"),
            ("GATEWAY_AUTH_SUBJECT_HEADER", "X-Auth-Scopes"),
        ] {
            let env = Env::from_pairs([(name, value)]);
            assert_eq!(GatewayConfig::from_env(&env).unwrap_err().variable, name);
        }
    }

    #[test]
    fn a_bad_routes_file_is_a_clear_error() {
        for (text, expected) in [
            ("[[routes]]\nprefix = \"/x\"\n", "missing field `upstream`"),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"http://x\"\nweight = 3\n",
                "unknown field `weight`",
            ),
            (
                "[[routes]]\nprefix = \"x\"\nupstream = \"http://x\"\n",
                "route prefix \"x\"",
            ),
            (
                "[[routes]]\nprefix = \"/\"\nupstream = \"http://x\"\n",
                "route prefix \"/\"",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"https://x\"\n",
                "routes[/x].upstream: \"https://x\": only http://",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"http://x\"\n[[routes]]\nprefix = \"/x/\"\nupstream = \"http://y\"\n",
                "appears twice",
            ),
            ("fallback = 3", "invalid type"),
            (
                "[[limits]]\npath = \"token\"\nrps = 1\n",
                "limit path \"token\"",
            ),
            ("[[limits]]\npath = \"/t\"\nrps = 0\n", "must be above 0"),
            (
                "[[limits]]\npath = \"/t\"\nrps = 1\nname = \"a b\"\n",
                "limits[/t].name",
            ),
            (
                "[[limits]]\npath = \"/t\"\nrps = 1\n[[limits]]\npath = \"/t/\"\nrps = 2\n",
                "appears twice",
            ),
            ("[[limits]]\npath = \"/t\"\n", "missing field `rps`"),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = []\n",
                "at least one URL",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = [\"http://a\", \"http://a\"]\n",
                "appears twice",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"http://a\"\nauth = \"sometimes\"\n",
                "unknown variant",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"http://a\"\nscopes = [\"a\"]\n",
                "scopes are checked only with auth",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"http://a\"\nsplit = { upstream = \"http://b\", weight = 120 }\n",
                "not a percentage",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"http://a\"\nmirror = { upstream = \"http://b\", methods = [\"G T\"] }\n",
                "is not a method",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"http://a\"\nhealth_check = { path = \"healthz\" }\n",
                "health_check.path",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"http://a\"\nmax_fails = 0\n",
                "max_fails: must be above 0",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"http://a\"\nname = \"accounts\"\n",
                "used twice",
            ),
            ("routes = [", "TOML parse error"),
        ] {
            let (_file, env) = with_routes_file(text);
            let error = GatewayConfig::from_env(&env).unwrap_err();
            assert_eq!(error.variable, "GATEWAY_ROUTES_FILE");
            assert!(
                error.message.contains(expected),
                "{text}: {}",
                error.message
            );
        }
        let missing = Env::from_pairs([("GATEWAY_ROUTES_FILE", "/nonexistent/routes.toml")]);
        let error = GatewayConfig::from_env(&missing).unwrap_err();
        assert!(
            error.message.contains("/nonexistent/routes.toml"),
            "{}",
            error.message
        );
    }
}
