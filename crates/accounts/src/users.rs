//! Users as the rest of the service creates them: sign-up and the bootstrap admin both come
//! through [`create_user`].

use chrono::Utc;
use common::db::StoreError;

use crate::domain::{Email, Password, Role};
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
    };
    match store.insert_user(&user).await {
        Ok(()) => Ok(user),
        Err(StoreError::Conflict(_)) => Err(CreateUserError::EmailTaken),
        Err(error) => Err(CreateUserError::Store(error)),
    }
}
