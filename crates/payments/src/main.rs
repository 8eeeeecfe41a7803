//! The payments binary: `serve` (the default) until a signal, `healthcheck`, or `migrate`;
//! configuration from the environment.

use std::process::ExitCode;

use clap::Parser;
use common::server::CommonCommand;

/// Payments: idempotent payments, processing, events. Configured by environment variables
/// (see the README).
#[derive(Debug, Parser)]
#[command(name = "payments", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<CommonCommand>,
}

fn main() -> ExitCode {
    let load = payments::PaymentsConfig::from_env;
    match Cli::parse()
        .command
        .unwrap_or(CommonCommand::Serve(Default::default()))
    {
        CommonCommand::Serve(serve) => payments::serve(serve),
        CommonCommand::Healthcheck => {
            common::server::run_healthcheck(payments::SERVICE, load, |config| config.addr)
        }
        CommonCommand::Migrate => {
            common::server::run_task(payments::SERVICE, load, |config| async move {
                common::db::migrate(&config.database_url, &payments::store::migrations()).await?;
                println!("payments: {} migrated", config.database_url.redacted());
                Ok(())
            })
        }
    }
}
