//! A handoff the new process never completes leaves the old server serving: a new process
//! that exits at once (`Exited`), one that never says ready (`NotReady`, stopped at the
//! timeout), and one that says it failed (`Failed`, with its reason). Real processes, real
//! sockets on 127.0.0.1; the full handoff under a flood is in loadtest/tests/handoff.rs.

use std::io::Read;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

fn server() -> synack::Server {
    synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .inherit(false)
        .serve(|mut c: synack::Connection| async move { c.write_all(b"still here").await })
        .unwrap()
}

fn greeted(server: &synack::Server) -> String {
    let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Hands off to `sh -c script`; the handoff must fail, the server must still serve.
fn fails(server: synack::Server, script: &str, timeout: Duration) -> (synack::Server, String) {
    let h = synack::Handoff::new()
        .command("sh", ["-c", script])
        .ready_timeout(timeout);
    let failed = server.handoff(&h).expect_err("the handoff must fail");
    let why = failed.error.to_string();
    let server = *failed.server;
    assert_eq!(greeted(&server), "still here", "after: {why}");
    (server, why)
}

#[test]
fn a_handoff_that_does_not_complete_leaves_the_server_serving() {
    let server = server();
    assert_eq!(greeted(&server), "still here");
    let (server, why) = fails(server, "exit 3", Duration::from_secs(30));
    assert!(
        why.contains("exited before it was ready") && why.contains("3"),
        "{why}"
    );
    // Never ready: stopped at the timeout.
    let (server, why) = fails(server, "sleep 60", Duration::from_millis(300));
    assert!(why.contains("was not ready within 300ms"), "{why}");
    // It says why on the pipe it was given (the descriptor after the listeners: 3 + 1).
    let (server, why) = fails(
        server,
        "echo 'failed: no config' >&4",
        Duration::from_secs(30),
    );
    assert!(why.contains("failed to start: no config"), "{why}");
    // A program that does not exist.
    let h = synack::Handoff::new().command("/nonexistent/synack-new", Vec::<String>::new());
    let failed = server.handoff(&h).expect_err("no such program");
    assert!(matches!(failed.error, synack::HandoffError::Spawn { .. }));
    let server = *failed.server;
    assert_eq!(greeted(&server), "still here");
    let report = server.shutdown_blocking(Duration::from_secs(5));
    assert_eq!(report.unaccounted, 0);
}
