//! The `payments` binary's command line: help, version, errors, `migrate`.

use common::testkit::{TestDatabase, run_command};

const BIN: &str = env!("CARGO_BIN_EXE_payments");

common::both_databases!(migrate_only_migrates);

#[tokio::test]
async fn help_version_and_errors() {
    let help = run_command(BIN, &["--help"], &[]).await;
    assert_eq!(help.code, Some(0), "{help:?}");
    for command in ["serve", "healthcheck", "migrate"] {
        assert!(
            help.stdout.contains(command),
            "{command} in {}",
            help.stdout
        );
    }
    let version = run_command(BIN, &["-V"], &[]).await;
    assert_eq!(
        version.stdout.trim(),
        format!("payments {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [&["--bogus"][..], &["import-users", "x"]] {
        assert_eq!(run_command(BIN, args, &[]).await.code, Some(2), "{args:?}");
    }
}

async fn migrate_only_migrates(db: TestDatabase) {
    let data = tempfile::tempdir().unwrap();
    let (url, data_dir) = (db.url_string(), data.path().display().to_string());
    let ran = run_command(
        BIN,
        &["migrate"],
        &[
            ("PAYMENTS_DATABASE_URL", &url),
            ("DATA_DIR", &data_dir),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let store = payments::store::open(&db.url, 1).await.unwrap();
    assert_eq!(
        store.count_payments().await.unwrap(),
        0,
        "the schema is there"
    );
    store.database().close().await;
}
