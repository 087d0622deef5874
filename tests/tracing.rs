//! tracing: a span per connection (id, peer, listener, worker) around the handler, and nothing
//! per connection above debug. Its own test binary: it installs a global subscriber.

mod common;

use common::{fetch, wait_for};
use synack::Server;
use tokio::io::AsyncWriteExt;

#[test]
fn each_connection_gets_a_debug_span_and_nothing_louder() {
    let logs = common::Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info,synack=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|mut c: synack::Connection| async move {
            tracing::info!("inside the handler");
            c.write_all(b"hi").await
        })
        .unwrap();
    assert_eq!(fetch(server.local_addr()), "hi");
    wait_for("the handler to finish", || server.stats().completed == 1);
    let text = logs.text();
    let peer_line = text
        .lines()
        .find(|l| l.contains("connection dispatched"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(peer_line.contains("DEBUG"), "{peer_line}");
    assert!(
        peer_line.contains("conn{id=0 peer=127.0.0.1:")
            && peer_line.contains("listener=0 worker=0}"),
        "{peer_line}"
    );
    // The handler's own events carry the span.
    let inside = text
        .lines()
        .find(|l| l.contains("inside the handler"))
        .unwrap();
    assert!(inside.contains("conn{id=0"), "{inside}");
    assert!(text.contains("connection done"));
    // Per-connection events of synack itself are debug only.
    for l in text
        .lines()
        .filter(|l| l.contains("conn{") && l.contains("synack::"))
    {
        assert!(l.contains("DEBUG"), "{l}");
    }
}
