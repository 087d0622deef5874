//! The acceptor: pause and resume, the per-wakeup accept bound.

mod common;

use common::{connect, fetch, hi, read_n, wait_for};
use synack::Server;

#[test]
fn paused_server_leaves_clients_in_the_queue_until_resumed() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(hi)
        .unwrap();
    assert_eq!(fetch(server.local_addr()), "hi");
    server.pause();
    assert!(server.is_paused());
    let mut c = connect(server.local_addr());
    wait_for("the connection in the accept queue", || {
        server.stats().listeners[0].queue_len == Some(1)
    });
    assert_eq!(server.stats().accepted, 1);
    assert!(server.stats().paused);
    server.resume();
    assert_eq!(read_n(&mut c, 2), b"hi");
    assert_eq!(server.stats().accepted, 2);
}

#[test]
fn accepts_at_most_a_batch_per_wakeup() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .bind("127.0.0.1:0")
        .unwrap()
        .accept_batch(4)
        .workers(1)
        .serve(hi)
        .unwrap();
    server.pause();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 2);
    let mut clients: Vec<_> = (0..40).map(|i| connect(addrs[i % 2])).collect();
    wait_for("40 connections queued", || {
        server
            .stats()
            .listeners
            .iter()
            .map(|l| l.queue_len.unwrap())
            .sum::<u32>()
            == 40
    });
    server.resume();
    for c in &mut clients {
        assert_eq!(read_n(c, 2), b"hi");
    }
    let s = server.stats();
    assert_eq!(s.accepted, 40);
    assert!(
        s.accept_batch.max() <= 4,
        "batch max {}",
        s.accept_batch.max()
    );
    // 40 connections, at most 4 per wakeup: at least 10 rounds.
    assert!(
        s.accept_batch.len() >= 10,
        "{} batches",
        s.accept_batch.len()
    );
}
