//! OAuth clients and their RFC 7591 metadata: what a client may ask for (grants, scopes), where
//! it may be sent back (redirect URIs, matched exactly), and how it authenticates.

use chrono::{DateTime, Utc};
use common::problem::FieldError;

use crate::domain::Scopes;
use crate::store::ClientRecord;

/// A grant a client may use at the token endpoint.
pub mod grant {
    /// Browser sign-in: the authorization code flow.
    pub const AUTHORIZATION_CODE: &str = "authorization_code";
    /// Refresh tokens (with the authorization code flow).
    pub const REFRESH_TOKEN: &str = "refresh_token";
    /// A service's own credentials.
    pub const CLIENT_CREDENTIALS: &str = "client_credentials";
    /// Every grant a client can be registered for.
    pub const ALL: [&str; 3] = [AUTHORIZATION_CODE, REFRESH_TOKEN, CLIENT_CREDENTIALS];
}

/// How a client authenticates at the token endpoint.
pub mod auth_method {
    /// HTTP Basic (the default).
    pub const BASIC: &str = "client_secret_basic";
    /// `client_id` and `client_secret` form fields.
    pub const POST: &str = "client_secret_post";
    /// A public client (a single-page or mobile app): no secret, PKCE required.
    pub const NONE: &str = "none";
    /// All of them.
    pub const ALL: [&str; 3] = [BASIC, POST, NONE];
}

/// Most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 20;
/// Longest redirect URI.
pub const MAX_URI_LENGTH: usize = 2000;

/// A client's metadata, checked: what the admin API takes and shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetadata {
    /// 1 to 100 characters.
    pub name: String,
    /// The scopes its tokens may carry.
    pub scopes: Scopes,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exact post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Its grants.
    pub grant_types: Vec<String>,
    /// How it authenticates.
    pub token_endpoint_auth_method: String,
    /// No consent page.
    pub first_party: bool,
}

/// Metadata as sent (every field optional): the RFC 7591 names, and the older `name` and
/// `scopes`.
#[derive(Debug, Default, Clone)]
pub struct MetadataInput {
    /// `client_name` (or `name`).
    pub name: Option<String>,
    /// `scope` (space-separated) or `scopes` (a list).
    pub scopes: Option<Vec<String>>,
    /// `redirect_uris`.
    pub redirect_uris: Option<Vec<String>>,
    /// `post_logout_redirect_uris`.
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// `grant_types`.
    pub grant_types: Option<Vec<String>>,
    /// `response_types` (only `code`).
    pub response_types: Option<Vec<String>>,
    /// `token_endpoint_auth_method`.
    pub token_endpoint_auth_method: Option<String>,
    /// `first_party`.
    pub first_party: Option<bool>,
}

impl ClientMetadata {
    /// Checks a new client's metadata. Without `grant_types`, a client with redirect URIs
    /// signs users in (`authorization_code`) and one without is a service
    /// (`client_credentials`), so the older `{"name","scopes"}` body makes what it always made.
    pub fn new(input: MetadataInput) -> Result<Self, Vec<FieldError>> {
        let redirect_uris = input.redirect_uris.clone().unwrap_or_default();
        let default_grant = if redirect_uris.is_empty() {
            grant::CLIENT_CREDENTIALS
        } else {
            grant::AUTHORIZATION_CODE
        };
        Self::check(
            input.name.unwrap_or_default(),
            input.scopes.unwrap_or_default(),
            redirect_uris,
            input.post_logout_redirect_uris.unwrap_or_default(),
            input
                .grant_types
                .unwrap_or_else(|| vec![default_grant.to_owned()]),
            input.response_types,
            input
                .token_endpoint_auth_method
                .unwrap_or_else(|| auth_method::BASIC.to_owned()),
            input.first_party.unwrap_or(false),
        )
    }

    /// `self` with the fields of `patch` that were sent, checked again as a whole. A client
    /// cannot become public or confidential: it has a secret or it has none.
    pub fn patched(&self, patch: MetadataInput) -> Result<Self, Vec<FieldError>> {
        let method = patch
            .token_endpoint_auth_method
            .unwrap_or_else(|| self.token_endpoint_auth_method.clone());
        if (method == auth_method::NONE) != self.is_public() {
            return Err(vec![FieldError::new(
                "token_endpoint_auth_method",
                "a client cannot change between public (none) and confidential; register a new one",
            )]);
        }
        Self::check(
            patch.name.unwrap_or_else(|| self.name.clone()),
            patch
                .scopes
                .unwrap_or_else(|| self.scopes.iter().map(str::to_owned).collect()),
            patch
                .redirect_uris
                .unwrap_or_else(|| self.redirect_uris.clone()),
            patch
                .post_logout_redirect_uris
                .unwrap_or_else(|| self.post_logout_redirect_uris.clone()),
            patch
                .grant_types
                .unwrap_or_else(|| self.grant_types.clone()),
            patch.response_types,
            method,
            patch.first_party.unwrap_or(self.first_party),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        name: String,
        scopes: Vec<String>,
        redirect_uris: Vec<String>,
        post_logout_redirect_uris: Vec<String>,
        grant_types: Vec<String>,
        response_types: Option<Vec<String>>,
        token_endpoint_auth_method: String,
        first_party: bool,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "client_name",
                "must be 1 to 100 characters, without control characters",
            ));
        }
        let scopes = match Scopes::from_iter_checked(scopes.iter().map(String::as_str)) {
            Ok(scopes) if !scopes.is_empty() => scopes,
            Ok(_) => {
                errors.push(FieldError::new("scope", "at least one scope is required"));
                Scopes::default()
            }
            Err(why) => {
                errors.push(FieldError::new(
                    "scope",
                    format!("{why}; known: {}", crate::domain::scope::ALL.join(", ")),
                ));
                Scopes::default()
            }
        };
        if !auth_method::ALL.contains(&token_endpoint_auth_method.as_str()) {
            errors.push(FieldError::new(
                "token_endpoint_auth_method",
                format!("must be one of {}", auth_method::ALL.join(", ")),
            ));
        }
        let mut grants: Vec<String> = Vec::new();
        for grant in &grant_types {
            if !grant::ALL.contains(&grant.as_str()) {
                errors.push(FieldError::new(
                    "grant_types",
                    format!("{grant:?} is not supported; use {}", grant::ALL.join(", ")),
                ));
            } else if !grants.contains(grant) {
                grants.push(grant.clone());
            }
        }
        let has = |g: &str| grants.iter().any(|x| x == g);
        if grants.is_empty() {
            errors.push(FieldError::new(
                "grant_types",
                "at least one grant is required",
            ));
        }
        if has(grant::REFRESH_TOKEN) && !has(grant::AUTHORIZATION_CODE) {
            errors.push(FieldError::new(
                "grant_types",
                "refresh_token needs authorization_code",
            ));
        }
        if has(grant::CLIENT_CREDENTIALS) && token_endpoint_auth_method == auth_method::NONE {
            errors.push(FieldError::new(
                "grant_types",
                "a public client (token_endpoint_auth_method none) cannot use client_credentials",
            ));
        }
        if let Some(types) = response_types
            && types.iter().any(|t| t != "code")
        {
            errors.push(FieldError::new(
                "response_types",
                "only \"code\" is supported (the authorization code flow)",
            ));
        }
        for (field, uris) in [
            ("redirect_uris", &redirect_uris),
            ("post_logout_redirect_uris", &post_logout_redirect_uris),
        ] {
            if uris.len() > MAX_REDIRECT_URIS {
                errors.push(FieldError::new(
                    field,
                    format!("at most {MAX_REDIRECT_URIS} URIs"),
                ));
            }
            for uri in uris {
                if let Err(why) = check_redirect_uri(uri) {
                    errors.push(FieldError::new(field, format!("{uri:?}: {why}")));
                }
            }
        }
        if has(grant::AUTHORIZATION_CODE) && redirect_uris.is_empty() {
            errors.push(FieldError::new(
                "redirect_uris",
                "the authorization_code grant needs at least one redirect URI",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let dedup = |uris: Vec<String>| {
            let mut out: Vec<String> = Vec::new();
            for uri in uris {
                if !out.contains(&uri) {
                    out.push(uri);
                }
            }
            out
        };
        Ok(Self {
            name,
            scopes,
            redirect_uris: dedup(redirect_uris),
            post_logout_redirect_uris: dedup(post_logout_redirect_uris),
            grant_types: grants,
            token_endpoint_auth_method,
            first_party,
        })
    }

    /// A public client: no secret.
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == auth_method::NONE
    }

    /// Whether it may use `grant`.
    pub fn allows(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// The metadata of a stored client.
    pub fn of(record: &ClientRecord) -> Self {
        let list = |text: &str| text.split_ascii_whitespace().map(str::to_owned).collect();
        Self {
            name: record.name.clone(),
            scopes: Scopes::from_iter_checked(record.scopes.split_ascii_whitespace())
                .unwrap_or_default(),
            redirect_uris: list(&record.redirect_uris),
            post_logout_redirect_uris: list(&record.post_logout_redirect_uris),
            grant_types: list(&record.grant_types),
            token_endpoint_auth_method: record.token_endpoint_auth_method.clone(),
            first_party: record.first_party,
        }
    }

    /// A stored client with this metadata.
    pub fn record(
        &self,
        client_id: String,
        secret_hash: String,
        disabled: bool,
        created_at: DateTime<Utc>,
        updated_at: Option<DateTime<Utc>>,
    ) -> ClientRecord {
        ClientRecord {
            client_id,
            name: self.name.clone(),
            secret_hash,
            scopes: self.scopes.to_claim(),
            disabled,
            created_at,
            redirect_uris: self.redirect_uris.join(" "),
            post_logout_redirect_uris: self.post_logout_redirect_uris.join(" "),
            grant_types: self.grant_types.join(" "),
            token_endpoint_auth_method: self.token_endpoint_auth_method.clone(),
            first_party: self.first_party,
            updated_at,
        }
    }
}

/// A redirect URI a client may register (RFC 9700 §2.1, RFC 8252): absolute, no fragment, no
/// spaces; `https`, or `http` on a loopback host (a local app, a test), or a private-use scheme
/// with a dot (`com.example.app:/callback`, a native app).
pub fn check_redirect_uri(raw: &str) -> Result<(), &'static str> {
    if raw.len() > MAX_URI_LENGTH {
        return Err("too long");
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute URI")?;
    if url.fragment().is_some() {
        return Err("must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials");
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => match url.host() {
            Some(url::Host::Domain("localhost")) => Ok(()),
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            _ => Err("http is allowed only on a loopback host (localhost, 127.0.0.1); use https"),
        },
        "javascript" | "data" | "file" | "vbscript" | "blob" => {
            Err("this scheme cannot be a redirect URI")
        }
        scheme if scheme.contains('.') => Ok(()),
        _ => Err("must be https, http on a loopback host, or a reverse-domain private-use scheme"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: serde_json::Value) -> MetadataInput {
        let list = |name: &str| {
            json.get(name).map(|v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect()
            })
        };
        MetadataInput {
            name: json["client_name"].as_str().map(str::to_owned),
            scopes: json["scope"]
                .as_str()
                .map(|s| s.split(' ').map(str::to_owned).collect()),
            redirect_uris: list("redirect_uris"),
            post_logout_redirect_uris: None,
            grant_types: list("grant_types"),
            response_types: None,
            token_endpoint_auth_method: json["token_endpoint_auth_method"]
                .as_str()
                .map(str::to_owned),
            first_party: None,
        }
    }

    #[test]
    fn redirect_uris_are_https_loopback_or_private_use() {
        for good in [
            "https://app.example.com/callback",
            "http://127.0.0.1:8000/oidc/callback/",
            "http://localhost/cb",
            "http://[::1]:9/cb",
            "com.example.app:/callback",
        ] {
            assert_eq!(check_redirect_uri(good), Ok(()), "{good}");
        }
        for bad in [
            "http://app.example.com/callback",
            "https://app.example.com/cb#frag",
            "/relative",
            "javascript:alert(1)",
            "https://user:pw@example.com/",
            "myapp:/cb",
            "https://example.com/a b",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_default_by_what_was_registered_and_must_fit_together() {
        let service = ClientMetadata::new(input(serde_json::json!({
            "client_name": "monolith", "scope": "payments:read"
        })))
        .unwrap();
        assert_eq!(service.grant_types, ["client_credentials"]);
        let web = ClientMetadata::new(input(serde_json::json!({
            "client_name": "web", "scope": "openid email",
            "redirect_uris": ["https://app.example.com/cb"]
        })))
        .unwrap();
        assert_eq!(web.grant_types, ["authorization_code"]);
        for bad in [
            serde_json::json!({"client_name": "x", "scope": "openid", "grant_types": ["authorization_code"]}),
            serde_json::json!({"client_name": "x", "scope": "openid", "grant_types": ["refresh_token"], "redirect_uris": ["https://a.example/cb"]}),
            serde_json::json!({"client_name": "x", "scope": "payments:read", "token_endpoint_auth_method": "none"}),
            serde_json::json!({"client_name": "x", "scope": "openid", "grant_types": ["implicit"], "redirect_uris": ["https://a.example/cb"]}),
            serde_json::json!({"client_name": "", "scope": "openid"}),
        ] {
            assert!(ClientMetadata::new(input(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_client_cannot_switch_between_public_and_confidential() {
        let web = ClientMetadata::new(input(serde_json::json!({
            "client_name": "web", "scope": "openid",
            "redirect_uris": ["https://app.example.com/cb"]
        })))
        .unwrap();
        let patch = MetadataInput {
            token_endpoint_auth_method: Some("none".into()),
            ..MetadataInput::default()
        };
        assert!(web.patched(patch).is_err());
        let patch = MetadataInput {
            first_party: Some(true),
            ..MetadataInput::default()
        };
        assert!(web.patched(patch).unwrap().first_party);
    }
}
