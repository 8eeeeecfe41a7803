//! Importing the monolith's users from `manage.py dumpdata auth.user` JSON. Django password
//! hashes are kept as they are and replaced by Argon2id at each user's next login.

use chrono::{DateTime, Utc};
use common::db::StoreError;
use serde::{Deserialize, Serialize};

use crate::domain::{Email, Role};
use crate::store::{AccountsStore, UserRecord};

#[derive(Debug, Deserialize)]
struct DumpEntry {
    model: String,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Users created.
    pub imported: usize,
    /// Entries left out: not `auth.user`, no usable email, or an email that already exists.
    pub skipped: usize,
}

/// Imports every `auth.user` entry of a dumpdata array.
pub async fn import_users(
    store: &dyn AccountsStore,
    entries: &[serde_json::Value],
) -> Result<ImportReport, StoreError> {
    let mut report = ImportReport::default();
    for entry in entries {
        let Some(user) = to_user(entry) else {
            report.skipped += 1;
            continue;
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
        "users imported"
    );
    Ok(report)
}

fn to_user(entry: &serde_json::Value) -> Option<UserRecord> {
    let entry: DumpEntry = serde_json::from_value(entry.clone()).ok()?;
    if entry.model != "auth.user" {
        return None;
    }
    let fields = entry.fields;
    // Many monoliths log in by username and keep the email there.
    let email = Email::parse(&fields.email)
        .or_else(|_| Email::parse(&fields.username))
        .ok()?;
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
    Some(UserRecord {
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
    })
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
        let user = to_user(&entry).unwrap();
        assert_eq!(user.email_normalized, "ada@example.com");
        assert_eq!(user.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(user.role, "admin");
        assert!(user.password_hash.starts_with("pbkdf2_sha256$"));
        assert_eq!(user.created_at.to_rfc3339(), "2019-03-01T10:00:00+00:00");
    }

    #[test]
    fn entries_without_a_usable_email_or_of_other_models_are_skipped() {
        assert!(to_user(&json!({"model": "auth.group", "fields": {"name": "x"}})).is_none());
        assert!(
            to_user(&json!({"model": "auth.user", "fields": {"username": "bob", "email": ""}}))
                .is_none()
        );
        let by_username = to_user(&json!({"model": "auth.user", "fields": {"username": "bob@example.com", "is_active": false}})).unwrap();
        assert!(by_username.disabled);
        assert_eq!(by_username.password_hash, "!");
    }
}
