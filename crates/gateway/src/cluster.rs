//! An upstream as the proxy knows it: a cluster of hosts (one per configured URL, or per
//! address a DNS name resolves to), each with its breaker, its metric series (resolved once),
//! its health, and each worker's connections to it; and how a request picks one.
//!
//! Passive health is the host's circuit breaker: `max_fails` consecutive failures take the
//! host out for `fail_timeout`, then one trial request decides (nginx's `max_fails` and
//! `fail_timeout`, with a half-open trial instead of a blind return). Active health checks,
//! when configured, mark a host unhealthy until its check path answers 2xx again. A request
//! goes to a host that is healthy and whose breaker lets it through; when no host is healthy,
//! every host is tried (Envoy's "panic" mode: the checks may be what is wrong), and when every
//! breaker is open the upstream answers `circuit_open`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{Either, Full};

use crate::body::UpstreamBody;
use crate::breaker::{Breaker, BreakerSettings, BreakerState, Permit};
use crate::config::{Balance, UpstreamConfig};
use crate::pool::{self, Pool, PoolSettings};
use common::metrics::Metrics;

/// Idle keep-alive connections kept per host and worker; beyond it, a connection released
/// after a burst is closed (nginx's `keepalive` directive plays this role).
const MAX_IDLE_CONNECTIONS: usize = 256;

/// What every host of every upstream is built with.
#[derive(Clone)]
pub(crate) struct HostSettings {
    pub(crate) workers: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) breaker: BreakerSettings,
}

/// Where one host is: its URL and, when the URL's name was resolved by the gateway, the
/// address it resolved to. Hosts with the same key (and settings) are kept across reloads,
/// with their connections, breaker and health.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HostKey {
    pub(crate) upstream: String,
    pub(crate) url: url::Url,
    pub(crate) addr: Option<std::net::SocketAddr>,
    pub(crate) max_fails: u32,
    pub(crate) fail_timeout: Duration,
}

/// One host of an upstream.
pub struct Host {
    /// `host:port` as connected to: its label in metrics and the access log.
    pub label: String,
    /// Its circuit breaker (passive health).
    pub breaker: Breaker,
    /// Cleared by a failed active health check, set by a passing one.
    healthy: AtomicBool,
    /// Requests sent and not yet answered (for least-request balancing).
    outstanding: AtomicUsize,
    /// Its metric series.
    metrics: HostMetrics,
    /// `http://` and the `Host` header, for the client span's `url.full`.
    pub(crate) origin: String,
    /// The `Host` header sent to it.
    pub(crate) host_header: HeaderValue,
    /// Base path, without a trailing slash (usually empty).
    base_path: String,
    /// Each worker's keep-alive connections to it.
    pools: Box<[Pool<UpstreamBody>]>,
    /// Connections for health checks and readiness probes (made from the main runtime).
    probe: Pool<UpstreamBody>,
    pub(crate) key: HostKey,
}

impl Host {
    pub(crate) fn new(key: HostKey, settings: &HostSettings, metrics: &ProxyMetrics) -> Self {
        let url = &key.url;
        let name = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => "localhost".to_owned(),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let host_header =
            pool::host_header(&name, port).unwrap_or_else(|| HeaderValue::from_static("localhost"));
        // Connect to the resolved address when there is one, else to the name.
        let (connect_host, connect_port) = match key.addr {
            Some(addr) => (addr.ip().to_string(), addr.port()),
            None => (name, port),
        };
        let pool_settings = PoolSettings {
            host: connect_host,
            port: connect_port,
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            max_idle: MAX_IDLE_CONNECTIONS,
        };
        let label = match key.addr {
            Some(addr) => addr.to_string(),
            None => host_header.to_str().unwrap_or("?").to_owned(),
        };
        let breaker = BreakerSettings {
            consecutive_failures: key.max_fails,
            cooldown: key.fail_timeout,
            ..settings.breaker
        };
        Self {
            metrics: metrics.host(&key.upstream, &label),
            label,
            breaker: Breaker::new(breaker),
            healthy: AtomicBool::new(true),
            outstanding: AtomicUsize::new(0),
            origin: format!("http://{}", host_header.to_str().unwrap_or("localhost")),
            host_header,
            base_path: url.path().trim_end_matches('/').to_owned(),
            pools: (0..settings.workers.max(1))
                .map(|_| Pool::new(pool_settings.clone()))
                .collect(),
            probe: Pool::new(pool_settings),
            key,
        }
    }

    /// Worker `worker`'s connections to this host.
    pub(crate) fn pool(&self, worker: usize) -> &Pool<UpstreamBody> {
        &self.pools[worker % self.pools.len()]
    }

    /// Whether the last active health check passed (always, without checks).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        set_if_changed(&self.metrics.healthy, i64::from(healthy));
    }

    /// The base path of its URL, without a trailing slash (usually empty).
    pub(crate) fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The origin-form URI of `path` (and `query`) on this host.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let query_len = query.map_or(0, |q| q.len() + 1);
        let mut uri = String::with_capacity(self.base_path.len() + path.len() + query_len);
        uri.push_str(&self.base_path);
        uri.push_str(path);
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(query);
        }
        Ok(Uri::try_from(uri)?)
    }

    /// `GET path` on this host over the probe connections (body read and dropped): its status.
    pub async fn get(&self, path: &str) -> Result<StatusCode, String> {
        let request = Request::get(self.uri(path, None).map_err(|e| e.to_string())?)
            .header(header::HOST, self.host_header.clone())
            .body(http_body_util::Limited::new(
                Either::Right(Full::new(Bytes::new())),
                0,
            ))
            .map_err(|e| e.to_string())?;
        let response = self
            .probe
            .send(request, &[], true)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read to the end, so the connection is kept for the next probe.
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        Ok(status)
    }

    /// Counts a request under way until the guard is dropped.
    pub(crate) fn begin(&self) -> InFlight<'_> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

/// A request under way to a host (see [`Host::begin`]).
pub(crate) struct InFlight<'a>(&'a Host);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A counter of one worker's own, on a cache line of its own.
#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicUsize);

/// An upstream: its hosts and how requests are spread over them.
pub struct Cluster {
    /// Name in logs, metrics and readiness.
    pub name: String,
    /// Its hosts (at least one).
    pub hosts: Box<[Arc<Host>]>,
    balance: Balance,
    /// Each worker's round-robin position.
    next: Box<[Padded]>,
    metrics: UpstreamMetrics,
    /// What it was built from.
    pub(crate) config: UpstreamConfig,
}

/// A host chosen for a request, with its breaker's permit.
pub(crate) struct Chosen<'a> {
    pub(crate) host: &'a Host,
    pub(crate) index: usize,
    pub(crate) permit: Permit<'a>,
}

impl Cluster {
    pub(crate) fn new(
        name: &str,
        config: UpstreamConfig,
        hosts: Vec<Arc<Host>>,
        workers: usize,
        metrics: &ProxyMetrics,
    ) -> Self {
        metrics
            .hosts
            .with_label_values(&[name])
            .set(hosts.len() as i64);
        Self {
            name: name.to_owned(),
            hosts: hosts.into(),
            balance: config.balance,
            next: (0..workers.max(1)).map(|_| Padded::default()).collect(),
            metrics: metrics.of(name),
            config,
        }
    }

    /// A host for worker `worker`'s next request, skipping those in `tried` (a bit per host
    /// index): a healthy one whose breaker lets the request through, in the order the
    /// balancing policy gives. `Err(wait)`: every breaker is open, the soonest for `wait`.
    pub(crate) fn choose(&self, worker: usize, tried: u64) -> Result<Chosen<'_>, Duration> {
        let hosts = &self.hosts;
        if let [host] = &hosts[..] {
            return host.breaker.try_acquire().map(|permit| Chosen {
                host,
                index: 0,
                permit,
            });
        }
        let n = hosts.len();
        let untried = |i: &usize| *i >= 64 || tried & (1 << i) == 0;
        let any_healthy = hosts
            .iter()
            .enumerate()
            .any(|(i, h)| untried(&i) && h.is_healthy());
        let eligible = |i: &usize| untried(i) && (!any_healthy || hosts[*i].is_healthy());
        let mut order: Vec<usize> = match self.balance {
            Balance::RoundRobin => {
                let start = self.next[worker % self.next.len()]
                    .0
                    .fetch_add(1, Ordering::Relaxed);
                (0..n).map(|i| (start + i) % n).filter(eligible).collect()
            }
            Balance::LeastRequest => {
                let start = self.next[worker % self.next.len()]
                    .0
                    .fetch_add(1, Ordering::Relaxed);
                let mut order: Vec<usize> =
                    (0..n).map(|i| (start + i) % n).filter(eligible).collect();
                // Stable: among equals, the round-robin order decides.
                order.sort_by_key(|i| hosts[*i].outstanding.load(Ordering::Relaxed));
                order
            }
        };
        if order.is_empty() {
            // Every host tried already: start again from the first (the caller limits how often).
            order = (0..n).collect();
        }
        let mut wait = Duration::MAX;
        for index in order {
            let host = &hosts[index];
            match host.breaker.try_acquire() {
                Ok(permit) => {
                    return Ok(Chosen {
                        host,
                        index,
                        permit,
                    });
                }
                Err(until) => wait = wait.min(until),
            }
        }
        Err(wait)
    }

    /// Counts a request's outcome, for the upstream and for `host`.
    pub(crate) fn record(&self, outcome: Outcome, host: Option<&Host>) {
        self.metrics.record(outcome);
        if let Some(host) = host {
            host.metrics.record(outcome);
            set_if_changed(&host.metrics.breaker, host.breaker.state().code());
        }
        set_if_changed(&self.metrics.breaker, self.breaker_state().code());
    }

    /// The upstream's breaker as one: closed while any host's is, open when all are, else
    /// half-open.
    pub fn breaker_state(&self) -> BreakerState {
        let mut state = BreakerState::Open;
        for host in &self.hosts {
            match host.breaker.state() {
                BreakerState::Closed => return BreakerState::Closed,
                BreakerState::HalfOpen => state = BreakerState::HalfOpen,
                BreakerState::Open => {}
            }
        }
        state
    }
}

/// Sets `gauge` to `value` unless it has it already: a read leaves the line shared by every
/// core, where a write (on every request) would take it from the others.
fn set_if_changed(gauge: &prometheus::IntGauge, value: i64) {
    if gauge.get() != value {
        gauge.set(value);
    }
}

/// The metric families of upstreams and hosts (registered once per gateway).
#[derive(Clone)]
pub(crate) struct ProxyMetrics {
    requests: prometheus::IntCounterVec,
    breaker: prometheus::IntGaugeVec,
    host_requests: prometheus::IntCounterVec,
    host_breaker: prometheus::IntGaugeVec,
    host_healthy: prometheus::IntGaugeVec,
    hosts: prometheus::IntGaugeVec,
}

impl ProxyMetrics {
    pub(crate) fn new(metrics: &Metrics) -> Self {
        Self {
            requests: metrics.counter(
                "gateway_upstream_requests_total",
                "Requests to upstreams by outcome (ok, server_error, unreachable, timeout, retried, circuit_open).",
                &["upstream", "outcome"],
            ),
            breaker: metrics.gauge_vec(
                "gateway_circuit_breaker_state",
                "Circuit breaker state per upstream (all its hosts as one): 0 closed, 1 open, 2 half-open.",
                &["upstream"],
            ),
            host_requests: metrics.counter(
                "gateway_upstream_host_requests_total",
                "Requests to each host of an upstream, by outcome.",
                &["upstream", "host", "outcome"],
            ),
            host_breaker: metrics.gauge_vec(
                "gateway_upstream_host_breaker_state",
                "Circuit breaker (passive health) of each host: 0 closed, 1 open (out), 2 half-open.",
                &["upstream", "host"],
            ),
            host_healthy: metrics.gauge_vec(
                "gateway_upstream_host_healthy",
                "Active health of each host: 1 healthy (or not checked), 0 failing its checks.",
                &["upstream", "host"],
            ),
            hosts: metrics.gauge_vec(
                "gateway_upstream_hosts",
                "Hosts of each upstream (addresses its DNS name resolves to, or its URLs).",
                &["upstream"],
            ),
        }
    }

    /// The series of the upstream `name`.
    fn of(&self, name: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            outcomes: Outcome::ALL
                .map(|outcome| self.requests.with_label_values(&[name, outcome.label()]))
                .into(),
            breaker: self.breaker.with_label_values(&[name]),
        }
    }

    /// The series of host `host` of upstream `upstream`.
    fn host(&self, upstream: &str, host: &str) -> HostMetrics {
        let healthy = self.host_healthy.with_label_values(&[upstream, host]);
        healthy.set(1);
        HostMetrics {
            outcomes: Outcome::ALL
                .map(|outcome| {
                    self.host_requests
                        .with_label_values(&[upstream, host, outcome.label()])
                })
                .into(),
            breaker: self.host_breaker.with_label_values(&[upstream, host]),
            healthy,
        }
    }
}

/// How a request to an upstream ended, as counted in `gateway_upstream_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    ServerError,
    Unreachable,
    Timeout,
    Retried,
    CircuitOpen,
}

impl Outcome {
    const ALL: [Self; 6] = [
        Self::Ok,
        Self::ServerError,
        Self::Unreachable,
        Self::Timeout,
        Self::Retried,
        Self::CircuitOpen,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ServerError => "server_error",
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Retried => "retried",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

/// One upstream's series: a counter per [`Outcome`] (in [`Outcome::ALL`]'s order) and its
/// breaker's state.
#[derive(Clone)]
struct UpstreamMetrics {
    outcomes: Arc<[prometheus::IntCounter]>,
    breaker: prometheus::IntGauge,
}

impl UpstreamMetrics {
    fn record(&self, outcome: Outcome) {
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.inc();
        }
    }
}

/// One host's series.
struct HostMetrics {
    outcomes: Box<[prometheus::IntCounter]>,
    breaker: prometheus::IntGauge,
    healthy: prometheus::IntGauge,
}

impl HostMetrics {
    fn record(&self, outcome: Outcome) {
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.inc();
        }
    }
}
