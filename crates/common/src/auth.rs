//! Access-token verification, shared by every service that accepts tokens from accounts:
//! keys from a JWKS (fetched and cached, refetched on an unknown `kid` at most once per
//! interval), an algorithm allow-list, and `typ`, `iss`, `aud`, `exp`, `nbf` checked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::problem::Problem;

/// The `typ` header of an access token (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The only algorithms a token may be signed with. `none` and every HMAC algorithm are refused,
/// so a token "signed" with the public key as an HMAC secret never verifies.
pub const ALLOWED_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::EdDSA];

/// An `aud` claim: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "payments"`.
    One(String),
    /// `"aud": ["accounts", "payments"]`.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is among them.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

/// The claims of an access token (RFC 9068).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the public URL of accounts.
    pub iss: String,
    /// Subject: a user id, or a client id for client-credentials tokens.
    pub sub: String,
    /// Audiences: the services the token is for.
    pub aud: Audience,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Token id.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// For users imported from the monolith: their primary key there (what a Django project
    /// maps the token to, with simplejwt's `USER_ID_CLAIM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_user_id: Option<i64>,
}

impl AccessClaims {
    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split_ascii_whitespace().any(|s| s == scope)
    }
}

/// Why a token was refused. The message is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWS compact token, or its header is unreadable.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` outside the allow-list (including `none` and HMAC).
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// `typ` is not `at+jwt`.
    #[error("the token is not an access token")]
    Type,
    /// The header lists critical extensions (`crit`, RFC 7515 §4.1.11); none is understood
    /// here, so the token must be refused.
    #[error("the token requires extensions that are not understood")]
    Critical,
    /// No key with the token's `kid`, even after refetching the key set.
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    /// Expired.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, wrong issuer or audience, not yet valid, missing claims.
    #[error("the token is not valid")]
    Invalid,
    /// The key set could not be fetched and none is cached.
    #[error("the signing keys cannot be fetched")]
    KeysUnavailable,
}

/// Where verification keys come from.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync {
    /// The current key set.
    async fn fetch(&self) -> Result<JwkSet, String>;
}

/// Keys from a JWKS URL (`http://accounts/.well-known/jwks.json`).
pub struct HttpJwks {
    url: String,
    client: reqwest::Client,
}

impl HttpJwks {
    /// A source that GETs `url`, with a short timeout.
    pub fn new(url: impl Into<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Self {
            url: url.into(),
            client,
        }
    }
}

#[async_trait::async_trait]
impl KeySource for HttpJwks {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        if !response.status().is_success() {
            return Err(format!("GET {}: {}", self.url, response.status()));
        }
        response
            .json::<JwkSet>()
            .await
            .map_err(|e| format!("GET {}: not a JWK set: {e}", self.url))
    }
}

/// How a verifier checks tokens and caches keys.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// Audiences of which `aud` must contain at least one.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// How long a fetched key set is used before it is fetched again.
    pub max_age: Duration,
    /// Least time between two fetches caused by unknown `kid`s.
    pub min_refetch_interval: Duration,
    /// Tokens remembered once verified (0: none), so that a token seen again skips the
    /// signature check (Envoy's `jwt_cache_config`).
    pub verified_cache: usize,
}

impl VerifierSettings {
    /// Defaults: 30 s leeway, keys cached 5 minutes, refetched at most every 5 seconds, 4096
    /// verified tokens remembered.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: vec![audience.into()],
            leeway: Duration::from_secs(30),
            max_age: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(5),
            verified_cache: 4096,
        }
    }
}

struct VerificationKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Arc<VerificationKey>>,
    fetched_at: Option<Instant>,
}

/// Verifies access tokens against a key source. Fetches are single-flight: callers that find
/// the cache stale or missing a `kid` wait for one fetch and share its result.
pub struct TokenVerifier {
    source: Arc<dyn KeySource>,
    settings: VerifierSettings,
    cache: RwLock<KeyCache>,
    /// Held by the one caller fetching the key set; holds when the last fetch that an
    /// unknown `kid` forced was made.
    fetching: Mutex<Option<Instant>>,
    /// Tokens verified lately.
    verified: VerifiedTokens,
    /// The claim checks, one per allowed algorithm (built once: each holds sets of the
    /// issuer, audiences and required claims).
    validations: [(Algorithm, Validation); ALLOWED_ALGORITHMS.len()],
}

/// Tokens verified lately and their claims, so that a client sending the same token with
/// every request (as they all do) costs one signature check per key-cache period instead of
/// one per request: the check is most of the work of an authenticated request (an RS256
/// verification is tens of microseconds; a lookup, well under one).
///
/// An entry is the whole token (its exact bytes; a token that differs in any byte is another
/// token) and is used only while the token is unexpired and for at most the key set's
/// `max_age` after it was verified, so a key withdrawn from the key set stops being honoured
/// as soon as it would have been without this cache; [`TokenVerifier::forget_keys`] empties
/// it. Written here rather than taken from a crate: sixteen locked maps, each emptied of
/// expired entries (then entirely) when full, are all it needs.
/// Verified tokens (the whole token as the key), their claims and when they were verified.
type ShardMap = HashMap<Box<str>, (Arc<AccessClaims>, Instant)>;
type Shard = std::sync::Mutex<ShardMap>;

struct VerifiedTokens {
    shards: Box<[Shard]>,
    per_shard: usize,
}

impl VerifiedTokens {
    const SHARDS: usize = 16;

    fn new(capacity: usize) -> Self {
        Self {
            shards: (0..Self::SHARDS)
                .map(|_| std::sync::Mutex::new(HashMap::new()))
                .collect(),
            per_shard: capacity.div_ceil(Self::SHARDS),
        }
    }

    fn shard(&self, token: &str) -> &Shard {
        // The signature's last characters: spread evenly, and cheap to read.
        let tail = token
            .as_bytes()
            .iter()
            .rev()
            .take(4)
            .fold(0usize, |h, b| h * 31 + usize::from(*b));
        &self.shards[tail % self.shards.len()]
    }

    fn lock(mutex: &Shard) -> std::sync::MutexGuard<'_, ShardMap> {
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The claims of `token` if it was verified within `max_age` and is unexpired.
    fn get(&self, token: &str, max_age: Duration, leeway: Duration) -> Option<Arc<AccessClaims>> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self.shard(token);
        let mut map = Self::lock(shard);
        let (claims, verified_at) = map.get(token)?;
        let now = chrono::Utc::now().timestamp();
        let fresh = verified_at.elapsed() < max_age
            && claims.exp + i64::try_from(leeway.as_secs()).unwrap_or(0) > now;
        if fresh {
            return Some(claims.clone());
        }
        map.remove(token);
        None
    }

    fn insert(&self, token: &str, claims: Arc<AccessClaims>, max_age: Duration) {
        if self.per_shard == 0 {
            return;
        }
        let mut map = Self::lock(self.shard(token));
        if map.len() >= self.per_shard {
            let now = chrono::Utc::now().timestamp();
            map.retain(|_, (claims, at)| claims.exp > now && at.elapsed() < max_age);
            if map.len() >= self.per_shard {
                map.clear();
            }
        }
        map.insert(token.into(), (claims, Instant::now()));
    }

    fn clear(&self) {
        for shard in &self.shards {
            Self::lock(shard).clear();
        }
    }
}

impl TokenVerifier {
    /// A verifier with an empty cache (the first token fetches the keys).
    pub fn new(source: Arc<dyn KeySource>, settings: VerifierSettings) -> Self {
        crate::jwt_crypto::install();
        Self {
            source,
            cache: RwLock::new(KeyCache::default()),
            fetching: Mutex::new(None),
            verified: VerifiedTokens::new(settings.verified_cache),
            validations: ALLOWED_ALGORITHMS.map(|algorithm| {
                let mut validation = Validation::new(algorithm);
                validation.leeway = settings.leeway.as_secs();
                validation.validate_nbf = true;
                validation.set_issuer(&[&settings.issuer]);
                validation.set_audience(&settings.audiences);
                validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
                (algorithm, validation)
            }),
            settings,
        }
    }

    /// Drops the cached key set and the tokens verified with it: the next token fetches it
    /// again (after a key was withdrawn).
    pub async fn forget_keys(&self) {
        *self.cache.write().await = KeyCache::default();
        self.verified.clear();
    }

    /// The settings in force.
    pub fn settings(&self) -> &VerifierSettings {
        &self.settings
    }

    /// Checks `token` and returns its claims (a token verified lately is not checked again
    /// while it is unexpired: see [`VerifiedTokens`]).
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let (max_age, leeway) = (self.settings.max_age, self.settings.leeway);
        if let Some(claims) = self.verified.get(token, max_age, leeway) {
            return Ok((*claims).clone());
        }
        let claims = self.verify_signed(token).await?;
        self.verified
            .insert(token, Arc::new(claims.clone()), max_age);
        Ok(claims)
    }

    /// Checks `token`'s header, signature and claims.
    async fn verify_signed(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let header = decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(VerifyError::Algorithm);
        }
        if header.crit.is_some() {
            return Err(VerifyError::Critical);
        }
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
                || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(VerifyError::Type);
        }
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        let key = self.key(&kid).await?;
        if key.algorithm != header.alg {
            return Err(VerifyError::Algorithm);
        }
        let (_, validation) = self
            .validations
            .iter()
            .find(|(algorithm, _)| *algorithm == header.alg)
            .ok_or(VerifyError::Algorithm)?;
        decode::<AccessClaims>(token, &key.key, validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => VerifyError::Expired,
                _ => VerifyError::Invalid,
            })
    }

    /// The cached key `kid`, if the cache is fresh and has it; and whether it is fresh.
    async fn cached(&self, kid: &str) -> (Option<Arc<VerificationKey>>, bool) {
        let cache = self.cache.read().await;
        let fresh = cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.settings.max_age);
        (cache.keys.get(kid).filter(|_| fresh).cloned(), fresh)
    }

    async fn key(&self, kid: &str) -> Result<Arc<VerificationKey>, VerifyError> {
        if let (Some(key), _) = self.cached(kid).await {
            return Ok(key);
        }
        // One fetch at a time: whoever waited here finds what the fetch before it brought.
        let mut last_forced = self.fetching.lock().await;
        let (key, fresh) = self.cached(kid).await;
        if let Some(key) = key {
            return Ok(key);
        }
        if fresh {
            // A fresh set without this kid: refetch (a key newer than the set), but at most
            // once per interval, so a flood of forged kids cannot hammer the key source.
            if last_forced.is_some_and(|at| at.elapsed() < self.settings.min_refetch_interval) {
                return Err(VerifyError::UnknownKey);
            }
            *last_forced = Some(Instant::now());
        }
        self.refresh().await?;
        self.cache
            .read()
            .await
            .keys
            .get(kid)
            .cloned()
            .ok_or(VerifyError::UnknownKey)
    }

    async fn refresh(&self) -> Result<(), VerifyError> {
        match self.source.fetch().await {
            Ok(set) => {
                let keys = set
                    .keys
                    .iter()
                    .filter_map(|jwk| {
                        Some((jwk.common.key_id.clone()?, Arc::new(verification_key(jwk)?)))
                    })
                    .collect();
                *self.cache.write().await = KeyCache {
                    keys,
                    fetched_at: Some(Instant::now()),
                };
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "cannot fetch the signing keys");
                // Keep serving from a stale set rather than refusing every token.
                if self.cache.read().await.keys.is_empty() {
                    Err(VerifyError::KeysUnavailable)
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The key and algorithm of a JWK we accept (RSA for RS256, Ed25519 for EdDSA); others are ignored.
fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::OctetKeyPair(_), None | Some(KeyAlgorithm::EdDSA)) => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    Some(VerificationKey {
        algorithm,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

/// The caller, authenticated by a Bearer access token. Rejections are 401 problems with
/// `WWW-Authenticate`, or 503 when the keys cannot be had.
#[derive(Debug, Clone)]
pub struct Authenticated(pub AccessClaims);

impl Authenticated {
    /// 403 `forbidden` (with `error="insufficient_scope"`) unless the token carries `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), Problem> {
        if self.0.has_scope(scope) {
            return Ok(());
        }
        let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token lacks the scope {scope}"),
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer")),
        ))
    }
}

/// The raw Bearer token of a request's headers (RFC 6750: the scheme in any case): `None`
/// without an `Authorization` header, `Some(Err)` for another scheme or an empty token.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let text = value.to_str().map_err(|_| ());
    Some(text.and_then(|text| {
        let (scheme, token) = text.split_once(' ').ok_or(())?;
        let token = token.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
            Ok(token)
        } else {
            Err(())
        }
    }))
}

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<TokenVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = match bearer_token(&parts.headers) {
            None => {
                return Err(Problem::unauthorized(
                    "an access token is required (Authorization: Bearer ...)",
                    false,
                ));
            }
            Some(Err(())) => {
                return Err(Problem::unauthorized(
                    "expected Authorization: Bearer <access token>",
                    true,
                ));
            }
            Some(Ok(token)) => token,
        };
        let verifier = Arc::<TokenVerifier>::from_ref(state);
        match verifier.verify(token).await {
            Ok(claims) => {
                tracing::Span::current().record("enduser.id", claims.sub.as_str());
                Ok(Self(claims))
            }
            Err(VerifyError::KeysUnavailable) => Err(Problem::dependency_unavailable(
                "the token signing keys cannot be fetched; try again shortly",
            )),
            Err(error) => Err(Problem::unauthorized(error.to_string(), true)),
        }
    }
}
