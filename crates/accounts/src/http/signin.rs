//! Browser sign-in: the authorization endpoint (`GET /authorize`), its login form
//! (`POST /authorize`), the consent form (`POST /authorize/consent`), the sign-up page
//! (`/signup`) and RP-initiated logout (`/logout`), plus the pages' stylesheet.
//!
//! Errors that can go back to the client go back as RFC 6749 §4.1.2.1 redirects; an unknown
//! client or redirect URI is an error page, never a redirect.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cookie::Cookie;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::pages::{
    self, CookieNames, Csrf, LoginPage, Page, SignUpPage, consent_page, csp_source, login_page,
    message_page, redirect, with_query,
};
use crate::clients::ClientMetadata;
use crate::login::{self, LoginError};
use crate::oidc::{
    self, AuthorizationRequest, AuthorizeError, AuthorizeParams, IdTokenClaims, Rejection,
};
use crate::store::{SessionRecord, UserRecord};
use crate::users::{CreateUserError, check_sign_up, create_user};

/// Largest form a page accepts.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// `GET /authorize`: the authorization endpoint (OpenID Connect Core §3.1.2).
#[utoipa::path(
    get,
    path = "/authorize",
    tag = "sign-in",
    operation_id = "authorize",
    summary = "Authorization endpoint (browser sign-in)",
    description = "OpenID Connect authorization code flow. Shows the login page (an HTML form) unless a live session suffices, then the consent page for a third-party client, then redirects to `redirect_uri` with `code`, `state` and `iss`. An unknown client or redirect URI is an error page; other errors are redirected to the client as RFC 6749 §4.1.2.1 errors (`invalid_request`, `invalid_scope`, `login_required`, `consent_required`, `access_denied`, `unsupported_response_type`, `unauthorized_client`).",
    params(AuthorizeParams),
    responses(
        (status = 200, description = "The login or consent page", content_type = "text/html"),
        (status = 303, description = "Back to the client with a code or an error", headers(("Location" = String, description = "The client's redirect URI with its answer"))),
        (status = 400, description = "An error page: the client or the redirect URI is unknown", content_type = "text/html"),
        (status = 503, description = "A page saying to try again: the database cannot be reached", content_type = "text/html"),
    )
)]
pub async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params: AuthorizeParams = match parse_form(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(params) => params,
        Err(page) => return page.into_response(),
    };
    let request = match oidc::check_request(state.store.as_ref(), &params).await {
        Ok(request) => request,
        Err(error) => return refuse(&state, error),
    };
    let now = Utc::now();
    let names = CookieNames::of(&state.config);
    let cookie = pages::read_cookie(&headers, names.session);
    let session = match oidc::current_session(
        state.store.as_ref(),
        cookie.as_deref(),
        state.config.session_idle,
        now,
    )
    .await
    {
        Ok(session) => session,
        Err(error) => return unavailable(&error.to_string()),
    };
    proceed(
        &state,
        &headers,
        &params,
        &request,
        session,
        false,
        Vec::new(),
    )
    .await
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(flatten)]
    params: AuthorizeParams,
    csrf: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// `POST /authorize`: the login form.
#[utoipa::path(
    post,
    path = "/authorize",
    tag = "sign-in",
    operation_id = "authorize_login",
    summary = "The login form's submission",
    description = "The login page posts the authorization request back with `username` (the email), `password` and its CSRF token. A wrong email or password and an unknown user get the same answer; failures are throttled per account as at the token endpoint (429 with `Retry-After`).",
    request_body(content_type = "application/x-www-form-urlencoded", content = Object),
    responses(
        (status = 200, description = "The consent page", content_type = "text/html"),
        (status = 303, description = "Back to the client with a code"),
        (status = 400, description = "The login page again, saying the email or password is wrong", content_type = "text/html"),
        (status = 403, description = "The login page again: the form's CSRF token is missing or stale", content_type = "text/html"),
        (status = 429, description = "Too many failed attempts for this account", content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 503, description = "A page saying to try again: the service is busy or cannot reach its database", content_type = "text/html"),
    )
)]
pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: LoginForm = match parse_form(&body) {
        Ok(form) => form,
        Err(page) => return page.into_response(),
    };
    let request = match oidc::check_request(state.store.as_ref(), &form.params).await {
        Ok(request) => request,
        Err(error) => return refuse(&state, error),
    };
    let names = CookieNames::of(&state.config);
    let username = form.username.as_deref().unwrap_or("").trim();
    let show = |status, error: &str| {
        login_form(
            &state,
            &headers,
            &form.params,
            &request,
            Some(username),
            Some(error),
            status,
        )
    };
    if !Csrf::matches(&headers, names, form.csrf.as_deref()) {
        return show(
            StatusCode::FORBIDDEN,
            "This form expired or did not come from this site. Please sign in again.",
        )
        .into_response();
    }
    let password = form.password.as_deref().unwrap_or("");
    if username.is_empty() || password.is_empty() {
        return show(StatusCode::BAD_REQUEST, "Enter your email and password.").into_response();
    }
    let now = Utc::now();
    let outcome =
        login::password_login(state.store.as_ref(), &state.hasher, username, password, now).await;
    state.token_metrics.page_login(&outcome);
    let user = match outcome {
        Ok(user) => user,
        Err(LoginError::InvalidCredentials) => {
            return show(StatusCode::BAD_REQUEST, "The email or password is wrong.")
                .into_response();
        }
        Err(LoginError::Throttled { retry_after }) => {
            let mut page = show(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed attempts for this account. Try again in {retry_after} seconds."
                ),
            );
            page.retry_after = Some(retry_after.max(1));
            return page.into_response();
        }
        Err(LoginError::Busy) => {
            let mut page = show(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is busy. Please try again in a moment.",
            );
            page.retry_after = Some(1);
            return page.into_response();
        }
        Err(error) => return unavailable(&error.to_string()),
    };
    match begin_session(&state, &headers, &user.id, now).await {
        Ok((session, cookie)) => {
            proceed(
                &state,
                &headers,
                &form.params,
                &request,
                Some(session),
                true,
                vec![cookie],
            )
            .await
        }
        Err(response) => response,
    }
}

/// Starts a session for a user who just proved who they are; a session the browser had
/// before is ended (a new id at every login: no session fixation).
async fn begin_session(
    state: &AppState,
    headers: &HeaderMap,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<(SessionRecord, Cookie<'static>), Response> {
    let names = CookieNames::of(&state.config);
    let store = state.store.as_ref();
    if let Ok(Some(old)) = oidc::current_session(
        store,
        pages::read_cookie(headers, names.session).as_deref(),
        state.config.session_idle,
        now,
    )
    .await
    {
        let _ = store.end_session(&old.sid, now).await;
    }
    let (value, session) = oidc::start_session(store, user_id, state.config.session_lifetime, now)
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    state.token_metrics.session("started");
    tracing::info!(user_id, sid = %session.sid, "browser session started");
    Ok((session, names.session_cookie(value)))
}

/// With the request checked and the session (if any) known: the login page, the consent
/// page, or the code. `fresh` when the password was typed just now (`prompt=login` and
/// `max_age` are then satisfied).
async fn proceed(
    state: &AppState,
    headers: &HeaderMap,
    params: &AuthorizeParams,
    request: &AuthorizationRequest,
    session: Option<SessionRecord>,
    fresh: bool,
    cookies: Vec<Cookie<'static>>,
) -> Response {
    let now = Utc::now();
    let store = state.store.as_ref();
    let session = session.filter(|s| fresh || request.session_suffices(s, now));
    let user = match &session {
        Some(session) => match store.user_by_id(&session.user_id).await {
            Ok(user) => user.filter(|u| !u.disabled),
            Err(error) => return unavailable(&error.to_string()),
        },
        None => None,
    };
    let (Some(session), Some(user)) = (session, user) else {
        if request.prompt.none {
            return refuse(
                state,
                request.reject("login_required", "the user is not signed in"),
            );
        }
        let mut page = login_form(
            state,
            headers,
            params,
            request,
            request.login_hint.as_deref(),
            None,
            StatusCode::OK,
        );
        page.cookies.extend(cookies);
        return page.into_response();
    };
    let scopes = request.granted_to(&user);
    match request.needs_consent(store, &user, &scopes).await {
        Ok(false) => {}
        Ok(true) if request.prompt.none => {
            return refuse(
                state,
                request.reject(
                    "consent_required",
                    "the user has not allowed this client yet",
                ),
            );
        }
        Ok(true) => {
            let names = CookieNames::of(&state.config);
            let csrf = Csrf::for_form(headers, names);
            let listed: Vec<&str> = scopes.iter().collect();
            let mut page = Page::new(
                StatusCode::OK,
                consent_page(
                    params,
                    &request.client.name,
                    &user.email,
                    &listed,
                    &csrf.token,
                ),
            )
            .cookie(csrf.cookie);
            page.cookies.extend(cookies);
            page.form_targets.extend(csp_source(&request.redirect_uri));
            return page.into_response();
        }
        Err(error) => return unavailable(&error.to_string()),
    }
    send_code(state, request, &scopes, &session, &user, cookies).await
}

/// Issues a code and sends the browser back to the client with it.
async fn send_code(
    state: &AppState,
    request: &AuthorizationRequest,
    scopes: &crate::domain::Scopes,
    session: &SessionRecord,
    user: &UserRecord,
    cookies: Vec<Cookie<'static>>,
) -> Response {
    match oidc::issue_code(state.store.as_ref(), request, scopes, session, Utc::now()).await {
        Ok(code) => {
            state.token_metrics.authorization("code_issued");
            tracing::info!(client_id = %request.client.client_id, user_id = %user.id, "authorization code issued");
            let mut answer = vec![("code", code.as_str())];
            if let Some(state_value) = &request.state {
                answer.push(("state", state_value));
            }
            answer.push(("iss", &state.config.issuer));
            redirect(&with_query(&request.redirect_uri, &answer), &cookies)
        }
        Err(error) => unavailable(&error.to_string()),
    }
}

/// The consent form's fields.
#[derive(Debug, Deserialize)]
struct ConsentForm {
    #[serde(flatten)]
    params: AuthorizeParams,
    csrf: Option<String>,
    decision: Option<String>,
}

/// `POST /authorize/consent`: the consent form.
#[utoipa::path(
    post,
    path = "/authorize/consent",
    tag = "sign-in",
    operation_id = "authorize_consent",
    summary = "The consent form's submission",
    description = "`decision=allow` remembers the consent and sends the code; `decision=deny` sends `error=access_denied` to the client.",
    request_body(content_type = "application/x-www-form-urlencoded", content = Object),
    responses(
        (status = 400, description = "A page saying the form or query is malformed", content_type = "text/html"),
        (status = 303, description = "Back to the client with a code or `access_denied`"),
        (status = 200, description = "The login page: the session ended meanwhile", content_type = "text/html"),
        (status = 403, description = "The form's CSRF token is missing or stale", content_type = "text/html"),
        (status = 503, description = "A page saying to try again", content_type = "text/html"),
    )
)]
pub async fn consent(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: ConsentForm = match parse_form(&body) {
        Ok(form) => form,
        Err(page) => return page.into_response(),
    };
    let request = match oidc::check_request(state.store.as_ref(), &form.params).await {
        Ok(request) => request,
        Err(error) => return refuse(&state, error),
    };
    let names = CookieNames::of(&state.config);
    if !Csrf::matches(&headers, names, form.csrf.as_deref()) {
        return stale_form();
    }
    let now = Utc::now();
    let store = state.store.as_ref();
    let cookie = pages::read_cookie(&headers, names.session);
    let session =
        match oidc::current_session(store, cookie.as_deref(), state.config.session_idle, now).await
        {
            Ok(session) => session,
            Err(error) => return unavailable(&error.to_string()),
        };
    let user = match &session {
        Some(s) => store.user_by_id(&s.user_id).await.ok().flatten(),
        None => None,
    };
    let (Some(session), Some(user)) = (session, user.filter(|u| !u.disabled)) else {
        return proceed(
            &state,
            &headers,
            &form.params,
            &request,
            None,
            false,
            Vec::new(),
        )
        .await;
    };
    if form.decision.as_deref() != Some("allow") {
        state.token_metrics.authorization("access_denied");
        return refuse(
            &state,
            request.reject("access_denied", "the user did not allow access"),
        );
    }
    let scopes = request.granted_to(&user);
    if let Err(error) = store
        .grant_consent(&user.id, &request.client.client_id, &scopes.to_claim(), now)
        .await
    {
        return unavailable(&error.to_string());
    }
    send_code(&state, &request, &scopes, &session, &user, Vec::new()).await
}

/// The login page for a checked request.
fn login_form(
    state: &AppState,
    headers: &HeaderMap,
    params: &AuthorizeParams,
    request: &AuthorizationRequest,
    username: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Page {
    let csrf = Csrf::for_form(headers, CookieNames::of(&state.config));
    let mut page = Page::new(
        status,
        login_page(&LoginPage {
            params,
            client_name: &request.client.name,
            username,
            error,
            signup_enabled: state.config.signup_enabled,
            csrf: &csrf.token,
        }),
    )
    .cookie(csrf.cookie);
    page.form_targets.extend(csp_source(&request.redirect_uri));
    page
}

/// An authorization error: a page, or a redirect to the client.
fn refuse(state: &AppState, error: AuthorizeError) -> Response {
    match error {
        AuthorizeError::Page(message) => {
            state.token_metrics.authorization("invalid_request_page");
            Page::new(
                StatusCode::BAD_REQUEST,
                message_page("Sign-in cannot continue", &message),
            )
            .into_response()
        }
        AuthorizeError::Redirect(Rejection {
            redirect_uri,
            error,
            description,
            state: client_state,
        }) => {
            state.token_metrics.authorization(error);
            let mut answer = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(client_state) = &client_state {
                answer.push(("state", client_state));
            }
            answer.push(("iss", &state.config.issuer));
            redirect(&with_query(&redirect_uri, &answer), &[])
        }
    }
}

/// A form whose CSRF token is missing or not the browser's: a 403 page.
fn stale_form() -> Response {
    Page::new(
        StatusCode::FORBIDDEN,
        message_page(
            "Please try again",
            "This form expired or did not come from this site. Go back to the application and try again.",
        ),
    )
    .into_response()
}

/// The database (or the hasher) failed: a 503 page.
fn unavailable(cause: &str) -> Response {
    tracing::warn!(%cause, "sign-in page: dependency unavailable");
    let mut page = Page::new(
        StatusCode::SERVICE_UNAVAILABLE,
        message_page(
            "Please try again",
            "The service cannot complete this now. Try again in a moment.",
        ),
    );
    page.retry_after = Some(1);
    page.into_response()
}

/// A form body or query string, or a 400 page.
fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Page> {
    let bad = |why: &str| {
        Page::new(
            StatusCode::BAD_REQUEST,
            message_page("Sign-in cannot continue", why),
        )
    };
    if bytes.len() > MAX_FORM_BYTES {
        return Err(bad("The request is too large."));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
        .map_err(|_| bad("The request's parameters are malformed."))?;
    if pairs
        .iter()
        .any(|(n, v)| n.chars().chain(v.chars()).any(char::is_control))
    {
        return Err(bad("The request's parameters contain control characters."));
    }
    let mut names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad("A parameter was sent more than once."));
    }
    serde_urlencoded::from_bytes(bytes).map_err(|_| bad("The request's parameters are malformed."))
}

/// The sign-up form's fields.
#[derive(Debug, Deserialize)]
struct SignUpForm {
    #[serde(flatten)]
    params: AuthorizeParams,
    csrf: Option<String>,
    email: Option<String>,
    name: Option<String>,
    password: Option<String>,
}

/// `GET /signup`: the sign-up page (when sign-up is enabled).
#[utoipa::path(
    get,
    path = "/signup",
    tag = "sign-in",
    operation_id = "signup_page",
    summary = "The sign-up page",
    description = "Linked from the login page when sign-up is enabled; carries the authorization request on, so a new user lands back at the client signed in.",
    params(AuthorizeParams),
    responses(
        (status = 400, description = "A page saying the form or query is malformed", content_type = "text/html"),
        (status = 200, description = "The sign-up page", content_type = "text/html"),
        (status = 404, description = "Sign-up is switched off", content_type = "text/html"),
        (status = 503, description = "A page saying to try again", content_type = "text/html"),
    )
)]
pub async fn signup_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if !state.config.signup_enabled {
        return signup_disabled();
    }
    let params: AuthorizeParams = match parse_form(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(params) => params,
        Err(page) => return page.into_response(),
    };
    signup_form(&state, &headers, &params, "", "", &[], StatusCode::OK).into_response()
}

fn signup_disabled() -> Response {
    Page::new(
        StatusCode::NOT_FOUND,
        message_page("Sign-up is closed", "New accounts cannot be created here."),
    )
    .into_response()
}

fn signup_form(
    state: &AppState,
    headers: &HeaderMap,
    params: &AuthorizeParams,
    email: &str,
    name: &str,
    errors: &[String],
    status: StatusCode,
) -> Page {
    let csrf = Csrf::for_form(headers, CookieNames::of(&state.config));
    let mut page = Page::new(
        status,
        pages::signup_page(&SignUpPage {
            params,
            email,
            name,
            errors,
            csrf: &csrf.token,
        }),
    )
    .cookie(csrf.cookie);
    // After sign-up the browser may be sent on to the client.
    if let Some(uri) = &params.redirect_uri {
        page.form_targets.extend(csp_source(uri));
    }
    page
}

/// `POST /signup`: creates the user, signs them in, and goes on with the authorization request.
#[utoipa::path(
    post,
    path = "/signup",
    tag = "sign-in",
    operation_id = "signup",
    summary = "The sign-up form's submission",
    request_body(content_type = "application/x-www-form-urlencoded", content = Object),
    responses(
        (status = 400, description = "A page saying the form or query is malformed", content_type = "text/html"),
        (status = 303, description = "Signed in, back to the client"),
        (status = 200, description = "Signed in: the consent page, or a page saying the account exists", content_type = "text/html"),
        (status = 403, description = "The sign-up page again: the form's CSRF token is missing or stale", content_type = "text/html"),
        (status = 409, description = "The sign-up page again: the email is taken", content_type = "text/html"),
        (status = 422, description = "The sign-up page again, with what to fix", content_type = "text/html"),
        (status = 503, description = "A page saying to try again", content_type = "text/html"),
    )
)]
pub async fn signup(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !state.config.signup_enabled {
        return signup_disabled();
    }
    let form: SignUpForm = match parse_form(&body) {
        Ok(form) => form,
        Err(page) => return page.into_response(),
    };
    let email = form.email.clone().unwrap_or_default();
    let name = form.name.clone().unwrap_or_default();
    let again = |errors: &[String], status| {
        signup_form(
            &state,
            &headers,
            &form.params,
            &email,
            &name,
            errors,
            status,
        )
        .into_response()
    };
    let names = CookieNames::of(&state.config);
    if !Csrf::matches(&headers, names, form.csrf.as_deref()) {
        return again(
            &["This form expired or did not come from this site. Please try again.".into()],
            StatusCode::FORBIDDEN,
        );
    }
    let checked = check_sign_up(
        &email,
        form.password.clone().unwrap_or_default(),
        Some(name.clone()),
    );
    let (valid_email, password, display_name) = match checked {
        Ok(fields) => fields,
        Err(errors) => {
            let words: Vec<String> = errors
                .iter()
                .map(|e| format!("{} {}.", field_label(&e.field), e.message))
                .collect();
            return again(&words, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let user = match create_user(
        state.store.as_ref(),
        &state.hasher,
        &valid_email,
        &password,
        display_name,
        crate::domain::Role::User,
    )
    .await
    {
        Ok(user) => user,
        Err(CreateUserError::EmailTaken) => {
            return again(
                &["An account with this email exists. Sign in instead.".into()],
                StatusCode::CONFLICT,
            );
        }
        Err(CreateUserError::Password(crate::passwords::PasswordError::Busy)) => {
            return again(
                &["The service is busy. Please try again in a moment.".into()],
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
        Err(error) => return unavailable(&error.to_string()),
    };
    tracing::info!(user_id = %user.id, "user signed up at the sign-up page");
    let now = Utc::now();
    let (session, cookie) = match begin_session(&state, &headers, &user.id, now).await {
        Ok(started) => started,
        Err(response) => return response,
    };
    if form.params.client_id.is_none() {
        return Page::new(
            StatusCode::OK,
            message_page(
                "Account created",
                "Your account is ready. Go back to the application to continue.",
            ),
        )
        .cookie(Some(cookie))
        .into_response();
    }
    match oidc::check_request(state.store.as_ref(), &form.params).await {
        Ok(request) => {
            proceed(
                &state,
                &headers,
                &form.params,
                &request,
                Some(session),
                true,
                vec![cookie],
            )
            .await
        }
        Err(error) => refuse(&state, error),
    }
}

fn field_label(field: &str) -> &str {
    match field {
        "email" => "Email",
        "password" => "Password",
        "name" => "Name",
        other => other,
    }
}

/// The end-session request (OpenID Connect RP-Initiated Logout 1.0).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogoutParams {
    /// An ID token this provider issued to the client (expired ones are accepted).
    id_token_hint: Option<String>,
    /// One of the client's registered post-logout redirect URIs, exactly.
    post_logout_redirect_uri: Option<String>,
    /// Returned with the redirect.
    state: Option<String>,
    /// The client (needed with `post_logout_redirect_uri` when no `id_token_hint` is sent).
    client_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    #[serde(flatten)]
    params: LogoutParams,
    csrf: Option<String>,
}

/// `GET /logout`: the end-session endpoint.
#[utoipa::path(
    get,
    path = "/logout",
    tag = "sign-in",
    operation_id = "end_session",
    summary = "End-session endpoint (RP-initiated logout)",
    description = "With a valid `id_token_hint`, ends that session at once and redirects to `post_logout_redirect_uri` (one the client registered, exactly) with `state`, or shows a signed-out page. Without one, asks the user to confirm (a link alone does not sign anyone out).",
    params(LogoutParams),
    responses(
        (status = 303, description = "Signed out, back to the client"),
        (status = 200, description = "The signed-out page, or the confirmation page", content_type = "text/html"),
        (status = 400, description = "The hint is not ours, or the redirect URI is not registered", content_type = "text/html"),
        (status = 503, description = "A page saying to try again", content_type = "text/html"),
    )
)]
pub async fn logout_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params: LogoutParams = match parse_form(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(params) => params,
        Err(page) => return page.into_response(),
    };
    let hint = match &params.id_token_hint {
        Some(token) => match verify_id_token_hint(&state, token).await {
            Some(claims) => Some(claims),
            None => return logout_refused("The id_token_hint is not an ID token issued here."),
        },
        None => None,
    };
    let client_id = match (&hint, &params.client_id) {
        (Some(hint), Some(client_id)) if &hint.aud != client_id => {
            return logout_refused("client_id is not the id_token_hint's audience.");
        }
        (Some(hint), _) => Some(hint.aud.clone()),
        (None, client_id) => client_id.clone(),
    };
    let target = match logout_target(&state, client_id.as_deref(), &params).await {
        Ok(target) => target,
        Err(response) => return response,
    };
    let Some(hint) = hint else {
        let names = CookieNames::of(&state.config);
        let csrf = Csrf::for_form(&headers, names);
        let mut hidden = Vec::new();
        if let Some(client_id) = &client_id {
            hidden.push(("client_id", client_id.as_str()));
        }
        if let Some(uri) = &params.post_logout_redirect_uri {
            hidden.push(("post_logout_redirect_uri", uri.as_str()));
        }
        if let Some(client_state) = &params.state {
            hidden.push(("state", client_state.as_str()));
        }
        let mut page =
            Page::new(StatusCode::OK, pages::logout_page(&hidden, &csrf.token)).cookie(csrf.cookie);
        page.form_targets
            .extend(target.as_deref().and_then(csp_source));
        return page.into_response();
    };
    let now = Utc::now();
    if let Some(sid) = &hint.sid
        && let Err(error) = state.store.end_session(sid, now).await
    {
        return unavailable(&error.to_string());
    }
    end_browser_session(&state, &headers, now).await;
    signed_out(&state, target, &params)
}

/// `POST /logout`: the confirmation form.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "sign-in",
    operation_id = "end_session_confirm",
    summary = "The sign-out confirmation's submission",
    request_body(content_type = "application/x-www-form-urlencoded", content = Object),
    responses(
        (status = 400, description = "A page saying the form or query is malformed", content_type = "text/html"),
        (status = 303, description = "Signed out, back to the client"),
        (status = 200, description = "The signed-out page", content_type = "text/html"),
        (status = 403, description = "The form's CSRF token is missing or stale", content_type = "text/html"),
        (status = 503, description = "A page saying to try again", content_type = "text/html"),
    )
)]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: LogoutForm = match parse_form(&body) {
        Ok(form) => form,
        Err(page) => return page.into_response(),
    };
    if !Csrf::matches(
        &headers,
        CookieNames::of(&state.config),
        form.csrf.as_deref(),
    ) {
        return stale_form();
    }
    let target = match logout_target(&state, form.params.client_id.as_deref(), &form.params).await {
        Ok(target) => target,
        Err(response) => return response,
    };
    end_browser_session(&state, &headers, Utc::now()).await;
    signed_out(&state, target, &form.params)
}

/// The post-logout redirect URI, if one was asked for and the client registered it exactly.
async fn logout_target(
    state: &AppState,
    client_id: Option<&str>,
    params: &LogoutParams,
) -> Result<Option<String>, Response> {
    let Some(uri) = params.post_logout_redirect_uri.as_deref() else {
        return Ok(None);
    };
    let Some(client_id) = client_id else {
        return Err(logout_refused(
            "post_logout_redirect_uri needs id_token_hint or client_id.",
        ));
    };
    let client = state
        .store
        .client_by_id(client_id)
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    match client {
        Some(client)
            if ClientMetadata::of(&client)
                .post_logout_redirect_uris
                .iter()
                .any(|u| u == uri) =>
        {
            Ok(Some(uri.to_owned()))
        }
        _ => Err(logout_refused(
            "The post_logout_redirect_uri is not one the application registered.",
        )),
    }
}

/// Ends the browser's own session, if it has one.
async fn end_browser_session(state: &AppState, headers: &HeaderMap, now: DateTime<Utc>) {
    let names = CookieNames::of(&state.config);
    let cookie = pages::read_cookie(headers, names.session);
    if let Ok(Some(session)) = oidc::current_session(
        state.store.as_ref(),
        cookie.as_deref(),
        state.config.session_idle,
        now,
    )
    .await
    {
        let _ = state.store.end_session(&session.sid, now).await;
    }
    state.token_metrics.session("ended");
}

fn signed_out(state: &AppState, target: Option<String>, params: &LogoutParams) -> Response {
    let clear = [CookieNames::of(&state.config).clear_session()];
    match target {
        Some(uri) => {
            let answer: Vec<(&str, &str)> = params
                .state
                .as_deref()
                .map(|s| vec![("state", s)])
                .unwrap_or_default();
            let location = if answer.is_empty() {
                uri
            } else {
                with_query(&uri, &answer)
            };
            redirect(&location, &clear)
        }
        None => {
            let mut page = Page::new(
                StatusCode::OK,
                message_page("Signed out", "You are signed out. You can close this page."),
            );
            page.cookies.extend(clear);
            page.into_response()
        }
    }
}

fn logout_refused(why: &str) -> Response {
    Page::new(
        StatusCode::BAD_REQUEST,
        message_page("Sign-out cannot continue", why),
    )
    .into_response()
}

/// The claims of an ID token this provider signed (its signature and issuer checked; it may
/// have expired, as RP-initiated logout allows).
async fn verify_id_token_hint(state: &AppState, token: &str) -> Option<IdTokenClaims> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if !common::auth::ALLOWED_ALGORITHMS.contains(&header.alg) {
        return None;
    }
    let kid = header.kid?;
    let keys = state.store.published_keys(Utc::now()).await.ok()?;
    let jwk = keys.into_iter().find(|k| k["kid"] == kid.as_str())?;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).ok()?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_issuer(&[&state.config.issuer]);
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    jsonwebtoken::decode::<IdTokenClaims>(token, &key, &validation)
        .ok()
        .map(|data| data.claims)
}

/// `GET /assets/accounts.css`: the pages' stylesheet.
#[utoipa::path(
    get,
    path = "/assets/accounts.css",
    tag = "sign-in",
    operation_id = "stylesheet",
    summary = "The sign-in pages' stylesheet",
    responses((status = 200, description = "CSS", content_type = "text/css"))
)]
pub async fn stylesheet() -> Response {
    let mut response = pages::STYLESHEET.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
