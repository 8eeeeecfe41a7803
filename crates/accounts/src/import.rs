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
use crate::store::{AccountsStore, LegacyIdentity, UserRecord};

#[derive(Debug, Deserialize)]
struct DumpEntry {
    /// Django's primary key: kept as `legacy_user_id` when it is an integer.
    pk: Option<serde_json::Value>,
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
    #[serde(default)]
    is_staff: bool,
    #[serde(default)]
    groups: Option<serde_json::Value>,
    #[serde(default)]
    last_login: Option<String>,
    #[serde(default = "active_by_default")]
    is_active: bool,
    #[serde(default)]
    date_joined: Option<String>,
}

fn active_by_default() -> bool {
    true
}

/// What an import did. An import is an upsert keyed by the Django primary key (then the
/// email), so it can be re-run on a schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Users added.
    pub imported: usize,
    /// Users already imported whose email, names, flags, groups or password (while they had
    /// not logged in at accounts) changed in the monolith.
    pub updated: usize,
    /// Users already imported with nothing new.
    pub unchanged: usize,
    /// Entries left out without a problem: not `auth.user`, or (without a primary key) an
    /// email that already exists.
    pub skipped: usize,
    /// Entries that could not be imported, each with its reason.
    pub refused: Vec<RefusedEntry>,
    /// Entries that contradict what accounts holds (an email that is another user's), each
    /// with its reason; nothing was changed for them.
    pub conflicts: Vec<RefusedEntry>,
}

/// What became of one user.
enum Outcome {
    Added,
    Updated,
    Unchanged,
    Skipped,
    Conflict(String),
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
    let mut importer = Importer::default();
    for entry in entries {
        importer.add(store, entry).await?;
    }
    Ok(importer.finish())
}

/// An import in progress, one entry at a time (so a file can be streamed through it).
#[derive(Debug, Default)]
pub struct Importer {
    report: ImportReport,
    seen: usize,
}

impl Importer {
    /// Entries handled so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The report so far.
    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// Imports (or updates, skips, refuses) the next entry of the array.
    pub async fn add(
        &mut self,
        store: &dyn AccountsStore,
        entry: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let index = self.seen;
        self.seen += 1;
        let report = &mut self.report;
        let described = |reason: String| RefusedEntry {
            index,
            pk: entry.get("pk").cloned(),
            username: entry
                .pointer("/fields/username")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            reason,
        };
        let user = match to_user(entry) {
            Ok(Some(user)) => user,
            Ok(None) => {
                report.skipped += 1;
                return Ok(());
            }
            Err(reason) => {
                report.refused.push(described(reason));
                return Ok(());
            }
        };
        match upsert(store, user).await? {
            Outcome::Added => report.imported += 1,
            Outcome::Updated => report.updated += 1,
            Outcome::Unchanged => report.unchanged += 1,
            Outcome::Skipped => report.skipped += 1,
            Outcome::Conflict(reason) => report.conflicts.push(described(reason)),
        }
        Ok(())
    }

    /// The report, logged.
    pub fn finish(self) -> ImportReport {
        let report = self.report;
        tracing::info!(
            imported = report.imported,
            updated = report.updated,
            unchanged = report.unchanged,
            skipped = report.skipped,
            refused = report.refused.len(),
            conflicts = report.conflicts.len(),
            "users imported"
        );
        report
    }
}

/// On a terminal, a line on standard error that counts the import's entries as it goes (at
/// most a few times a second, and once more at the end); elsewhere nothing.
pub fn progress_line() -> impl FnMut(&Importer) {
    progress_to(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::io::stderr(),
    )
}

/// [`progress_line`] onto `out`, drawn only when `terminal`.
fn progress_to(terminal: bool, mut out: impl std::io::Write) -> impl FnMut(&Importer) {
    let started = std::time::Instant::now();
    let mut shown = std::time::Instant::now() - std::time::Duration::from_secs(1);
    move |importer| {
        if !terminal || shown.elapsed() < std::time::Duration::from_millis(250) {
            return;
        }
        shown = std::time::Instant::now();
        let report = importer.report();
        let rate = importer.seen() as f64 / started.elapsed().as_secs_f64().max(0.001);
        // A line that cannot be drawn is no reason to stop an import.
        let _ = write!(
            out,
            "\r{} entries ({:.0}/s): {} added, {} updated, {} unchanged, {} skipped, {} refused, {} conflicts ",
            importer.seen(),
            rate,
            report.imported,
            report.updated,
            report.unchanged,
            report.skipped,
            report.refused.len(),
            report.conflicts.len()
        );
    }
}

/// Adds `incoming`, or brings the user imported from the same monolith user up to date:
/// email, names, flags and groups follow the monolith; the password hash too, unless the user
/// has logged in at accounts (accounts then holds the password). A user found by email who
/// came from another monolith user, or who was created in accounts, is a conflict: emails are
/// not verified, so an account made here with someone's address must not inherit their
/// identity in the monolith.
async fn upsert(store: &dyn AccountsStore, incoming: UserRecord) -> Result<Outcome, StoreError> {
    let Some(legacy_id) = incoming.legacy.legacy_user_id else {
        return Ok(match store.insert_user(&incoming).await {
            Ok(()) => Outcome::Added,
            Err(StoreError::Conflict(_)) => Outcome::Skipped,
            Err(error) => return Err(error),
        });
    };
    let existing = match store.user_by_legacy_id(legacy_id).await? {
        Some(user) => user,
        None => match store.user_by_email(&incoming.email_normalized).await? {
            None => {
                return Ok(match store.insert_user(&incoming).await {
                    Ok(()) => Outcome::Added,
                    Err(StoreError::Conflict(_)) => Outcome::Conflict(
                        "another user took this email or primary key meanwhile".into(),
                    ),
                    Err(error) => return Err(error),
                });
            }
            Some(other) => {
                return Ok(Outcome::Conflict(match other.legacy.legacy_user_id {
                    Some(theirs) => format!(
                        "the email belongs to the user imported from the monolith's user {theirs}"
                    ),
                    None => "an account with this email was created in accounts; it is not linked to the monolith's user (emails are not verified)".into(),
                }));
            }
        },
    };
    let mut merged = existing.clone();
    merged.email = incoming.email;
    merged.email_normalized = incoming.email_normalized;
    merged.name = incoming.name;
    merged.role = incoming.role;
    merged.disabled = incoming.disabled;
    merged.legacy = incoming.legacy;
    if existing.last_login_at.is_none() {
        merged.password_hash = incoming.password_hash;
    }
    let same = (
        &merged.email,
        &merged.name,
        &merged.role,
        merged.disabled,
        &merged.legacy,
        &merged.password_hash,
    ) == (
        &existing.email,
        &existing.name,
        &existing.role,
        existing.disabled,
        &existing.legacy,
        &existing.password_hash,
    );
    if same {
        return Ok(Outcome::Unchanged);
    }
    merged.updated_at = Utc::now();
    match store.update_imported_user(&merged).await {
        Ok(()) => Ok(Outcome::Updated),
        Err(StoreError::Conflict(_)) => {
            Ok(Outcome::Conflict("the new email is another user's".into()))
        }
        Err(error) => Err(error),
    }
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
    let time = |raw: Option<&str>| {
        raw.and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.with_timezone(&Utc))
    };
    let joined = time(fields.date_joined.as_deref()).unwrap_or_else(Utc::now);
    let present = |text: &str| Some(text.trim().to_owned()).filter(|t| !t.is_empty());
    let legacy = LegacyIdentity {
        legacy_user_id: entry.pk.as_ref().and_then(serde_json::Value::as_i64),
        username: present(&fields.username),
        first_name: present(&fields.first_name),
        last_name: present(&fields.last_name),
        is_staff: fields.is_staff,
        groups: fields
            .groups
            .filter(serde_json::Value::is_array)
            .map_or_else(|| "[]".to_owned(), |groups| groups.to_string()),
        legacy_last_login: time(fields.last_login.as_deref()),
    };
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
        legacy,
        last_login_at: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_is_drawn_on_a_terminal_only() {
        let importer = Importer {
            seen: 3,
            report: ImportReport {
                imported: 2,
                skipped: 1,
                ..ImportReport::default()
            },
        };
        let mut drawn = Vec::new();
        progress_to(true, &mut drawn)(&importer);
        let line = String::from_utf8(drawn).unwrap();
        assert!(line.starts_with("\r3 entries ("), "{line}");
        assert!(
            line.contains("2 added") && line.contains("1 skipped"),
            "{line}"
        );
        let mut elsewhere = Vec::new();
        progress_to(false, &mut elsewhere)(&importer);
        assert!(elsewhere.is_empty());
    }

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
        assert_eq!(user.legacy.legacy_user_id, Some(7));
        assert_eq!(user.legacy.username.as_deref(), Some("ada"));
        assert!(user.legacy.is_staff);
        assert_eq!(user.legacy.groups, "[]");
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
