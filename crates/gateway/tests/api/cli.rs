//! The `gateway` binary's command line.

use common::testkit::run_command;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

#[tokio::test]
async fn help_version_and_errors() {
    let help = run_command(BIN, &["--help"], &[]).await;
    assert_eq!(help.code, Some(0), "{help:?}");
    assert!(help.stdout.contains("healthcheck"), "{}", help.stdout);
    let version = run_command(BIN, &["--version"], &[]).await;
    assert_eq!(
        version.stdout.trim(),
        format!("gateway {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [&["--bogus"][..], &["migrate"]] {
        let ran = run_command(BIN, args, &[]).await;
        assert_eq!(ran.code, Some(2), "{args:?}: {ran:?}");
    }
    // Nothing listens on this address: the probe fails with exit 1.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let probe = run_command(BIN, &["healthcheck"], &[("GATEWAY_ADDR", &addr)]).await;
    assert_eq!(probe.code, Some(1), "{probe:?}");
}
