//! The routing table and how it changes while the gateway runs.
//!
//! A [`Table`] is one generation of the routes: each route's upstream (a [`Cluster`] of
//! hosts), its split, its mirror, its auth. Every worker reads the current generation; a
//! reload of the routes file (on `SIGHUP`, or when the file changes), or a DNS name that now
//! resolves to other addresses, builds the next one and swaps it in. Requests under way keep
//! the generation they started with, so none is lost; hosts that appear in both generations
//! are the same objects (their connections, breakers and health carry over). A routes file
//! that does not pass the checks is refused as a whole, and the routes in force stay.
//!
//! Each worker caches the current generation behind a counter it compares per request, so
//! the hot path reads one shared word and touches only the worker's own reference counts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use common::config::ConfigError;
use common::health::HealthCheck;
use common::metrics::Metrics;
use http::HeaderValue;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Host, HostKey, HostSettings, ProxyMetrics};
use crate::config::{AuthMode, GatewayConfig, RouteConfig, RouteSet, UpstreamConfig};

/// How often the maintenance task wakes (health checks and DNS refreshes are due on it).
const TICK: Duration = Duration::from_millis(100);

/// A route's prefix, and as the `X-Forwarded-Prefix` header.
#[derive(Clone)]
pub struct Prefix {
    /// `/accounts`.
    pub path: String,
    /// The same, as a header value.
    pub header: Option<HeaderValue>,
}

/// A share of a route's traffic for a second upstream.
pub struct Split {
    /// Where it goes.
    pub cluster: Arc<Cluster>,
    /// Its share, in hundredths of a percent.
    pub per_10k: u32,
    /// Requests counted per arm: `[primary, split]`.
    pub(crate) counted: [prometheus::IntCounter; 2],
}

/// A route's mirror.
pub struct Mirror {
    /// Where copies go.
    pub cluster: Arc<Cluster>,
    /// The methods mirrored.
    pub methods: Vec<http::Method>,
    /// Time allowed for the mirror's whole answer.
    pub timeout: Duration,
    /// When a difference was last logged (milliseconds on the mirror module's clock): at
    /// most one line a second per route.
    pub(crate) last_logged: Arc<AtomicU64>,
    /// Its outcome counters, in the order of [`crate::mirror::OUTCOMES`].
    pub(crate) outcomes: Arc<[prometheus::IntCounter]>,
}

/// A route of one generation.
pub struct Route {
    /// The prefix; `None` for the fallback.
    pub prefix: Option<Prefix>,
    /// Whether the prefix is removed before forwarding.
    pub strip: bool,
    /// Its route template in metrics and spans: `{prefix}/{*rest}`.
    pub label: String,
    /// Its name.
    pub name: String,
    /// Where its requests go (unless split off).
    pub primary: Arc<Cluster>,
    /// A canary share.
    pub split: Option<Split>,
    /// A mirror.
    pub mirror: Option<Mirror>,
    /// Token checks at the edge.
    pub auth: AuthMode,
    /// Scopes every token must carry.
    pub scopes: Box<[String]>,
    /// Whether readiness waits for it.
    pub readiness: bool,
    /// Its token-check counters, in the order of [`AUTH_OUTCOMES`] (none with auth off).
    auth_outcomes: Box<[prometheus::IntCounter]>,
}

/// The outcomes counted in `gateway_edge_auth_total`.
pub const AUTH_OUTCOMES: [&str; 6] = [
    "verified",
    "anonymous",
    "missing",
    "invalid",
    "forbidden",
    "unavailable",
];

impl Route {
    /// Counts a token check's outcome.
    pub fn count_auth(&self, outcome: &str) {
        if let Some(index) = AUTH_OUTCOMES.iter().position(|o| *o == outcome)
            && let Some(counter) = self.auth_outcomes.get(index)
        {
            counter.inc();
        }
    }
}

/// Where a request goes: its route and the path to ask the upstream for.
pub struct Target<'t, 'p> {
    /// The route.
    pub route: &'t Route,
    /// The path as the upstream sees it.
    pub path: &'p str,
}

/// The route template of paths served by the fallback upstream.
pub const FALLBACK_ROUTE: &str = "{*fallback}";

/// One generation of the routes.
pub struct Table {
    /// Prefix routes, longest prefix first.
    routes: Vec<Route>,
    fallback: Option<Route>,
    /// What it was built from.
    set: RouteSet,
    /// What DNS names resolved to, per upstream URL (for those re-resolved).
    resolved: Resolved,
}

/// Addresses per (upstream name, URL) of upstreams whose names the gateway resolves.
type Resolved = HashMap<(String, url::Url), Vec<SocketAddr>>;

impl Table {
    /// The route of `path`: the longest prefix that matches at a segment boundary, else the
    /// fallback.
    pub fn resolve<'t, 'p>(&'t self, path: &'p str) -> Option<Target<'t, 'p>> {
        for route in &self.routes {
            let Some(prefix) = &route.prefix else {
                continue;
            };
            if let Some(rest) = path.strip_prefix(prefix.path.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                let path = route.upstream_path(path);
                return Some(Target { route, path });
            }
        }
        self.fallback.as_ref().map(|route| Target { route, path })
    }

    /// Every route, the fallback last.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().chain(self.fallback.as_ref())
    }

    /// Every upstream (route, split and mirror), by name.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.routes().flat_map(|route| {
            std::iter::once(&route.primary)
                .chain(route.split.as_ref().map(|s| &s.cluster))
                .chain(route.mirror.as_ref().map(|m| &m.cluster))
        })
    }
}

/// Route-level metric families.
#[derive(Clone)]
pub(crate) struct RouteMetrics {
    split: prometheus::IntCounterVec,
    pub(crate) mirror: prometheus::IntCounterVec,
    pub(crate) auth: prometheus::IntCounterVec,
    reloads: prometheus::IntCounterVec,
    generation: prometheus::IntGauge,
}

impl RouteMetrics {
    fn new(metrics: &Metrics) -> Self {
        let reloads = metrics.counter(
            "gateway_routes_reloads_total",
            "Reloads of the routes file: applied, or refused (the routes in force stay).",
            &["outcome"],
        );
        for outcome in ["applied", "refused"] {
            reloads.with_label_values(&[outcome]);
        }
        Self {
            split: metrics.counter(
                "gateway_split_requests_total",
                "Requests of split routes by arm (primary, or the split's name).",
                &["route", "arm"],
            ),
            mirror: metrics.counter(
                "gateway_mirror_requests_total",
                "Mirrored requests by outcome: same (status and body hash), status_differs, body_differs, mirror_failed, primary_failed, dropped (too many under way).",
                &["route", "outcome"],
            ),
            auth: metrics.counter(
                "gateway_edge_auth_total",
                "Token checks at the edge by route and outcome (verified, anonymous, missing, invalid, forbidden, unavailable).",
                &["route", "outcome"],
            ),
            reloads,
            generation: metrics.gauge(
                "gateway_routes_generation",
                "The generation of the routing table in force (1 at start; each reload or DNS change adds one).",
            ),
        }
    }
}

/// The routing state every worker shares.
pub struct Routing {
    current: RwLock<Arc<Table>>,
    generation: AtomicU64,
    /// Hosts of the current (and older, still used) generations, to carry over.
    hosts: Mutex<HashMap<HostKey, Weak<Host>>>,
    /// One rebuild at a time.
    building: Mutex<()>,
    settings: HostSettings,
    proxy_metrics: ProxyMetrics,
    pub(crate) metrics: RouteMetrics,
    config: GatewayConfig,
}

impl Routing {
    /// The routing of `config` (generation 1).
    pub fn new(config: &GatewayConfig, metrics: &Metrics) -> Arc<Self> {
        let settings = HostSettings {
            workers: config.workers,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.upstream_idle_timeout,
            breaker: config.breaker,
        };
        let routing = Self {
            current: RwLock::new(Arc::new(Table {
                routes: Vec::new(),
                fallback: None,
                set: RouteSet::default(),
                resolved: Resolved::new(),
            })),
            generation: AtomicU64::new(0),
            hosts: Mutex::new(HashMap::new()),
            building: Mutex::new(()),
            settings,
            proxy_metrics: ProxyMetrics::new(metrics),
            metrics: RouteMetrics::new(metrics),
            config: config.clone(),
        };
        routing.install(config.routes.clone(), Resolved::new());
        Arc::new(routing)
    }

    /// The current generation.
    pub fn table(&self) -> Arc<Table> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current generation's number.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reads the routes file again and, if it passes the checks, makes its routes the
    /// current ones: `Ok(true)` when they changed. A file that does not pass is refused with
    /// the reason, and the routes in force stay.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        let outcome = self.config.reload_routes().map(|set| {
            let _building = lock(&self.building);
            let current = self.table();
            if current.set == set {
                return false;
            }
            self.install(set, current.resolved.clone());
            true
        });
        match &outcome {
            Ok(changed) => {
                self.metrics.reloads.with_label_values(&["applied"]).inc();
                tracing::info!(
                    changed,
                    generation = self.generation(),
                    "routes file reloaded"
                );
            }
            Err(error) => {
                self.metrics.reloads.with_label_values(&["refused"]).inc();
                tracing::error!(
                    error = %error.message,
                    "routes file refused; the routes in force stay"
                );
            }
        }
        outcome
    }

    /// Builds a generation from `set` (and the addresses names resolved to) and swaps it in.
    fn install(&self, set: RouteSet, resolved: Resolved) {
        let mut routes: Vec<Route> = set
            .routes
            .iter()
            .map(|route| self.route(route, &resolved))
            .collect();
        // Longest prefix first, so `/a/b` wins over `/a`.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.as_ref().map_or(0, |p| p.path.len())));
        let fallback = set.fallback.as_ref().map(|upstream| Route {
            prefix: None,
            strip: false,
            label: crate::routing::FALLBACK_ROUTE.to_owned(),
            name: "fallback".to_owned(),
            primary: self.cluster("fallback", upstream, &resolved),
            split: None,
            mirror: None,
            auth: AuthMode::Off,
            scopes: Box::new([]),
            readiness: false,
            auth_outcomes: Box::new([]),
        });
        let table = Arc::new(Table {
            routes,
            fallback,
            set,
            resolved,
        });
        for route in table.routes() {
            tracing::info!(
                route = %route.label,
                upstream = %route.primary.name,
                hosts = route.primary.hosts.len(),
                auth = route.auth.label(),
                split = route.split.as_ref().map(|s| s.cluster.name.as_str()),
                mirror = route.mirror.as_ref().map(|m| m.cluster.name.as_str()),
                "route"
            );
        }
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = table;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics
            .generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        // Forget hosts no generation uses any more.
        lock(&self.hosts).retain(|_, host| host.strong_count() > 0);
    }

    fn route(&self, config: &RouteConfig, resolved: &Resolved) -> Route {
        let prefix = config.prefix.trim_end_matches('/').to_owned();
        let label = format!("{prefix}/{{*rest}}");
        let split = config.split.as_ref().map(|split| Split {
            cluster: self.cluster(
                &split.name,
                &with_failures(&split.upstream, config),
                resolved,
            ),
            per_10k: split.per_10k,
            counted: [
                self.metrics.split.with_label_values(&[&label, "primary"]),
                self.metrics.split.with_label_values(&[&label, &split.name]),
            ],
        });
        let mirror = config.mirror.as_ref().map(|mirror| Mirror {
            cluster: self.cluster(&mirror.name, &mirror.upstream, resolved),
            methods: mirror.methods.clone(),
            timeout: mirror.timeout,
            last_logged: Arc::new(AtomicU64::new(0)),
            outcomes: crate::mirror::OUTCOMES
                .iter()
                .map(|outcome| {
                    self.metrics
                        .mirror
                        .with_label_values(&[label.as_str(), outcome])
                })
                .collect(),
        });
        let auth_outcomes = match config.auth {
            AuthMode::Off => Box::new([]) as Box<[_]>,
            _ => AUTH_OUTCOMES
                .iter()
                .map(|outcome| {
                    self.metrics
                        .auth
                        .with_label_values(&[label.as_str(), outcome])
                })
                .collect(),
        };
        Route {
            prefix: Some(Prefix {
                header: HeaderValue::from_str(&prefix).ok(),
                path: prefix,
            }),
            strip: config.strip_prefix,
            label,
            name: config.name.clone(),
            primary: self.cluster(&config.name, &config.upstream, resolved),
            split,
            mirror,
            auth: config.auth,
            scopes: config.scopes.clone().into(),
            readiness: config.readiness,
            auth_outcomes,
        }
    }

    /// The cluster `name` of `upstream`: a host per URL, or per address its name resolved to
    /// (when re-resolved and resolved already); hosts of earlier generations reused.
    fn cluster(&self, name: &str, upstream: &UpstreamConfig, resolved: &Resolved) -> Arc<Cluster> {
        let mut registry = lock(&self.hosts);
        let mut hosts = Vec::new();
        for url in &upstream.urls {
            let addrs: Vec<Option<SocketAddr>> = match resolved.get(&(name.to_owned(), url.clone()))
            {
                Some(addrs) if upstream.dns_refresh.is_some() && !addrs.is_empty() => {
                    addrs.iter().copied().map(Some).collect()
                }
                _ => vec![None],
            };
            for addr in addrs {
                let key = HostKey {
                    upstream: name.to_owned(),
                    url: url.clone(),
                    addr,
                    max_fails: upstream
                        .max_fails
                        .unwrap_or(self.settings.breaker.consecutive_failures),
                    fail_timeout: upstream
                        .fail_timeout
                        .unwrap_or(self.settings.breaker.cooldown),
                };
                let host = match registry.get(&key).and_then(Weak::upgrade) {
                    Some(host) => host,
                    None => {
                        let host =
                            Arc::new(Host::new(key.clone(), &self.settings, &self.proxy_metrics));
                        registry.insert(key, Arc::downgrade(&host));
                        host
                    }
                };
                hosts.push(host);
            }
        }
        Arc::new(Cluster::new(
            name,
            upstream.clone(),
            hosts,
            self.settings.workers,
            &self.proxy_metrics,
        ))
    }

    /// Runs until `shutdown`: reloads on `SIGHUP` and when the routes file changes, active
    /// health checks, DNS refreshes.
    pub fn maintain(self: &Arc<Self>, shutdown: CancellationToken) {
        let routing = self.clone();
        // Taken over before anything else runs: SIGHUP's default would end the process.
        let mut hangup = hangup_signal();
        tokio::spawn(async move {
            let mut file = FileState::of(routing.config.routes_file.as_deref());
            let mut next_poll = Instant::now();
            let mut due: HashMap<(String, url::Url, Option<SocketAddr>), Instant> = HashMap::new();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    Some(()) = recv(&mut hangup) => {
                        tracing::info!("SIGHUP: reloading the routes file");
                        let _ = routing.reload();
                        file = FileState::of(routing.config.routes_file.as_deref());
                        continue;
                    }
                    _ = tick.tick() => {}
                }
                let now = Instant::now();
                if let Some(poll) = routing.config.routes_poll
                    && now >= next_poll
                {
                    next_poll = now + poll;
                    let seen = FileState::of(routing.config.routes_file.as_deref());
                    if seen != file {
                        file = seen;
                        tracing::info!("the routes file changed: reloading it");
                        let _ = routing.reload();
                    }
                }
                routing.check_health(now, &mut due);
                routing.refresh_dns(now, &mut due).await;
            }
        });
    }

    /// Starts the active health checks that are due.
    fn check_health(
        &self,
        now: Instant,
        due: &mut HashMap<(String, url::Url, Option<SocketAddr>), Instant>,
    ) {
        let table = self.table();
        for cluster in table.clusters() {
            let Some(check) = &cluster.config.health_check else {
                continue;
            };
            for host in cluster.hosts.iter() {
                let key = (
                    format!("health:{}", cluster.name),
                    host.key.url.clone(),
                    host.key.addr,
                );
                if due.get(&key).is_some_and(|at| *at > now) {
                    continue;
                }
                due.insert(key, now + check.interval);
                let (host, path, timeout) = (host.clone(), check.path.clone(), check.timeout);
                let name = cluster.name.clone();
                tokio::spawn(async move {
                    let healthy = match tokio::time::timeout(timeout, host.get(&path)).await {
                        Ok(Ok(status)) => status.is_success(),
                        _ => false,
                    };
                    if host.is_healthy() != healthy {
                        tracing::warn!(upstream = %name, host = %host.label, healthy, "health check");
                    }
                    host.set_healthy(healthy);
                });
            }
        }
    }

    /// Re-resolves the names that are due; a changed answer builds the next generation.
    async fn refresh_dns(
        &self,
        now: Instant,
        due: &mut HashMap<(String, url::Url, Option<SocketAddr>), Instant>,
    ) {
        let table = self.table();
        let mut resolved = table.resolved.clone();
        let mut changed = false;
        let wanted: Vec<(String, url::Url, Duration)> = table
            .clusters()
            .filter_map(|c| Some((c, c.config.dns_refresh?)))
            .flat_map(|(c, every)| {
                c.config
                    .urls
                    .iter()
                    .map(move |u| (c.name.clone(), u.clone(), every))
            })
            .collect();
        for (name, url, every) in wanted {
            let key = (format!("dns:{name}"), url.clone(), None);
            if due.get(&key).is_some_and(|at| *at > now) {
                continue;
            }
            due.insert(key, now + every);
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                continue;
            };
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(addrs) => {
                    let mut addrs: Vec<SocketAddr> = addrs.collect();
                    addrs.sort();
                    addrs.dedup();
                    let entry = resolved.entry((name.clone(), url.clone())).or_default();
                    if !addrs.is_empty() && *entry != addrs {
                        tracing::info!(upstream = %name, %host, ?addrs, "upstream addresses changed");
                        *entry = addrs;
                        changed = true;
                    }
                }
                Err(error) => {
                    tracing::warn!(upstream = %name, %host, %error, "cannot resolve; keeping the addresses known");
                }
            }
        }
        if changed {
            let _building = lock(&self.building);
            // Built from the set in force now (a reload may have come meanwhile).
            let set = self.table().set.clone();
            self.install(set, resolved);
        }
    }
}

/// `upstream` with the failure settings of `route` (a split shares its route's).
fn with_failures(upstream: &UpstreamConfig, route: &RouteConfig) -> UpstreamConfig {
    UpstreamConfig {
        max_fails: upstream.max_fails.or(route.upstream.max_fails),
        fail_timeout: upstream.fail_timeout.or(route.upstream.fail_timeout),
        ..upstream.clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What is known of the routes file, to notice a change: its modification time, length and
/// a hash of its text (an editor may keep the time and length).
#[derive(PartialEq, Eq)]
struct FileState(Option<(std::time::SystemTime, u64, u64)>);

impl FileState {
    fn of(path: Option<&std::path::Path>) -> Self {
        use std::hash::{Hash, Hasher};
        let Some(path) = path else {
            return Self(None);
        };
        let (Ok(meta), Ok(text)) = (std::fs::metadata(path), std::fs::read(path)) else {
            return Self(None);
        };
        let mut hasher = std::hash::DefaultHasher::new();
        text.hash(&mut hasher);
        Self(Some((
            meta.modified().unwrap_or(std::time::UNIX_EPOCH),
            meta.len(),
            hasher.finish(),
        )))
    }
}

#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<()> {
    None
}

#[cfg(not(unix))]
async fn recv(_: &mut Option<()>) -> Option<()> {
    std::future::pending().await
}

/// One worker's view of the routing: the current generation, cached.
pub struct WorkerRoutes {
    routing: Arc<Routing>,
    /// The generation last seen and the worker's own reference to it.
    cached: Mutex<(u64, Arc<WorkerTable>)>,
}

/// A worker's own reference to a generation (counting it touches no word another core uses).
pub struct WorkerTable(Arc<Table>);

impl std::ops::Deref for WorkerTable {
    type Target = Table;

    fn deref(&self) -> &Table {
        &self.0
    }
}

impl WorkerRoutes {
    /// A worker's view.
    pub fn new(routing: Arc<Routing>) -> Self {
        let cached = Mutex::new((routing.generation(), Arc::new(WorkerTable(routing.table()))));
        Self { routing, cached }
    }

    /// The current generation (the worker's reference: counting it touches no shared word).
    pub fn current(&self) -> Arc<WorkerTable> {
        let generation = self.routing.generation();
        let mut cached = lock(&self.cached);
        if cached.0 != generation {
            *cached = (generation, Arc::new(WorkerTable(self.routing.table())));
        }
        cached.1.clone()
    }

    /// The shared routing.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }
}

/// Readiness check `upstream:<name>`: a host of the upstream answers `/readyz` with 200.
pub struct UpstreamCheck {
    /// The routing.
    pub routing: Arc<Routing>,
    /// The upstream's name.
    pub name: String,
}

#[async_trait::async_trait]
impl HealthCheck for UpstreamCheck {
    fn name(&self) -> String {
        format!("upstream:{}", self.name)
    }

    fn component_type(&self) -> &'static str {
        "component"
    }

    async fn check(&self) -> Result<(), String> {
        let table = self.routing.table();
        // An upstream a reload took away is no longer waited for.
        let Some(cluster) = table.clusters().find(|c| c.name == self.name) else {
            return Ok(());
        };
        let mut last = String::from("no host");
        for host in cluster.hosts.iter() {
            match host.get("/readyz").await {
                Ok(status) if status.is_success() => return Ok(()),
                Ok(status) => last = format!("answered {status}"),
                Err(error) => last = format!("unreachable: {error}"),
            }
        }
        Err(last)
    }
}
