//! The SIGINT/SIGTERM helper for binaries (its own test binary: it installs signal handlers).

use std::time::Duration;

#[tokio::test]
async fn shutdown_signal_resolves_on_sigterm() {
    let sig = synack::shutdown_signal();
    tokio::pin!(sig);
    // The first poll installs the handlers.
    assert!(
        tokio::time::timeout(Duration::from_millis(1), &mut sig)
            .await
            .is_err()
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(sig.await.unwrap(), "SIGTERM");
}
