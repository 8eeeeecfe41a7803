//! The accounts service: users, login, JWT issuance and the JWKS that lets others verify them.

pub mod bootstrap;
pub mod clients;
pub mod config;
pub mod domain;
pub mod export;
pub mod http;
pub mod import;
pub mod keys;
pub mod login;
pub mod oidc;
pub mod passwords;
pub mod store;
pub mod tokens;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;

use common::auth::{TokenVerifier, VerifierSettings};
use common::server::Service;
use keys::{KeyManager, Sealer};
use tokens::Issuer;
use tokio_util::sync::CancellationToken;

pub use config::AccountsConfig;
use store::AccountsStore;

/// `accounts import-users FILE`: imports a `manage.py dumpdata auth.user` file into the
/// configured database (migrating it first if needed). The file is streamed: entries are
/// parsed one at a time on a blocking thread and handed over through a bounded channel, so a
/// dump of a million users needs the memory of a few hundred. `progress` is called after each
/// entry.
pub async fn import_file(
    config: AccountsConfig,
    path: &std::path::Path,
    mut progress: impl FnMut(&import::Importer),
) -> anyhow::Result<import::ImportReport> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (entries, mut incoming) = tokio::sync::mpsc::channel::<serde_json::Value>(256);
    let reader = tokio::task::spawn_blocking(move || {
        use serde::Deserializer as _;
        let mut parser = serde_json::Deserializer::from_reader(std::io::BufReader::new(file));
        parser.deserialize_seq(EachEntry(entries))?;
        parser.end()
    });
    let store = store::open(&config.database_url, config.database_max_connections).await?;
    let mut importer = import::Importer::default();
    let mut failed = None;
    while let Some(entry) = incoming.recv().await {
        if let Err(error) = importer.add(store.as_ref(), &entry).await {
            failed = Some(error);
            break;
        }
        progress(&importer);
    }
    drop(incoming);
    let parsed = reader.await.context("the file reader stopped")?;
    store.database().close().await;
    if let Some(error) = failed {
        return Err(error).context(format!(
            "the import stopped after {} entries",
            importer.seen()
        ));
    }
    parsed.with_context(|| {
        format!(
            "{} is not a JSON array of manage.py dumpdata auth.user entries (stopped after {} entries, which were imported)",
            path.display(),
            importer.seen()
        )
    })?;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    Ok(importer.finish())
}

/// Sends each element of a JSON array down a channel as it is parsed.
struct EachEntry(tokio::sync::mpsc::Sender<serde_json::Value>);

impl<'de> serde::de::Visitor<'de> for EachEntry {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON array (manage.py dumpdata auth.user)")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(entry) = seq.next_element::<serde_json::Value>()? {
            if self.0.blocking_send(entry).is_err() {
                // The importer stopped (it says why).
                break;
            }
        }
        Ok(())
    }
}

/// `accounts export-users [FILE]`: every user in `manage.py loaddata` form, to `FILE` or
/// standard output; returns how many.
pub async fn export_file(
    config: AccountsConfig,
    path: Option<&std::path::Path>,
) -> anyhow::Result<usize> {
    use std::io::Write;
    let store = store::open(&config.database_url, config.database_max_connections).await?;
    let mut out: Box<dyn Write> = match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let written = export::export_users(store.as_ref(), |bytes| out.write_all(bytes)).await;
    out.flush()?;
    store.database().close().await;
    Ok(written?)
}

/// The service's name in logs and spans.
pub const SERVICE: &str = "accounts";

/// `accounts serve`: the configuration from the environment, then serve until a signal.
pub fn serve(args: common::server::ServeArgs) -> std::process::ExitCode {
    common::server::run_binary(
        SERVICE,
        AccountsConfig::from_env,
        |config, shutdown| async move {
            let app = Application::build(config).await?;
            args.announce(app.local_addr()?)?;
            app.run(shutdown).await
        },
    )
}

/// A built accounts service: database opened and migrated, a signing key and an admin in
/// place, listener bound, not yet serving.
pub struct Application {
    service: Service,
    store: Arc<dyn AccountsStore>,
    keys: Arc<KeyManager>,
}

impl Application {
    /// Opens (and migrates) the database, makes sure a signing key and an admin exist, and
    /// binds `config.addr` (port 0 picks a free port).
    pub async fn build(config: AccountsConfig) -> anyhow::Result<Self> {
        let store = store::open(&config.database_url, config.database_max_connections)
            .await
            .with_context(|| {
                format!(
                    "cannot open the accounts database {}",
                    config.database_url.redacted()
                )
            })?;
        let sealer = Sealer::load(&config.key_encryption)?;
        let keys = Arc::new(KeyManager::new(
            store.clone(),
            sealer,
            keys::KeySettings {
                algorithm: config.signing_algorithm,
                token_ttl: config.access_token_ttl,
                rotation_period: config.key_rotation_period,
                prepublish: config.key_prepublish,
            },
        ));
        keys.ensure_keys()
            .await
            .context("cannot create the signing keys")?;
        match keys.active().await {
            Ok(active) => tracing::info!(kid = %active.kid, "signing key ready"),
            // Served anyway: readiness reports it (and names the variable), tokens are refused.
            Err(error) => tracing::error!(%error, "the signing key cannot be used"),
        }
        let config = Arc::new(config);
        let mut settings = VerifierSettings::new(config.issuer.clone(), SERVICE);
        // Our own keys come from our own database: refetch eagerly.
        settings.max_age = Duration::from_secs(5);
        settings.min_refetch_interval = Duration::from_millis(250);
        let metrics = common::metrics::Metrics::new();
        let state = http::AppState {
            store: store.clone(),
            issuer: Arc::new(Issuer::new(store.clone(), keys.clone(), config.clone())),
            verifier: Arc::new(TokenVerifier::new(
                Arc::new(http::StoreKeys(store.clone())),
                settings,
            )),
            keys: keys.clone(),
            config: config.clone(),
            token_metrics: http::TokenMetrics::new(&metrics),
            hasher: Arc::new(passwords::Hasher::new(
                config.hashing,
                passwords::HashingMetrics::new(&metrics),
            )),
            metrics,
        };
        bootstrap::ensure_admin(&state).await?;
        let router = http::router(state);
        let service = Service::bind(SERVICE, "ACCOUNTS_ADDR", config.addr, router, &config.http)
            .await?
            .with_database(store.database());
        Ok(Self {
            service,
            store,
            keys,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    /// The store, for tests and the runner.
    pub fn store(&self) -> Arc<dyn AccountsStore> {
        self.store.clone()
    }

    /// Serves until `shutdown` fires (rotating keys when due), lets in-flight requests finish,
    /// then closes the database.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.keys.clone().spawn_rotation(shutdown.clone());
        self.service.run(shutdown).await
    }
}
