//! Token verification throughput of the shared verifier (`common::auth::TokenVerifier`), the
//! path every authenticated request takes: `cargo bench -p accounts --bench verify`.
//!
//! For RS256 and EdDSA, with keys made by the key manager's code path and the key set cached
//! (the steady state), three measures of a few seconds each:
//! - **signature checks on one core**: one task verifying 512 different tokens in turn with the
//!   verified-token cache off, so every call checks a signature (what a stream of new tokens
//!   costs);
//! - the same on every core (one task per core);
//! - **a token seen again, on one core**: one task verifying the same token with the cache on
//!   (what a client sending its token with every request costs after the first).
//!
//! Prints verifications per second; the README records a run.

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
            let mut tokens = Vec::new();
            for n in 0..512 {
                let (token, _) = issuer
                    .access_token(&format!("usr_bench{n}"), None, "public", &scopes, audiences.clone())
                    .await?;
                tokens.push(token);
            }
            let tokens = Arc::new(tokens);
            let jwks: JwkSet = serde_json::from_value(serde_json::json!({
                "keys": store.published_keys(chrono::Utc::now()).await?
            }))?;
            let settings = VerifierSettings::new(config.issuer.clone(), "payments");
            let uncached = Arc::new(TokenVerifier::new(
                Arc::new(Fixed(jwks.clone())),
                VerifierSettings {
                    verified_cache: 0,
                    ..settings.clone()
                },
            ));
            let cached = Arc::new(TokenVerifier::new(Arc::new(Fixed(jwks)), settings));
            let checks_one = rate(uncached.clone(), tokens.clone(), 1).await?;
            let checks_all = rate(uncached, tokens.clone(), threads).await?;
            let seen_again = rate(cached, Arc::new(vec![tokens[0].clone()]), 1).await?;
            println!(
                "{algorithm:?}: signature checks {checks_one:>9.0}/s on one core, \
                 {checks_all:>9.0}/s on {threads}; a token seen again {seen_again:>10.0}/s on one core"
            );
            store.database().close().await;
        }
        Ok(())
    })
}

/// Verifications per second by `tasks` tasks, each verifying `tokens` in turn for [`RUN_FOR`].
async fn rate(
    verifier: Arc<TokenVerifier>,
    tokens: Arc<Vec<String>>,
    tasks: usize,
) -> anyhow::Result<f64> {
    for token in tokens.iter() {
        verifier.verify(token).await?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..tasks)
        .map(|task| {
            let (verifier, tokens, done) = (verifier.clone(), tokens.clone(), done.clone());
            tokio::spawn(async move {
                let mut next = task * 7;
                while started.elapsed() < RUN_FOR {
                    for _ in 0..64 {
                        let token = &tokens[next % tokens.len()];
                        next += 1;
                        if verifier.verify(token).await.is_err() {
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
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
