//! Token verification throughput of the shared verifier (`common::auth::TokenVerifier`), the
//! path every payments request takes: `cargo bench -p accounts --bench verify`.
//!
//! For RS256 and EdDSA: sign one access token with a key made by the key manager's code path,
//! then verify it as many times as possible for a few seconds on every core, with the key set
//! cached (the steady state). Prints verifications per second; the README records a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use accounts::config::{AccountsConfig, KeyEncryptionSource, SigningAlgorithm};
use accounts::domain::Scopes;
use accounts::keys::{KeyManager, KeySettings, Sealer};
use accounts::tokens::Issuer;
use common::auth::{KeySource, TokenVerifier, VerifierSettings};
use common::config::Env;
use jsonwebtoken::jwk::JwkSet;

struct Fixed(JwkSet);

#[async_trait::async_trait]
impl KeySource for Fixed {
    async fn fetch(&self) -> Result<JwkSet, String> {
        Ok(self.0.clone())
    }
}

const RUN_FOR: Duration = Duration::from_secs(3);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!("token verification, {threads} tasks, {RUN_FOR:?} per algorithm");
        for algorithm in [SigningAlgorithm::Rs256, SigningAlgorithm::EdDsa] {
            let dir = tempfile::tempdir()?;
            let env = Env::from_pairs([
                ("DATA_DIR", dir.path().display().to_string()),
                (
                    "ACCOUNTS_KEY_ENCRYPTION_KEY",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
                ),
            ]);
            let config = Arc::new(AccountsConfig::from_env(&env)?);
            let store =
                accounts::store::open(&config.database_url, config.database_max_connections)
                    .await?;
            let keys = Arc::new(KeyManager::new(
                store.clone(),
                Sealer::load(&KeyEncryptionSource::Given([0; 32]))?,
                KeySettings {
                    algorithm,
                    token_ttl: config.access_token_ttl,
                    rotation_period: config.key_rotation_period,
                    prepublish: config.key_prepublish,
                },
            ));
            keys.ensure_keys().await?;
            let issuer = Issuer::new(store.clone(), keys, config.clone());
            let scopes =
                Scopes::parse("payments:read payments:write").map_err(anyhow::Error::msg)?;
            let audiences = vec!["accounts".to_owned(), "payments".to_owned()];
            let (token, _) = issuer
                .access_token("usr_bench", None, "public", &scopes, audiences)
                .await?;
            let jwks: JwkSet = serde_json::from_value(serde_json::json!({
                "keys": store.published_keys(chrono::Utc::now()).await?
            }))?;
            let verifier = Arc::new(TokenVerifier::new(
                Arc::new(Fixed(jwks)),
                VerifierSettings::new(config.issuer.clone(), "payments"),
            ));
            verifier.verify(&token).await?;

            let done = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let tasks: Vec<_> = (0..threads)
                .map(|_| {
                    let (verifier, token, done) = (verifier.clone(), token.clone(), done.clone());
                    tokio::spawn(async move {
                        while started.elapsed() < RUN_FOR {
                            for _ in 0..64 {
                                if verifier.verify(&token).await.is_err() {
                                    return;
                                }
                            }
                            done.fetch_add(64, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await?;
            }
            let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            println!("{algorithm:?}: {rate:>10.0} verifications/s");
            store.database().close().await;
        }
        Ok(())
    })
}
