//! The way back: every user as `manage.py loaddata` reads `auth.user`, with password hashes
//! Django verifies — imported hashes as they came, ours (Argon2id PHC strings) in Django's
//! `argon2$argon2id$...` form, which its `Argon2PasswordHasher` checks (and upgrades to its
//! own parameters at the next login). Users read in pages, so the export never holds every
//! user at once.

use chrono::{DateTime, SecondsFormat, Utc};
use common::db::StoreError;
use serde_json::{Value, json};

use crate::domain::Role;
use crate::store::{AccountsStore, UserRecord};

/// Users read per query.
pub const PAGE: u32 = 500;

/// A password hash as Django stores it: Django hashes unchanged; our Argon2id PHC string
/// (`$argon2id$v=19$m=...`) prefixed with Django's algorithm name (`argon2`).
pub fn django_hash(hash: &str) -> String {
    if hash.starts_with("$argon2") {
        format!("argon2{hash}")
    } else {
        hash.to_owned()
    }
}

fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One user as a `manage.py dumpdata auth.user` entry. Users created in accounts have no
/// primary key there (`pk: null`: `loaddata` gives them a new one) and their email as
/// username; a name without Django's parts goes whole into `first_name`.
pub fn entry(user: &UserRecord) -> Value {
    let legacy = &user.legacy;
    let (first_name, last_name) = match (&legacy.first_name, &legacy.last_name) {
        (None, None) => (user.name.clone().unwrap_or_default(), String::new()),
        (first, last) => (
            first.clone().unwrap_or_default(),
            last.clone().unwrap_or_default(),
        ),
    };
    let last_login = match (legacy.legacy_last_login, user.last_login_at) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let groups: Value = serde_json::from_str(&legacy.groups).unwrap_or_else(|_| json!([]));
    json!({
        "model": "auth.user",
        "pk": legacy.legacy_user_id,
        "fields": {
            "password": django_hash(&user.password_hash),
            "last_login": last_login.map(timestamp),
            "is_superuser": Role::from_db(&user.role) == Role::Admin,
            "username": legacy.username.clone().unwrap_or_else(|| user.email.clone()),
            "first_name": first_name,
            "last_name": last_name,
            "email": user.email,
            "is_staff": legacy.is_staff || Role::from_db(&user.role) == Role::Admin,
            "is_active": !user.disabled,
            "date_joined": timestamp(user.created_at),
            "groups": groups,
            "user_permissions": [],
        }
    })
}

/// Writes every user, as a JSON array, to `out` (a page of users at a time); returns how
/// many were written.
pub async fn export_users(
    store: &dyn AccountsStore,
    mut out: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<usize, ExportError> {
    out(b"[")?;
    let mut after: Option<String> = None;
    let mut written = 0usize;
    loop {
        let page = store.users_page(after.as_deref(), PAGE).await?;
        for user in &page {
            if written > 0 {
                out(b",\n")?;
            } else {
                out(b"\n")?;
            }
            out(entry(user).to_string().as_bytes())?;
            written += 1;
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some(last.id.clone()),
            _ => break,
        }
    }
    out(b"\n]\n")?;
    Ok(written)
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the users failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing them failed.
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LegacyIdentity;

    #[test]
    fn our_argon2id_hashes_get_djangos_prefix_and_theirs_stay() {
        assert_eq!(
            django_hash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
            "argon2$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
        );
        for theirs in [
            "pbkdf2_sha256$1000000$salt$hash=",
            "bcrypt_sha256$$2b$12$x",
            "!",
        ] {
            assert_eq!(django_hash(theirs), theirs);
        }
    }

    #[test]
    fn a_user_becomes_a_loaddata_entry() {
        let now = Utc::now();
        let mut user = UserRecord {
            id: "usr_1".into(),
            email: "Ada@example.com".into(),
            email_normalized: "ada@example.com".into(),
            name: Some("Ada Lovelace".into()),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            role: "user".into(),
            disabled: true,
            created_at: now,
            updated_at: now,
            legacy: LegacyIdentity::default(),
            last_login_at: None,
        };
        let own = entry(&user);
        assert_eq!(own["pk"], Value::Null);
        assert_eq!(own["fields"]["username"], "Ada@example.com");
        assert_eq!(own["fields"]["first_name"], "Ada Lovelace");
        assert_eq!(own["fields"]["is_active"], false);
        assert!(
            own["fields"]["password"]
                .as_str()
                .unwrap()
                .starts_with("argon2$argon2id$")
        );
        user.legacy.legacy_user_id = Some(42);
        user.legacy.username = Some("ada".into());
        user.legacy.first_name = Some("Ada".into());
        user.legacy.groups = "[1, 2]".into();
        let imported = entry(&user);
        assert_eq!(imported["pk"], 42);
        assert_eq!(imported["fields"]["username"], "ada");
        assert_eq!(imported["fields"]["last_name"], "");
        assert_eq!(imported["fields"]["groups"], json!([1, 2]));
    }
}
