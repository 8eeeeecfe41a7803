//! The outbox relay: publishes the CloudEvents that state changes wrote to `payment_events` to
//! NATS JetStream (stream `PAYMENTS`, subjects `payments.payment.<state>` and
//! `payments.refund.<state>`, header `Nats-Msg-Id` = event id), marking a row sent only once its publish is acknowledged. Order per payment is
//! kept (a batch never holds two events of one payment, and a payment's next event is taken
//! only once the previous one is sent). While NATS is down, events accumulate and are sent in
//! order when it is back.
//!
//! Several relays may run at once: each claims its batch for a short lease in one short
//! transaction, publishes with no transaction open, then marks what was acknowledged; a relay
//! that dies leaves a lease that runs out, and JetStream's duplicate window absorbs the
//! repeat of an event it had published but not marked.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use common::db::StoreError;

use crate::store::{OutboxEvent, PaymentsStore};
use crate::wake::Wake;

/// How long JetStream keeps an event (consumers further behind read the feed instead).
const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// JetStream drops a message whose `Nats-Msg-Id` it saw within this window: a relay that
/// published but died before marking the event sent publishes it again, harmlessly.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The first pause after a failure, doubled on each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The pause after a batch that emptied the outbox (a new payment wakes the relay sooner).
const IDLE_PAUSE: Duration = Duration::from_millis(500);
/// How often the backlog gauge is brought up to date.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);
/// How often sent events older than the retention are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// Where and how events are published.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// `NATS_URL`.
    pub nats_url: String,
    /// `PAYMENTS_STREAM`, default `PAYMENTS`.
    pub stream: String,
    /// `PAYMENTS_SUBJECT_PREFIX`, default `payments.payment`: events go to `<prefix>.<state>`.
    pub subject_prefix: String,
    /// Events per batch.
    pub batch: i64,
    /// How long sent events stay in the database (the feed) before they are pruned.
    pub retention: Duration,
}

/// What one relay batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Published and marked sent.
    pub sent: usize,
    /// Taken but not acknowledged (left for the next batch).
    pub failed: usize,
}

/// How long a relay holds the events it claimed (more than the acknowledgement timeout of a
/// whole batch); a relay that dies leaves them to the others after this.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// Claims a batch, publishes it with no transaction open, and marks what JetStream
/// acknowledged as sent.
pub async fn relay_once(
    store: &dyn PaymentsStore,
    publisher: &dyn EventPublisher,
    limit: i64,
) -> Result<RelayOutcome, StoreError> {
    let batch = store
        .claim_outbox_batch(limit, Utc::now(), CLAIM_LEASE)
        .await?;
    if batch.is_empty() {
        return Ok(RelayOutcome::default());
    }
    let acked = publisher.publish(&batch).await;
    store.mark_published(&acked, Utc::now()).await?;
    Ok(RelayOutcome {
        sent: acked.len(),
        failed: batch.len() - acked.len(),
    })
}

/// Publishes a batch; returns the ids JetStream acknowledged.
#[async_trait::async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes `events` and waits for their acknowledgements.
    async fn publish(&self, events: &[OutboxEvent]) -> Vec<String>;
}

/// The JetStream publisher.
pub struct JetStreamPublisher {
    context: jetstream::Context,
    subject_prefix: String,
    metrics: RelayMetrics,
}

#[async_trait::async_trait]
impl EventPublisher for JetStreamPublisher {
    #[tracing::instrument(
        name = "publish",
        skip_all,
        fields(
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %format!("{}.>", self.subject_prefix),
            messaging.batch.message_count = events.len(),
        )
    )]
    async fn publish(&self, events: &[OutboxEvent]) -> Vec<String> {
        // Send the whole batch, then collect the acknowledgements (they come back in order).
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            // `payments.payment.succeeded` → `<prefix>.payment.succeeded`.
            let kind = event.kind.strip_prefix("payments.").unwrap_or(&event.kind);
            let subject = format!("{}.{kind}", self.subject_prefix);
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.id.as_str());
            headers.insert("Content-Type", "application/cloudevents+json");
            let payload = event.event.to_string().into_bytes();
            match self
                .context
                .publish_with_headers(subject, headers, payload.into())
                .await
            {
                Ok(ack) => pending.push((event.id.clone(), ack)),
                Err(error) => {
                    tracing::warn!(%error, event_id = %event.id, "publish failed");
                    break;
                }
            }
        }
        let mut acked = Vec::with_capacity(pending.len());
        // `pending` is the prefix of `events` that was sent.
        for (event, (id, ack)) in events.iter().zip(pending) {
            match tokio::time::timeout(Duration::from_secs(5), ack).await {
                Ok(Ok(ack)) if ack.duplicate => {
                    // Published before (a relay that died before marking it, or a bug that
                    // sends twice): JetStream dropped the copy.
                    self.metrics.duplicates.with_label_values::<&str>(&[]).inc();
                    tracing::info!(event_id = %id, "already in the stream; JetStream dropped the repeat");
                    acked.push(id);
                }
                Ok(Ok(_)) => {
                    self.metrics
                        .published
                        .with_label_values(&[&event.kind])
                        .inc();
                    let lag = (Utc::now() - event.created_at).to_std().unwrap_or_default();
                    self.metrics
                        .lag
                        .with_label_values::<&str>(&[])
                        .observe(lag.as_secs_f64());
                    acked.push(id);
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, event_id = %id, "publish not acknowledged")
                }
                Err(_) => tracing::warn!(event_id = %id, "publish acknowledgement timed out"),
            }
        }
        self.metrics
            .failed
            .with_label_values::<&str>(&[])
            .inc_by(u64::try_from(events.len() - acked.len()).unwrap_or(0));
        acked
    }
}

/// Connects to NATS without waiting for it: the client keeps reconnecting in the background,
/// so the service starts (and accepts payments) while the broker is down.
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("payments-relay")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("NATS_URL {url}: {e}"))
}

/// Creates the stream, or brings its configuration up to date.
async fn ensure_stream(
    context: &jetstream::Context,
    settings: &RelaySettings,
) -> Result<(), String> {
    let config = stream::Config {
        name: settings.stream.clone(),
        subjects: vec![format!("{}.>", settings.subject_prefix)],
        max_age: STREAM_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    context
        .create_or_update_stream(config)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Runs the relay until `shutdown`: stream set-up, then batches, backing off while NATS is away.
pub fn spawn(
    store: Arc<dyn PaymentsStore>,
    client: async_nats::Client,
    settings: RelaySettings,
    metrics: RelayMetrics,
    wake: Arc<Wake>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let context = jetstream::new(client);
        let publisher = JetStreamPublisher {
            context: context.clone(),
            subject_prefix: settings.subject_prefix.clone(),
            metrics: metrics.clone(),
        };
        let mut stream_ready = false;
        let mut backoff = FIRST_BACKOFF;
        // Prune at the first chance.
        let mut last_prune = std::time::Instant::now() - PRUNE_INTERVAL * 2;
        let mut last_backlog: Option<std::time::Instant> = None;
        while !shutdown.is_cancelled() {
            let round = tokio::time::Instant::now();
            // First: the backlog is reported however NATS is doing, from the first round on,
            // and then once a second (a count, not worth a query every round under load).
            if last_backlog.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY) {
                last_backlog = Some(std::time::Instant::now());
                if let Ok(backlog) = store.outbox_backlog().await {
                    metrics.backlog.set(backlog);
                }
            }
            if !stream_ready {
                match ensure_stream(&context, &settings).await {
                    Ok(()) => {
                        tracing::info!(stream = %settings.stream, "JetStream stream ready");
                        stream_ready = true;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot set up the JetStream stream; retrying");
                        back_off(&shutdown, backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            match relay_once(store.as_ref(), &publisher, settings.batch).await {
                Ok(outcome) if outcome.failed > 0 => {
                    tracing::warn!(
                        sent = outcome.sent,
                        failed = outcome.failed,
                        "events not published; retrying"
                    );
                    back_off(&shutdown, backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ok(outcome) => {
                    backoff = FIRST_BACKOFF;
                    if outcome.sent > 0 {
                        tracing::debug!(sent = outcome.sent, "events published");
                    }
                    if outcome.sent < usize::try_from(settings.batch).unwrap_or(usize::MAX) {
                        idle(&shutdown, &wake, round).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the outbox; retrying");
                    back_off(&shutdown, backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            if last_prune.elapsed() > PRUNE_INTERVAL {
                last_prune = std::time::Instant::now();
                let before = Utc::now() - settings.retention;
                match store.prune_published_events(before).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "sent events pruned"),
                    Err(error) => tracing::warn!(%error, "cannot prune sent events"),
                }
            }
        }
    })
}

/// After a failure: the whole pause, whatever is written meanwhile (each new payment would
/// otherwise bring the retry forward, and a busy service would retry a broker that is away at
/// the rate it takes payments).
async fn back_off(shutdown: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = shutdown.cancelled() => {}
    }
}

/// After a batch that emptied the outbox: until an event is written (no sooner than
/// [`crate::wake::MIN_ROUND_GAP`] after this round began), or [`IDLE_PAUSE`].
async fn idle(shutdown: &CancellationToken, wake: &Wake, round: tokio::time::Instant) {
    tokio::select! {
        () = tokio::time::sleep(IDLE_PAUSE) => {}
        () = wake.events(round) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Readiness check `broker`: passes while the NATS connection is up.
pub struct BrokerCheck(pub async_nats::Client);

#[async_trait::async_trait]
impl common::health::HealthCheck for BrokerCheck {
    fn name(&self) -> String {
        "broker".into()
    }

    fn component_type(&self) -> &'static str {
        "component"
    }

    async fn check(&self) -> Result<(), String> {
        match self.0.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("NATS is {state:?}")),
        }
    }
}

/// The relay's metrics: backlog, published and failed publishes, and publish lag.
#[derive(Clone)]
pub struct RelayMetrics {
    backlog: prometheus::IntGauge,
    published: prometheus::IntCounterVec,
    duplicates: prometheus::IntCounterVec,
    failed: prometheus::IntCounterVec,
    lag: prometheus::HistogramVec,
}

impl RelayMetrics {
    /// Registers the relay's metrics with the service's registry.
    pub fn new(metrics: &common::metrics::Metrics) -> Self {
        Self {
            backlog: metrics.gauge(
                "payments_outbox_backlog",
                "Events written but not yet published to NATS.",
            ),
            published: metrics.counter(
                "payments_outbox_published_total",
                "Events published to NATS and acknowledged.",
                &["type"],
            ),
            duplicates: {
                let duplicates = metrics.counter(
                    "payments_outbox_duplicates_total",
                    "Events published again that JetStream already held (dropped by its duplicate window): a relay that died before marking them sent, or a bug.",
                    &[],
                );
                duplicates.with_label_values::<&str>(&[]);
                duplicates
            },
            failed: metrics.counter(
                "payments_outbox_publish_failures_total",
                "Events whose publish was not acknowledged (retried).",
                &[],
            ),
            lag: metrics.histogram(
                "payments_outbox_publish_lag_seconds",
                "Time from a state change to its event being acknowledged by NATS.",
                &[],
                vec![
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ],
            ),
        }
    }
}
