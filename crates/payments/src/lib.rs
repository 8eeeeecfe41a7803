//! The payments service: idempotent payment creation, a processing workflow, authorize then
//! capture, refunds, events through an outbox.

pub mod config;
pub mod domain;
pub mod http;
pub mod idempotency;
pub mod processor;
pub mod provider;
pub mod relay;
pub mod store;
pub mod wake;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use common::auth::{HttpJwks, TokenVerifier, VerifierSettings};
use common::server::Service;
use processor::{Processor, ProcessorMetrics};
use provider::{PaymentProvider, Sandbox};
use tokio_util::sync::CancellationToken;

pub use config::PaymentsConfig;
use store::PaymentsStore;

/// The service's name in logs and spans.
pub const SERVICE: &str = "payments";

/// `payments serve`: the configuration from the environment, then serve until a signal.
pub fn serve(args: common::server::ServeArgs) -> std::process::ExitCode {
    common::server::run_binary(
        SERVICE,
        PaymentsConfig::from_env,
        |config, shutdown| async move {
            let app = Application::build(config).await?;
            args.announce(app.local_addr()?)?;
            app.run(shutdown).await
        },
    )
}

/// A built payments service: database opened and migrated, listener bound, not yet serving.
pub struct Application {
    service: Service,
    store: Arc<dyn PaymentsStore>,
    config: Arc<PaymentsConfig>,
    wake: Arc<wake::Wake>,
    broker: Option<async_nats::Client>,
    metrics: common::metrics::Metrics,
    provider: Arc<dyn PaymentProvider>,
    counters: ProcessorMetrics,
    webhook_metrics: webhooks::WebhookMetrics,
}

impl Application {
    /// Opens (and migrates) the database and binds `config.addr` (port 0 picks a free port).
    pub async fn build(config: PaymentsConfig) -> anyhow::Result<Self> {
        let store = store::open(&config.database_url, config.database_max_connections)
            .await
            .with_context(|| {
                format!(
                    "cannot open the payments database {}",
                    config.database_url.redacted()
                )
            })?;
        let config = Arc::new(config);
        let verifier = TokenVerifier::new(
            Arc::new(HttpJwks::new(config.jwks_url.clone())),
            VerifierSettings::new(config.token_issuer.clone(), SERVICE),
        );
        let wake = Arc::new(wake::Wake::default());
        let metrics = common::metrics::Metrics::new();
        let broker = match &config.relay {
            Some(relay) => Some(relay::connect(&relay.nats_url).await?),
            None => None,
        };
        let provider: Arc<dyn PaymentProvider> = Arc::new(Sandbox {
            latency: config.sandbox_latency,
            flaky_failures: provider::SANDBOX_FLAKY_FAILURES,
            ledger: store.clone(),
        });
        let counters = ProcessorMetrics::new(&metrics);
        let webhook_metrics = webhooks::WebhookMetrics::new(&metrics);
        let router = http::router(http::AppState {
            store: store.clone(),
            config: config.clone(),
            verifier: Arc::new(verifier),
            wake: wake.clone(),
            broker: broker.clone(),
            metrics: metrics.clone(),
            provider: provider.clone(),
            counters: counters.clone(),
        });
        // The database is closed by `run`, after the processor's workers have stopped too.
        let service =
            Service::bind(SERVICE, "PAYMENTS_ADDR", config.addr, router, &config.http).await?;
        Ok(Self {
            service,
            store,
            config,
            wake,
            broker,
            metrics,
            provider,
            counters,
            webhook_metrics,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    /// The store, for tests and the runner.
    pub fn store(&self) -> Arc<dyn PaymentsStore> {
        self.store.clone()
    }

    /// Serves and processes payments until `shutdown` fires; in-flight requests and provider
    /// calls finish, then the database is closed.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.run_draining(shutdown.clone(), shutdown).await
    }

    /// As [`Application::run`], when the service stops serving later than shutdown is asked
    /// for (the all-in-one runner lets the gateway in front drain first): processing workers
    /// stop taking new payments as soon as `stop_claiming` fires and finish the ones they
    /// hold; requests are served (and events relayed) until `shutdown`.
    pub async fn run_draining(
        self,
        stop_claiming: CancellationToken,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        // Whichever comes first: the serving ends, so must the claiming.
        let stop_claiming = stop_claiming.child_token();
        {
            let (shutdown, stop_claiming) = (shutdown.clone(), stop_claiming.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                stop_claiming.cancel();
            });
        }
        let workers = if self.config.processor_enabled {
            Processor::new(
                self.store.clone(),
                self.provider.clone(),
                self.config.processor.clone(),
                self.wake.clone(),
                self.counters.clone(),
            )
            .spawn(stop_claiming)
        } else {
            Vec::new()
        };
        idempotency::spawn_purger(
            self.store.clone(),
            idempotency::PURGE_INTERVAL,
            shutdown.clone(),
        );
        let deliverer = if self.config.webhooks_enabled {
            let deliverer = webhooks::Deliverer::new(
                self.store.clone(),
                self.config.webhooks.clone(),
                self.webhook_metrics.clone(),
                self.wake.clone(),
            )?;
            Some(deliverer.spawn(shutdown.clone()))
        } else {
            None
        };
        let relay_task = match (&self.config.relay, self.broker.clone()) {
            (Some(settings), Some(client)) => Some(relay::spawn(
                self.store.clone(),
                client,
                settings.clone(),
                relay::RelayMetrics::new(&self.metrics),
                self.wake.clone(),
                shutdown.clone(),
            )),
            _ => None,
        };
        let served = self.service.run(shutdown).await;
        for worker in workers {
            if let Err(error) = worker.await {
                tracing::error!(%error, "a processor worker panicked");
            }
        }
        if let Some(task) = relay_task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the outbox relay panicked");
        }
        if let Some(task) = deliverer
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the webhook deliverer panicked");
        }
        self.store.database().close().await;
        served
    }
}
