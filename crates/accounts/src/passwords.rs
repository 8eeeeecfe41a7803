//! Password hashing: Argon2id with OWASP parameters for everything we hash, and verification of
//! the monolith's Django hashes (`pbkdf2_sha256`, `argon2`, `bcrypt_sha256`) until the user's
//! next successful login re-hashes them. All hashing runs off the async runtime, at most one
//! hash per CPU at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::{Algorithm, Argon2, Params, Version};
use argon2::{PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// OWASP's Argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wrong password (or an unusable hash).
    Mismatch,
    /// Right password, hash is current.
    Match,
    /// Right password, but the hash is a legacy or weaker one: store a new one.
    MatchNeedsRehash,
}

/// Runs `work` (one hash) on the blocking pool once a slot is free. An Argon2id hash holds
/// 19 MiB and a core for its whole run, so a burst of logins waits here, one hash per CPU,
/// instead of spreading over tokio's blocking threads (up to 512) and their memory.
async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| Arc::new(Semaphore::new(hashing_slots())));
    let slot = slots.clone().acquire_owned().await?;
    Ok(tokio::task::spawn_blocking(move || {
        // The slot goes with the hash: a caller that gives up (a client gone) does not free it
        // while the hash still runs.
        let _slot = slot;
        let running = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(running, Ordering::SeqCst);
        let result = work();
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        result
    })
    .await?)
}

/// Hashes that may run at once: one per CPU.
fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Hashes running now, and the most that ever ran at once.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Hashes `password` with Argon2id and a fresh salt (PHC string).
pub async fn hash(password: String) -> anyhow::Result<String> {
    hashing(move || hash_blocking(&password)).await?
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

/// Checks `password` against `stored`. With `None` (no such user) a dummy hash is checked so
/// the answer takes as long as for a real user.
pub async fn verify(password: String, stored: Option<String>) -> anyhow::Result<Verdict> {
    hashing(move || match stored {
        Some(stored) => verify_blocking(&password, &stored),
        None => {
            let _ = verify_blocking(&password, dummy_hash());
            Verdict::Mismatch
        }
    })
    .await
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_blocking("dummy password that matches nothing").unwrap_or_else(|_| String::from("!"))
    })
}

fn verify_blocking(password: &str, stored: &str) -> Verdict {
    if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        return legacy(verify_django_pbkdf2(password, rest));
    }
    if let Some(rest) = stored.strip_prefix("bcrypt_sha256$") {
        return legacy(verify_django_bcrypt_sha256(password, rest));
    }
    if let Some(phc) = stored.strip_prefix("argon2") {
        // Django's argon2 hashes are "argon2" + a PHC string.
        return legacy(verify_phc(password, phc));
    }
    if stored.starts_with("$argon2") {
        if !verify_phc(password, stored) {
            return Verdict::Mismatch;
        }
        return match PasswordHash::new(stored) {
            Ok(hash) if is_current(&hash) => Verdict::Match,
            _ => Verdict::MatchNeedsRehash,
        };
    }
    // "!..." (Django's unusable password) and anything unknown never verify.
    Verdict::Mismatch
}

fn legacy(matched: bool) -> Verdict {
    if matched {
        Verdict::MatchNeedsRehash
    } else {
        Verdict::Mismatch
    }
}

fn is_current(hash: &PasswordHash) -> bool {
    let expected = argon2();
    let params = expected.params();
    hash.algorithm.as_str() == "argon2id"
        && Params::try_from(hash).is_ok_and(|p| {
            p.m_cost() == params.m_cost()
                && p.t_cost() == params.t_cost()
                && p.p_cost() == params.p_cost()
        })
}

fn verify_phc(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// `pbkdf2_sha256$<iterations>$<salt>$<base64 of the 32-byte derived key>`.
fn verify_django_pbkdf2(password: &str, rest: &str) -> bool {
    let mut parts = rest.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(expected)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(iterations) = iterations.parse::<u32>() else {
        return false;
    };
    let Ok(expected) = STANDARD.decode(expected) else {
        return false;
    };
    if iterations == 0 || expected.is_empty() {
        return false;
    }
    let mut derived = vec![0u8; expected.len()];
    pbkdf2::pbkdf2_hmac::<Sha256>(
        password.as_bytes(),
        salt.as_bytes(),
        iterations,
        &mut derived,
    );
    derived.ct_eq(&expected).into()
}

/// `bcrypt_sha256$<bcrypt hash of hex(sha256(password))>`.
fn verify_django_bcrypt_sha256(password: &str, bcrypt_hash: &str) -> bool {
    let digest = Sha256::digest(password.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    bcrypt::verify(hex, bcrypt_hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_logins_hashes_one_per_cpu_at_a_time() {
        let stored = hash_blocking("correct horse").unwrap();
        let burst = (0..4 * hashing_slots() + 2).map(|n| {
            let stored = stored.clone();
            tokio::spawn(verify(format!("guess {n}"), Some(stored)))
        });
        for verdict in futures_util::future::join_all(burst).await {
            assert_eq!(verdict.unwrap().unwrap(), Verdict::Mismatch);
        }
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(
            (1..=hashing_slots()).contains(&peak),
            "{peak} hashes ran at once on {} CPUs",
            hashing_slots()
        );
    }

    #[test]
    fn our_hashes_are_current_argon2id() {
        let hash = hash_blocking("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(verify_blocking("correct horse", &hash), Verdict::Match);
        assert_eq!(verify_blocking("wrong horse", &hash), Verdict::Mismatch);
    }

    #[test]
    fn a_django_pbkdf2_hash_verifies_and_asks_for_a_rehash() {
        // Made by Django: make_password("eicieY7ahchaoCh0eeTa").
        let stored =
            "pbkdf2_sha256$36000$xIEozuZVAoYm$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w=";
        assert_eq!(
            verify_blocking("eicieY7ahchaoCh0eeTa", stored),
            Verdict::MatchNeedsRehash
        );
        assert_eq!(
            verify_blocking("eicieY7ahchaoCh0eeTb", stored),
            Verdict::Mismatch
        );
    }

    #[test]
    fn django_argon2_and_bcrypt_sha256_hashes_verify() {
        // Django's formats: "argon2" + PHC, and "bcrypt_sha256$" + bcrypt(hex(sha256(pw))).
        let phc = Argon2::default()
            .hash_password(b"letmein-please")
            .unwrap()
            .to_string();
        let django_argon2 = format!("argon2{phc}");
        assert_eq!(
            verify_blocking("letmein-please", &django_argon2),
            Verdict::MatchNeedsRehash
        );
        assert_eq!(
            verify_blocking("letmein-nope", &django_argon2),
            Verdict::Mismatch
        );

        let digest: String = Sha256::digest(b"letmein-please")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let django_bcrypt = format!("bcrypt_sha256${}", bcrypt::hash(digest, 4).unwrap());
        assert_eq!(
            verify_blocking("letmein-please", &django_bcrypt),
            Verdict::MatchNeedsRehash
        );
        assert_eq!(
            verify_blocking("letmein-nope", &django_bcrypt),
            Verdict::Mismatch
        );
    }

    #[test]
    fn unusable_and_unknown_hashes_never_verify() {
        for stored in [
            "!",
            "!abcdef",
            "",
            "md5$abc$def",
            "pbkdf2_sha256$0$salt$",
            "pbkdf2_sha256$x$y$z",
        ] {
            assert_eq!(
                verify_blocking("anything", stored),
                Verdict::Mismatch,
                "{stored}"
            );
        }
    }
}
