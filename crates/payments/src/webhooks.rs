//! Webhook delivery (Standard Webhooks): each event an endpoint subscribes to is POSTed as
//! its CloudEvent JSON, signed, retried on a schedule, and logged attempt by attempt.
//!
//! - **Deliveries** are written in the transaction of the state change (`store::insert_event`
//!   fans each event out to the endpoints that subscribe to it), so nothing is lost between a
//!   change and its webhook. Deliverers on every replica claim due deliveries under a lease
//!   (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so an attempt is never sent by two; one that
//!   dies mid-delivery leaves a lease that runs out, and the delivery is attempted again (at
//!   least once: receivers de-duplicate by `webhook-id`, the event id).
//! - **Signing**: `webhook-id` (the event id), `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per
//!   signing secret, space-separated during a rotation), by the `standardwebhooks` crate.
//! - **Retries**: anything but a 2xx within the timeout is retried after each step of the
//!   schedule (with ±20 % jitter), then the delivery is failed; an endpoint failing for longer
//!   than the disable threshold is disabled and says why.
//! - **Safety**: the URL is the caller's, so it is checked at registration and at every
//!   connect (the resolver refuses loopback, private, link-local, unique-local, CGNAT and
//!   metadata addresses unless allowed); `https` unless allowed; no redirects followed; at most
//!   64 KiB of a response read; the secret never logged.
//!
//! A slow, dead or backlogged endpoint does not hold up others or the API: attempts run
//! concurrently, each bounded by the timeout, and nothing in a request's path waits for them.
//! The claim itself shares the slots out ([`DeliveryShares`], counted across replicas from
//! the leases held): at most four in flight per endpoint, one while it is failing,
//! half the slots for failing endpoints together, healthy endpoints' deliveries first.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::domain::webhook::{Delivery, WebhookEndpoint};
use crate::store::{AttemptOutcome, DeliveryShares, PaymentsStore};
use crate::wake::Wake;

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `PAYMENTS_WEBHOOK_ALLOW_PRIVATE`: allow loopback and private addresses (tests, a
    /// receiver on the same network).
    pub allow_private: bool,
    /// `PAYMENTS_WEBHOOK_ALLOW_HTTP`: allow `http://` URLs.
    pub allow_http: bool,
    /// `PAYMENTS_WEBHOOK_TIMEOUT_MS`: an attempt without a full answer within this failed.
    pub timeout: Duration,
    /// `PAYMENTS_WEBHOOK_RETRY_SCHEDULE`: the waits before the 2nd, 3rd, ... attempt.
    pub schedule: Vec<Duration>,
    /// `PAYMENTS_WEBHOOK_DISABLE_AFTER_SECONDS`: an endpoint failing this long is disabled.
    pub disable_after: Duration,
    /// `PAYMENTS_WEBHOOK_SECRET_OVERLAP_HOURS`: after a rotation, the old secret signs beside
    /// the new one this long (unless the rotation says otherwise).
    pub secret_overlap: Duration,
    /// `PAYMENTS_WEBHOOK_CONCURRENCY`: attempts in flight in this process.
    pub concurrency: usize,
    /// How often idle deliverers look for due deliveries (new events also wake them).
    pub poll_interval: Duration,
    /// `PAYMENTS_WEBHOOK_LOG_RETENTION_HOURS`: finished deliveries (and their attempts) are
    /// kept this long in the delivery log.
    pub log_retention: Duration,
}

/// The default schedule (Standard Webhooks' suggestion, Svix's): a little over a day in all.
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// Bytes of an endpoint's answer read at most (the rest is not read).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How often the delivery log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Attempts in flight per endpoint at most (one while it is failing), across deliverers, so
/// that one slow endpoint, or one with a backlog, cannot take every slot.
const PER_ENDPOINT: i64 = 4;

/// Parses a schedule: comma-separated durations with a unit (`500ms`, `5s`, `5m`, `2h`).
pub fn parse_schedule(raw: &str) -> Result<Vec<Duration>, String> {
    let steps: Result<Vec<Duration>, String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|step| {
            let split = step
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(|| format!("{step:?} has no unit (ms, s, m, h)"))?;
            let (number, unit) = step.split_at(split);
            let n: u64 = number
                .parse()
                .map_err(|_| format!("{step:?} is not a whole number and a unit"))?;
            Ok(match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n * 60),
                "h" => Duration::from_secs(n * 3600),
                other => return Err(format!("unknown unit {other:?} (ms, s, m, h)")),
            })
        })
        .collect();
    let steps = steps?;
    if steps.is_empty() {
        return Err("at least one retry".into());
    }
    Ok(steps)
}

/// Addresses a webhook may not reach unless private addresses are allowed: loopback,
/// unspecified, private (RFC 1918), shared (CGNAT), link-local (with cloud metadata at
/// 169.254.169.254), benchmarking, reserved, broadcast and multicast; IPv6 loopback,
/// unique-local, link-local, multicast, and IPv4 addresses mapped into IPv6.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
    }
}

/// Checks a webhook URL's form: absolute, `https` (or `http` if allowed), a host, no
/// credentials, and, when the host is an IP address, an address that may be reached.
pub fn check_url(raw: &str, settings: &WebhookSettings) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not an absolute URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if settings.allow_http => {}
        "http" => return Err("must be https".into()),
        other => return Err(format!("the scheme {other:?} is not allowed (https)")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    let ip = match url.host() {
        None => return Err("has no host".into()),
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = ip
        && !settings.allow_private
        && forbidden(ip)
    {
        return Err(format!("{ip} is a loopback, private or reserved address"));
    }
    Ok(url)
}

/// Resolves `url`'s host now and checks every address (registration: a name that resolves
/// to a private address is refused at once; the resolver checks again at every connect).
pub async fn check_resolves(url: &url::Url, settings: &WebhookSettings) -> Result<(), String> {
    if settings.allow_private {
        return Ok(());
    }
    let Some(url::Host::Domain(host)) = url.host() else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    match addresses.iter().find(|a| forbidden(a.ip())) {
        Some(address) => Err(format!(
            "{host} resolves to {}, a loopback, private or reserved address",
            address.ip()
        )),
        None => Ok(()),
    }
}

/// reqwest's resolver for deliveries: the system's, keeping only addresses a webhook may
/// reach (an attacker's name may resolve to the metadata service at connect time).
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| allow_private || !forbidden(address.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "refused: {host} resolves only to addresses webhooks may not reach"
                )
                .into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

/// The `webhook-signature` value: one `v1,<base64>` per secret, space-separated.
pub fn signature(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, String> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let signer =
            standardwebhooks::Webhook::new(secret).map_err(|e| format!("bad secret: {e}"))?;
        signatures.push(
            signer
                .sign(id, timestamp, body)
                .map_err(|e| format!("cannot sign: {e}"))?,
        );
    }
    Ok(signatures.join(" "))
}

/// What deliveries count.
#[derive(Clone)]
pub struct WebhookMetrics {
    attempts: prometheus::IntCounterVec,
    failed: prometheus::IntCounterVec,
    disabled: prometheus::IntCounterVec,
    backlog: prometheus::IntGauge,
    oldest: prometheus::IntGauge,
}

impl WebhookMetrics {
    /// Registers the webhook series.
    pub fn new(metrics: &common::metrics::Metrics) -> Self {
        let attempts = metrics.counter(
            "payments_webhook_attempts_total",
            "Webhook delivery attempts by outcome (delivered, http_error, timeout, network, refused).",
            &["outcome"],
        );
        for outcome in ["delivered", "http_error", "timeout", "network", "refused"] {
            attempts.with_label_values(&[outcome]);
        }
        let failed = metrics.counter(
            "payments_webhook_deliveries_failed_total",
            "Webhook deliveries given up after the last retry (or because their endpoint was disabled).",
            &[],
        );
        failed.with_label_values::<&str>(&[]);
        let disabled = metrics.counter(
            "payments_webhook_endpoints_disabled_total",
            "Webhook endpoints disabled for failing longer than PAYMENTS_WEBHOOK_DISABLE_AFTER_SECONDS.",
            &[],
        );
        disabled.with_label_values::<&str>(&[]);
        Self {
            attempts,
            failed,
            disabled,
            backlog: metrics.gauge(
                "payments_webhook_backlog",
                "Webhook deliveries not yet delivered (pending), all endpoints.",
            ),
            oldest: metrics.gauge(
                "payments_webhook_oldest_pending_seconds",
                "Age of the oldest pending webhook delivery, in seconds (0 when none).",
            ),
        }
    }
}

/// The deliverer: claims due deliveries and attempts them.
pub struct Deliverer {
    store: Arc<dyn PaymentsStore>,
    settings: WebhookSettings,
    client: reqwest::Client,
    metrics: WebhookMetrics,
    wake: Arc<Wake>,
    slots: Arc<Semaphore>,
}

impl Deliverer {
    /// A deliverer; `wake` is notified when events are written (a claim runs at most once per
    /// [`crate::wake::MIN_ROUND_GAP`] however often it is).
    pub fn new(
        store: Arc<dyn PaymentsStore>,
        settings: WebhookSettings,
        metrics: WebhookMetrics,
        wake: Arc<Wake>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private,
            }))
            .user_agent(concat!("payments-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        Ok(Self {
            store,
            settings,
            client,
            metrics,
            wake,
            slots,
        })
    }

    /// Runs until `shutdown`; attempts in flight then finish (each within the timeout).
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = Arc::new(self);
        tokio::spawn(async move { this.run(shutdown).await })
    }

    /// What may be in flight at once: [`PER_ENDPOINT`] per endpoint, and half the slots
    /// (at least one) for failing endpoints together, so that endpoints that time out leave
    /// healthy ones the other half.
    fn shares(&self) -> DeliveryShares {
        DeliveryShares {
            per_endpoint: PER_ENDPOINT,
            failing: i64::try_from(self.settings.concurrency / 2)
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }

    fn lease(&self) -> Duration {
        // Long enough for an attempt to end (the timeout bounds it whole) and be recorded; a
        // dead deliverer's claims lapse after it.
        self.settings.timeout + Duration::from_secs(5)
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut attempts = tokio::task::JoinSet::new();
        let mut last_gauges = Instant::now() - Duration::from_secs(60);
        let mut last_prune = Instant::now() - PRUNE_EVERY;
        while !shutdown.is_cancelled() {
            let round = tokio::time::Instant::now();
            if last_gauges.elapsed() >= Duration::from_secs(1) {
                self.update_gauges().await;
                last_gauges = Instant::now();
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                self.prune().await;
                last_prune = Instant::now();
            }
            let free = self.slots.available_permits();
            let mut claimed = Vec::new();
            if free > 0 {
                match self
                    .store
                    .claim_deliveries(
                        Utc::now(),
                        self.lease(),
                        i64::try_from(free).unwrap_or(1),
                        self.shares(),
                    )
                    .await
                {
                    Ok(found) => claimed = found,
                    Err(error) => tracing::warn!(%error, "cannot claim webhook deliveries"),
                }
            }
            let idle = claimed.is_empty();
            for delivery in claimed {
                // At most `free` were claimed: a permit is there for each.
                let Ok(permit) = self.slots.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                attempts.spawn(async move {
                    this.attempt(delivery).await;
                    drop(permit);
                });
            }
            while attempts.try_join_next().is_some() {}
            if idle || self.slots.available_permits() == 0 {
                tokio::select! {
                    () = self.wake.events(round) => {}
                    () = tokio::time::sleep(self.settings.poll_interval) => {}
                    Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
        while attempts.join_next().await.is_some() {}
    }

    async fn prune(&self) {
        let retention = chrono::Duration::from_std(self.settings.log_retention)
            .unwrap_or(chrono::Duration::days(30));
        match self
            .store
            .prune_webhook_deliveries(Utc::now() - retention)
            .await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "finished webhook deliveries pruned from the log"),
            Err(error) => tracing::warn!(%error, "cannot prune the webhook delivery log"),
        }
    }

    async fn update_gauges(&self) {
        match self.store.webhook_backlog().await {
            Ok((count, oldest)) => {
                self.metrics.backlog.set(count);
                let age = oldest.map_or(0, |oldest| (Utc::now() - oldest).num_seconds().max(0));
                self.metrics.oldest.set(age);
            }
            Err(error) => tracing::debug!(%error, "cannot read the webhook backlog"),
        }
    }

    /// One attempt of one delivery, recorded with its outcome.
    #[tracing::instrument(name = "deliver_webhook", skip_all, fields(endpoint_id = %delivery.endpoint_id, event_id = %delivery.event_id, attempt = delivery.attempts))]
    async fn attempt(&self, delivery: Delivery) {
        let now = Utc::now();
        let endpoint = match self.store.webhook_endpoint(&delivery.endpoint_id).await {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => return, // deleted with its deliveries
            Err(error) => {
                return tracing::warn!(%error, "cannot read the endpoint; the lease runs out");
            }
        };
        if !endpoint.is_enabled() {
            let outcome = AttemptOutcome::give_up(now, "endpoint disabled");
            return self.record(&delivery, &endpoint, outcome).await;
        }
        let event = match self.store.event_body(&delivery.event_id).await {
            Ok(Some(event)) => event,
            Ok(None) => {
                let outcome = AttemptOutcome::give_up(now, "the event is no longer kept");
                return self.record(&delivery, &endpoint, outcome).await;
            }
            Err(error) => {
                return tracing::warn!(%error, "cannot read the event; the lease runs out");
            }
        };
        let started = Instant::now();
        let (status, error, label) = self.send(&endpoint, &delivery.event_id, &event, now).await;
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.metrics.attempts.with_label_values(&[label]).inc();
        let outcome = if error.is_none() {
            tracing::info!(status, latency_ms, "webhook delivered");
            AttemptOutcome::delivered(now, status, latency_ms)
        } else {
            let attempt = usize::try_from(delivery.attempts).unwrap_or(usize::MAX);
            let next = self
                .settings
                .schedule
                .get(attempt.saturating_sub(1))
                .map(|wait| Utc::now() + jittered(*wait));
            tracing::info!(
                ?status,
                error = error.as_deref().unwrap_or(""),
                latency_ms,
                retry = next.is_some(),
                "webhook attempt failed"
            );
            AttemptOutcome::failed(now, status, latency_ms, error.unwrap_or_default(), next)
        };
        self.record(&delivery, &endpoint, outcome).await;
    }

    async fn record(
        &self,
        delivery: &Delivery,
        endpoint: &WebhookEndpoint,
        outcome: AttemptOutcome,
    ) {
        let disable_after = chrono::Duration::from_std(self.settings.disable_after)
            .unwrap_or(chrono::Duration::days(5));
        let gave_up = outcome.delivered_at.is_none() && outcome.next_attempt_at.is_none();
        match self
            .store
            .record_attempt(delivery.id, &endpoint.id, &outcome, disable_after)
            .await
        {
            Ok(disabled) => {
                if gave_up {
                    self.metrics.failed.with_label_values::<&str>(&[]).inc();
                    tracing::warn!(event_id = %delivery.event_id, endpoint_id = %endpoint.id, "webhook delivery failed for good");
                }
                if disabled {
                    self.metrics.disabled.with_label_values::<&str>(&[]).inc();
                    tracing::error!(endpoint_id = %endpoint.id, "webhook endpoint disabled: failing for too long");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot record the attempt; the delivery will be attempted again")
            }
        }
    }

    /// POSTs the event: `(status, error, outcome label)`.
    async fn send(
        &self,
        endpoint: &WebhookEndpoint,
        event_id: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> (Option<i32>, Option<String>, &'static str) {
        // Checked again at every attempt: the URL's form (the resolver checks the address).
        let url = match check_url(&endpoint.url, &self.settings) {
            Ok(url) => url,
            Err(reason) => return (None, Some(format!("refused: {reason}")), "refused"),
        };
        let timestamp = now.timestamp();
        let signature = match signature(
            &endpoint.signing_secrets(now),
            event_id,
            timestamp,
            body.as_bytes(),
        ) {
            Ok(signature) => signature,
            Err(error) => return (None, Some(error), "refused"),
        };
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let refused = std::error::Error::source(&error)
                    .map(|e| format!("{e:?}"))
                    .unwrap_or_default()
                    .contains("refused: ");
                let (label, what) = if error.is_timeout() {
                    ("timeout", "timeout".to_owned())
                } else if refused {
                    (
                        "refused",
                        format!(
                            "refused: {} resolves only to addresses webhooks may not reach",
                            endpoint_host(&endpoint.url)
                        ),
                    )
                } else if error.is_connect() {
                    (
                        "network",
                        "connect: the endpoint could not be reached".to_owned(),
                    )
                } else {
                    ("network", format!("network: {}", error.without_url()))
                };
                return (None, Some(what), label);
            }
        };
        let status = i32::from(response.status().as_u16());
        // Read (a bounded part of) the answer, so that a keep-alive connection can be reused
        // and a slow body counts against the timeout.
        let mut read = 0usize;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    read += chunk.len();
                    if read >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                Err(error) if error.is_timeout() => {
                    return (Some(status), Some("timeout".into()), "timeout");
                }
                Err(_) => break,
            }
        }
        if (200..300).contains(&status) {
            (Some(status), None, "delivered")
        } else if (300..400).contains(&status) {
            (
                Some(status),
                Some(format!("status {status}: redirects are not followed")),
                "http_error",
            )
        } else {
            (Some(status), Some(format!("status {status}")), "http_error")
        }
    }
}

fn endpoint_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `wait` ± 20 %.
fn jittered(wait: Duration) -> chrono::Duration {
    let spread = wait.as_millis() as f64 * 0.2;
    let offset = (rand::random::<f64>() * 2.0 - 1.0) * spread;
    let millis = (wait.as_millis() as f64 + offset).max(0.0) as i64;
    chrono::Duration::milliseconds(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            allow_private: false,
            allow_http: false,
            timeout: Duration::from_secs(1),
            schedule: vec![Duration::from_secs(1)],
            disable_after: Duration::from_secs(3600),
            secret_overlap: Duration::from_secs(3600),
            concurrency: 4,
            poll_interval: Duration::from_millis(100),
            log_retention: Duration::from_secs(3600),
        }
    }

    #[test]
    fn private_and_reserved_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
            "198.18.0.1",
        ] {
            assert!(forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_must_be_https_to_a_public_host_without_credentials() {
        let s = settings();
        assert!(check_url("https://shop.example.com/hooks", &s).is_ok());
        for bad in [
            "http://shop.example.com/hooks",
            "ftp://shop.example.com/",
            "https://user:pw@shop.example.com/",
            "https://127.0.0.1/hooks",
            "https://[::1]/hooks",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "/relative",
            "https://shop.example.com/#frag",
        ] {
            assert!(check_url(bad, &s).is_err(), "{bad}");
        }
        let open = WebhookSettings {
            allow_private: true,
            allow_http: true,
            ..s
        };
        assert!(check_url("http://127.0.0.1:9000/hooks", &open).is_ok());
    }

    #[test]
    fn schedules_parse_with_units() {
        assert_eq!(
            parse_schedule("500ms, 5s,5m,2h").unwrap(),
            [
                Duration::from_millis(500),
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200)
            ]
        );
        for bad in ["", "5", "5d", "x5s", "-1s"] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_schedule(DEFAULT_SCHEDULE).unwrap().len(), 7);
    }

    #[test]
    fn signatures_verify_with_the_standard_library_under_either_secret() {
        let (old, new) = (
            crate::domain::webhook::new_secret(),
            crate::domain::webhook::new_secret(),
        );
        let now = Utc::now().timestamp();
        let body = br#"{"id":"evt_1"}"#;
        let header = signature(&[&new, &old], "evt_1", now, body).unwrap();
        assert_eq!(header.split(' ').count(), 2);
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert("webhook-signature", header.parse().unwrap());
        for secret in [&old, &new] {
            standardwebhooks::Webhook::new(secret)
                .unwrap()
                .verify(body, &headers)
                .unwrap();
        }
        let other = crate::domain::webhook::new_secret();
        assert!(
            standardwebhooks::Webhook::new(&other)
                .unwrap()
                .verify(body, &headers)
                .is_err()
        );
    }
}
