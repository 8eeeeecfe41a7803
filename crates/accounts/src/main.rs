//! The accounts binary: serve (the default), `healthcheck`, or `import-users FILE`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("import-users") {
        return import_users(args.get(2));
    }
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

/// `accounts import-users dump.json`: prints `{"imported":n,"skipped":m}`.
fn import_users(file: Option<&String>) -> ExitCode {
    let Some(file) = file else {
        eprintln!("usage: accounts import-users <manage.py dumpdata auth.user output.json>");
        return ExitCode::from(2);
    };
    let env = common::config::Env::from_process();
    let config = match accounts::AccountsConfig::from_env(&env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("accounts: {error}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(accounts::import_file(config, std::path::Path::new(file)))
        });
    match result {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string(&report).unwrap_or_else(|e| e.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("accounts: import failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
