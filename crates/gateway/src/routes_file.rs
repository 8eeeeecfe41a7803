//! The routes file (`GATEWAY_ROUTES_FILE`): what a route may do beyond prefix routing, read
//! and checked as a whole (at start, on `SIGHUP` and when the file changes), so that a bad
//! file is refused with the reason before anything of it is used.
//!
//! ```toml
//! fallback = "http://monolith:8000"
//!
//! [[routes]]
//! prefix = "/orders"
//! upstream = ["http://monolith-1:8000/orders", "http://monolith-2:8000/orders"]
//! balance = "least_request"         # or "round_robin" (the default)
//! max_fails = 3                      # consecutive failures that take a host out ...
//! fail_timeout_ms = 10000            # ... for this long (then one trial request)
//! dns_refresh_ms = 5000              # re-resolve host names: every address is a host
//! health_check = { path = "/healthz", interval_ms = 2000 }
//! auth = "required"                  # "optional", or "off" (the default)
//! scopes = ["orders:read"]           # needed by every request (auth on)
//! strip_prefix = false               # forward the path as it came (default: strip it)
//! split = { upstream = "http://orders:9000", weight = 10 }     # 10 % to the new service
//! mirror = { upstream = "http://orders:9000", methods = ["GET", "HEAD"] }
//!
//! [[limits]]
//! path = "/accounts/v1/token"
//! rps = 5
//! ```

use std::num::NonZeroU32;
use std::time::Duration;

use crate::limit::RateLimitSettings;

/// Whether a route checks the caller's access token at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// The token is not looked at (it is still passed on); no identity headers are sent.
    #[default]
    Off,
    /// A request without a token passes anonymously; one with a token must carry a valid one.
    Optional,
    /// Every request needs a valid token (and the route's scopes).
    Required,
}

impl AuthMode {
    /// Its name in the routes file, logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

/// How requests are spread over an upstream's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// In turn.
    #[default]
    RoundRobin,
    /// To the host with the fewest requests under way (of two chosen at random: Envoy's
    /// least-request; with two hosts or fewer, the lesser of all).
    LeastRequest,
}

/// Active health checks of an upstream's hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// The path asked for with `GET` (a 2xx answer is healthy).
    pub path: String,
    /// Time between two checks of one host.
    pub interval: Duration,
    /// Time allowed for an answer.
    pub timeout: Duration,
}

/// An upstream: one or more addresses and how they are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Base URLs (`http://host:port[/base]`), one per host (or per DNS name).
    pub urls: Vec<url::Url>,
    /// How requests are spread.
    pub balance: Balance,
    /// Consecutive failures that take a host out (its breaker opens); `None`: the gateway's
    /// `GATEWAY_BREAKER_FAILURES`.
    pub max_fails: Option<u32>,
    /// How long a host stays out before a trial request; `None`: `GATEWAY_BREAKER_COOLDOWN_MS`.
    pub fail_timeout: Option<Duration>,
    /// Active health checks, if any.
    pub health_check: Option<HealthCheckConfig>,
    /// Re-resolve the URLs' host names this often, each address becoming a host; `None`:
    /// names are resolved when a connection is made.
    pub dns_refresh: Option<Duration>,
}

impl UpstreamConfig {
    /// One host at `url`, nothing else configured.
    pub fn single(url: url::Url) -> Self {
        Self {
            urls: vec![url],
            balance: Balance::RoundRobin,
            max_fails: None,
            fail_timeout: None,
            health_check: None,
            dns_refresh: None,
        }
    }
}

/// A weighted share of a route's traffic sent to a second upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitConfig {
    /// Its name in metrics, logs and the access log's `split` field.
    pub name: String,
    /// Where the share goes.
    pub upstream: UpstreamConfig,
    /// The share, in hundredths of a percent (0–10000).
    pub per_10k: u32,
}

/// A copy of a route's requests sent to a second upstream, its answers compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Its name in metrics and logs.
    pub name: String,
    /// Where the copies go.
    pub upstream: UpstreamConfig,
    /// The methods mirrored (default `GET`, `HEAD`).
    pub methods: Vec<http::Method>,
    /// Time allowed for the mirror's whole answer.
    pub timeout: Duration,
}

/// A path prefix and what serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// `/accounts`: no trailing slash.
    pub prefix: String,
    /// Name in logs, metrics and readiness (`accounts`).
    pub name: String,
    /// Where its requests go.
    pub upstream: UpstreamConfig,
    /// Whether the gateway's `/readyz` requires this upstream's `/readyz` to answer 200.
    pub readiness: bool,
    /// Whether the prefix is removed before forwarding (default true).
    pub strip_prefix: bool,
    /// Token checks at the edge.
    pub auth: AuthMode,
    /// Scopes every request must carry (with `auth` on).
    pub scopes: Vec<String>,
    /// A canary share, if any.
    pub split: Option<SplitConfig>,
    /// A mirror, if any.
    pub mirror: Option<MirrorConfig>,
}

impl RouteConfig {
    /// A prefix route to one upstream, with nothing else configured.
    pub fn plain(prefix: &str, name: &str, url: url::Url) -> Self {
        Self {
            prefix: prefix.to_owned(),
            name: name.to_owned(),
            upstream: UpstreamConfig::single(url),
            readiness: true,
            strip_prefix: true,
            auth: AuthMode::Off,
            scopes: Vec::new(),
            split: None,
            mirror: None,
        }
    }

    /// The names of the upstreams it uses (its own, its split's, its mirror's).
    pub fn upstream_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str())
            .chain(self.split.as_ref().map(|s| s.name.as_str()))
            .chain(self.mirror.as_ref().map(|m| m.name.as_str()))
    }
}

/// A path (on the gateway, before any prefix is stripped) whose requests are limited per
/// client by a limit of their own instead of the default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathLimit {
    /// `/accounts/v1/token`: this path and everything under it.
    pub path: String,
    /// Its name in `RateLimit-Policy`, metrics and Redis keys (default: the path's segments
    /// joined by `-`).
    pub name: String,
    /// Requests per second and burst per client.
    pub settings: RateLimitSettings,
}

/// The checked contents of a routes file.
#[derive(Debug, Default)]
pub struct FileRoutes {
    /// Its routes.
    pub routes: Vec<RouteConfig>,
    /// Its fallback.
    pub fallback: Option<url::Url>,
    /// Its path limits, longest path first.
    pub limits: Vec<PathLimit>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    fallback: Option<String>,
    #[serde(default)]
    routes: Vec<FileRoute>,
    #[serde(default)]
    limits: Vec<FileLimit>,
}

/// `[[limits]]`: a path with a rate limit of its own (nginx's `limit_req` in a `location`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimit {
    path: String,
    rps: u32,
    burst: Option<u32>,
    name: Option<String>,
}

/// One URL or several.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Urls {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealthCheck {
    path: String,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    prefix: String,
    upstream: Urls,
    name: Option<String>,
    #[serde(default = "yes")]
    readiness: bool,
    #[serde(default = "yes")]
    strip_prefix: bool,
    #[serde(default)]
    balance: Balance,
    max_fails: Option<u32>,
    fail_timeout_ms: Option<u64>,
    dns_refresh_ms: Option<u64>,
    health_check: Option<FileHealthCheck>,
    #[serde(default)]
    auth: AuthMode,
    #[serde(default)]
    scopes: Vec<String>,
    split: Option<FileSplit>,
    mirror: Option<FileMirror>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSplit {
    upstream: Urls,
    weight: f64,
    name: Option<String>,
    #[serde(default)]
    balance: Balance,
    dns_refresh_ms: Option<u64>,
    health_check: Option<FileHealthCheck>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMirror {
    upstream: Urls,
    name: Option<String>,
    methods: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    balance: Balance,
    dns_refresh_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// Whether `prefix` is a path a route or a limit may be keyed on: absolute, without a query,
/// a fragment, escapes or dot segments.
fn valid_path_prefix(prefix: &str) -> bool {
    prefix.starts_with('/')
        && !prefix.contains(['?', '#', '%'])
        && !prefix.split('/').any(|s| s == "." || s == "..")
}

/// Whether `name` may name an upstream or a limit (it goes into metric labels and keys).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An upstream's base URL: `http://host[:port][/base-path]`.
pub fn parse_upstream(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err("only http:// upstreams are supported".into());
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err("expected http://host[:port][/base-path]".into());
    }
    Ok(url)
}

fn millis(
    field: &str,
    value: Option<u64>,
    default: Option<u64>,
) -> Result<Option<Duration>, String> {
    match value.or(default) {
        None => Ok(None),
        Some(0) => Err(format!("{field}: must be above 0")),
        Some(ms) => Ok(Some(Duration::from_millis(ms))),
    }
}

fn upstream_config(
    field: &str,
    urls: Urls,
    balance: Balance,
    dns_refresh_ms: Option<u64>,
    health_check: Option<FileHealthCheck>,
) -> Result<UpstreamConfig, String> {
    let raw = match urls {
        Urls::One(url) => vec![url],
        Urls::Many(urls) => urls,
    };
    if raw.is_empty() {
        return Err(format!("{field}: at least one URL is needed"));
    }
    let mut parsed = Vec::with_capacity(raw.len());
    for url in &raw {
        let url = parse_upstream(url).map_err(|e| format!("{field}: {url:?}: {e}"))?;
        if parsed.contains(&url) {
            return Err(format!("{field}: {url} appears twice"));
        }
        parsed.push(url);
    }
    let health_check = match health_check {
        None => None,
        Some(check) => {
            if !check.path.starts_with('/') {
                return Err(format!(
                    "{field}: health_check.path {:?}: expected a path such as \"/readyz\"",
                    check.path
                ));
            }
            let interval = millis("health_check.interval_ms", check.interval_ms, Some(2000))?
                .unwrap_or_default();
            if interval < Duration::from_millis(100) {
                return Err(format!("{field}: health_check.interval_ms: 100 at least"));
            }
            let timeout = millis(
                "health_check.timeout_ms",
                check.timeout_ms,
                Some(interval.min(Duration::from_secs(2)).as_millis() as u64),
            )?
            .unwrap_or_default();
            Some(HealthCheckConfig {
                path: check.path,
                interval,
                timeout,
            })
        }
    };
    Ok(UpstreamConfig {
        urls: parsed,
        balance,
        max_fails: None,
        fail_timeout: None,
        health_check,
        dns_refresh: millis(&format!("{field}: dns_refresh_ms"), dns_refresh_ms, None)?,
    })
}

fn route_config(route: FileRoute) -> Result<RouteConfig, String> {
    let prefix = route.prefix.trim_end_matches('/').to_owned();
    if !valid_path_prefix(&prefix) {
        return Err(format!(
            "route prefix {:?}: expected a path such as \"/reports\" (the fallback serves \"/\")",
            route.prefix
        ));
    }
    let name = route
        .name
        .unwrap_or_else(|| prefix.trim_start_matches('/').replace('/', "-"));
    let at = |what: &str| format!("routes[{prefix}].{what}");
    if !valid_name(&name) {
        return Err(format!(
            "{}: {name:?}: expected letters, digits, - _ .",
            at("name")
        ));
    }
    let mut upstream = upstream_config(
        &at("upstream"),
        route.upstream,
        route.balance,
        route.dns_refresh_ms,
        route.health_check,
    )?;
    upstream.max_fails = match route.max_fails {
        Some(0) => return Err(format!("{}: must be above 0", at("max_fails"))),
        other => other,
    };
    upstream.fail_timeout = millis(&at("fail_timeout_ms"), route.fail_timeout_ms, None)?;
    if route.auth == AuthMode::Off && !route.scopes.is_empty() {
        return Err(format!(
            "{}: scopes are checked only with auth = \"required\" or \"optional\"",
            at("scopes")
        ));
    }
    if let Some(bad) = route
        .scopes
        .iter()
        .find(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err(format!("{}: {bad:?} is not a scope", at("scopes")));
    }
    let split = match route.split {
        None => None,
        Some(split) => {
            if !(0.0..=100.0).contains(&split.weight) {
                return Err(format!(
                    "{}: {} is not a percentage (0 to 100)",
                    at("split.weight"),
                    split.weight
                ));
            }
            let mut upstream = upstream_config(
                &at("split.upstream"),
                split.upstream,
                split.balance,
                split.dns_refresh_ms,
                split.health_check,
            )?;
            upstream.max_fails = route.max_fails;
            upstream.fail_timeout = millis(&at("fail_timeout_ms"), route.fail_timeout_ms, None)?;
            Some(SplitConfig {
                name: split.name.unwrap_or_else(|| format!("{name}-split")),
                upstream,
                per_10k: (split.weight * 100.0).round() as u32,
            })
        }
    };
    let mirror = match route.mirror {
        None => None,
        Some(mirror) => {
            let methods = match mirror.methods {
                None => vec![http::Method::GET, http::Method::HEAD],
                Some(methods) => methods
                    .iter()
                    .map(|m| {
                        http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                            .map_err(|_| format!("{}: {m:?} is not a method", at("mirror.methods")))
                    })
                    .collect::<Result<_, _>>()?,
            };
            let mut upstream = upstream_config(
                &at("mirror.upstream"),
                mirror.upstream,
                mirror.balance,
                mirror.dns_refresh_ms,
                None,
            )?;
            upstream.max_fails = route.max_fails;
            upstream.fail_timeout = millis(&at("fail_timeout_ms"), route.fail_timeout_ms, None)?;
            Some(MirrorConfig {
                name: mirror.name.unwrap_or_else(|| format!("{name}-mirror")),
                upstream,
                methods,
                timeout: millis(&at("mirror.timeout_ms"), mirror.timeout_ms, Some(10_000))?
                    .unwrap_or_default(),
            })
        }
    };
    for (what, arm) in [
        ("split.name", split.as_ref().map(|s| &s.name)),
        ("mirror.name", mirror.as_ref().map(|m| &m.name)),
    ] {
        if let Some(arm) = arm
            && !valid_name(arm)
        {
            return Err(format!(
                "{}: {arm:?}: expected letters, digits, - _ .",
                at(what)
            ));
        }
    }
    Ok(RouteConfig {
        prefix,
        name,
        upstream,
        readiness: route.readiness,
        strip_prefix: route.strip_prefix,
        auth: route.auth,
        scopes: route.scopes,
        split,
        mirror,
    })
}

fn limit_config(limit: FileLimit) -> Result<PathLimit, String> {
    let path = limit.path.trim_end_matches('/').to_owned();
    if !valid_path_prefix(&path) {
        return Err(format!(
            "limit path {:?}: expected a path such as \"/accounts/v1/token\"",
            limit.path
        ));
    }
    let name = limit
        .name
        .unwrap_or_else(|| path.trim_start_matches('/').replace('/', "-"));
    if !valid_name(&name) || name == "default" {
        return Err(format!(
            "limits[{path}].name {name:?}: expected letters, digits, - _ . (and not \"default\")"
        ));
    }
    let (Some(rps), Some(burst)) = (
        NonZeroU32::new(limit.rps),
        NonZeroU32::new(limit.burst.unwrap_or(limit.rps.saturating_mul(2))),
    ) else {
        return Err(format!("limits[{path}]: rps and burst must be above 0"));
    };
    Ok(PathLimit {
        path,
        name,
        settings: RateLimitSettings { rps, burst },
    })
}

/// Parses and checks the text of a routes file.
pub fn parse(text: &str) -> Result<FileRoutes, String> {
    let file: RoutesFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut routes: Vec<RouteConfig> = Vec::new();
    for route in file.routes {
        let route = route_config(route)?;
        if routes.iter().any(|r| r.prefix == route.prefix) {
            return Err(format!("route prefix {:?} appears twice", route.prefix));
        }
        routes.push(route);
    }
    let fallback = file
        .fallback
        .map(|raw| parse_upstream(&raw).map_err(|e| format!("fallback: {e}")))
        .transpose()?;
    let mut limits: Vec<PathLimit> = Vec::new();
    for limit in file.limits {
        let limit = limit_config(limit)?;
        if limits
            .iter()
            .any(|l| l.path == limit.path || l.name == limit.name)
        {
            return Err(format!(
                "limit {:?} ({}) appears twice",
                limit.path, limit.name
            ));
        }
        limits.push(limit);
    }
    // Longest path first, so `/a/b` wins over `/a`.
    limits.sort_by_key(|l| std::cmp::Reverse(l.path.len()));
    Ok(FileRoutes {
        routes,
        fallback,
        limits,
    })
}

/// `routes` after the file's: a file route with the prefix of an earlier one replaces it.
/// Every upstream name must be unique (each has its hosts, breakers and metric series).
pub fn merge(
    mut routes: Vec<RouteConfig>,
    file: Vec<RouteConfig>,
) -> Result<Vec<RouteConfig>, String> {
    for route in file {
        routes.retain(|r| r.prefix != route.prefix);
        routes.push(route);
    }
    let mut seen: Vec<&str> = vec!["fallback"];
    for route in &routes {
        for name in route.upstream_names() {
            if seen.contains(&name) {
                return Err(format!(
                    "the upstream name {name:?} is used twice (set `name` on the route, its split or its mirror)"
                ));
            }
            seen.push(name);
        }
    }
    Ok(routes)
}
