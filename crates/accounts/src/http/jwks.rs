//! `GET /.well-known/jwks.json` and `GET /.well-known/openid-configuration`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::domain::scope;

/// A JWK Set (RFC 7517).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSet {
    /// The public keys.
    #[schema(value_type = Vec<Jwk>)]
    keys: Vec<serde_json::Value>,
}

/// A public signing key (RFC 7517, RFC 8037). Documentation only: the keys are stored as JWKs.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Jwk {
    /// `RSA` or `OKP` (Ed25519).
    #[schema(example = "RSA")]
    kty: String,
    /// The key's id: the `kid` in the header of the tokens it signs (its RFC 7638 thumbprint).
    kid: String,
    /// `sig`.
    #[schema(rename = "use", example = "sig")]
    use_: String,
    /// `RS256` or `EdDSA`.
    #[schema(example = "RS256")]
    alg: String,
    /// RSA: the modulus (base64url).
    #[schema(required = false)]
    n: String,
    /// RSA: the exponent (base64url).
    #[schema(required = false, example = "AQAB")]
    e: String,
    /// OKP: the curve, `Ed25519`.
    #[schema(required = false)]
    crv: String,
    /// OKP: the public key (base64url).
    #[schema(required = false)]
    x: String,
}

/// Where everything is (RFC 8414, OpenID Connect Discovery 1.0).
#[derive(Debug, Serialize, ToSchema)]
pub struct Discovery {
    /// The issuer: the `iss` of every token, accounts' public URL.
    #[schema(example = "http://localhost:8080/accounts")]
    issuer: String,
    /// The key set.
    jwks_uri: String,
    /// The token endpoint.
    token_endpoint: String,
    /// The authorization endpoint (browser sign-in).
    authorization_endpoint: String,
    /// OpenID Connect userinfo.
    userinfo_endpoint: String,
    /// RP-initiated logout.
    end_session_endpoint: String,
    /// RFC 7009 revocation.
    revocation_endpoint: String,
    /// RFC 7662 introspection.
    introspection_endpoint: String,
    /// The grants the token endpoint accepts.
    grant_types_supported: Vec<&'static str>,
    /// The response types of the authorization endpoint: `code`.
    response_types_supported: Vec<&'static str>,
    /// `query`.
    response_modes_supported: Vec<&'static str>,
    /// PKCE: `S256`.
    code_challenge_methods_supported: Vec<&'static str>,
    /// `none`, `login`, `consent`.
    prompt_values_supported: Vec<&'static str>,
    /// The claims ID tokens and userinfo may carry.
    claims_supported: Vec<&'static str>,
    /// The authorization response carries `iss` (RFC 9207).
    authorization_response_iss_parameter_supported: bool,
    /// `claims` request parameter: not supported.
    claims_parameter_supported: bool,
    /// `request` parameter: not supported.
    request_parameter_supported: bool,
    /// `request_uri` parameter: not supported.
    request_uri_parameter_supported: bool,
    /// Every scope.
    scopes_supported: Vec<&'static str>,
    /// How clients authenticate at the token endpoint.
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    /// How clients authenticate at the revocation endpoint.
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    /// How clients authenticate at the introspection endpoint.
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    /// Algorithms of ID tokens.
    id_token_signing_alg_values_supported: Vec<&'static str>,
    /// Algorithms of client assertions.
    token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    /// `public`.
    subject_types_supported: Vec<&'static str>,
}

/// How long verifiers may cache the key set. A new key signs from the moment it is made, so
/// verifiers also refetch on an unknown `kid`; this bounds how long a removed key is trusted.
pub const JWKS_MAX_AGE_SECONDS: u32 = 300;

/// The JWK Set (RFC 7517): public parts only, of every key whose tokens may still be alive.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "discovery",
    operation_id = "jwks",
    summary = "The public signing keys (JWKS)",
    description = "Every key whose tokens may still be valid, and the next key ahead of its use. Verifiers cache it for `Cache-Control: max-age` and refetch on an unknown `kid`.",
    responses((status = 200, description = "The key set", body = JwkSet,
        headers(("Cache-Control" = String, description = "`public, max-age=300`"))))
)]
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = state.store.published_keys(chrono::Utc::now()).await?;
    let mut response = common::extract::Json(JwkSet { keys }).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={JWKS_MAX_AGE_SECONDS}"))
            .unwrap_or(HeaderValue::from_static("max-age=300")),
    );
    Ok(response)
}

/// Discovery (RFC 8414 / OpenID Connect Discovery): where everything is.
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "discovery",
    operation_id = "openid_configuration",
    summary = "OpenID Connect discovery",
    responses((status = 200, description = "Where everything is", body = Discovery,
        headers(("Cache-Control" = String, description = "`public, max-age=3600`"))))
)]
pub async fn discovery(State(state): State<AppState>) -> Response {
    let issuer = &state.config.issuer;
    let client_auth = vec!["client_secret_basic", "client_secret_post", "none"];
    let mut response = common::extract::Json(Discovery {
        issuer: issuer.clone(),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        token_endpoint: format!("{issuer}/v1/token"),
        authorization_endpoint: format!("{issuer}/authorize"),
        userinfo_endpoint: format!("{issuer}/userinfo"),
        end_session_endpoint: format!("{issuer}/logout"),
        revocation_endpoint: format!("{issuer}/v1/token/revoke"),
        introspection_endpoint: format!("{issuer}/v1/token/introspect"),
        grant_types_supported: if state.config.password_grant_enabled {
            vec![
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "password",
            ]
        } else {
            vec!["authorization_code", "refresh_token", "client_credentials"]
        },
        response_types_supported: vec!["code"],
        response_modes_supported: vec!["query"],
        code_challenge_methods_supported: vec!["S256"],
        prompt_values_supported: vec!["none", "login", "consent"],
        claims_supported: vec![
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "sid",
            "email",
            "email_verified",
            "name",
        ],
        authorization_response_iss_parameter_supported: true,
        claims_parameter_supported: false,
        request_parameter_supported: false,
        request_uri_parameter_supported: false,
        scopes_supported: scope::ALL.to_vec(),
        token_endpoint_auth_methods_supported: client_auth.clone(),
        revocation_endpoint_auth_methods_supported: client_auth,
        introspection_endpoint_auth_methods_supported: vec![
            "client_secret_basic",
            "client_secret_post",
        ],
        // RS256 first: every relying party supports it (OpenID Connect Discovery requires it).
        id_token_signing_alg_values_supported: vec!["RS256", "EdDSA"],
        token_endpoint_auth_signing_alg_values_supported: vec!["RS256", "EdDSA"],
        subject_types_supported: vec!["public"],
    })
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
