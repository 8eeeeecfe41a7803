//! Importing the monolith's users from `manage.py dumpdata auth.user` JSON. Django password
//! hashes are kept as they are and replaced by Argon2id at each user's next login; a hash
//! whose scheme is unsupported or whose parameters ask for more work than
//! [`crate::passwords::limits`] allow is refused, entry by entry, with the
//! reason.

use chrono::{DateTime, Utc};
use common::db::StoreError;
use serde::{Deserialize, Serialize};

use crate::domain::{Email, Role};
use crate::passwords;
use crate::store::{AccountsStore, UserRecord};

#[derive(Debug, Deserialize)]
struct DumpEntry {
    fields: DjangoUser,
}

#[derive(Debug, Deserialize)]
struct DjangoUser {
    #[serde(default)]
    password: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    is_superuser: bool,
    #[serde(default = "active_by_default")]
    is_active: bool,
    #[serde(default)]
    date_joined: Option<String>,
}

fn active_by_default() -> bool {
    true
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Users created.
    pub imported: usize,
    /// Entries left out without a problem: not `auth.user`, or an email that already exists
    /// (so an import can be re-run).
    pub skipped: usize,
    /// Entries that could not be imported, each with its reason.
    pub refused: Vec<RefusedEntry>,
}

/// An entry the import refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RefusedEntry {
    /// Its position in the array (from 0).
    pub index: usize,
    /// Its Django primary key, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pk: Option<serde_json::Value>,
    /// Its username, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Why it was refused.
    pub reason: String,
}

/// Imports every `auth.user` entry of a dumpdata array.
pub async fn import_users(
    store: &dyn AccountsStore,
    entries: &[serde_json::Value],
) -> Result<ImportReport, StoreError> {
    let mut report = ImportReport::default();
    for (index, entry) in entries.iter().enumerate() {
        let user = match to_user(entry) {
            Ok(Some(user)) => user,
            Ok(None) => {
                report.skipped += 1;
                continue;
            }
            Err(reason) => {
                report.refused.push(RefusedEntry {
                    index,
                    pk: entry.get("pk").cloned(),
                    username: entry
                        .pointer("/fields/username")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned),
                    reason,
                });
                continue;
            }
        };
        match store.insert_user(&user).await {
            Ok(()) => report.imported += 1,
            Err(StoreError::Conflict(_)) => report.skipped += 1,
            Err(error) => return Err(error),
        }
    }
    tracing::info!(
        imported = report.imported,
        skipped = report.skipped,
        refused = report.refused.len(),
        "users imported"
    );
    Ok(report)
}

/// The user an entry describes; `None` for entries of other models; the reason for entries
/// that cannot be imported.
fn to_user(entry: &serde_json::Value) -> Result<Option<UserRecord>, String> {
    if entry.get("model").and_then(serde_json::Value::as_str) != Some("auth.user") {
        return Ok(None);
    }
    let entry: DumpEntry = serde_json::from_value(entry.clone())
        .map_err(|e| format!("not an auth.user entry of manage.py dumpdata: {e}"))?;
    let fields = entry.fields;
    // Many monoliths log in by username and keep the email there.
    let email = Email::parse(&fields.email)
        .or_else(|_| Email::parse(&fields.username))
        .map_err(|e| format!("no usable email in email or username: {}", e.message))?;
    for (field, value) in [
        ("username", &fields.username),
        ("first_name", &fields.first_name),
        ("last_name", &fields.last_name),
        ("password", &fields.password),
    ] {
        if value.contains('\0') {
            return Err(format!("{field} holds a NUL character"));
        }
    }
    if !fields.password.is_empty() {
        passwords::classify(&fields.password).map_err(|refusal| refusal.to_string())?;
    }
    let name = format!("{} {}", fields.first_name.trim(), fields.last_name.trim());
    let joined = fields
        .date_joined
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map_or_else(Utc::now, |d| d.with_timezone(&Utc));
    let password_hash = if fields.password.is_empty() {
        "!".to_owned()
    } else {
        fields.password
    };
    Ok(Some(UserRecord {
        id: format!("usr_{}", uuid::Uuid::now_v7().simple()),
        email_normalized: email.normalized(),
        email: email.as_str().to_owned(),
        name: Some(name.trim().to_owned()).filter(|n| !n.is_empty()),
        password_hash,
        role: if fields.is_superuser {
            Role::Admin
        } else {
            Role::User
        }
        .as_str()
        .to_owned(),
        disabled: !fields.is_active,
        created_at: joined,
        updated_at: Utc::now(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dumpdata_entry_becomes_a_user() {
        let entry = json!({"model": "auth.user", "pk": 7, "fields": {
            "password": "pbkdf2_sha256$36000$xIEozuZVAoYm$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w=",
            "last_login": null, "is_superuser": true, "username": "ada", "first_name": "Ada",
            "last_name": "Lovelace", "email": "Ada@Example.com", "is_staff": true, "is_active": true,
            "date_joined": "2019-03-01T10:00:00Z", "groups": [], "user_permissions": []}});
        let user = to_user(&entry).unwrap().unwrap();
        assert_eq!(user.email_normalized, "ada@example.com");
        assert_eq!(user.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(user.role, "admin");
        assert!(user.password_hash.starts_with("pbkdf2_sha256$"));
        assert_eq!(user.created_at.to_rfc3339(), "2019-03-01T10:00:00+00:00");
    }

    #[test]
    fn entries_of_other_models_are_skipped_and_those_without_an_email_refused() {
        assert!(matches!(
            to_user(&json!({"model": "auth.group", "fields": {"name": "x"}})),
            Ok(None)
        ));
        let no_email =
            to_user(&json!({"model": "auth.user", "fields": {"username": "bob", "email": ""}}))
                .unwrap_err();
        assert!(no_email.contains("no usable email"), "{no_email}");
        let by_username = to_user(&json!({"model": "auth.user", "fields": {"username": "bob@example.com", "is_active": false}})).unwrap().unwrap();
        assert!(by_username.disabled);
        assert_eq!(by_username.password_hash, "!");
    }

    #[test]
    fn hashes_over_the_limits_or_of_unsupported_hashers_are_refused_with_the_reason() {
        for (password, why) in [
            (
                "argon2$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
                "argon2 memory",
            ),
            (
                "pbkdf2_sha256$4294967295$salt$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w=",
                "pbkdf2 iterations",
            ),
            (
                "md5$salt$0123456789abcdef0123456789abcdef",
                "unsupported password hasher \"md5\"",
            ),
        ] {
            let entry = json!({"model": "auth.user", "pk": 3, "fields": {
                "email": "x@example.com", "username": "x", "password": password}});
            let reason = to_user(&entry).unwrap_err();
            assert!(reason.contains(why), "{reason}");
        }
    }
}
