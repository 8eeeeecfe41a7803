//! The gateway binary: `serve` (the default) until a signal, or `healthcheck`; configuration
//! from the environment.

use std::process::ExitCode;

use clap::Parser;

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
    Serve,
    /// Probe a running gateway's `/healthz` on GATEWAY_ADDR: exit 0 when it answers 200.
    Healthcheck,
}

fn main() -> ExitCode {
    match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => common::server::run_binary(
            gateway::SERVICE,
            gateway::GatewayConfig::from_env,
            |config, shutdown| async move {
                gateway::Application::build(config)
                    .await?
                    .run(shutdown)
                    .await
            },
        ),
        Command::Healthcheck => common::server::run_healthcheck(
            gateway::SERVICE,
            gateway::GatewayConfig::from_env,
            |config| config.addr,
        ),
    }
}
