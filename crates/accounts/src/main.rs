//! The accounts binary: `serve` (the default) until a signal, `healthcheck`, `migrate`, or
//! `import-users FILE`; configuration from the environment.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use common::server::CommonCommand;

/// Accounts: users, login, OAuth 2 and OpenID Connect, tokens and their keys. Configured by
/// environment variables (see the README).
#[derive(Debug, Parser)]
#[command(name = "accounts", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Common(CommonCommand),
    /// Import the monolith's users from `manage.py dumpdata auth.user` JSON into the
    /// configured database, and print the report (JSON).
    ImportUsers {
        /// The dumpdata file.
        file: PathBuf,
    },
    /// Write every user as `manage.py loaddata` JSON (`auth.user`, password hashes Django
    /// verifies), so the monolith can take its users back.
    ExportUsers {
        /// Where to write (default: standard output).
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let load = accounts::AccountsConfig::from_env;
    match Cli::parse()
        .command
        .unwrap_or(Command::Common(CommonCommand::Serve(Default::default())))
    {
        Command::Common(CommonCommand::Serve(serve)) => accounts::serve(serve),
        Command::Common(CommonCommand::Healthcheck) => {
            common::server::run_healthcheck(accounts::SERVICE, load, |config| config.addr)
        }
        Command::Common(CommonCommand::Migrate) => {
            common::server::run_task(accounts::SERVICE, load, |config| async move {
                common::db::migrate(&config.database_url, &accounts::store::migrations()).await?;
                println!("accounts: {} migrated", config.database_url.redacted());
                Ok(())
            })
        }
        Command::ExportUsers { file } => {
            common::server::run_task(accounts::SERVICE, load, |config| async move {
                let written = accounts::export_file(config, file.as_deref()).await?;
                eprintln!("accounts: {written} users exported");
                Ok(())
            })
        }
        Command::ImportUsers { file } => {
            common::server::run_task(accounts::SERVICE, load, |config| async move {
                let report =
                    accounts::import_file(config, &file, accounts::import::progress_line()).await?;
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            })
        }
    }
}
