//! RFC 6749 plumbing: error bodies (`{"error","error_description"}`), the form-or-JSON body
//! of the token endpoints, and client authentication (HTTP Basic or form fields).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::db::StoreError;
use common::extract::{control_in_pairs, json_has_nul};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::keys::KeyError;
use crate::login::LoginError;
use crate::passwords::PasswordError;
use crate::store::{AccountsStore, ClientRecord};
use crate::tokens::hash_token;

/// An RFC 6749 §5.2 error (also used by RFC 7009 and RFC 7662).
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
    basic_challenge: bool,
}

impl OAuthError {
    /// The RFC 6749 `error` code (`invalid_grant`, ...).
    pub fn code(&self) -> &'static str {
        self.error
    }

    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
            basic_challenge: false,
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 400 `invalid_grant`.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    /// 400 `invalid_scope`.
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    /// 400 `unsupported_grant_type`.
    pub fn unsupported_grant_type(grant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {grant:?} is not supported"),
        )
    }

    /// 400 `unauthorized_client`: the client may not use this grant.
    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
    }

    /// 400 `unsupported_grant_type`, saying why.
    pub fn unsupported_grant_type_because(grant: &str, why: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {grant:?}: {why}"),
        )
    }

    /// 401 `invalid_client`, with a Basic challenge when the client tried Basic.
    pub fn invalid_client(basic: bool) -> Self {
        let mut error = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        error.basic_challenge = basic;
        error
    }

    /// 503 `temporarily_unavailable` with `Retry-After`: every password-hashing slot is busy
    /// (load shed).
    pub fn busy() -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the service is busy; retry shortly",
        );
        error.retry_after = Some(1);
        error
    }

    /// 429 `temporarily_unavailable` with `Retry-After`.
    pub fn throttled(retry_after: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            "too many failed attempts for this account; try again later",
        );
        error.retry_after = Some(retry_after.max(1));
        error
    }
}

impl From<LoginError> for OAuthError {
    fn from(error: LoginError) -> Self {
        match error {
            LoginError::InvalidCredentials => Self::invalid_grant("the email or password is wrong"),
            LoginError::Throttled { retry_after } => Self::throttled(retry_after),
            LoginError::InvalidGrant(why) => Self::invalid_grant(why),
            LoginError::ClientAuthenticationRequired => Self::invalid_client(false),
            LoginError::Busy => Self::busy(),
            LoginError::Store(error) => error.into(),
            LoginError::Internal(cause) => anyhow::anyhow!(cause).into(),
        }
    }
}

impl From<PasswordError> for OAuthError {
    fn from(error: PasswordError) -> Self {
        LoginError::from(error).into()
    }
}

impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the service cannot reach its database; try again shortly",
                );
                error.retry_after = Some(1);
                error
            }
            StoreError::Conflict(cause) | StoreError::Other(cause) => {
                tracing::error!(%cause, "storage error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error",
                )
            }
        }
    }
}

impl From<KeyError> for OAuthError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Store(error) => error.into(),
            error @ KeyError::Undecryptable { .. } => {
                tracing::error!(%error, "signing key unusable");
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the service cannot sign tokens now",
                );
                error.retry_after = Some(1);
                error
            }
            KeyError::Crypto(cause) => {
                tracing::error!(%cause, "signing key failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error",
                )
            }
        }
    }
}

impl From<anyhow::Error> for OAuthError {
    fn from(error: anyhow::Error) -> Self {
        tracing::error!(error = format!("{error:#}"), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        )
    }
}

/// An RFC 6749 §5.2 error body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `invalid_scope`,
    /// `unsupported_grant_type`, `temporarily_unavailable` or `server_error`.
    #[schema(value_type = String, example = "invalid_grant")]
    pub error: &'static str,
    /// For people.
    #[schema(example = "the email or password is wrong")]
    pub error_description: String,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody {
            error: self.error,
            error_description: self.description,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"accounts\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, as RFC 6749 §5.1 asks of token responses.
pub fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A token-endpoint body: `application/x-www-form-urlencoded` (RFC 6749) or JSON.
pub struct OAuthBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OAuthBody<T> {
    type Rejection = OAuthError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            OAuthError::invalid_request(format!("the body could not be read: {}", e.body_text()))
        })?;
        // No parameter may hold a control character (NUL included): none has a use for one,
        // and the database cannot store a NUL.
        let control = |name: &str| {
            OAuthError::invalid_request(format!("{name} must not contain control characters"))
        };
        let parsed = if content_type.starts_with("application/x-www-form-urlencoded") {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| OAuthError::invalid_request(format!("malformed parameters: {e}")))?;
            if let Some(name) =
                control_in_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            {
                return Err(control(name));
            }
            serde_urlencoded::from_bytes(&bytes).map_err(|e| e.to_string())
        } else if content_type.starts_with("application/json") {
            if json_has_nul(&bytes) {
                return Err(control("a parameter"));
            }
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        } else {
            return Err(OAuthError::invalid_request(
                "send the parameters as application/x-www-form-urlencoded (or application/json)",
            ));
        };
        parsed
            .map(Self)
            .map_err(|e| OAuthError::invalid_request(format!("malformed parameters: {e}")))
    }
}

/// Client credentials in form fields (`client_id`, `client_secret`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ClientFields {
    /// The client's id (`client_secret_post`; or use HTTP Basic).
    pub client_id: Option<String>,
    /// The client's secret (`client_secret_post`).
    #[schema(format = Password)]
    pub client_secret: Option<String>,
}

/// Credentials a client presented, and how.
pub struct PresentedClient {
    id: String,
    secret: String,
    basic: bool,
}

/// The client credentials of a request: HTTP Basic (RFC 6749 §2.3.1, form-encoded parts) or
/// form fields; using both is an error. `None` when none were sent.
pub fn presented_client(
    headers: &HeaderMap,
    fields: &ClientFields,
) -> Result<Option<PresentedClient>, OAuthError> {
    let basic = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) if value.len() > 6 && value[..6].eq_ignore_ascii_case("basic ") => {
            let decoded = STANDARD
                .decode(value[6..].trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OAuthError::invalid_client(true))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| OAuthError::invalid_client(true))?;
            let decode = |part: &str| {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={part}"))
                    .ok()
                    .and_then(|mut pairs| pairs.pop())
                    .map(|(_, v)| v)
                    .ok_or_else(|| OAuthError::invalid_client(true))
            };
            let (id, secret) = (decode(id)?, decode(secret)?);
            if id.chars().chain(secret.chars()).any(char::is_control) {
                return Err(OAuthError::invalid_client(true));
            }
            Some(PresentedClient {
                id,
                secret,
                basic: true,
            })
        }
        _ => None,
    };
    let form = match (&fields.client_id, &fields.client_secret) {
        (Some(id), Some(secret)) => Some(PresentedClient {
            id: id.clone(),
            secret: secret.clone(),
            basic: false,
        }),
        _ => None,
    };
    match (basic, form) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not both",
        )),
        (basic, form) => Ok(basic.or(form)),
    }
}

/// Checks presented credentials against the stored client.
pub async fn authenticate_client(
    store: &dyn AccountsStore,
    presented: &PresentedClient,
) -> Result<ClientRecord, OAuthError> {
    let client = store.client_by_id(&presented.id).await?;
    let presented_hash = hash_token(&presented.secret);
    match client {
        Some(client)
            if !client.disabled
                && bool::from(
                    client
                        .secret_hash
                        .as_bytes()
                        .ct_eq(presented_hash.as_bytes()),
                ) =>
        {
            Ok(client)
        }
        _ => Err(OAuthError::invalid_client(presented.basic)),
    }
}

/// The client of a request at the token endpoint, where public clients may take part: a
/// confidential client authenticates (Basic or form fields); a public one (registered with
/// `token_endpoint_auth_method: none`) only names itself with `client_id`. `None` when the
/// request names no client.
pub async fn identify_client(
    store: &dyn AccountsStore,
    headers: &HeaderMap,
    fields: &ClientFields,
) -> Result<Option<ClientRecord>, OAuthError> {
    if let Some(presented) = presented_client(headers, fields)? {
        return authenticate_client(store, &presented).await.map(Some);
    }
    let Some(client_id) = fields.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    match store.client_by_id(client_id).await? {
        Some(client)
            if !client.disabled
                && client.token_endpoint_auth_method == crate::clients::auth_method::NONE =>
        {
            Ok(Some(client))
        }
        // A confidential client that sent no secret.
        _ => Err(OAuthError::invalid_client(false)),
    }
}

/// Requires client authentication (introspection; client credentials).
pub async fn require_client(
    store: &dyn AccountsStore,
    headers: &HeaderMap,
    fields: &ClientFields,
) -> Result<ClientRecord, OAuthError> {
    match presented_client(headers, fields)? {
        Some(presented) => authenticate_client(store, &presented).await,
        None => Err(OAuthError::invalid_client(false)),
    }
}
