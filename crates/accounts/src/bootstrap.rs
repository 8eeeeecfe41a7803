//! The first admin: from `ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL`/`_PASSWORD`, or generated with a
//! random password that is printed once, at the first start.

use anyhow::Context;

use crate::domain::{Email, Password, Role};
use crate::http::AppState;
use crate::tokens::random_secret;
use crate::users::{CreateUserError, create_user};

/// The email of a generated admin.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@localhost";

/// Creates the first admin unless one exists.
pub async fn ensure_admin(state: &AppState) -> anyhow::Result<()> {
    if state.store.any_admin().await? {
        return Ok(());
    }
    let (email, password, generated) = match &state.config.bootstrap_admin {
        Some((email, password)) => (email.clone(), password.clone(), false),
        None => (DEFAULT_ADMIN_EMAIL.to_owned(), random_secret(), true),
    };
    let email = Email::parse(&email)
        .map_err(|e| anyhow::anyhow!("ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL: {}", e.message))?;
    let password = Password::parse(password)
        .map_err(|e| anyhow::anyhow!("ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD: {}", e.message))?;
    match create_user(
        state.store.as_ref(),
        &state.hasher,
        &email,
        &password,
        Some("Administrator".into()),
        Role::Admin,
    )
    .await
    {
        Ok(user) => {
            tracing::info!(user_id = %user.id, email = %user.email, "bootstrap admin created");
            if generated {
                // Printed once, to the terminal, never to the logs.
                eprintln!(
                    "\n  accounts: created the first admin\n    email:    {}\n    password: {}\n  (shown once; set ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL/PASSWORD to choose them)\n",
                    email.as_str(),
                    password.expose()
                );
            }
            Ok(())
        }
        // Another replica created it first.
        Err(CreateUserError::EmailTaken) => Ok(()),
        Err(error) => Err(anyhow::anyhow!("{error}")).context("cannot create the bootstrap admin"),
    }
}
