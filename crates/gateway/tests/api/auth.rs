//! Identity at the edge: routes that require, accept or ignore a token; forged, expired and
//! scope-less tokens; identity headers that only the gateway sets.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use common::testkit::Running;

use crate::helpers::{gateway_metrics, metric, routes_file, spawn_gateway, spawn_upstream};

/// A signing key published at a JWKS URL of its own.
pub struct Issuer {
    pub jwks: Running,
    kid: String,
    key: EncodingKey,
}

impl Issuer {
    /// A new Ed25519 key, published as `kid`.
    pub async fn start() -> Self {
        let (key, x) = new_key();
        let kid = format!("edge-{}", &x[..8]);
        let set = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA", "x": x}
        ]});
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let set = set.clone();
                async move { axum::Json(set) }
            }),
        );
        let jwks = crate::helpers::serve(router).await;
        Self { jwks, kid, key }
    }

    /// The gateway settings that make it trust this key.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("GATEWAY_JWKS_URL", self.jwks.url("/jwks.json"))]
    }

    /// An access token for `sub` with `scope`, expiring `expires_in` seconds from now.
    pub fn token(&self, sub: &str, scope: &str, expires_in: i64) -> String {
        sign(&self.kid, &self.key, &claims(sub, scope, expires_in))
    }
}

fn new_key() -> (EncodingKey, String) {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    let der = key.to_pkcs8_der().unwrap();
    (EncodingKey::from_ed_der(der.as_bytes()), x)
}

fn claims(sub: &str, scope: &str, expires_in: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "http://localhost:8080/accounts", "sub": sub, "aud": ["accounts", "payments"],
        "exp": now + expires_in, "iat": now - 600, "nbf": now - 600, "jti": "t", "client_id": "web",
        "scope": scope, "legacy_user_id": 42,
    })
}

fn sign(kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

const SPOOFED: [(&str, &str); 4] = [
    ("x-auth-subject", "admin"),
    ("x-auth-scopes", "payments:admin"),
    ("x-auth-client-id", "trusted"),
    ("x-auth-legacy-user-id", "1"),
];

async fn get(
    gateway: &Running,
    path: &str,
    authorization: Option<&str>,
    spoof: bool,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(gateway.url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if spoof {
        for (name, value) in SPOOFED {
            request = request.header(name, value);
        }
    }
    request.send().await.unwrap()
}

/// The identity headers the upstream received (the echo's headers).
fn identity(echo: &Value) -> Vec<Option<String>> {
    SPOOFED
        .iter()
        .map(|(name, _)| echo["headers"][name].as_str().map(str::to_owned))
        .collect()
}

async fn assert_refused(response: reqwest::Response, status: u16, code: &str, detail: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains(detail),
        "{problem}"
    );
    assert!(problem["request_id"].is_string());
    if status == 401 || status == 403 {
        assert!(
            challenge.unwrap().starts_with("Bearer"),
            "a Bearer challenge"
        );
    }
}

#[tokio::test]
async fn each_route_mode_checks_tokens_and_only_the_gateway_sets_identity_headers() {
    let upstream = spawn_upstream().await;
    let issuer = Issuer::start().await;
    let at = upstream.addr;
    let (_file, mut env) = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/required"
        upstream = "http://{at}"
        auth = "required"
        scopes = ["orders:read"]

        [[routes]]
        prefix = "/optional"
        upstream = "http://{at}"
        auth = "optional"

        [[routes]]
        prefix = "/open"
        upstream = "http://{at}"
        "#
    ));
    env.extend(issuer.env());
    let gateway = spawn_gateway(at, at, &env).await;
    let good = format!(
        "Bearer {}",
        issuer.token("user-7", "orders:read profile", 300)
    );

    // Required: a valid token with the scope passes, its identity forwarded; what the client
    // claimed under those names is gone.
    let response = get(&gateway, "/required/orders", Some(&good), true).await;
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(
        identity(&echo),
        [
            Some("user-7".to_owned()),
            Some("orders:read profile".to_owned()),
            Some("web".to_owned()),
            Some("42".to_owned()),
        ]
    );
    assert_eq!(echo["path"], "/orders");
    assert!(
        echo["headers"]["authorization"].is_string(),
        "the token goes on"
    );

    // Required: no token, another scheme, a forged signature, an expired token, a token
    // without the scope, a token of another issuer.
    assert_refused(
        get(&gateway, "/required/orders", None, true).await,
        401,
        "unauthorized",
        "required",
    )
    .await;
    assert_refused(
        get(
            &gateway,
            "/required/orders",
            Some("Basic dXNlcjpwYXNz"),
            false,
        )
        .await,
        401,
        "unauthorized",
        "Bearer",
    )
    .await;
    let (forger, _) = new_key();
    let kid = issuer.kid.clone();
    let forged = sign(&kid, &forger, &claims("admin", "orders:read", 300));
    assert_refused(
        get(
            &gateway,
            "/required/orders",
            Some(&format!("Bearer {forged}")),
            false,
        )
        .await,
        401,
        "unauthorized",
        "not valid",
    )
    .await;
    let expired = issuer.token("user-7", "orders:read", -3600);
    assert_refused(
        get(
            &gateway,
            "/required/orders",
            Some(&format!("Bearer {expired}")),
            false,
        )
        .await,
        401,
        "unauthorized",
        "expired",
    )
    .await;
    let scopeless = issuer.token("user-7", "profile", 300);
    assert_refused(
        get(
            &gateway,
            "/required/orders",
            Some(&format!("Bearer {scopeless}")),
            false,
        )
        .await,
        403,
        "forbidden",
        "orders:read",
    )
    .await;
    let mut other_issuer = claims("user-7", "orders:read", 300);
    other_issuer["iss"] = json!("https://evil.example");
    let other = sign(&kid, &issuer.key, &other_issuer);
    assert_refused(
        get(
            &gateway,
            "/required/orders",
            Some(&format!("Bearer {other}")),
            false,
        )
        .await,
        401,
        "unauthorized",
        "not valid",
    )
    .await;

    // Optional: anonymous passes with no identity (the spoofed headers removed); a bad token
    // is refused; a good one is forwarded.
    let response = get(&gateway, "/optional/x", None, true).await;
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(identity(&echo), [None, None, None, None]);
    assert_refused(
        get(
            &gateway,
            "/optional/x",
            Some(&format!("Bearer {forged}")),
            true,
        )
        .await,
        401,
        "unauthorized",
        "not valid",
    )
    .await;
    let echo: Value = get(&gateway, "/optional/x", Some(&good), false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(identity(&echo)[0].as_deref(), Some("user-7"));

    // Off (and the built-in routes): the token is not looked at, and no identity reaches the
    // upstream, whatever the client sends.
    for path in ["/open/x", "/accounts/x"] {
        let response = get(&gateway, path, Some(&format!("Bearer {forged}")), true).await;
        assert_eq!(response.status(), 200, "{path}");
        let echo: Value = response.json().await.unwrap();
        assert_eq!(identity(&echo), [None, None, None, None], "{path}");
    }

    let metrics = gateway_metrics(&gateway).await;
    for (outcome, route, count) in [
        ("verified", "/required/{*rest}", 1.0),
        ("missing", "/required/{*rest}", 1.0),
        ("invalid", "/required/{*rest}", 4.0),
        ("forbidden", "/required/{*rest}", 1.0),
        ("anonymous", "/optional/{*rest}", 1.0),
        ("verified", "/optional/{*rest}", 1.0),
    ] {
        let series = format!("gateway_edge_auth_total{{outcome=\"{outcome}\",route=\"{route}\"}}");
        assert_eq!(metric(&metrics, &series), count, "{series}\n{metrics}");
    }
}

#[tokio::test]
async fn identity_header_names_are_configurable_and_still_stripped() {
    let upstream = spawn_upstream().await;
    let issuer = Issuer::start().await;
    let at = upstream.addr;
    let (_file, mut env) = routes_file(&format!(
        "[[routes]]\nprefix = \"/r\"\nupstream = \"http://{at}\"\nauth = \"optional\"\n"
    ));
    env.extend(issuer.env());
    env.push(("GATEWAY_AUTH_SUBJECT_HEADER", "X-User".to_owned()));
    let gateway = spawn_gateway(at, at, &env).await;
    let token = issuer.token("user-9", "profile", 300);
    let echo: Value = reqwest::Client::new()
        .get(gateway.url("/r/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-user", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["headers"]["x-user"], "user-9");
    let echo: Value = reqwest::Client::new()
        .get(gateway.url("/accounts/x"))
        .header("x-user", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(echo["headers"]["x-user"].is_null(), "{echo}");
}
