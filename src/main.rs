//! `cargo run --release`: the whole stack on embedded SQLite, gateway on :8080. Also
//! `healthcheck`, `migrate` (both services' databases) and `import-users FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use common::server::{CommonCommand, ServeArgs};

/// The whole stack in one process: the gateway on :8080 in front of accounts and payments,
/// each on its own database (SQLite files under DATA_DIR by default). Configured by
/// environment variables (see the README).
#[derive(Debug, Parser)]
#[command(name = "stack", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Common(CommonCommand),
    /// Import the monolith's users from `manage.py dumpdata auth.user` JSON into accounts'
    /// database, and print the report (JSON).
    ImportUsers {
        /// The dumpdata file.
        file: PathBuf,
    },
    /// Write accounts' users as `manage.py loaddata` JSON, with password hashes Django
    /// verifies (the way back to the monolith).
    ExportUsers {
        /// Where to write (default: standard output).
        file: Option<PathBuf>,
    },
    /// Serve one service alone, as its own binary does (`stack service payments`): one
    /// executable for every container image or test.
    Service {
        /// Which one.
        #[arg(value_enum)]
        name: ServiceName,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// The services `stack service` runs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ServiceName {
    Accounts,
    Payments,
    Gateway,
}

fn main() -> ExitCode {
    let load = stack::StackConfig::from_env;
    match Cli::parse()
        .command
        .unwrap_or(Command::Common(CommonCommand::Serve(ServeArgs::default())))
    {
        Command::Service { name, serve } => match name {
            ServiceName::Accounts => accounts::serve(serve),
            ServiceName::Payments => payments::serve(serve),
            ServiceName::Gateway => gateway::serve(serve),
        },
        Command::Common(CommonCommand::Serve(serve)) => {
            common::server::run_binary("stack", load, |config, shutdown| async move {
                let stack = stack::Stack::build(config).await?;
                serve.announce(stack.gateway_addr()?)?;
                tracing::info!(
                    gateway = %stack.gateway_addr()?,
                    accounts = %stack.accounts_addr()?,
                    payments = %stack.payments_addr()?,
                    "stack ready"
                );
                stack.run(shutdown).await
            })
        }
        Command::Common(CommonCommand::Healthcheck) => {
            common::server::run_healthcheck("stack", load, |config| config.gateway.addr)
        }
        Command::Common(CommonCommand::Migrate) => {
            common::server::run_task("stack", load, |config| async move {
                let accounts = &config.accounts.database_url;
                common::db::migrate(accounts, &accounts::store::migrations()).await?;
                let payments = &config.payments.database_url;
                common::db::migrate(payments, &payments::store::migrations()).await?;
                println!(
                    "stack: {} and {} migrated",
                    accounts.redacted(),
                    payments.redacted()
                );
                Ok(())
            })
        }
        Command::ExportUsers { file } => {
            common::server::run_task("stack", load, |config| async move {
                let written = accounts::export_file(config.accounts, file.as_deref()).await?;
                eprintln!("stack: {written} users exported");
                Ok(())
            })
        }
        Command::ImportUsers { file } => {
            common::server::run_task("stack", load, |config| async move {
                let report = accounts::import_file(
                    config.accounts,
                    &file,
                    accounts::import::progress_line(),
                )
                .await?;
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            })
        }
    }
}
