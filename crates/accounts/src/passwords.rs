//! Password hashing: Argon2id with OWASP parameters for everything we hash, and verification of
//! the monolith's Django hashes (`pbkdf2_sha256`, `pbkdf2_sha1`, `argon2`, `bcrypt_sha256`,
//! `bcrypt`) until the user's next successful login re-hashes them.
//!
//! Work per request is bounded three ways:
//! - every parameter of a stored hash is checked against [`limits`] before anything is
//!   computed (an imported `m=4294967295` would otherwise allocate terabytes), at import and
//!   again at verification;
//! - hashes run off the async runtime, at most one per CPU at a time ([`Hasher`]'s slots);
//! - a request waits for a slot only so long and behind so many others, then is refused with
//!   [`PasswordError::Busy`] (503 with `Retry-After`) instead of queueing without bound.
//!
//! Every failing verification costs the same Argon2id work: a hash that cannot be verified
//! (unusable `!`, an unsupported or over-limit scheme, no such user) is answered by verifying
//! against a dummy hash at our own parameters, so the answer's timing does not tell which case
//! it was.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::{Algorithm, Argon2, Params, Version};
use argon2::{PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// The most work a stored hash may ask for. Each limit admits every default Django has
/// shipped (PBKDF2: 1,200,000 iterations in 6.0; Argon2: `m=102400,t=2,p=8` since 4.0;
/// bcrypt: 12 rounds) with room for a site that raised them a little.
pub mod limits {
    /// Argon2 memory, KiB (100 MiB: Django's default). One hash per CPU at a time, so a pod
    /// needs about this much per CPU on top of its baseline.
    pub const ARGON2_MAX_MEMORY_KIB: u32 = 102_400;
    /// Argon2 passes.
    pub const ARGON2_MAX_TIME: u32 = 4;
    /// Argon2 lanes.
    pub const ARGON2_MAX_LANES: u32 = 16;
    /// Argon2 output, bytes.
    pub const ARGON2_MAX_OUTPUT: usize = 64;
    /// PBKDF2 iterations.
    pub const PBKDF2_MAX_ITERATIONS: u32 = 2_000_000;
    /// bcrypt cost (log2 of the rounds).
    pub const BCRYPT_MAX_COST: u32 = 12;
    /// Salt, characters (Django's are 22).
    pub const MAX_SALT: usize = 128;
    /// A whole stored hash, characters.
    pub const MAX_HASH: usize = 512;
}

/// OWASP's Argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wrong password (or a hash that cannot be verified).
    Mismatch,
    /// Right password, hash is current.
    Match,
    /// Right password, but the hash is a legacy or weaker one: store a new one.
    MatchNeedsRehash,
}

/// Why hashing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every hashing slot is taken and the queue is full, or the wait ran out: shed the load
    /// (503 `temporarily_unavailable` with `Retry-After`).
    #[error("every password-hashing slot is busy")]
    Busy,
    /// The hashing task failed (a bug).
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// A stored hash we know how to verify, with its parameters checked against [`limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Our own `$argon2id$...` PHC string (or a Django `argon2$` one).
    Argon2 {
        /// The PHC string, without Django's `argon2` prefix.
        phc: String,
        /// Ours (not a Django import) and at today's parameters.
        current: bool,
    },
    /// Django's `pbkdf2_sha256$` or `pbkdf2_sha1$`.
    Pbkdf2 {
        /// SHA-256 (else SHA-1).
        sha256: bool,
        /// Iterations.
        iterations: u32,
        /// The salt as stored (Django uses it as text).
        salt: String,
        /// The derived key.
        expected: Vec<u8>,
    },
    /// Django's `bcrypt_sha256$` (bcrypt of the hex SHA-256 of the password) or `bcrypt$`.
    Bcrypt {
        /// `bcrypt_sha256` (else plain `bcrypt`).
        sha256: bool,
        /// The `$2b$...` hash.
        hash: String,
    },
    /// Django's unusable password (`!...`): the user has none and cannot log in with one.
    Unusable,
}

impl Scheme {
    /// The name counted in metrics and given in import reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Argon2 { current: true, .. } => "argon2id",
            Self::Argon2 { .. } => "argon2",
            Self::Pbkdf2 { sha256: true, .. } => "pbkdf2_sha256",
            Self::Pbkdf2 { .. } => "pbkdf2_sha1",
            Self::Bcrypt { sha256: true, .. } => "bcrypt_sha256",
            Self::Bcrypt { .. } => "bcrypt",
            Self::Unusable => "unusable",
        }
    }
}

/// Why a stored hash is refused (at import, with this reason; at login, as a mismatch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A hasher we do not verify (`md5`, `sha1`, `unsalted_md5`, `crypt`, ...).
    #[error(
        "unsupported password hasher {0:?} (weak or unknown; the user must reset the password)"
    )]
    Unsupported(String),
    /// A parameter above [`limits`].
    #[error("{0}")]
    OverLimit(String),
    /// Not a well-formed hash of its scheme.
    #[error("malformed {0} hash")]
    Malformed(&'static str),
}

/// Recognizes `stored` and checks its parameters, computing nothing.
pub fn classify(stored: &str) -> Result<Scheme, Refusal> {
    if stored.starts_with('!') {
        return Ok(Scheme::Unusable);
    }
    if stored.len() > limits::MAX_HASH {
        return Err(Refusal::OverLimit(format!(
            "the hash is longer than {} characters",
            limits::MAX_HASH
        )));
    }
    if stored.starts_with("$argon2") {
        return argon2_scheme(stored, true);
    }
    if let Some(phc) = stored.strip_prefix("argon2$") {
        // Django's argon2 hashes are "argon2" + a PHC string ("argon2$argon2id$v=19$...").
        return argon2_scheme(&format!("${phc}"), false);
    }
    if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        return pbkdf2_scheme(rest, true);
    }
    if let Some(rest) = stored.strip_prefix("pbkdf2_sha1$") {
        return pbkdf2_scheme(rest, false);
    }
    if let Some(hash) = stored.strip_prefix("bcrypt_sha256$") {
        return bcrypt_scheme(hash, true);
    }
    if let Some(hash) = stored.strip_prefix("bcrypt$") {
        return bcrypt_scheme(hash, false);
    }
    Err(Refusal::Unsupported(legacy_hasher_name(stored)))
}

/// The name of the Django hasher that made a hash we do not verify. Django's unsalted hashers
/// stored no name of their own: `UnsaltedMD5PasswordHasher` 32 bare hex digits or `md5$$...`,
/// `UnsaltedSHA1PasswordHasher` `sha1$$...`.
fn legacy_hasher_name(stored: &str) -> String {
    if stored.len() == 32 && stored.bytes().all(|b| b.is_ascii_hexdigit()) {
        return "unsalted_md5".to_owned();
    }
    if stored.starts_with("md5$$") {
        return "unsalted_md5".to_owned();
    }
    if stored.starts_with("sha1$$") {
        return "unsalted_sha1".to_owned();
    }
    let hasher = stored.split('$').next().unwrap_or_default();
    if hasher.is_empty() || hasher == stored {
        "(none)".to_owned()
    } else {
        hasher.chars().take(40).collect()
    }
}

fn over(what: &str, value: impl std::fmt::Display, limit: impl std::fmt::Display) -> Refusal {
    Refusal::OverLimit(format!("{what} {value} is above the limit of {limit}"))
}

fn argon2_scheme(phc: &str, ours: bool) -> Result<Scheme, Refusal> {
    let malformed = Refusal::Malformed("argon2");
    let hash = PasswordHash::new(phc).map_err(|_| malformed.clone())?;
    if !matches!(hash.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d") {
        return Err(malformed);
    }
    let param = |name: &str| -> Result<u32, Refusal> {
        match hash.params.get_decimal(name) {
            Some(value) => Ok(value),
            None => Err(Refusal::Malformed("argon2")),
        }
    };
    let (memory, time, lanes) = (param("m")?, param("t")?, param("p")?);
    if memory > limits::ARGON2_MAX_MEMORY_KIB {
        return Err(over(
            "argon2 memory (KiB)",
            memory,
            limits::ARGON2_MAX_MEMORY_KIB,
        ));
    }
    if time > limits::ARGON2_MAX_TIME {
        return Err(over("argon2 time cost", time, limits::ARGON2_MAX_TIME));
    }
    if lanes > limits::ARGON2_MAX_LANES {
        return Err(over("argon2 parallelism", lanes, limits::ARGON2_MAX_LANES));
    }
    let output = hash.hash.map_or(0, |output| output.len());
    if output == 0 || output > limits::ARGON2_MAX_OUTPUT {
        return Err(malformed);
    }
    if hash.salt.is_some_and(|salt| salt.len() > limits::MAX_SALT) {
        return Err(over("salt length", "", limits::MAX_SALT));
    }
    // Parameters the argon2 crate itself refuses (m < 8p, t = 0, ...) are malformed too.
    Params::try_from(&hash).map_err(|_| malformed)?;
    let current = ours
        && hash.algorithm.as_str() == "argon2id"
        && (memory, time, lanes) == {
            let params = argon2().params().clone();
            (params.m_cost(), params.t_cost(), params.p_cost())
        };
    Ok(Scheme::Argon2 {
        phc: phc.to_owned(),
        current,
    })
}

/// `<iterations>$<salt>$<base64 of the derived key>`.
fn pbkdf2_scheme(rest: &str, sha256: bool) -> Result<Scheme, Refusal> {
    let malformed = Refusal::Malformed(if sha256 {
        "pbkdf2_sha256"
    } else {
        "pbkdf2_sha1"
    });
    let mut parts = rest.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(expected)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    let iterations: u32 = iterations.parse().map_err(|_| malformed.clone())?;
    if iterations == 0 {
        return Err(malformed);
    }
    if iterations > limits::PBKDF2_MAX_ITERATIONS {
        return Err(over(
            "pbkdf2 iterations",
            iterations,
            limits::PBKDF2_MAX_ITERATIONS,
        ));
    }
    if salt.len() > limits::MAX_SALT {
        return Err(over("salt length", salt.len(), limits::MAX_SALT));
    }
    let expected = STANDARD.decode(expected).map_err(|_| malformed.clone())?;
    // Django derives exactly one digest's worth; a longer key would multiply the work.
    if expected.len() != if sha256 { 32 } else { 20 } {
        return Err(malformed);
    }
    Ok(Scheme::Pbkdf2 {
        sha256,
        iterations,
        salt: salt.to_owned(),
        expected,
    })
}

/// `$2b$<cost>$<22 salt + 31 hash characters>`.
fn bcrypt_scheme(hash: &str, sha256: bool) -> Result<Scheme, Refusal> {
    let malformed = Refusal::Malformed(if sha256 { "bcrypt_sha256" } else { "bcrypt" });
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", version, cost, rest] = parts.as_slice() else {
        return Err(malformed);
    };
    if !matches!(*version, "2a" | "2b" | "2x" | "2y") || rest.len() != 53 {
        return Err(malformed);
    }
    let cost: u32 = cost.parse().map_err(|_| malformed.clone())?;
    if cost > limits::BCRYPT_MAX_COST {
        return Err(over("bcrypt cost", cost, limits::BCRYPT_MAX_COST));
    }
    Ok(Scheme::Bcrypt {
        sha256,
        hash: hash.to_owned(),
    })
}

/// Tunes how long and behind how many others a request may wait for a hashing slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingSettings {
    /// Hashes that may run at once (default: one per CPU).
    pub slots: usize,
    /// Requests that may wait for a slot; one more is refused at once.
    pub max_waiting: usize,
    /// How long a request may wait for a slot.
    pub max_wait: Duration,
}

impl HashingSettings {
    /// One slot per CPU, 16 waiting per slot, for at most a second.
    pub fn for_this_machine() -> Self {
        let slots = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            slots,
            max_waiting: 16 * slots,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// What hashing counts, registered with the service's metrics.
#[derive(Clone)]
pub struct HashingMetrics {
    verifications: prometheus::IntCounterVec,
    shed: prometheus::IntCounterVec,
}

/// Schemes counted in `accounts_password_verifications_total` (`dummy`: a verification made
/// only so that a failure costs what a real one does).
const SCHEMES: [&str; 8] = [
    "argon2id",
    "argon2",
    "pbkdf2_sha256",
    "pbkdf2_sha1",
    "bcrypt_sha256",
    "bcrypt",
    "dummy",
    "hash",
];

impl HashingMetrics {
    /// Registers `accounts_password_verifications_total{scheme}` and
    /// `accounts_password_hashing_shed_total`.
    pub fn new(metrics: &common::metrics::Metrics) -> Self {
        let verifications = metrics.counter(
            "accounts_password_verifications_total",
            "Password hashes computed, by scheme (dummy: for a user or hash that cannot match; hash: a new Argon2id hash).",
            &["scheme"],
        );
        for scheme in SCHEMES {
            verifications.with_label_values(&[scheme]);
        }
        let shed = metrics.counter(
            "accounts_password_hashing_shed_total",
            "Requests refused with 503 because every hashing slot was busy and the queue full or the wait too long.",
            &[],
        );
        shed.with_label_values::<&str>(&[]);
        Self {
            verifications,
            shed,
        }
    }

    /// How many hashes of `scheme` were computed (for tests and dashboards).
    pub fn verifications(&self, scheme: &str) -> u64 {
        self.verifications.with_label_values(&[scheme]).get()
    }
}

/// Hashes and verifies passwords within bounded work: at most `slots` at once, each off the
/// async runtime, and no more than `max_waiting` requests queued for at most `max_wait`.
pub struct Hasher {
    slots: Arc<Semaphore>,
    settings: HashingSettings,
    waiting: AtomicUsize,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    dummy: OnceLock<String>,
    metrics: HashingMetrics,
}

impl Hasher {
    /// A hasher with `settings`, counting into `metrics`.
    pub fn new(settings: HashingSettings, metrics: HashingMetrics) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.slots.max(1))),
            settings,
            waiting: AtomicUsize::new(0),
            running: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
            dummy: OnceLock::new(),
            metrics,
        }
    }

    /// What it counts.
    pub fn metrics(&self) -> &HashingMetrics {
        &self.metrics
    }

    /// The most hashes that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Runs `work` (one hash) on the blocking pool once a slot is free. An Argon2id hash holds
    /// its memory and a core for its whole run, so a burst of logins waits here, one hash per
    /// CPU, instead of spreading over tokio's blocking threads (up to 512) and their memory;
    /// past the queue's length or the wait, it is refused.
    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
                let acquired = if queued < self.settings.max_waiting {
                    tokio::time::timeout(self.settings.max_wait, self.slots.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                match acquired {
                    Some(slot) => slot,
                    None => {
                        self.metrics.shed.with_label_values::<&str>(&[]).inc();
                        return Err(PasswordError::Busy);
                    }
                }
            }
        };
        let (running, peak) = (self.running.clone(), self.peak.clone());
        tokio::task::spawn_blocking(move || {
            // The slot goes with the hash: a caller that gives up (a client gone) does not free
            // it while the hash still runs.
            let _slot = slot;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let result = work();
            running.fetch_sub(1, Ordering::SeqCst);
            result
        })
        .await
        .map_err(|e| PasswordError::Failed(e.to_string()))
    }

    /// Hashes `password` with Argon2id and a fresh salt (PHC string).
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.metrics
            .verifications
            .with_label_values(&["hash"])
            .inc();
        self.hashing(move || hash_blocking(&password))
            .await?
            .map_err(PasswordError::Failed)
    }

    /// Checks `password` against `stored`. With `None` (no such user), or a hash that cannot
    /// be verified, a dummy hash is checked instead, so the answer costs what it costs for a
    /// real user with a wrong password.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<&str>,
    ) -> Result<Verdict, PasswordError> {
        let scheme = stored.map(classify);
        let scheme = match scheme {
            Some(Ok(Scheme::Unusable)) | None => None,
            Some(Ok(scheme)) => Some(scheme),
            Some(Err(refusal)) => {
                tracing::warn!(%refusal, "a stored password hash cannot be verified");
                None
            }
        };
        let label = scheme.as_ref().map_or("dummy", Scheme::name);
        self.metrics.verifications.with_label_values(&[label]).inc();
        let dummy = match scheme {
            Some(_) => None,
            None => Some(self.dummy_hash().to_owned()),
        };
        self.hashing(move || match (scheme, dummy) {
            (Some(scheme), _) => verify_blocking(&password, &scheme),
            (None, Some(dummy)) => {
                let _ = verify_phc(&password, &dummy);
                Verdict::Mismatch
            }
            (None, None) => Verdict::Mismatch,
        })
        .await
    }

    fn dummy_hash(&self) -> &str {
        self.dummy.get_or_init(|| {
            hash_blocking("dummy password that matches nothing").unwrap_or_else(|_| {
                // Unreachable with valid parameters; a fixed hash at the same cost.
                "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc".to_owned()
            })
        })
    }
}

fn hash_blocking(password: &str) -> Result<String, String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

fn verify_blocking(password: &str, scheme: &Scheme) -> Verdict {
    let matched = match scheme {
        Scheme::Argon2 { phc, current } => {
            return match (verify_phc(password, phc), current) {
                (false, _) => Verdict::Mismatch,
                (true, true) => Verdict::Match,
                (true, false) => Verdict::MatchNeedsRehash,
            };
        }
        Scheme::Pbkdf2 {
            sha256,
            iterations,
            salt,
            expected,
        } => {
            let mut derived = vec![0u8; expected.len()];
            if *sha256 {
                pbkdf2::pbkdf2_hmac::<Sha256>(
                    password.as_bytes(),
                    salt.as_bytes(),
                    *iterations,
                    &mut derived,
                );
            } else {
                pbkdf2::pbkdf2_hmac::<sha1::Sha1>(
                    password.as_bytes(),
                    salt.as_bytes(),
                    *iterations,
                    &mut derived,
                );
            }
            derived.ct_eq(expected).into()
        }
        Scheme::Bcrypt { sha256: true, hash } => {
            bcrypt::verify(hex::encode(Sha256::digest(password.as_bytes())), hash).unwrap_or(false)
        }
        Scheme::Bcrypt {
            sha256: false,
            hash,
        } => bcrypt::verify(password, hash).unwrap_or(false),
        Scheme::Unusable => false,
    };
    if matched {
        Verdict::MatchNeedsRehash
    } else {
        Verdict::Mismatch
    }
}

/// Verifies a PHC string whose parameters were checked by [`classify`].
fn verify_phc(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(settings: HashingSettings) -> Hasher {
        Hasher::new(
            settings,
            HashingMetrics::new(&common::metrics::Metrics::new()),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_logins_hashes_one_per_cpu_at_a_time() {
        let settings = HashingSettings::for_this_machine();
        let hasher = Arc::new(hasher(HashingSettings {
            max_wait: Duration::from_secs(60),
            ..settings
        }));
        let stored = hash_blocking("correct horse").unwrap();
        let burst = (0..4 * settings.slots + 2).map(|n| {
            let (stored, hasher) = (stored.clone(), hasher.clone());
            tokio::spawn(async move { hasher.verify(format!("guess {n}"), Some(&stored)).await })
        });
        for verdict in futures_util::future::join_all(burst).await {
            assert_eq!(verdict.unwrap().unwrap(), Verdict::Mismatch);
        }
        let peak = hasher.peak();
        assert!(
            (1..=settings.slots).contains(&peak),
            "{peak} hashes ran at once on {} slots",
            settings.slots
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_queue_a_request_is_refused_at_once() {
        // One slot, nobody may wait: while a hash runs, the next request is shed.
        let hasher = Arc::new(hasher(HashingSettings {
            slots: 1,
            max_waiting: 0,
            max_wait: Duration::from_secs(60),
        }));
        let (started, release) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(std::sync::Barrier::new(2)),
        );
        let blocking = {
            let (hasher, started, release) = (hasher.clone(), started.clone(), release.clone());
            tokio::spawn(async move {
                hasher
                    .hashing(move || {
                        started.notify_one();
                        release.wait();
                    })
                    .await
            })
        };
        started.notified().await;
        assert!(matches!(
            hasher.verify("x".into(), None).await,
            Err(PasswordError::Busy)
        ));
        assert_eq!(
            hasher.metrics().shed.with_label_values::<&str>(&[]).get(),
            1
        );
        release.wait();
        blocking.await.unwrap().unwrap();
        assert_eq!(
            hasher.verify("x".into(), None).await.unwrap(),
            Verdict::Mismatch
        );
    }

    #[test]
    fn our_hashes_are_current_argon2id() {
        let hash = hash_blocking("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let scheme = classify(&hash).unwrap();
        assert_eq!(scheme.name(), "argon2id");
        assert_eq!(verify_blocking("correct horse", &scheme), Verdict::Match);
        assert_eq!(verify_blocking("wrong horse", &scheme), Verdict::Mismatch);
    }

    #[test]
    fn a_django_pbkdf2_hash_verifies_and_asks_for_a_rehash() {
        // Made by Django: make_password("eicieY7ahchaoCh0eeTa").
        let stored =
            "pbkdf2_sha256$36000$xIEozuZVAoYm$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w=";
        let scheme = classify(stored).unwrap();
        assert_eq!(
            verify_blocking("eicieY7ahchaoCh0eeTa", &scheme),
            Verdict::MatchNeedsRehash
        );
        assert_eq!(
            verify_blocking("eicieY7ahchaoCh0eeTb", &scheme),
            Verdict::Mismatch
        );
    }

    #[test]
    fn hashes_asking_for_more_work_than_the_limits_are_refused_unread() {
        for (stored, why) in [
            (
                "argon2$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
                "argon2 memory",
            ),
            (
                "argon2$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
                "argon2 memory",
            ),
            (
                "$argon2id$v=19$m=19456,t=4294967295,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
                "argon2 time",
            ),
            (
                "argon2$argon2id$v=19$m=65536,t=2,p=255$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
                "argon2 parallelism",
            ),
            (
                "pbkdf2_sha256$4294967295$salt$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w=",
                "pbkdf2 iterations",
            ),
            (
                "bcrypt$$2b$31$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
                "bcrypt cost",
            ),
            (
                "bcrypt_sha256$$2b$20$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
                "bcrypt cost",
            ),
        ] {
            match classify(stored) {
                Err(Refusal::OverLimit(reason)) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{stored}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_default_django_has_shipped_is_within_the_limits() {
        for stored in [
            // Django 6.0's PBKDF2 and Argon2 defaults, and bcrypt's 12 rounds.
            "pbkdf2_sha256$1200000$saltsaltsaltsaltsaltss$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w=",
            "argon2$argon2id$v=19$m=102400,t=2,p=8$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "argon2$argon2i$v=19$m=512,t=2,p=2$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "bcrypt_sha256$$2b$12$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
            "pbkdf2_sha1$260000$salt$qYUmGmf5tEYnYEqF9BjWIsR1Lx0=",
        ] {
            assert!(classify(stored).is_ok(), "{stored}: {:?}", classify(stored));
        }
    }

    #[test]
    fn unusable_and_unknown_hashes_never_verify() {
        assert_eq!(classify("!"), Ok(Scheme::Unusable));
        assert_eq!(classify("!abcdef"), Ok(Scheme::Unusable));
        for stored in ["", "md5$abc$def", "sha1$a$b", "unsalted_md5$x", "crypt$$ab"] {
            assert!(
                matches!(classify(stored), Err(Refusal::Unsupported(_))),
                "{stored}"
            );
        }
        for (stored, hasher) in [
            ("5f4dcc3b5aa765d61d8327deb882cf99", "unsalted_md5"),
            ("md5$$5f4dcc3b5aa765d61d8327deb882cf99", "unsalted_md5"),
            (
                "sha1$$5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8",
                "unsalted_sha1",
            ),
            ("md5$salt$abc", "md5"),
            ("crypt$$ab", "crypt"),
        ] {
            assert_eq!(
                classify(stored),
                Err(Refusal::Unsupported(hasher.to_owned())),
                "{stored}"
            );
        }
        for stored in [
            "pbkdf2_sha256$0$salt$",
            "pbkdf2_sha256$x$y$z",
            "argon2$nonsense",
        ] {
            assert!(
                matches!(classify(stored), Err(Refusal::Malformed(_))),
                "{stored}"
            );
        }
    }

    #[tokio::test]
    async fn a_hash_that_cannot_be_verified_costs_one_dummy_argon2id_verification() {
        let hasher = hasher(HashingSettings::for_this_machine());
        for stored in [
            Some("!"),
            Some("md5$salt$abc"),
            Some("pbkdf2_sha256$4294967295$salt$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w="),
            None,
        ] {
            let before = hasher.metrics().verifications("dummy");
            assert_eq!(
                hasher.verify("guess".into(), stored).await.unwrap(),
                Verdict::Mismatch
            );
            assert_eq!(
                hasher.metrics().verifications("dummy"),
                before + 1,
                "{stored:?}"
            );
        }
    }
}
