//! Browser sign-in (OpenID Connect): the authorization endpoint and its pages, the
//! authorization code grant with PKCE, ID tokens, userinfo, sessions, consent and logout —
//! every step's success and failure, on both databases. A browser is played by a client that
//! follows no redirects and keeps its cookies by hand.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::testkit::TestDatabase;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, decode_jwt, spawn_app, spawn_app_with};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const LOGOUT_REDIRECT: &str = "http://127.0.0.1:9/signed-out";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const PASSWORD: &str = "password-123";

common::both_databases!(
    code_flow_with_pkce_gives_verified_tokens_and_userinfo,
    a_reused_code_revokes_what_it_issued,
    bad_requests_get_pages_or_redirects_never_an_open_redirect,
    the_token_endpoint_checks_code_client_redirect_and_verifier,
    forms_need_their_csrf_token,
    a_session_signs_in_again_until_it_ends,
    third_party_clients_ask_for_consent_once,
    logout_ends_the_session_and_returns_to_a_registered_uri,
    clients_are_managed_with_rfc_7591_metadata,
    the_login_page_answers_alike_and_is_throttled,
    the_signup_page_creates_a_user_and_signs_them_in,
    an_idle_session_ends,
    login_hint_prefills_and_offline_access_is_granted,
);

/// A browser: no redirects followed, cookies kept by name.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let cookie = cookie::Cookie::parse(value.to_str().unwrap().to_owned()).unwrap();
            if cookie.max_age().is_some_and(|age| age.is_zero()) || cookie.value().is_empty() {
                self.cookies.remove(cookie.name());
            } else {
                self.cookies
                    .insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
    }

    async fn get(&mut self, path_and_query: &str) -> Page {
        let response = self
            .client
            .get(self.app.url(path_and_query))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&response);
        Page::read(response).await
    }

    async fn post(&mut self, path: &str, form: &[(String, String)]) -> Page {
        let response = self
            .client
            .post(self.app.url(path))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep_cookies(&response);
        Page::read(response).await
    }

    /// Fills the login form of `page` and submits it.
    async fn log_in(&mut self, page: &Page, email: &str, password: &str) -> Page {
        let mut form = page.hidden_fields();
        form.push(("username".into(), email.into()));
        form.push(("password".into(), password.into()));
        self.post("/authorize", &form).await
    }
}

/// A response, read.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    async fn read(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn location(&self) -> url::Url {
        assert_eq!(self.status, 303, "{}", self.body);
        url::Url::parse(self.header("location")).unwrap()
    }

    /// The query of the redirect back to the client.
    fn answer(&self) -> HashMap<String, String> {
        self.location().query_pairs().into_owned().collect()
    }

    /// Every `<input type="hidden">` of the page.
    fn hidden_fields(&self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        for input in self.body.split("<input").skip(1) {
            let tag = &input[..input.find('>').unwrap()];
            if !tag.contains("type=\"hidden\"") {
                continue;
            }
            let attribute = |name: &str| {
                let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                let end = start + tag[start..].find('"').unwrap();
                tag[start..end]
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&")
            };
            fields.push((attribute("name"), attribute("value")));
        }
        fields
    }

    fn is_login_form(&self) -> bool {
        self.status == 200
            && self.body.contains("name=\"username\"")
            && self.body.contains("name=\"password\"")
    }
}

/// A client registered with `metadata` (merged over a confidential first-party web app).
async fn register(app: &TestApp, admin: &str, metadata: Value) -> Value {
    let mut body = json!({
        "client_name": "Shop",
        "redirect_uris": [REDIRECT],
        "post_logout_redirect_uris": [LOGOUT_REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "openid profile email payments:read",
        "first_party": true
    });
    for (key, value) in metadata.as_object().unwrap() {
        body[key] = value.clone();
    }
    let response = app.post_json("/v1/admin/clients", admin, &body).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `/authorize?...` for `client_id` with PKCE, `state` and `nonce`, plus `extra`.
fn authorize_url(client_id: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("response_type", "code".to_owned()),
        ("client_id", client_id.to_owned()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("scope", "openid profile email payments:read".to_owned()),
        ("state", "st-123".to_owned()),
        ("nonce", "n-456".to_owned()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
    ];
    for (name, value) in extra {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, (*value).to_owned()));
        }
    }
    format!(
        "/authorize?{}",
        serde_urlencoded::to_string(&params).unwrap()
    )
}

async fn user(app: &TestApp, email: &str) {
    let response = app.sign_up(email, PASSWORD).await;
    assert_eq!(response.status(), 201);
}

/// Signs `email` in through the pages (or the browser's session) and returns the code.
async fn sign_in(browser: &mut Browser<'_>, client_id: &str, email: &str) -> String {
    let page = browser.get(&authorize_url(client_id, &[])).await;
    if page.status == 303 {
        return page.answer()["code"].clone();
    }
    assert!(page.is_login_form(), "{}", page.body);
    let back = browser.log_in(&page, email, PASSWORD).await;
    back.answer()["code"].clone()
}

async fn exchange(
    app: &TestApp,
    client: &Value,
    code: &str,
    verifier: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", client["client_id"].as_str().unwrap()),
    ];
    if let Some(secret) = client["client_secret"].as_str() {
        form.push(("client_secret", secret));
    }
    if let Some(verifier) = verifier {
        form.push(("code_verifier", verifier));
    }
    app.token(&form).await
}

async fn code_flow_with_pkce_gives_verified_tokens_and_userinfo(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(
        &app,
        &admin,
        json!({"token_endpoint_auth_method": "none", "client_name": "Phone app"}),
    )
    .await;
    assert!(client.get("client_secret").is_none(), "{client}");
    let client_id = client["client_id"].as_str().unwrap();
    user(&app, "ada@example.com").await;

    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(client_id, &[])).await;
    assert!(page.is_login_form(), "{}", page.body);
    assert!(page.body.contains("<html lang=\"en\">"));
    assert!(page.body.contains("<label for=\"username\">"));
    assert!(page.body.contains("<label for=\"password\">"));
    assert!(page.body.contains("Phone app"));
    let csp = page.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:9"),
        "{csp}"
    );
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert_eq!(page.header("cache-control"), "no-store");
    let css = app.get("/assets/accounts.css").await;
    assert_eq!(css.status(), 200);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );

    let back = browser.log_in(&page, "Ada@Example.com", PASSWORD).await;
    let session_cookie = back
        .headers
        .get_all("set-cookie")
        .iter()
        .find(|c| c.to_str().unwrap().starts_with("accounts_session="));
    let session_cookie = session_cookie.expect("a session cookie").to_str().unwrap();
    assert!(session_cookie.contains("HttpOnly"), "{session_cookie}");
    assert!(session_cookie.contains("SameSite=Lax"), "{session_cookie}");
    assert!(
        back.location()
            .as_str()
            .starts_with(&format!("{REDIRECT}?code="))
    );
    let answer = back.answer();
    assert_eq!(answer["state"], "st-123");
    assert_eq!(answer["iss"], "http://localhost:8080/accounts");

    let response = exchange(&app, &client, &answer["code"], Some(VERIFIER)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "email openid payments:read profile");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();

    // The ID token: for the client, with the nonce, the session and the access token's hash.
    let (header, claims) = decode_jwt(id_token);
    assert_eq!(header["typ"], "JWT");
    let (_, access_claims) = decode_jwt(access);
    assert_eq!(claims["iss"], "http://localhost:8080/accounts");
    assert_eq!(claims["aud"], client_id);
    assert_eq!(claims["sub"], access_claims["sub"]);
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["email"], "ada@example.com");
    assert_eq!(claims["email_verified"], false);
    assert_eq!(claims["name"], "Test User");
    assert!(claims["sid"].is_string());
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
    let expected_at_hash = {
        // EdDSA (the test keys): SHA-512, left half.
        use sha2::Sha512;
        let digest = Sha512::digest(access.as_bytes());
        URL_SAFE_NO_PAD.encode(&digest[..32])
    };
    assert_eq!(claims["at_hash"], expected_at_hash);
    // The ID token verifies against the JWKS.
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[client_id]);
    validation.set_issuer(&["http://localhost:8080/accounts"]);
    jsonwebtoken::decode::<Value>(id_token, &key, &validation).expect("the ID token verifies");

    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let info: Value = app
            .client
            .request(method, app.url("/userinfo"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["sub"], claims["sub"]);
        assert_eq!(info["email"], "ada@example.com");
        assert_eq!(info["name"], "Test User");
    }
    // A token without openid gets no userinfo.
    let plain = app.login("ada@example.com", PASSWORD).await;
    let denied = app
        .get_with_token("/userinfo", plain["access_token"].as_str().unwrap())
        .await;
    assert_eq!(denied.status(), 403);

    // The public client refreshes with its client_id alone; another client cannot.
    let refreshed = app
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", client_id),
        ])
        .await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    let stolen = app
        .token(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                refreshed["refresh_token"].as_str().unwrap(),
            ),
        ])
        .await;
    assert_eq!(
        stolen.status(),
        401,
        "a public client's token needs its client_id"
    );
}

async fn a_reused_code_revokes_what_it_issued(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(&app, &admin, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap();
    user(&app, "reuse@example.com").await;
    let mut browser = Browser::new(&app);
    let code = sign_in(&mut browser, client_id, "reuse@example.com").await;
    let first: Value = exchange(&app, &client, &code, Some(VERIFIER))
        .await
        .json()
        .await
        .unwrap();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(app.get_with_token("/userinfo", access).await.status(), 200);

    let again = exchange(&app, &client, &code, Some(VERIFIER)).await;
    assert_eq!(again.status(), 400);
    let error: Value = again.json().await.unwrap();
    assert_eq!(error["error"], "invalid_grant");
    // What the first redemption issued is revoked.
    assert_eq!(app.get_with_token("/userinfo", access).await.status(), 401);
    let refresh = app
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ("client_id", client_id),
            ("client_secret", client["client_secret"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(refresh.status(), 400);
}

async fn bad_requests_get_pages_or_redirects_never_an_open_redirect(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(&app, &admin, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap();
    let public = register(&app, &admin, json!({"token_endpoint_auth_method": "none"})).await;
    let public_id = public["client_id"].as_str().unwrap();
    let mut browser = Browser::new(&app);

    // The client or the redirect URI cannot be trusted: a page, no redirect.
    for url in [
        authorize_url("cli_unknown", &[]),
        authorize_url(client_id, &[("redirect_uri", "https://evil.example/cb")]),
        authorize_url(
            client_id,
            &[("redirect_uri", "http://127.0.0.1:9/callback/extra")],
        ),
        authorize_url(client_id, &[("redirect_uri", "")]),
        "/authorize?client_id=a&client_id=b".to_owned(),
    ] {
        let page = browser.get(&url).await;
        assert_eq!(page.status, 400, "{url}");
        assert!(page.header("location").is_empty(), "{url}");
        assert!(
            page.header("content-type").starts_with("text/html"),
            "{url}"
        );
    }

    // Everything else goes back to the client, with its state.
    for (extra, client, error) in [
        (
            vec![("response_type", "token")],
            client_id,
            "unsupported_response_type",
        ),
        (vec![("response_type", "")], client_id, "invalid_request"),
        (
            vec![("scope", "openid accounts:admin")],
            client_id,
            "invalid_scope",
        ),
        (
            vec![("scope", "openid nonsense")],
            client_id,
            "invalid_scope",
        ),
        (
            vec![("code_challenge_method", "plain")],
            client_id,
            "invalid_request",
        ),
        (
            vec![("code_challenge_method", "")],
            client_id,
            "invalid_request",
        ),
        (
            vec![("code_challenge", "short")],
            client_id,
            "invalid_request",
        ),
        (
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            public_id,
            "invalid_request",
        ),
        (vec![("prompt", "none")], client_id, "login_required"),
        (vec![("prompt", "none login")], client_id, "invalid_request"),
        (vec![("prompt", "sideways")], client_id, "invalid_request"),
        (vec![("max_age", "soon")], client_id, "invalid_request"),
    ] {
        let page = browser.get(&authorize_url(client, &extra)).await;
        let answer = page.answer();
        assert_eq!(answer["error"], error, "{extra:?}");
        assert_eq!(answer["state"], "st-123", "{extra:?}");
        assert!(page.location().as_str().starts_with(REDIRECT), "{extra:?}");
    }
    // A confidential client may go without PKCE.
    let page = browser
        .get(&authorize_url(
            client_id,
            &[("code_challenge", ""), ("code_challenge_method", "")],
        ))
        .await;
    assert!(page.is_login_form());
    // A client without the authorization_code grant.
    let service = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "worker", "scopes": ["payments:read"]}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let page = browser
        .get(&authorize_url(service["client_id"].as_str().unwrap(), &[]))
        .await;
    assert_eq!(page.status, 400, "no redirect URI is registered for it");
}

async fn the_token_endpoint_checks_code_client_redirect_and_verifier(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(&app, &admin, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap();
    let other = register(&app, &admin, json!({})).await;
    user(&app, "tok@example.com").await;
    let mut browser = Browser::new(&app);

    let error = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (status, body["error"].as_str().unwrap().to_owned())
    };
    // Each wrong redemption spends the code; a fresh code for each case.
    let code = sign_in(&mut browser, client_id, "tok@example.com").await;
    assert_eq!(
        error(
            exchange(
                &app,
                &client,
                &code,
                Some("wrong-verifier-wrong-verifier-wrong-verifier-0")
            )
            .await
        )
        .await,
        (400, "invalid_grant".into())
    );
    let code = sign_in(&mut browser, client_id, "tok@example.com").await;
    assert_eq!(
        error(exchange(&app, &client, &code, None).await).await,
        (400, "invalid_grant".into())
    );
    let code = sign_in(&mut browser, client_id, "tok@example.com").await;
    assert_eq!(
        error(exchange(&app, &other, &code, Some(VERIFIER)).await).await,
        (400, "invalid_grant".into()),
        "another client's code"
    );
    let code = sign_in(&mut browser, client_id, "tok@example.com").await;
    let wrong_redirect = app
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("client_id", client_id),
            ("client_secret", client["client_secret"].as_str().unwrap()),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(error(wrong_redirect).await, (400, "invalid_grant".into()));
    let code = sign_in(&mut browser, client_id, "tok@example.com").await;
    let wrong_secret = app
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("client_secret", "not-the-secret"),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(error(wrong_secret).await, (401, "invalid_client".into()));
    let no_secret = app
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(
        error(no_secret).await,
        (401, "invalid_client".into()),
        "a confidential client must authenticate"
    );
    // An expired code.
    expire_codes(&app).await;
    assert_eq!(
        error(exchange(&app, &client, &code, Some(VERIFIER)).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        error(exchange(&app, &client, "no-such-code", Some(VERIFIER)).await).await,
        (400, "invalid_grant".into())
    );
    // With HTTP Basic, a fresh code works.
    let code = sign_in(&mut browser, client_id, "tok@example.com").await;
    let basic = app
        .client
        .post(app.url("/v1/token"))
        .basic_auth(client_id, client["client_secret"].as_str())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
}

async fn expire_codes(app: &TestApp) {
    use common::db::Pool;
    let past = chrono::Utc::now() - chrono::Duration::minutes(5);
    let sql = "UPDATE authorization_codes SET expires_at = $1";
    match app.store.database() {
        Pool::Sqlite(pool) => sqlx::query(sql).bind(past).execute(&pool).await.map(drop),
        Pool::Postgres(pool) => sqlx::query(sql).bind(past).execute(&pool).await.map(drop),
    }
    .unwrap();
}

async fn forms_need_their_csrf_token(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(&app, &admin, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap();
    user(&app, "csrf@example.com").await;
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(client_id, &[])).await;
    assert!(browser.cookies.contains_key("accounts_csrf"));

    // The form without its token, or posted from a browser without the cookie (another
    // site's form): refused, and no session.
    let mut without: Vec<_> = page
        .hidden_fields()
        .into_iter()
        .filter(|(n, _)| n != "csrf")
        .collect();
    without.push(("username".into(), "csrf@example.com".into()));
    without.push(("password".into(), PASSWORD.into()));
    let refused = browser.post("/authorize", &without).await;
    assert_eq!(refused.status, 403);
    assert!(!browser.cookies.contains_key("accounts_session"));
    let mut elsewhere = Browser::new(&app);
    let refused = elsewhere.log_in(&page, "csrf@example.com", PASSWORD).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("role=\"alert\""));
    assert!(!elsewhere.cookies.contains_key("accounts_session"));
    // The page it showed carries a fresh token that works.
    let accepted = elsewhere
        .log_in(&refused, "csrf@example.com", PASSWORD)
        .await;
    assert!(accepted.answer().contains_key("code"));
}

async fn a_session_signs_in_again_until_it_ends(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(&app, &admin, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap();
    user(&app, "sso@example.com").await;
    let mut browser = Browser::new(&app);
    sign_in(&mut browser, client_id, "sso@example.com").await;

    // Single sign-on: no form, a code at once; prompt=none too.
    for extra in [vec![], vec![("prompt", "none")], vec![("max_age", "3600")]] {
        let again = browser.get(&authorize_url(client_id, &extra)).await;
        assert!(again.answer().contains_key("code"), "{extra:?}");
    }
    // prompt=login asks for the password again; so does a max_age the login is older than.
    assert!(
        browser
            .get(&authorize_url(client_id, &[("prompt", "login")]))
            .await
            .is_login_form()
    );
    backdate_logins(&app).await;
    assert!(
        browser
            .get(&authorize_url(client_id, &[("max_age", "60")]))
            .await
            .is_login_form()
    );

    // Disabling the user ends the session.
    let tokens = app.login("sso@example.com", PASSWORD).await;
    let me: Value = app
        .get_with_token("/users/me", tokens["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let id = me["id"].as_str().unwrap();
    let disabled = app
        .client
        .patch(app.url(&format!("/v1/admin/users/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    let page = browser
        .get(&authorize_url(client_id, &[("prompt", "none")]))
        .await;
    assert_eq!(page.answer()["error"], "login_required");
    let missing = app
        .client
        .patch(app.url("/v1/admin/users/usr_nobody"))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // An administrator cannot disable themselves (nobody might be left to undo it).
    let admin_id = app
        .store
        .user_by_email(crate::helpers::ADMIN_EMAIL)
        .await
        .unwrap()
        .unwrap()
        .id;
    let own = app
        .client
        .patch(app.url(&format!("/v1/admin/users/{admin_id}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 422);
    assert_eq!(app.get_with_token("/users/me", &admin).await.status(), 200);
}

async fn backdate_logins(app: &TestApp) {
    use common::db::Pool;
    let past = chrono::Utc::now() - chrono::Duration::minutes(5);
    let sql = "UPDATE sessions SET auth_time = $1";
    match app.store.database() {
        Pool::Sqlite(pool) => sqlx::query(sql).bind(past).execute(&pool).await.map(drop),
        Pool::Postgres(pool) => sqlx::query(sql).bind(past).execute(&pool).await.map(drop),
    }
    .unwrap();
}

async fn third_party_clients_ask_for_consent_once(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(
        &app,
        &admin,
        json!({"first_party": false, "client_name": "Partner"}),
    )
    .await;
    let client_id = client["client_id"].as_str().unwrap();
    user(&app, "consent@example.com").await;
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(client_id, &[])).await;
    let consent = browser.log_in(&page, "consent@example.com", PASSWORD).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(consent.body.contains("Partner"));
    assert!(consent.body.contains("See your email address"));
    // prompt=none cannot show the consent page.
    let none = browser
        .get(&authorize_url(client_id, &[("prompt", "none")]))
        .await;
    assert_eq!(none.answer()["error"], "consent_required");

    let mut deny = consent.hidden_fields();
    deny.push(("decision".into(), "deny".into()));
    let denied = browser.post("/authorize/consent", &deny).await;
    assert_eq!(denied.answer()["error"], "access_denied");
    assert_eq!(denied.answer()["state"], "st-123");

    let mut allow = consent.hidden_fields();
    allow.push(("decision".into(), "allow".into()));
    let allowed = browser.post("/authorize/consent", &allow).await;
    assert!(allowed.answer().contains_key("code"));
    // Remembered: the next sign-in asks nothing; prompt=consent asks again.
    let again = browser.get(&authorize_url(client_id, &[])).await;
    assert!(again.answer().contains_key("code"));
    let asked = browser
        .get(&authorize_url(client_id, &[("prompt", "consent")]))
        .await;
    assert!(asked.body.contains("Allow access?"));
}

async fn logout_ends_the_session_and_returns_to_a_registered_uri(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(&app, &admin, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap();
    user(&app, "bye@example.com").await;
    let mut browser = Browser::new(&app);
    let code = sign_in(&mut browser, client_id, "bye@example.com").await;
    let tokens: Value = exchange(&app, &client, &code, Some(VERIFIER))
        .await
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();

    // A URI the client did not register: refused, and still signed in.
    let query = serde_urlencoded::to_string([
        ("id_token_hint", id_token),
        ("post_logout_redirect_uri", "https://evil.example/"),
    ])
    .unwrap();
    let refused = browser.get(&format!("/logout?{query}")).await;
    assert_eq!(refused.status, 400);
    assert!(refused.header("location").is_empty());
    let forged = browser.get("/logout?id_token_hint=not.a.token").await;
    assert_eq!(forged.status, 400);
    assert!(
        browser
            .get(&authorize_url(client_id, &[]))
            .await
            .answer()
            .contains_key("code")
    );

    // Without a hint: a confirmation page; the link alone signs nobody out.
    let confirm = browser.get("/logout").await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Sign out?"));
    assert!(
        browser
            .get(&authorize_url(client_id, &[]))
            .await
            .answer()
            .contains_key("code")
    );

    let query = serde_urlencoded::to_string([
        ("id_token_hint", id_token),
        ("post_logout_redirect_uri", LOGOUT_REDIRECT),
        ("state", "bye-1"),
    ])
    .unwrap();
    let out = browser.get(&format!("/logout?{query}")).await;
    assert_eq!(
        out.location().as_str(),
        format!("{LOGOUT_REDIRECT}?state=bye-1")
    );
    assert!(!browser.cookies.contains_key("accounts_session"));
    assert!(
        browser
            .get(&authorize_url(client_id, &[]))
            .await
            .is_login_form()
    );

    // The confirmation form signs out the browser's session.
    let code = sign_in(&mut browser, client_id, "bye@example.com").await;
    assert!(!code.is_empty());
    let session_before = browser.cookies["accounts_session"].clone();
    let confirm = browser.get(&format!("/logout?client_id={client_id}")).await;
    let signed_out = browser.post("/logout", &confirm.hidden_fields()).await;
    assert_eq!(signed_out.status, 200);
    assert!(signed_out.body.contains("Signed out"));
    browser
        .cookies
        .insert("accounts_session".into(), session_before);
    assert!(
        browser
            .get(&authorize_url(client_id, &[]))
            .await
            .is_login_form(),
        "the old cookie no longer names a live session"
    );
}

async fn clients_are_managed_with_rfc_7591_metadata(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(
        &app,
        &admin,
        json!({"token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    let client_id = client["client_id"].as_str().unwrap();
    assert!(client_id.starts_with("cli_"));
    assert!(client["client_secret"].is_string());
    assert_eq!(client["client_secret_expires_at"], 0);
    assert_eq!(client["client_name"], "Shop");
    assert_eq!(client["redirect_uris"], json!([REDIRECT]));
    assert_eq!(
        client["post_logout_redirect_uris"],
        json!([LOGOUT_REDIRECT])
    );
    assert_eq!(
        client["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(client["response_types"], json!(["code"]));
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(client["scope"], "email openid payments:read profile");
    assert_eq!(client["first_party"], true);

    let path = format!("/v1/admin/clients/{client_id}");
    let read: Value = app
        .get_with_token(&path, &admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(read.get("client_secret").is_none());
    assert_eq!(read["redirect_uris"], client["redirect_uris"]);

    let patched = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&admin)
        .json(&json!({"redirect_uris": ["https://shop.example.com/cb"], "first_party": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(
        patched["redirect_uris"],
        json!(["https://shop.example.com/cb"])
    );
    assert_eq!(patched["first_party"], false);
    assert_eq!(patched["client_name"], "Shop");
    for bad in [
        json!({"redirect_uris": ["http://shop.example.com/cb"]}),
        json!({"token_endpoint_auth_method": "none"}),
        json!({"grant_types": ["implicit"]}),
        json!({"redirect_uris": []}),
    ] {
        let response = app
            .client
            .patch(app.url(&path))
            .bearer_auth(&admin)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{bad}");
    }
    for bad in [
        json!({"client_name": "x", "scope": "openid", "redirect_uris": ["https://a.example/cb#frag"]}),
        json!({"client_name": "x", "scope": "openid", "redirect_uris": ["javascript:alert(1)"]}),
        json!({"client_name": "x", "scope": "openid", "grant_types": ["authorization_code"]}),
        json!({"client_name": "x", "scope": "openid", "token_endpoint_auth_method": "private_key_jwt", "redirect_uris": ["https://a.example/cb"]}),
        json!({"client_name": "x", "scope": "openid", "response_types": ["token"], "redirect_uris": ["https://a.example/cb"]}),
    ] {
        let response = app.post_json("/v1/admin/clients", &admin, &bad).await;
        assert_eq!(response.status(), 422, "{bad}");
    }
    // The older body still makes a service client, which cannot start a browser sign-in and
    // still gets client-credentials tokens; a browser client cannot use client credentials.
    let service: Value = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "worker", "scopes": ["payments:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(service["grant_types"], json!(["client_credentials"]));
    let credentials = app
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", service["client_id"].as_str().unwrap()),
            ("client_secret", service["client_secret"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(credentials.status(), 200);
    let browser_client = app
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client["client_secret"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(browser_client.status(), 400);
    let body: Value = browser_client.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");

    let user_token = app.user_token("nosy@example.com").await;
    assert_eq!(app.get_with_token(&path, &user_token).await.status(), 403);
    let deleted = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get_with_token(&path, &admin).await.status(), 404);
    let again = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

async fn the_login_page_answers_alike_and_is_throttled(db: TestDatabase) {
    let app = spawn_app_with(db, &[("ACCOUNTS_PASSWORD_GRANT_ENABLED", "false")]).await;
    // The password grant is off: the admin's token comes from a client instead.
    let refused = app
        .token(&[
            ("grant_type", "password"),
            ("username", crate::helpers::ADMIN_EMAIL),
            ("password", crate::helpers::ADMIN_PASSWORD),
        ])
        .await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
    let discovery: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        !discovery["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("password"))
    );

    let admin = app
        .store
        .user_by_email(crate::helpers::ADMIN_EMAIL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.role, "admin");
    let client = admin_client(&app).await;
    let client_id = client["client_id"].as_str().unwrap();
    user(&app, "throttle@example.com").await;
    let mut browser = Browser::new(&app);
    let page = browser
        .get(&authorize_url(client_id, &[("scope", "openid email")]))
        .await;
    assert!(page.is_login_form(), "{}", page.body);
    let wrong = browser
        .log_in(&page, "throttle@example.com", "wrong-password")
        .await;
    let unknown = browser
        .log_in(&page, "nobody@example.com", "wrong-password")
        .await;
    assert_eq!((wrong.status, unknown.status), (400, 400));
    let message = |page: &Page| {
        let start = page.body.find("role=\"alert\"").unwrap();
        page.body[start..start + 120].to_owned()
    };
    assert_eq!(
        message(&wrong).replace("throttle@example.com", ""),
        message(&unknown).replace("nobody@example.com", "")
    );
    assert!(wrong.body.contains("The email or password is wrong."));
    // The same per-account throttle as the token endpoint.
    let mut last = wrong;
    for _ in 0..10 {
        last = browser
            .log_in(&page, "throttle@example.com", "wrong-password")
            .await;
        if last.status == 429 {
            break;
        }
    }
    assert_eq!(last.status, 429, "{}", last.body);
    assert!(last.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert!(last.body.contains("Too many failed attempts"));
}

/// A first-party web client, registered straight in the store (the password grant is off in
/// the test that uses it, so there is no admin token to register one with).
async fn admin_client(app: &TestApp) -> Value {
    let metadata = accounts::clients::ClientMetadata::new(accounts::clients::MetadataInput {
        name: Some("Shop".into()),
        scopes: Some(vec!["openid".into(), "email".into()]),
        redirect_uris: Some(vec![REDIRECT.into()]),
        first_party: Some(true),
        ..Default::default()
    })
    .unwrap();
    let record = metadata.record(
        "cli_throttle".into(),
        accounts::tokens::hash_token("secret"),
        false,
        chrono::Utc::now(),
        None,
    );
    app.store.insert_client(&record).await.unwrap();
    json!({"client_id": "cli_throttle", "client_secret": "secret"})
}

async fn the_signup_page_creates_a_user_and_signs_them_in(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(&app, &admin, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap();
    let mut browser = Browser::new(&app);
    let login = browser.get(&authorize_url(client_id, &[])).await;
    assert!(
        login.body.contains("href=\"signup?"),
        "a link to the sign-up page"
    );
    let query = authorize_url(client_id, &[]).replace("/authorize?", "");
    let page = browser.get(&format!("/signup?{query}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<label for=\"email\">"));

    let submit = |email: &str, password: &str| {
        let mut form = page.hidden_fields();
        form.push(("email".into(), email.into()));
        form.push(("password".into(), password.into()));
        form.push(("name".into(), "New Person".into()));
        form
    };
    let short = browser
        .post("/signup", &submit("new@example.com", "short"))
        .await;
    assert_eq!(short.status, 422);
    assert!(short.body.contains("role=\"alert\""));
    let taken = browser
        .post("/signup", &submit(crate::helpers::ADMIN_EMAIL, PASSWORD))
        .await;
    assert_eq!(taken.status, 409);
    let created = browser
        .post("/signup", &submit("new@example.com", PASSWORD))
        .await;
    let answer = created.answer();
    assert_eq!(answer["state"], "st-123");
    assert!(browser.cookies.contains_key("accounts_session"));
    let tokens: Value = exchange(&app, &client, &answer["code"], Some(VERIFIER))
        .await
        .json()
        .await
        .unwrap();
    let (_, claims) = decode_jwt(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["email"], "new@example.com");
    assert_eq!(claims["name"], "New Person");

    // Switched off: no page, no link.
    let closed = spawn_app_with(
        TestDatabase::sqlite().await,
        &[("ACCOUNTS_SIGNUP_ENABLED", "false")],
    )
    .await;
    let mut elsewhere = Browser::new(&closed);
    assert_eq!(elsewhere.get("/signup").await.status, 404);
}

async fn an_idle_session_ends(db: TestDatabase) {
    let app = spawn_app_with(db, &[("ACCOUNTS_SESSION_IDLE_SECONDS", "60")]).await;
    let admin = app.admin_token().await;
    let client = register(&app, &admin, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap();
    user(&app, "idle@example.com").await;
    let mut browser = Browser::new(&app);
    sign_in(&mut browser, client_id, "idle@example.com").await;
    assert!(
        browser
            .get(&authorize_url(client_id, &[]))
            .await
            .answer()
            .contains_key("code")
    );
    // Unused for longer than the idle lifetime; then past its absolute end.
    let past = chrono::Utc::now() - chrono::Duration::minutes(5);
    set_sessions(&app, "UPDATE sessions SET last_seen_at = $1", past).await;
    let page = browser
        .get(&authorize_url(client_id, &[("prompt", "none")]))
        .await;
    assert_eq!(page.answer()["error"], "login_required");
    sign_in(&mut browser, client_id, "idle@example.com").await;
    set_sessions(&app, "UPDATE sessions SET expires_at = $1", past).await;
    let page = browser
        .get(&authorize_url(client_id, &[("prompt", "none")]))
        .await;
    assert_eq!(page.answer()["error"], "login_required");
}

async fn set_sessions(app: &TestApp, sql: &'static str, when: chrono::DateTime<chrono::Utc>) {
    use common::db::Pool;
    match app.store.database() {
        Pool::Sqlite(pool) => sqlx::query(sql).bind(when).execute(&pool).await.map(drop),
        Pool::Postgres(pool) => sqlx::query(sql).bind(when).execute(&pool).await.map(drop),
    }
    .unwrap();
}

async fn login_hint_prefills_and_offline_access_is_granted(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let client = register(
        &app,
        &admin,
        json!({"scope": "openid email offline_access payments:read"}),
    )
    .await;
    let client_id = client["client_id"].as_str().unwrap();
    user(&app, "hint@example.com").await;
    let mut browser = Browser::new(&app);
    let page = browser
        .get(&authorize_url(
            client_id,
            &[
                ("login_hint", "hint@example.com"),
                ("scope", "openid offline_access"),
            ],
        ))
        .await;
    assert!(page.is_login_form());
    assert!(
        page.body.contains("value=\"hint@example.com\""),
        "the email is prefilled"
    );
    let back = browser.log_in(&page, "hint@example.com", PASSWORD).await;
    let tokens: Value = exchange(&app, &client, &back.answer()["code"], Some(VERIFIER))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tokens["scope"], "offline_access openid");
    assert!(tokens["refresh_token"].is_string());
    assert!(tokens["id_token"].is_string());
}
