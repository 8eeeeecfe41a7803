//! `cargo run --release`: the whole stack on embedded SQLite, gateway on :8080.

use std::process::ExitCode;

fn main() -> ExitCode {
    common::server::run_binary(
        "stack",
        stack::StackConfig::from_env,
        |config| config.gateway.addr,
        |config, shutdown| async move {
            let stack = stack::Stack::build(config).await?;
            tracing::info!(
                gateway = %stack.gateway_addr()?,
                accounts = %stack.accounts_addr()?,
                payments = %stack.payments_addr()?,
                "stack ready"
            );
            stack.run(shutdown).await
        },
    )
}
