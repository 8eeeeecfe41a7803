//! The payments binary: configuration from the environment, then serve until a signal.

use std::process::ExitCode;

fn main() -> ExitCode {
    common::server::run_binary(
        payments::SERVICE,
        payments::PaymentsConfig::from_env,
        |config| config.addr,
        |config, shutdown| async move {
            payments::Application::build(config)
                .await?
                .run(shutdown)
                .await
        },
    )
}
