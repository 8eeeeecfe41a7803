//! The `stack` binary's command line: `--help` prints and exits (it used to start the whole
//! stack), `migrate` migrates both databases and exits.

use common::testkit::{TestDatabase, run_command};

const BIN: &str = env!("CARGO_BIN_EXE_stack");

common::both_databases!(migrate_migrates_both_databases_and_exits);

#[tokio::test]
async fn help_and_version_exit_without_starting_the_stack() {
    let help = run_command(BIN, &["--help"], &[]).await;
    assert_eq!(help.code, Some(0), "{help:?}");
    assert!(help.stdout.contains("Usage: stack"), "{}", help.stdout);
    for command in ["serve", "healthcheck", "migrate", "import-users"] {
        assert!(
            help.stdout.contains(command),
            "{command} in {}",
            help.stdout
        );
    }
    let version = run_command(BIN, &["--version"], &[]).await;
    assert_eq!(
        version.stdout.trim(),
        format!("stack {}", env!("CARGO_PKG_VERSION"))
    );
    let unknown = run_command(BIN, &["--port", "9"], &[]).await;
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
}

async fn migrate_migrates_both_databases_and_exits(db: TestDatabase) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let mut env = vec![("DATA_DIR", data_dir.clone()), ("RUST_LOG", "warn".into())];
    let payments_db = if db.is_postgres() {
        let payments_db = TestDatabase::postgres().await;
        env.push(("ACCOUNTS_DATABASE_URL", db.url_string()));
        env.push(("PAYMENTS_DATABASE_URL", payments_db.url_string()));
        Some(payments_db)
    } else {
        None
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ran = run_command(BIN, &["migrate"], &env).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let (accounts_url, payments_url) = match &payments_db {
        Some(payments_db) => (db.url.clone(), payments_db.url.clone()),
        None => (
            common::db::DatabaseUrl::Sqlite(data.path().join("accounts.db")),
            common::db::DatabaseUrl::Sqlite(data.path().join("payments.db")),
        ),
    };
    let accounts = accounts::store::open(&accounts_url, 1).await.unwrap();
    assert!(
        !accounts.any_admin().await.unwrap(),
        "migrated, nothing else"
    );
    let payments = payments::store::open(&payments_url, 1).await.unwrap();
    assert_eq!(payments.count_payments().await.unwrap(), 0);
}
