//! OpenAPI: what every service's document has in common, the conventions that let handlers
//! describe only what is theirs, and serving the document (`GET /openapi.json`) and its page
//! for people (`GET /docs`).
//!
//! Each service registers its routes through `utoipa_axum::routes!`, which takes the path and
//! method from the handler's `#[utoipa::path]`: the router and the document are built from the
//! same attribute and cannot disagree. [`Document::new`] then completes the document with what
//! follows from the shared layers rather than from any one handler:
//!
//! - every error response (4xx, 5xx) without a body of its own is `application/problem+json`,
//!   its `code` one of those the response's description names in backticks before the first
//!   colon — write `` (status = 404, description = "`not_found`: no such payment") ``;
//! - a JSON body brings 400 `malformed_request`, 413 `payload_too_large`, 415
//!   `unsupported_media_type` and 422 `validation_failed` (a NUL character); query parameters
//!   400 and 422; path parameters 400; a bearer requirement 401 `unauthorized` (with
//!   `WWW-Authenticate`) and, with scopes, 403 `forbidden`;
//! - every operation may answer 429 `rate_limited`, 502, 503 and 504 when called through the
//!   gateway, and 500 `internal_error`;
//! - every response carries `X-Request-ID`, and through the gateway `RateLimit` and
//!   `RateLimit-Policy`.
//!
//! The document's `servers` are set per request: through the gateway they name the gateway's
//! prefix (`X-Forwarded-Proto`, `-Host`, `-Prefix`), so a client generated from the document
//! works through the gateway as well as directly.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value, json};
use utoipa::PartialSchema;
use utoipa::openapi::OpenApi;
pub use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::path::PathItem;

use crate::problem::{FieldError, PROBLEM_JSON, Problem};

/// The operations of every service that the shared layers add (`/metrics`), for merging into
/// the service's document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(crate::metrics::metrics_endpoint))]
pub struct SharedPaths;

/// Problem codes the shared layers (and the gateway in front) may answer any operation with.
const ANY_OPERATION: &[(&str, &[&str], &str)] = &[
    (
        "429",
        &["rate_limited"],
        "through the gateway: too many requests from this client; retry after `Retry-After` seconds",
    ),
    (
        "500",
        &["internal_error"],
        "the request failed unexpectedly; it has been logged",
    ),
    (
        "502",
        &["upstream_unavailable"],
        "through the gateway: the service could not be reached or answered badly",
    ),
    (
        "503",
        &[
            "dependency_unavailable",
            "circuit_open",
            "temporarily_unavailable",
        ],
        "a dependency (database, broker) is down, the gateway's circuit for the service is open, or the service sheds load; retry after `Retry-After` seconds when given",
    ),
    (
        "504",
        &["upstream_timeout"],
        "through the gateway: the service did not answer in time",
    ),
];

/// How callers authenticate, for the document's `securitySchemes`: `bearer` (an access token
/// from accounts), `oauth2` (the same token, with the flows and token URL that issue it) and
/// `client_basic` (HTTP Basic client authentication at the OAuth endpoints).
#[derive(Debug, Clone)]
pub struct Security<'a> {
    /// accounts' issuer URL: its token endpoint is `{issuer}/v1/token`, its authorization
    /// endpoint `{issuer}/authorize`.
    pub issuer: &'a str,
    /// The scopes this service's operations ask for, with what each allows.
    pub scopes: &'a [(&'a str, &'a str)],
}

/// A finished OpenAPI document, ready to serve.
#[derive(Debug, Clone)]
pub struct Document {
    json: Value,
}

impl Document {
    /// Completes `api` by the conventions of this module (see its documentation), with the
    /// shared operations (`/metrics`) and `security`'s schemes.
    pub fn new(mut api: OpenApi, security: &Security<'_>) -> Self {
        api.merge(<SharedPaths as utoipa::OpenApi>::openapi());
        let mut json = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
        let scopes: Map<String, Value> = security
            .scopes
            .iter()
            .map(|(scope, what)| ((*scope).to_owned(), Value::String((*what).to_owned())))
            .collect();
        let token_url = format!("{}/v1/token", security.issuer);
        let authorization_url = format!("{}/authorize", security.issuer);
        json["components"]["securitySchemes"] = json!({
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token from accounts (RFC 9068 JWT) whose `aud` names this service."
            },
            "oauth2": {
                "type": "oauth2",
                "description": "The same access token, as accounts' token endpoint issues it.",
                "flows": {
                    "authorizationCode": {
                        "authorizationUrl": authorization_url,
                        "tokenUrl": token_url,
                        "scopes": scopes
                    },
                    "password": { "tokenUrl": token_url, "scopes": scopes },
                    "clientCredentials": { "tokenUrl": token_url, "scopes": scopes }
                }
            },
            "client_basic": {
                "type": "http",
                "scheme": "basic",
                "description": "OAuth client authentication (`client_secret_basic`): the client id and secret, form-encoded, as user and password."
            }
        });
        complete(&mut json);
        Self { json }
    }

    /// The document as JSON, with `servers` naming `base` (where the API is reached).
    pub fn with_server(&self, base: &str) -> Value {
        let mut json = self.json.clone();
        json["servers"] = json!([{ "url": base }]);
        json
    }

    /// The document as JSON, without `servers`.
    pub fn json(&self) -> &Value {
        &self.json
    }
}

fn complete(doc: &mut Value) {
    let components = doc
        .as_object_mut()
        .map(|doc| doc.entry("components").or_insert_with(|| json!({})));
    if let Some(Value::Object(components)) = components {
        let schemas = components
            .entry("schemas")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(schemas) = schemas {
            schemas.insert(
                "Problem".into(),
                serde_json::to_value(Problem::schema()).unwrap_or_default(),
            );
            schemas.insert(
                "FieldError".into(),
                serde_json::to_value(FieldError::schema()).unwrap_or_default(),
            );
        }
    }
    let Some(Value::Object(paths)) = doc.get_mut("paths") else {
        return;
    };
    for item in paths.values_mut() {
        let Value::Object(item) = item else { continue };
        for (method, operation) in item.iter_mut() {
            if matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            ) && let Value::Object(operation) = operation
            {
                complete_operation(operation);
            }
        }
    }
}

fn complete_operation(operation: &mut Map<String, Value>) {
    let json_body = operation
        .get("requestBody")
        .and_then(|body| body.get("content"))
        .and_then(Value::as_object)
        .is_some_and(|content| {
            content.contains_key("application/json")
                && !content.contains_key("application/x-www-form-urlencoded")
        });
    let parameters: Vec<String> = operation
        .get("parameters")
        .and_then(Value::as_array)
        .map(|parameters| {
            parameters
                .iter()
                .filter_map(|p| p.get("in").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let bearer_scopes: Option<bool> = operation
        .get("security")
        .and_then(Value::as_array)
        .and_then(|requirements| {
            requirements
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|requirement| requirement.iter())
                .find(|(scheme, _)| *scheme == "bearer" || *scheme == "oauth2")
                .map(|(_, scopes)| scopes.as_array().is_some_and(|s| !s.is_empty()))
        });

    let mut added: Vec<(&str, &[&str], &str)> = Vec::new();
    if json_body {
        added.push((
            "400",
            &["malformed_request"],
            "the body is not JSON, or not of the expected shape",
        ));
        added.push((
            "413",
            &["payload_too_large"],
            "the body is larger than the service accepts",
        ));
        added.push((
            "415",
            &["unsupported_media_type"],
            "the body is not sent as `Content-Type: application/json`",
        ));
        added.push((
            "422",
            &["validation_failed"],
            "a field is not acceptable (`errors` lists each)",
        ));
    }
    if parameters.iter().any(|p| p == "query") {
        added.push((
            "400",
            &["malformed_request"],
            "the query string cannot be read",
        ));
        added.push((
            "422",
            &["validation_failed"],
            "a parameter is not acceptable (`errors` lists each)",
        ));
    }
    if parameters.iter().any(|p| p == "path") {
        added.push((
            "400",
            &["malformed_request"],
            "a path parameter is not acceptable",
        ));
    }
    if let Some(scoped) = bearer_scopes {
        added.push((
            "401",
            &["unauthorized"],
            "no valid access token: missing, malformed, expired, revoked, or not for this service",
        ));
        if scoped {
            added.push((
                "403",
                &["forbidden"],
                "the access token lacks the scope this operation needs",
            ));
        }
    }
    added.extend_from_slice(ANY_OPERATION);

    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else { return };
    for (status, codes, description) in added {
        add_problem_codes(responses, status, codes, description);
    }
    for (status, response) in responses.iter_mut() {
        let Value::Object(response) = response else {
            continue;
        };
        if is_error(status) && !has_problem_content(response) {
            let codes = codes_in(
                response
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            if response.get("content").is_none() || !codes.is_empty() {
                set_problem_content(response, &codes);
            }
        }
        add_standard_headers(status, response);
    }
}

fn is_error(status: &str) -> bool {
    status.starts_with('4') || status.starts_with('5')
}

fn has_problem_content(response: &Map<String, Value>) -> bool {
    response
        .get("content")
        .and_then(Value::as_object)
        .is_some_and(|content| content.contains_key(PROBLEM_JSON))
}

/// The codes named in backticks before the description's first colon outside backticks.
fn codes_in(description: &str) -> Vec<String> {
    let mut codes = Vec::new();
    let mut rest = description.trim_start();
    while let Some(after) = rest.strip_prefix('`') {
        let Some(end) = after.find('`') else { break };
        codes.push(after[..end].to_owned());
        rest = after[end + 1..].trim_start();
        rest = rest
            .strip_prefix(',')
            .or_else(|| rest.strip_prefix('/'))
            .or_else(|| rest.strip_prefix("or"))
            .unwrap_or(rest)
            .trim_start();
    }
    if rest.starts_with(':') {
        codes
    } else {
        Vec::new()
    }
}

fn problem_schema(codes: &[String]) -> Value {
    json!({
        "allOf": [
            { "$ref": "#/components/schemas/Problem" },
            { "type": "object", "properties": { "code": { "enum": codes } } }
        ]
    })
}

fn set_problem_content(response: &mut Map<String, Value>, codes: &[String]) {
    let content = response
        .entry("content")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(content) = content {
        let schema = if codes.is_empty() {
            json!({ "$ref": "#/components/schemas/Problem" })
        } else {
            problem_schema(codes)
        };
        content.insert(PROBLEM_JSON.into(), json!({ "schema": schema }));
    }
}

/// Adds `codes` to the problem response of `status`, creating it (or its problem content,
/// beside a body of the operation's own) if need be.
fn add_problem_codes(
    responses: &mut Map<String, Value>,
    status: &str,
    codes: &[&str],
    description: &str,
) {
    let listed = codes
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let Value::Object(response) = responses
        .entry(status)
        .or_insert_with(|| json!({ "description": format!("{listed}: {description}") }))
    else {
        return;
    };
    let own = response
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut known = codes_in(&own);
    if let Some(existing) = response
        .get("content")
        .and_then(|c| c.get(PROBLEM_JSON))
        .and_then(|p| p.pointer("/schema/allOf/1/properties/code/enum"))
        .and_then(Value::as_array)
    {
        for code in existing.iter().filter_map(Value::as_str) {
            if !known.iter().any(|k| k == code) {
                known.push(code.to_owned());
            }
        }
    }
    let fresh: Vec<&str> = codes
        .iter()
        .copied()
        .filter(|c| !known.iter().any(|k| k == c))
        .collect();
    if !fresh.is_empty() && !own.is_empty() && !own.starts_with(&listed) {
        let listed = fresh
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        response.insert(
            "description".into(),
            Value::String(format!("{own}\n\n{listed}: {description}")),
        );
    }
    known.extend(fresh.iter().map(|c| (*c).to_owned()));
    if response.get("content").is_none() || has_problem_content(response) || !known.is_empty() {
        set_problem_content(response, &known);
    }
}

fn add_standard_headers(status: &str, response: &mut Map<String, Value>) {
    let headers = response
        .entry("headers")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(headers) = headers else { return };
    headers.entry("X-Request-ID").or_insert_with(|| {
        json!({
            "description": "The request's id: the caller's own when it sent a sane one, else a new one; also in the logs and in problem bodies.",
            "required": true,
            "schema": { "type": "string" }
        })
    });
    headers.entry("RateLimit").or_insert_with(|| {
        json!({
            "description": "Through the gateway: the client's quota left (draft-ietf-httpapi-ratelimit-headers), e.g. `\"default\";r=99;t=1`.",
            "schema": { "type": "string" }
        })
    });
    headers.entry("RateLimit-Policy").or_insert_with(|| {
        json!({
            "description": "Through the gateway: the quota that applies, e.g. `\"default\";q=100;w=1`.",
            "schema": { "type": "string" }
        })
    });
    if matches!(status, "429" | "503") {
        let retry_after = headers.entry("Retry-After").or_insert_with(|| {
            json!({
                "description": "Seconds to wait before retrying.",
                "schema": { "type": "integer", "minimum": 0 }
            })
        });
        // Every 429 says when to come back, whoever sends it.
        if status == "429" {
            retry_after["required"] = Value::Bool(true);
        }
    }
    if status == "401" {
        headers.entry("WWW-Authenticate").or_insert_with(|| {
            json!({
                "description": "`Bearer`, with `error=\"invalid_token\"` when a token was sent (RFC 6750).",
                "schema": { "type": "string" }
            })
        });
    }
}

/// Serves the operation `method path` of `router` at `alias` too (a path the monolith's clients
/// already call): `method_router` answers there, and the document lists the same operation under
/// `operation_id`, so the alias is described by the attribute of the operation it repeats.
pub fn alias<S>(
    mut router: utoipa_axum::router::OpenApiRouter<S>,
    method: HttpMethod,
    path: &str,
    alias: &str,
    operation_id: &str,
    method_router: axum::routing::MethodRouter<S>,
) -> utoipa_axum::router::OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let paths = &mut router.get_openapi_mut().paths.paths;
    let (name, operation) = match paths.get(path) {
        None => ("", &None),
        Some(item) => match method {
            HttpMethod::Get => ("GET", &item.get),
            HttpMethod::Post => ("POST", &item.post),
            HttpMethod::Put => ("PUT", &item.put),
            HttpMethod::Delete => ("DELETE", &item.delete),
            HttpMethod::Patch => ("PATCH", &item.patch),
            HttpMethod::Head => ("HEAD", &item.head),
            HttpMethod::Options => ("OPTIONS", &item.options),
            HttpMethod::Trace => ("TRACE", &item.trace),
        },
    };
    let operation = operation.clone();
    if let Some(mut operation) = operation {
        operation.operation_id = Some(operation_id.to_owned());
        operation.summary = operation
            .summary
            .map(|summary| format!("{summary} (at {alias})"));
        operation.description = Some(format!(
            "The same as `{name} {path}`, at the path the monolith's clients call."
        ));
        paths.insert(alias.to_owned(), PathItem::new(method, operation));
    }
    router.route(alias, method_router)
}

/// Where `/docs` loads Swagger UI from, and this service's name for the page title.
#[derive(Debug, Clone)]
pub struct DocsPage {
    /// The service, for the title.
    pub service: &'static str,
    /// A URL under which `swagger-ui-bundle.js` and `swagger-ui.css` are found
    /// (`DOCS_ASSETS_URL`), without a trailing slash.
    pub assets_url: String,
}

struct Served {
    document: Document,
    page: String,
    csp: HeaderValue,
}

/// `router` with `GET /openapi.json` (`api` completed by [`Document::new`]) and `GET /docs`
/// (Swagger UI from `http.docs_assets_url`) added.
pub fn serve_document(
    router: Router,
    api: OpenApi,
    security: &Security<'_>,
    service: &'static str,
    http: &crate::config::HttpConfig,
) -> Router {
    let docs = DocsPage {
        service,
        assets_url: http.docs_assets_url.clone(),
    };
    router.merge(routes(Document::new(api, security), &docs))
}

/// `GET /openapi.json`, `GET /docs` and the page's script, for merging into the service's router.
pub fn routes(document: Document, docs: &DocsPage) -> Router {
    let assets = docs.assets_url.trim_end_matches('/');
    let origin = url::Url::parse(assets)
        .ok()
        .map(|url| url.origin().ascii_serialization())
        .filter(|origin| origin != "null")
        .unwrap_or_default();
    let page = DOCS_PAGE
        .replace("{title}", &html_escape(&format!("{} API", docs.service)))
        .replace("{assets}", &html_escape(assets));
    let csp = format!(
        "default-src 'none'; script-src 'self' {origin}; style-src 'self' {origin}; img-src 'self' data: {origin}; font-src 'self' {origin}; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let served = Arc::new(Served {
        document,
        page,
        csp: HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'")),
    });
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
        .route("/docs/swagger-initializer.js", get(docs_script))
        .with_state(served)
}

/// The API as seen by the caller: the gateway's address and prefix when it came through the
/// gateway (`X-Forwarded-Proto`, `-Host`, `-Prefix`), else the `Host` it called.
pub fn public_base(headers: &HeaderMap) -> String {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let proto = value("x-forwarded-proto")
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    let host = value("x-forwarded-host")
        .filter(|h| is_host(h))
        .or_else(|| value("host").filter(|h| is_host(h)));
    let prefix = value("x-forwarded-prefix")
        .filter(|p| {
            p.starts_with('/')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        })
        .unwrap_or("")
        .trim_end_matches('/');
    match host {
        Some(host) => format!("{proto}://{host}{prefix}"),
        None if prefix.is_empty() => "/".to_owned(),
        None => prefix.to_owned(),
    }
}

/// A `host[:port]` as it may stand in a URL (a name, IPv4, or bracketed IPv6).
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

async fn openapi_json(State(served): State<Arc<Served>>, headers: HeaderMap) -> Response {
    let document = served.document.with_server(&public_base(&headers));
    let mut response = axum::Json(document).into_response();
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::VARY,
        HeaderValue::from_static("Host, X-Forwarded-Host, X-Forwarded-Proto, X-Forwarded-Prefix"),
    );
    response
}

async fn docs_page(State(served): State<Arc<Served>>) -> Response {
    let mut response = axum::response::Html(served.page.clone()).into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_SECURITY_POLICY, served.csp.clone());
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn docs_script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        DOCS_SCRIPT,
    )
        .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page: Swagger UI from the assets URL, started by a script of ours (no inline script,
/// so the policy needs no `'unsafe-inline'`). Paths are relative: the page works at `/docs`
/// and at `/<prefix>/docs` through the gateway.
const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="docs/swagger-initializer.js"></script>
</body>
</html>
"#;

const DOCS_SCRIPT: &str = r##"window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false
  });
});
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_the_backticks_before_the_colon() {
        assert_eq!(codes_in("`not_found`: no such payment"), ["not_found"]);
        assert_eq!(
            codes_in("`missing_idempotency_key`, `invalid_idempotency_key`: the header"),
            ["missing_idempotency_key", "invalid_idempotency_key"]
        );
        assert_eq!(codes_in("`a` or `b`: either"), ["a", "b"]);
        assert!(codes_in("The payment, as `pending`").is_empty());
        assert!(codes_in("`a` then words: no").is_empty());
    }

    #[test]
    fn the_base_follows_the_gateway_and_refuses_odd_values() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:8082"));
        assert_eq!(public_base(&headers), "http://127.0.0.1:8082");
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("api.example.com"),
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-forwarded-prefix", HeaderValue::from_static("/payments"));
        assert_eq!(public_base(&headers), "https://api.example.com/payments");
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("evil.com/\"><x"),
        );
        headers.insert("x-forwarded-prefix", HeaderValue::from_static("/a?b"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("javascript"));
        assert_eq!(public_base(&headers), "http://127.0.0.1:8082");
    }

    #[test]
    fn a_json_operation_gains_the_shared_problems() {
        let mut doc = json!({
            "openapi": "3.1.0",
            "paths": {
                "/v1/things/{id}": {
                    "post": {
                        "parameters": [{ "name": "id", "in": "path", "required": true }],
                        "requestBody": { "content": { "application/json": {} } },
                        "security": [{ "bearer": ["things:write"] }],
                        "responses": {
                            "200": { "description": "the thing" },
                            "404": { "description": "`not_found`: no such thing" },
                            "422": { "description": "`too_big`: over the limit" }
                        }
                    }
                }
            }
        });
        complete(&mut doc);
        let responses = &doc["paths"]["/v1/things/{id}"]["post"]["responses"];
        let codes = |status: &str| {
            responses[status]["content"][PROBLEM_JSON]["schema"]["allOf"][1]["properties"]
                ["code"]["enum"]
                .clone()
        };
        assert_eq!(codes("404"), json!(["not_found"]));
        assert_eq!(codes("422"), json!(["too_big", "validation_failed"]));
        assert_eq!(codes("400"), json!(["malformed_request"]));
        assert_eq!(codes("401"), json!(["unauthorized"]));
        assert_eq!(codes("403"), json!(["forbidden"]));
        assert_eq!(codes("415"), json!(["unsupported_media_type"]));
        assert_eq!(
            codes("503"),
            json!([
                "dependency_unavailable",
                "circuit_open",
                "temporarily_unavailable"
            ])
        );
        assert!(responses["200"]["content"].is_null());
        assert_eq!(
            responses["200"]["headers"]["X-Request-ID"]["required"],
            true
        );
        assert_eq!(responses["429"]["headers"]["Retry-After"]["required"], true);
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }
}
