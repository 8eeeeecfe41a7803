//! The `accounts` binary's command line: help, version, errors, `migrate`, `import-users`.

use common::testkit::{TestDatabase, run_command};

const BIN: &str = env!("CARGO_BIN_EXE_accounts");

common::both_databases!(migrate_only_migrates_and_import_users_reports);

#[tokio::test]
async fn help_and_version_print_and_exit_without_serving() {
    // A binary that served instead would not exit (`run_command` fails after 60 s).
    for args in [&["--help"][..], &["help"], &["serve", "--help"], &["-h"]] {
        let ran = run_command(BIN, args, &[]).await;
        assert_eq!(ran.code, Some(0), "{args:?}: {ran:?}");
        assert!(
            ran.stdout.contains("Usage: accounts"),
            "{args:?}: {}",
            ran.stdout
        );
    }
    let help = run_command(BIN, &["--help"], &[]).await.stdout;
    for command in [
        "serve",
        "healthcheck",
        "migrate",
        "import-users",
        "export-users",
    ] {
        assert!(help.contains(command), "{command} in {help}");
    }
    let version = run_command(BIN, &["--version"], &[]).await;
    assert_eq!(version.code, Some(0));
    assert_eq!(
        version.stdout.trim(),
        format!("accounts {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn an_unknown_argument_or_command_is_an_error_with_exit_code_2() {
    for args in [
        &["--bogus"][..],
        &["frobnicate"],
        &["import-users"],
        &["serve", "extra"],
    ] {
        let ran = run_command(BIN, args, &[]).await;
        assert_eq!(ran.code, Some(2), "{args:?}: {ran:?}");
        assert!(ran.stderr.contains("error:"), "{args:?}: {}", ran.stderr);
    }
    // A bad configuration is exit 2 too, naming the variable.
    let ran = run_command(BIN, &["migrate"], &[("ACCOUNTS_DATABASE_URL", "mysql://x")]).await;
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(
        ran.stderr.contains("ACCOUNTS_DATABASE_URL"),
        "{}",
        ran.stderr
    );
}

async fn migrate_only_migrates_and_import_users_reports(db: TestDatabase) {
    let data = tempfile::tempdir().unwrap();
    let url = db.url_string();
    let data_dir = data.path().display().to_string();
    let env = [
        ("ACCOUNTS_DATABASE_URL", url.as_str()),
        ("DATA_DIR", data_dir.as_str()),
        ("ACCOUNTS_ADDR", "127.0.0.1:1"),
        ("RUST_LOG", "warn"),
    ];
    let ran = run_command(BIN, &["migrate"], &env).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.contains("migrated"), "{}", ran.stdout);
    // The schema is there, and nothing else was done: no keys, no admin (serving makes both).
    let store = accounts::store::open(&db.url, 1).await.unwrap();
    assert!(
        store
            .live_signing_keys(chrono::Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.any_admin().await.unwrap());
    store.database().close().await;

    let file = data.path().join("users.json");
    std::fs::write(
        &file,
        r#"[{"model": "auth.user", "pk": 1, "fields": {"email": "cli@example.com", "username": "cli",
            "password": "pbkdf2_sha256$36000$xIEozuZVAoYm$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w="}}]"#,
    )
    .unwrap();
    let ran = run_command(BIN, &["import-users", file.to_str().unwrap()], &env).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let report: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(report["imported"], 1);

    // A large file streams through (entries are parsed one at a time) and a second run
    // changes nothing.
    let entries: Vec<String> = (2..2002)
        .map(|pk| {
            format!(
                r#"{{"model": "auth.user", "pk": {pk}, "fields": {{"email": "bulk{pk}@example.com", "username": "bulk{pk}", "password": ""}}}}"#
            )
        })
        .collect();
    std::fs::write(&file, format!("[{}]", entries.join(",\n"))).unwrap();
    for (imported, unchanged) in [(2000, 0), (0, 2000)] {
        let ran = run_command(BIN, &["import-users", file.to_str().unwrap()], &env).await;
        assert_eq!(ran.code, Some(0), "{ran:?}");
        let report: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
        assert_eq!(
            (&report["imported"], &report["unchanged"]),
            (&serde_json::json!(imported), &serde_json::json!(unchanged)),
            "{report}"
        );
    }
    // A file cut short: what came before the cut is imported, and the error says where.
    std::fs::write(
        &file,
        r#"[{"model": "auth.user", "pk": 5000, "fields": {"email": "cut@example.com", "username": "cut"}}, {"model": "#,
    )
    .unwrap();
    let ran = run_command(BIN, &["import-users", file.to_str().unwrap()], &env).await;
    assert_ne!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stderr.contains("stopped after 1 entries"),
        "{}",
        ran.stderr
    );

    // The way back, to a file.
    let out = data.path().join("export.json");
    let ran = run_command(BIN, &["export-users", out.to_str().unwrap()], &env).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let exported: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(exported.len(), 2002);
    assert!(exported.iter().any(|e| e["pk"] == 5000));
}
