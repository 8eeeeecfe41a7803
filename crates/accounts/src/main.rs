//! The accounts binary: configuration from the environment, then serve until a signal.

use std::process::ExitCode;

fn main() -> ExitCode {
    common::server::run_binary(
        accounts::SERVICE,
        accounts::AccountsConfig::from_env,
        |config| config.addr,
        |config, shutdown| async move {
            accounts::Application::build(config)
                .await?
                .run(shutdown)
                .await
        },
    )
}
