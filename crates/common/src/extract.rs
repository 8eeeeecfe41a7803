//! Extractors whose rejections are the service's own problem responses, and the edge check
//! every input passes: no string a request carries may hold a character its field cannot
//! hold. NUL (U+0000) is the one PostgreSQL's `text` refuses (a query carrying it fails, which
//! would be a 500); control characters have no place in ids, cursors or numbers either. They
//! are refused here, once, for JSON bodies, form bodies, query strings and path parameters.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};

/// A JSON body (`Content-Type: application/json`). Rejections: 415 without the content type,
/// 400 `malformed_request` for bad JSON or the wrong shape, 413 over the body limit, 422
/// `validation_failed` for a string holding NUL (each one's path named).
/// As a response, serializes `T` as `application/json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(value, _) = JsonBytes::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// An optional JSON body: `None` when the request has no `Content-Type` (no body), else as
/// [`Json`].
impl<T, S> axum::extract::OptionalFromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if request.headers().get(header::CONTENT_TYPE).is_none() {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(request, state)
            .await
            .map(Some)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A JSON body as [`Json`] checks it, and its bytes as they came (to fingerprint a request, or
/// to read a number from its text).
#[derive(Debug, Clone)]
pub struct JsonBytes<T>(pub T, pub Bytes);

impl<T, S> FromRequest<S> for JsonBytes<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE)
            } else {
                Problem::malformed(format!("the body could not be read: {}", e.body_text()))
            }
        })?;
        let axum::Json(value) =
            axum::Json::<T>::from_bytes(&bytes).map_err(json_rejection_problem)?;
        if json_has_nul(&bytes) {
            return Err(nul_in_json(&bytes));
        }
        Ok(Self(value, bytes))
    }
}

/// `application/json`, or any `application/*+json`.
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// The problem for each way a JSON body can be refused.
pub fn json_rejection_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            Problem::malformed(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => Problem::malformed(format!(
            "the body does not have the expected shape: {}",
            e.body_text()
        )),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        JsonRejection::BytesRejection(e) => {
            Problem::malformed(format!("the body could not be read: {}", e.body_text()))
        }
        other => Problem::malformed(other.body_text()),
    }
}

/// Whether valid JSON text holds a NUL in a string (it can only appear escaped, `\u0000`;
/// an escaped backslash followed by `u0000` is the text `\u0000`, not a NUL).
pub fn json_has_nul(text: &[u8]) -> bool {
    let mut bytes = text.iter();
    while let Some(byte) = bytes.next() {
        if *byte == b'\\' && bytes.next() == Some(&b'u') && bytes.as_slice().starts_with(b"0000") {
            return true;
        }
    }
    false
}

/// 422 naming every string of a JSON body (by its path, `fields.first_name`, `[3].email`)
/// that holds a NUL.
fn nul_in_json(text: &[u8]) -> Problem {
    fn walk(value: &serde_json::Value, path: &str, found: &mut Vec<FieldError>) {
        let nul = |s: &str| s.contains('\0');
        match value {
            serde_json::Value::String(s) if nul(s) => found.push(nul_error(path)),
            serde_json::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{index}]"), found);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    let name = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if nul(key) {
                        found.push(nul_error(&name));
                    }
                    walk(item, &name, found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(text) {
        walk(&value, "", &mut found);
    }
    if found.is_empty() {
        found.push(nul_error("body"));
    }
    Problem::validation(found)
}

fn nul_error(field: &str) -> FieldError {
    FieldError::new(field, "must not contain the NUL character (U+0000)")
}

/// The first of `pairs` (decoded `name=value` of a query string or form) whose name or value
/// holds a control character (NUL included).
pub fn control_in_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<&'a str> {
    pairs
        .into_iter()
        .find(|(name, value)| name.chars().chain(value.chars()).any(char::is_control))
        .map(|(name, _)| name)
}

/// A query string, deserialized. Rejections: 422 `validation_failed` naming a parameter that
/// holds a control character (NUL included), 400 `malformed_request` for one that does not
/// have the expected shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| Problem::malformed(format!("the query string cannot be read: {e}")))?;
        if let Some(name) = control_in_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))) {
            return Err(Problem::validation(vec![FieldError::new(
                name,
                "must not contain control characters",
            )]));
        }
        serde_urlencoded::from_str(query)
            .map(Self)
            .map_err(|e| Problem::malformed(format!("the query string is not as expected: {e}")))
    }
}

/// Path parameters (`/v1/payments/{id}`), deserialized. Rejection: 400 `malformed_request`
/// for a parameter that holds a control character (NUL included) once percent-decoded, or
/// that does not have the expected shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::malformed(e.body_text()))?;
        for (name, value) in &raw {
            let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            if decoded.chars().any(char::is_control) {
                return Err(Problem::malformed(format!(
                    "the path parameter {name} must not contain control characters"
                )));
            }
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|e| Problem::malformed(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_is_found_only_where_json_text_has_one() {
        assert!(json_has_nul(br#"{"email":"a\u0000b"}"#));
        assert!(json_has_nul(br#"["\u0000"]"#));
        assert!(
            !json_has_nul(br#"{"text":"a\\u0000b"}"#),
            "an escaped backslash"
        );
        assert!(
            json_has_nul(br#"{"text":"a\\\u0000b"}"#),
            "a backslash, then a NUL"
        );
        assert!(!json_has_nul(br#"{"n":"\u0001"}"#));
    }

    #[test]
    fn the_problem_names_each_field_holding_a_nul() {
        let problem =
            nul_in_json(br#"[{"fields":{"first_name":"x\u0000"}},{"email":"ok","a\u0000":1}]"#);
        let fields: Vec<&str> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["[0].fields.first_name", "[1].a\0"]);
        assert_eq!(problem.status, 422);
    }

    #[test]
    fn json_media_types_are_recognized() {
        let headers = |value: &'static str| {
            let mut map = http::HeaderMap::new();
            map.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(value));
            map
        };
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers("Application/JSON; charset=utf-8")));
        assert!(is_json(&headers("application/merge-patch+json")));
        assert!(!is_json(&headers("text/json")));
        assert!(!is_json(&http::HeaderMap::new()));
    }
}
