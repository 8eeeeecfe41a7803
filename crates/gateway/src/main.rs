//! The gateway binary: `serve` (the default) until a signal, or `healthcheck`; configuration
//! from the environment.

use std::process::ExitCode;

use clap::Parser;
use common::server::ServeArgs;

/// The gateway: the one public entry point in front of accounts, payments and the monolith.
/// Configured by environment variables (see the README).
#[derive(Debug, Parser)]
#[command(name = "gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve until Ctrl-C or SIGTERM (the default).
    Serve(ServeArgs),
    /// Probe a running gateway's `/healthz` on GATEWAY_ADDR: exit 0 when it answers 200.
    Healthcheck,
}

fn main() -> ExitCode {
    match Cli::parse()
        .command
        .unwrap_or(Command::Serve(ServeArgs::default()))
    {
        Command::Serve(serve) => gateway::serve(serve),
        Command::Healthcheck => common::server::run_healthcheck(
            gateway::SERVICE,
            gateway::GatewayConfig::from_env,
            |config| config.addr,
        ),
    }
}
