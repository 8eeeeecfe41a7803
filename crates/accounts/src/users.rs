//! Users as the rest of the service creates them: sign-up and the bootstrap admin both come
//! through [`create_user`].

use chrono::Utc;
use common::db::StoreError;

use common::problem::FieldError;

use crate::domain::{Email, Password, Role, name_char_allowed};
use crate::passwords::{Hasher, PasswordError};
use crate::store::{AccountsStore, UserRecord};

/// Why a user was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    /// An account with this (canonical) email exists.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Hashing the password failed or was shed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
}

/// A sign-up's fields, checked (the API and the sign-up page alike): every field's error.
pub fn check_sign_up(
    email: &str,
    password: String,
    name: Option<String>,
) -> Result<(Email, Password, Option<String>), Vec<FieldError>> {
    let email = Email::parse(email);
    let password = Password::parse(password);
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let name_error = name.as_ref().and_then(|n| {
        if n.chars().count() > 200 {
            Some(FieldError::new("name", "must be at most 200 characters"))
        } else if !n.chars().all(name_char_allowed) {
            Some(FieldError::new(
                "name",
                "must not contain control characters or bidi overrides",
            ))
        } else {
            None
        }
    });
    match (email, password, name_error) {
        (Ok(email), Ok(password), None) => Ok((email, password, name)),
        (email, password, name_error) => {
            let errors = [email.err(), password.err(), name_error];
            Err(errors.into_iter().flatten().collect())
        }
    }
}

/// Hashes the password and stores a new user; [`CreateUserError::EmailTaken`] if the email
/// exists (in any spelling with the same canonical form).
pub async fn create_user(
    store: &dyn AccountsStore,
    hasher: &Hasher,
    email: &Email,
    password: &Password,
    name: Option<String>,
    role: Role,
) -> Result<UserRecord, CreateUserError> {
    let now = Utc::now();
    let user = UserRecord {
        id: format!("usr_{}", uuid::Uuid::now_v7().simple()),
        email: email.as_str().to_owned(),
        email_normalized: email.normalized(),
        name,
        password_hash: hasher.hash(password.expose().to_owned()).await?,
        role: role.as_str().to_owned(),
        disabled: false,
        created_at: now,
        updated_at: now,
        legacy: Default::default(),
        last_login_at: None,
    };
    match store.insert_user(&user).await {
        Ok(()) => Ok(user),
        Err(StoreError::Conflict(_)) => Err(CreateUserError::EmailTaken),
        Err(error) => Err(CreateUserError::Store(error)),
    }
}
