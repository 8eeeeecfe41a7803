//! OpenID Connect as rules the pages and the token endpoint call: checking an authorization
//! request (exact redirect URIs, PKCE S256, scopes, `prompt`, `max_age`), browser sessions
//! behind a cookie, single-use authorization codes (a reuse revokes what the code issued), the
//! consent a user gave a client, and ID tokens.
//!
//! Anchors: OpenID Connect Core 1.0 (§3.1), RFC 6749 §4.1, RFC 7636, RFC 9700.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use common::db::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clients::{ClientMetadata, grant};
use crate::domain::{Role, Scopes, scope};
use crate::login::LoginError;
use crate::store::{
    AccountsStore, AuthorizationCodeRecord, ClientRecord, SessionRecord, UserRecord,
};
use crate::tokens::{hash_token, random_secret};

/// How long an authorization code may be redeemed (RFC 6749 §4.1.2 recommends at most 10
/// minutes; a browser's redirect takes seconds).
pub const CODE_LIFETIME: chrono::Duration = chrono::Duration::seconds(60);
/// Longest `state` and `nonce` accepted.
pub const MAX_PARAMETER_LENGTH: usize = 512;

/// The authorization request's parameters as sent (query string, or the pages' hidden fields).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeParams {
    /// `code` (the only response type).
    pub response_type: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// One of the client's redirect URIs, exactly.
    pub redirect_uri: Option<String>,
    /// Space-separated; `openid` for an ID token (default: the client's scopes).
    pub scope: Option<String>,
    /// Returned unchanged with the code.
    pub state: Option<String>,
    /// Carried into the ID token.
    pub nonce: Option<String>,
    /// PKCE (RFC 7636): base64url SHA-256 of the verifier; required for public clients.
    pub code_challenge: Option<String>,
    /// `S256` (`plain` is refused).
    pub code_challenge_method: Option<String>,
    /// `none` (fail rather than show a page), `login` (ask for the password again), `consent`.
    pub prompt: Option<String>,
    /// Seconds: ask for the password again if it was typed longer ago.
    pub max_age: Option<String>,
    /// The email to prefill.
    pub login_hint: Option<String>,
}

/// Why an authorization request cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or the redirect URI cannot be trusted: an error page, never a redirect.
    Page(String),
    /// An RFC 6749 §4.1.2.1 error, sent back to the client's redirect URI.
    Redirect(Rejection),
}

/// An error for the client, and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The registered redirect URI.
    pub redirect_uri: String,
    /// `invalid_request`, `login_required`, `access_denied` ...
    pub error: &'static str,
    /// For the developer.
    pub description: String,
    /// The client's `state`.
    pub state: Option<String>,
}

/// What `prompt` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prompt {
    /// `none`: show no page.
    pub none: bool,
    /// `login`: the password again, even with a session.
    pub login: bool,
    /// `consent`: the consent page again.
    pub consent: bool,
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    /// The client.
    pub client: ClientRecord,
    /// Its metadata.
    pub metadata: ClientMetadata,
    /// Where the answer goes.
    pub redirect_uri: String,
    /// Asked for, within what the client may have.
    pub scopes: Scopes,
    /// The client's state.
    pub state: Option<String>,
    /// The client's nonce.
    pub nonce: Option<String>,
    /// The PKCE challenge (S256).
    pub code_challenge: Option<String>,
    /// `prompt`.
    pub prompt: Prompt,
    /// `max_age`, seconds.
    pub max_age: Option<i64>,
    /// The email to prefill.
    pub login_hint: Option<String>,
}

impl AuthorizationRequest {
    /// An error to send back to the client.
    pub fn reject(&self, error: &'static str, description: impl Into<String>) -> AuthorizeError {
        AuthorizeError::Redirect(Rejection {
            redirect_uri: self.redirect_uri.clone(),
            error,
            description: description.into(),
            state: self.state.clone(),
        })
    }

    /// Whether a session this old satisfies `prompt=login` and `max_age`.
    pub fn session_suffices(&self, session: &SessionRecord, now: DateTime<Utc>) -> bool {
        !self.prompt.login
            && self
                .max_age
                .is_none_or(|max| (now - session.auth_time).num_seconds() <= max)
    }

    /// The scopes granted to `user`: what was asked for, narrowed to what the user's role may
    /// hold (the identity scopes everyone may grant).
    pub fn granted_to(&self, user: &UserRecord) -> Scopes {
        let allowed = Role::from_db(&user.role)
            .scopes()
            .union(&Scopes::identity());
        self.scopes.intersection(&allowed)
    }

    /// Whether the user must be asked before the client gets `scopes`: never for a
    /// first-party client; otherwise unless they consented to these scopes before (and
    /// `prompt=consent` was not sent).
    pub async fn needs_consent(
        &self,
        store: &dyn AccountsStore,
        user: &UserRecord,
        scopes: &Scopes,
    ) -> Result<bool, StoreError> {
        if self.metadata.first_party {
            return Ok(false);
        }
        if self.prompt.consent {
            return Ok(true);
        }
        let given = store
            .consent(&user.id, &self.client.client_id)
            .await?
            .and_then(|s| Scopes::parse(&s).ok())
            .unwrap_or_default();
        Ok(!scopes.is_subset(&given))
    }
}

/// Checks an authorization request. The client and the redirect URI first (an error page if
/// either is wrong: an attacker's URI never receives anything), then the rest (errors sent to
/// the client).
pub async fn check_request(
    store: &dyn AccountsStore,
    params: &AuthorizeParams,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let page = |why: &str| Err(AuthorizeError::Page(why.to_owned()));
    let Some(client_id) = params.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return page("The request names no client (client_id is missing).");
    };
    let client = match store.client_by_id(client_id).await {
        Ok(Some(client)) if !client.disabled => client,
        Ok(_) => return page("The application that sent you here is not registered."),
        Err(error) => return Err(AuthorizeError::Page(store_trouble(&error))),
    };
    let metadata = ClientMetadata::of(&client);
    let Some(redirect_uri) = params.redirect_uri.as_deref().filter(|r| !r.is_empty()) else {
        return page("The request names no redirect_uri.");
    };
    if !metadata.redirect_uris.iter().any(|r| r == redirect_uri) {
        return page(
            "The redirect_uri is not one the application registered, so you are not sent back to it.",
        );
    }
    let mut request = AuthorizationRequest {
        redirect_uri: redirect_uri.to_owned(),
        state: params.state.clone(),
        scopes: Scopes::default(),
        nonce: None,
        code_challenge: None,
        prompt: Prompt::default(),
        max_age: None,
        login_hint: None,
        client,
        metadata,
    };
    if params
        .state
        .as_ref()
        .is_some_and(|s| s.len() > MAX_PARAMETER_LENGTH)
    {
        request.state = None;
        return Err(request.reject(
            "invalid_request",
            format!("state is longer than {MAX_PARAMETER_LENGTH} bytes"),
        ));
    }
    match params.response_type.as_deref() {
        Some("code") => {}
        None | Some("") => {
            return Err(request.reject("invalid_request", "response_type is required"));
        }
        Some(_) => {
            return Err(request.reject(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
    }
    if !request.metadata.allows(grant::AUTHORIZATION_CODE) {
        return Err(request.reject(
            "unauthorized_client",
            "the client is not registered for the authorization_code grant",
        ));
    }
    request.scopes = match params
        .scope
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => request.metadata.scopes.clone(),
        Some(raw) => match Scopes::parse(raw) {
            Ok(scopes) if scopes.is_subset(&request.metadata.scopes) => scopes,
            Ok(_) => {
                return Err(request.reject(
                    "invalid_scope",
                    "the scope exceeds what the client is registered for",
                ));
            }
            Err(why) => return Err(request.reject("invalid_scope", why)),
        },
    };
    if let Some(nonce) = &params.nonce {
        if nonce.len() > MAX_PARAMETER_LENGTH {
            return Err(request.reject(
                "invalid_request",
                format!("nonce is longer than {MAX_PARAMETER_LENGTH} bytes"),
            ));
        }
        request.nonce = Some(nonce.clone()).filter(|n| !n.is_empty());
    }
    match (
        params.code_challenge.as_deref().filter(|c| !c.is_empty()),
        params.code_challenge_method.as_deref(),
    ) {
        (Some(challenge), Some("S256")) => {
            let well_formed = challenge.len() == 43
                && challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !well_formed {
                return Err(request.reject(
                    "invalid_request",
                    "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
                ));
            }
            request.code_challenge = Some(challenge.to_owned());
        }
        (Some(_), _) => {
            return Err(request.reject(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not accepted)",
            ));
        }
        (None, Some(_)) => {
            return Err(request.reject(
                "invalid_request",
                "code_challenge_method without code_challenge",
            ));
        }
        (None, None) if request.metadata.is_public() => {
            return Err(request.reject(
                "invalid_request",
                "a public client must use PKCE (code_challenge with code_challenge_method=S256)",
            ));
        }
        (None, None) => {}
    }
    for value in params
        .prompt
        .as_deref()
        .unwrap_or("")
        .split_ascii_whitespace()
    {
        match value {
            "none" => request.prompt.none = true,
            "login" | "select_account" => request.prompt.login = true,
            "consent" => request.prompt.consent = true,
            other => {
                return Err(request.reject(
                    "invalid_request",
                    format!("prompt {other:?} is not supported (none, login, consent)"),
                ));
            }
        }
    }
    if request.prompt.none && (request.prompt.login || request.prompt.consent) {
        return Err(request.reject(
            "invalid_request",
            "prompt=none cannot be combined with other values",
        ));
    }
    if let Some(raw) = params.max_age.as_deref().filter(|m| !m.is_empty()) {
        match raw.parse::<i64>() {
            Ok(seconds) if seconds >= 0 => request.max_age = Some(seconds),
            _ => {
                return Err(
                    request.reject("invalid_request", "max_age must be a number of seconds")
                );
            }
        }
    }
    request.login_hint = params
        .login_hint
        .clone()
        .filter(|h| !h.is_empty() && h.len() <= 254 && !h.chars().any(char::is_control));
    Ok(request)
}

fn store_trouble(error: &StoreError) -> String {
    tracing::warn!(%error, "authorization request: database trouble");
    "The service cannot reach its database; try again in a moment.".to_owned()
}

/// A new session for `user`, who just typed their password: the cookie's value (shown only
/// to the browser) and the record.
pub async fn start_session(
    store: &dyn AccountsStore,
    user_id: &str,
    lifetime: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<(String, SessionRecord), StoreError> {
    let value = random_secret();
    let session = SessionRecord {
        id_hash: hash_token(&value),
        sid: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_owned(),
        auth_time: now,
        created_at: now,
        last_seen_at: now,
        expires_at: now
            + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(10)),
        ended_at: None,
    };
    store.insert_session(&session).await?;
    Ok((value, session))
}

/// The live session behind a cookie's value, if any.
pub async fn current_session(
    store: &dyn AccountsStore,
    cookie: Option<&str>,
    idle: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Option<SessionRecord>, StoreError> {
    match cookie.filter(|c| !c.is_empty() && c.len() <= 128) {
        None => Ok(None),
        Some(value) => {
            let idle = chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::minutes(30));
            store.live_session(&hash_token(value), now, idle).await
        }
    }
}

/// Issues a code for a checked request, to `user` of `session`.
pub async fn issue_code(
    store: &dyn AccountsStore,
    request: &AuthorizationRequest,
    scopes: &Scopes,
    session: &SessionRecord,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let code = random_secret();
    store
        .insert_authorization_code(&AuthorizationCodeRecord {
            code_hash: hash_token(&code),
            client_id: request.client.client_id.clone(),
            user_id: session.user_id.clone(),
            sid: session.sid.clone(),
            redirect_uri: request.redirect_uri.clone(),
            scope: scopes.to_claim(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            auth_time: session.auth_time,
            created_at: now,
            expires_at: now + CODE_LIFETIME,
            used_at: None,
            refresh_family: None,
            access_jti: None,
            access_expires_at: None,
        })
        .await?;
    Ok(code)
}

/// The PKCE S256 challenge of a verifier.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Redeems a code for `client`: its record and its (enabled) user. A code is spent by its
/// first presentation, right or wrong; a second presentation revokes what the first issued
/// (RFC 6749 §4.1.2).
pub async fn redeem_code(
    store: &dyn AccountsStore,
    code: &str,
    client: &ClientRecord,
    redirect_uri: &str,
    verifier: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(AuthorizationCodeRecord, UserRecord), LoginError> {
    const INVALID: &str = "the authorization code is invalid, expired or spent";
    let record = store
        .spend_authorization_code(&hash_token(code), now)
        .await?
        .ok_or(LoginError::InvalidGrant(INVALID))?;
    if record.used_at.is_some() {
        tracing::warn!(client_id = %record.client_id, "authorization code reused; revoking what it issued");
        if let Some(family) = &record.refresh_family {
            store.revoke_refresh_family(family, now).await?;
        }
        if let (Some(jti), Some(expires)) = (&record.access_jti, record.access_expires_at) {
            store.revoke_access_token(jti, expires).await?;
        }
        return Err(LoginError::InvalidGrant(INVALID));
    }
    if record.expires_at <= now {
        return Err(LoginError::InvalidGrant(INVALID));
    }
    if record.client_id != client.client_id {
        return Err(LoginError::InvalidGrant(
            "the authorization code was not issued to this client",
        ));
    }
    if record.redirect_uri != redirect_uri {
        return Err(LoginError::InvalidGrant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    match (&record.code_challenge, verifier.filter(|v| !v.is_empty())) {
        (Some(challenge), Some(verifier)) => {
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !well_formed || !bool::from(s256(verifier).as_bytes().ct_eq(challenge.as_bytes())) {
                return Err(LoginError::InvalidGrant(
                    "code_verifier does not match the code_challenge",
                ));
            }
        }
        (Some(_), None) => {
            return Err(LoginError::InvalidGrant(
                "code_verifier is required (the authorization request used PKCE)",
            ));
        }
        (None, Some(_)) => {
            return Err(LoginError::InvalidGrant(
                "code_verifier sent, but the authorization request had no code_challenge",
            ));
        }
        (None, None) => {}
    }
    let user = store
        .user_by_id(&record.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or(LoginError::InvalidGrant(INVALID))?;
    Ok((record, user))
}

/// The claims of an ID token (OpenID Connect Core §2, §5.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// The issuer.
    pub iss: String,
    /// The user.
    pub sub: String,
    /// The client.
    pub aud: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// When the user typed their password.
    pub auth_time: i64,
    /// The client's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Left half of the access token's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// The session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// `email` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `email` scope: accounts does not verify addresses, so `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// `profile` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For users imported from the monolith: their id there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_user_id: Option<i64>,
}

/// The identity claims `scopes` allow about `user` (ID token and userinfo alike).
pub fn identity_claims(
    user: &UserRecord,
    scopes: &Scopes,
) -> (Option<String>, Option<bool>, Option<String>) {
    let email = scopes.contains(scope::EMAIL);
    (
        email.then(|| user.email.clone()),
        email.then_some(false),
        user.name
            .clone()
            .filter(|_| scopes.contains(scope::PROFILE)),
    )
}

/// `at_hash`: the left half of the access token's hash with the ID token's algorithm's hash
/// (SHA-256 for RS256; SHA-512 for EdDSA with Ed25519), base64url.
pub fn at_hash(access_token: &str, algorithm: jsonwebtoken::Algorithm) -> String {
    let digest: Vec<u8> = match algorithm {
        jsonwebtoken::Algorithm::EdDSA => sha2::Sha512::digest(access_token.as_bytes()).to_vec(),
        _ => Sha256::digest(access_token.as_bytes()).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn at_hash_is_the_left_half_of_the_hash() {
        // OpenID Connect Core, A.3 (RS256).
        assert_eq!(
            at_hash(
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
                jsonwebtoken::Algorithm::RS256
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
