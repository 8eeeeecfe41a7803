//! The sign-in pages' HTML and headers: server-rendered (no JavaScript), escaped by
//! construction (maud), with a strict Content-Security-Policy, no framing, no referrer, no
//! caching; and their cookies (the session, and the CSRF token the forms echo).
//!
//! Every URL in a page is relative ("authorize", "assets/accounts.css"), so the pages work at
//! accounts' own address and under the gateway's `/accounts` prefix alike.

use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use maud::{DOCTYPE, Markup, html};
use subtle::ConstantTimeEq;

use crate::config::AccountsConfig;
use crate::domain::scope;
use crate::oidc::AuthorizeParams;
use crate::tokens::random_secret;

/// The pages' one stylesheet, served at `assets/accounts.css`.
pub const STYLESHEET: &str = include_str!("../../assets/accounts.css");

/// The cookies' names: `__Host-` prefixed (and `Secure`) when the issuer is https.
#[derive(Debug, Clone, Copy)]
pub struct CookieNames {
    /// The session.
    pub session: &'static str,
    /// The CSRF token.
    pub csrf: &'static str,
    /// Whether they are `Secure`.
    pub secure: bool,
}

impl CookieNames {
    /// The names for this configuration.
    pub fn of(config: &AccountsConfig) -> Self {
        if config.secure_cookies() {
            Self {
                session: "__Host-accounts_session",
                csrf: "__Host-accounts_csrf",
                secure: true,
            }
        } else {
            Self {
                session: "accounts_session",
                csrf: "accounts_csrf",
                secure: false,
            }
        }
    }

    fn build(&self, name: &'static str, value: String, same_site: SameSite) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .build()
    }

    /// The session cookie (`SameSite=Lax`: a client's redirect to the authorization endpoint
    /// carries it, so a live session skips the form). A session cookie of the browser's: the
    /// server-side session's lifetimes bound it.
    pub fn session_cookie(&self, value: String) -> Cookie<'static> {
        self.build(self.session, value, SameSite::Lax)
    }

    /// Removes the session cookie.
    pub fn clear_session(&self) -> Cookie<'static> {
        let mut cookie = self.build(self.session, String::new(), SameSite::Lax);
        cookie.make_removal();
        cookie
    }
}

/// The value of cookie `name` in a request.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The CSRF token of a form: the browser's `csrf` cookie (`SameSite=Strict`, `HttpOnly`),
/// echoed in a hidden field. A cross-site form post carries no such cookie, and no other site
/// can read the value to echo it.
pub struct Csrf {
    /// The value for the form.
    pub token: String,
    /// The cookie to set, when the browser had none.
    pub cookie: Option<Cookie<'static>>,
}

impl Csrf {
    /// The browser's token, or a new one with its cookie.
    pub fn for_form(headers: &HeaderMap, names: CookieNames) -> Self {
        match read_cookie(headers, names.csrf).filter(|t| well_formed_token(t)) {
            Some(token) => Self {
                token,
                cookie: None,
            },
            None => {
                let token = random_secret();
                Self {
                    cookie: Some(names.build(names.csrf, token.clone(), SameSite::Strict)),
                    token,
                }
            }
        }
    }

    /// Whether a form's token is the browser's.
    pub fn matches(headers: &HeaderMap, names: CookieNames, sent: Option<&str>) -> bool {
        match (read_cookie(headers, names.csrf), sent) {
            (Some(cookie), Some(sent)) if well_formed_token(&cookie) => {
                bool::from(cookie.as_bytes().ct_eq(sent.as_bytes()))
            }
            _ => false,
        }
    }
}

fn well_formed_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A page: its status, its HTML, the extra origins its forms may end up at (the client's
/// redirect URI: Chromium applies `form-action` to the redirect after a post), and cookies.
pub struct Page {
    /// The status.
    pub status: StatusCode,
    /// The document.
    pub body: Markup,
    /// Extra `form-action` sources.
    pub form_targets: Vec<String>,
    /// Cookies to set.
    pub cookies: Vec<Cookie<'static>>,
    /// `Retry-After`, seconds.
    pub retry_after: Option<u64>,
}

impl Page {
    /// A page with status `status`.
    pub fn new(status: StatusCode, body: Markup) -> Self {
        Self {
            status,
            body,
            form_targets: Vec::new(),
            cookies: Vec::new(),
            retry_after: None,
        }
    }

    /// Adds a cookie.
    pub fn cookie(mut self, cookie: Option<Cookie<'static>>) -> Self {
        self.cookies.extend(cookie);
        self
    }
}

/// The origin of a redirect URI, as a CSP source (`https://app.example.com`, `com.example.app:`).
pub fn csp_source(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    match url.origin() {
        url::Origin::Tuple(..) => Some(url.origin().ascii_serialization()),
        url::Origin::Opaque(_) => Some(format!("{}:", url.scheme())),
    }
}

/// The headers every page and every redirect of the sign-in flow sends.
fn security_headers(headers: &mut HeaderMap, form_targets: &[String]) {
    let mut form_action = String::from("'self'");
    for target in form_targets {
        if target
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'\''))
        {
            form_action.push(' ');
            form_action.push_str(target);
        }
    }
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn set_cookies(headers: &mut HeaderMap, cookies: &[Cookie<'static>]) {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
            headers.append(header::SET_COOKIE, value);
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            self.body.into_string(),
        )
            .into_response();
        let headers = response.headers_mut();
        security_headers(headers, &self.form_targets);
        set_cookies(headers, &self.cookies);
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A 303 to `location` (a client's redirect URI with its answer, or another page).
pub fn redirect(location: &str, cookies: &[Cookie<'static>]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    security_headers(headers, &[]);
    set_cookies(headers, cookies);
    response
}

/// The frame of every page.
fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · Accounts" }
                link rel="stylesheet" href="assets/accounts.css";
            }
            body {
                main class="card" {
                    p class="brand" { "Accounts" }
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// The authorization request, carried through a form in hidden fields (checked again when the
/// form comes back).
fn hidden_params(params: &AuthorizeParams, csrf: &str) -> Markup {
    let fields = [
        ("response_type", &params.response_type),
        ("client_id", &params.client_id),
        ("redirect_uri", &params.redirect_uri),
        ("scope", &params.scope),
        ("state", &params.state),
        ("nonce", &params.nonce),
        ("code_challenge", &params.code_challenge),
        ("code_challenge_method", &params.code_challenge_method),
        ("prompt", &params.prompt),
        ("max_age", &params.max_age),
        ("login_hint", &params.login_hint),
    ];
    html! {
        input type="hidden" name="csrf" value=(csrf);
        @for (name, value) in fields {
            @if let Some(value) = value {
                input type="hidden" name=(name) value=(value);
            }
        }
    }
}

/// The authorization request as a query string (links between the pages).
pub fn query_of(params: &AuthorizeParams) -> String {
    serde_urlencoded::to_string(params).unwrap_or_default()
}

fn alert(message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message {
            p class="alert" role="alert" id="form-error" { (message) }
        }
    }
}

/// What the login page shows.
pub struct LoginPage<'a> {
    /// The request.
    pub params: &'a AuthorizeParams,
    /// The client's name.
    pub client_name: &'a str,
    /// The email to prefill.
    pub username: Option<&'a str>,
    /// What went wrong with the last attempt.
    pub error: Option<&'a str>,
    /// Link to the sign-up page.
    pub signup_enabled: bool,
    /// The CSRF token.
    pub csrf: &'a str,
}

/// The login form: email and password, each labelled, one button.
pub fn login_page(page: &LoginPage<'_>) -> Markup {
    let described = page.error.map(|_| "form-error");
    layout(
        "Sign in",
        html! {
            p class="lead" { "to continue to " strong { (page.client_name) } }
            (alert(page.error))
            form method="post" action="authorize" {
                (hidden_params(page.params, page.csrf))
                label for="username" { "Email" }
                input id="username" name="username" type="email" autocomplete="username"
                    inputmode="email" autocapitalize="none" spellcheck="false" required
                    value=(page.username.unwrap_or_default()) aria-describedby=[described];
                label for="password" { "Password" }
                input id="password" name="password" type="password"
                    autocomplete="current-password" required aria-describedby=[described];
                button type="submit" { "Sign in" }
            }
            @if page.signup_enabled {
                p class="aside" {
                    "New here? "
                    a href={ "signup?" (query_of(page.params)) } { "Create an account" }
                }
            }
        },
    )
}

/// What each scope lets a client do, in words.
fn scope_words(name: &str) -> &'static str {
    match name {
        scope::OPENID => "Know who you are",
        scope::PROFILE => "See your name",
        scope::EMAIL => "See your email address",
        scope::OFFLINE_ACCESS => "Stay signed in when you are away",
        scope::PAYMENTS_READ => "See your payments",
        scope::PAYMENTS_WRITE => "Make and cancel payments for you",
        scope::PAYMENTS_ADMIN => "See everyone's payments",
        scope::ACCOUNTS_ADMIN => "Administer accounts",
        _ => "Something this page cannot describe",
    }
}

/// The consent page for a third-party client.
pub fn consent_page(
    params: &AuthorizeParams,
    client_name: &str,
    email: &str,
    scopes: &[&str],
    csrf: &str,
) -> Markup {
    layout(
        "Allow access?",
        html! {
            p class="lead" { strong { (client_name) } " would like to:" }
            ul class="scopes" {
                @for name in scopes { li { (scope_words(name)) } }
            }
            p class="aside" { "Signed in as " strong { (email) } "." }
            form method="post" action="authorize/consent" {
                (hidden_params(params, csrf))
                div class="buttons" {
                    button type="submit" name="decision" value="allow" { "Allow" }
                    button type="submit" name="decision" value="deny" class="secondary" { "Deny" }
                }
            }
        },
    )
}

/// What the sign-up page shows.
pub struct SignUpPage<'a> {
    /// The request it came from (may be empty).
    pub params: &'a AuthorizeParams,
    /// As typed.
    pub email: &'a str,
    /// As typed.
    pub name: &'a str,
    /// Field errors, in words.
    pub errors: &'a [String],
    /// The CSRF token.
    pub csrf: &'a str,
}

/// The sign-up form.
pub fn signup_page(page: &SignUpPage<'_>) -> Markup {
    let error = (!page.errors.is_empty()).then(|| page.errors.join(" "));
    let described = error.as_ref().map(|_| "form-error");
    layout(
        "Create an account",
        html! {
            (alert(error.as_deref()))
            form method="post" action="signup" {
                (hidden_params(page.params, page.csrf))
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="email" inputmode="email"
                    autocapitalize="none" spellcheck="false" required value=(page.email)
                    aria-describedby=[described];
                label for="name" { "Name " span class="optional" { "(optional)" } }
                input id="name" name="name" type="text" autocomplete="name" value=(page.name);
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="new-password"
                    required minlength="8" maxlength="128" aria-describedby="password-hint";
                p class="hint" id="password-hint" { "8 to 128 characters." }
                button type="submit" { "Create account" }
            }
            @if page.params.client_id.is_some() {
                p class="aside" {
                    "Have an account? "
                    a href={ "authorize?" (query_of(page.params)) } { "Sign in" }
                }
            }
        },
    )
}

/// A page that only says something (an error that cannot go back to the client, "signed
/// out").
pub fn message_page(title: &str, message: &str) -> Markup {
    layout(title, html! { p class="lead" { (message) } })
}

/// The end-session confirmation (no valid `id_token_hint`: a user's click, not a link,
/// ends their session).
pub fn logout_page(hidden: &[(&str, &str)], csrf: &str) -> Markup {
    layout(
        "Sign out?",
        html! {
            p class="lead" { "You will be signed out of every application that uses this sign-in." }
            form method="post" action="logout" {
                input type="hidden" name="csrf" value=(csrf);
                @for (name, value) in hidden {
                    input type="hidden" name=(name) value=(value);
                }
                button type="submit" { "Sign out" }
            }
        },
    )
}

/// The RFC 6749 §4.1.2 answer appended to a redirect URI (which may have a query of its own).
pub fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded::to_string(pairs).unwrap_or_default();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_secure_and_host_prefixed_behind_https() {
        let mut config = AccountsConfig::from_env(&common::config::Env::default()).unwrap();
        let plain = CookieNames::of(&config);
        assert_eq!(plain.session, "accounts_session");
        let cookie = plain.session_cookie("v".into()).to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        assert!(!cookie.contains("Secure"), "{cookie}");

        config.issuer = "https://id.example.com/accounts".into();
        let secure = CookieNames::of(&config);
        let cookie = secure.session_cookie("v".into()).to_string();
        assert!(cookie.starts_with("__Host-accounts_session=v"), "{cookie}");
        assert!(
            cookie.contains("Secure") && cookie.contains("Path=/"),
            "{cookie}"
        );
        assert!(!cookie.contains("Domain"), "{cookie}");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-accounts_csrf=abc"),
        );
        assert_eq!(read_cookie(&headers, secure.csrf).as_deref(), Some("abc"));
        assert!(
            !Csrf::matches(&headers, secure, Some("abc")),
            "a malformed token never matches"
        );
    }

    #[test]
    fn csp_sources_are_origins() {
        assert_eq!(
            csp_source("https://app.example.com:8443/cb?x=1").as_deref(),
            Some("https://app.example.com:8443")
        );
        assert_eq!(
            csp_source("com.example.app:/cb").as_deref(),
            Some("com.example.app:")
        );
        assert_eq!(
            with_query("https://a.example/cb?x=1", &[("code", "c d")]),
            "https://a.example/cb?x=1&code=c+d"
        );
    }
}
