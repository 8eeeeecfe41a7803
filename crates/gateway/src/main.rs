//! The gateway binary: configuration from the environment, then serve until a signal.

use std::process::ExitCode;

fn main() -> ExitCode {
    common::server::run_binary(
        gateway::SERVICE,
        gateway::GatewayConfig::from_env,
        |config| config.addr,
        |config, shutdown| async move {
            gateway::Application::build(config)
                .await?
                .run(shutdown)
                .await
        },
    )
}
