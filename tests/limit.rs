//! The connection limit (Tomcat's maxConnections) and its overload policies.

mod common;

use std::io::{ErrorKind, Read};

use common::{connect, hi_and_hold, read_n, wait_for};
use synack::{OverloadPolicy, Server};

#[test]
fn at_the_limit_new_clients_wait_in_the_kernel_queue() {
    queue_at_the_limit(false);
}

#[test]
fn at_the_limit_new_clients_wait_in_the_kernel_queue_accepting_in_workers() {
    queue_at_the_limit(true);
}

fn queue_at_the_limit(in_workers: bool) {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .accept_in_workers(in_workers)
        .max_connections(2)
        .workers(1)
        .serve(hi_and_hold)
        .unwrap();
    let addr = server.local_addr();
    let mut a = connect(addr);
    let mut b = connect(addr);
    assert_eq!(read_n(&mut a, 2), b"hi");
    assert_eq!(read_n(&mut b, 2), b"hi");

    // The third handshake completes in the kernel...
    let mut c = connect(addr);
    // ...and the connection waits in the accept queue, its handler not started.
    wait_for("the third connection in the accept queue", || {
        server.stats().listeners[0].queue_len == Some(1)
    });
    // The acceptor counts the limit on its next try after the second dispatch, which the
    // second client's greeting can overtake.
    wait_for("the limit counted", || server.stats().limit_reached >= 1);
    // Established on the client's side (TCP_ESTABLISHED), still in the queue on the server's,
    // and not accepted: the two handlers are the only ones.
    assert_eq!(synack_sys::tcp_info(&c).unwrap().unwrap().state, 1);
    let s = server.stats();
    assert_eq!(s.listeners[0].queue_len, Some(1));
    assert_eq!(s.accepted, 2);
    assert_eq!(s.open, 2);

    // A freed slot wakes the acceptor, which takes the waiting connection.
    drop(a);
    assert_eq!(read_n(&mut c, 2), b"hi");
    let s = server.stats();
    assert_eq!(s.accepted, 3);
    assert_eq!(s.listeners[0].queue_len, Some(0));
    drop(b);
    drop(c);
    wait_for("all connections closed", || server.stats().open == 0);
}

#[test]
fn reject_policy_resets_clients_past_the_limit() {
    reject_past_the_limit(false);
}

#[test]
fn reject_policy_resets_clients_past_the_limit_accepting_in_workers() {
    reject_past_the_limit(true);
}

fn reject_past_the_limit(in_workers: bool) {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .accept_in_workers(in_workers)
        .max_connections(1)
        .overload_policy(OverloadPolicy::Reject)
        .workers(1)
        .serve(hi_and_hold)
        .unwrap();
    let addr = server.local_addr();
    let mut a = connect(addr);
    assert_eq!(read_n(&mut a, 2), b"hi");
    let mut b = connect(addr);
    let mut buf = [0u8; 2];
    let e = b.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    let s = server.stats();
    assert_eq!(s.rejected, 1);
    assert_eq!(s.accepted, 1);
    assert_eq!(s.listeners[0].queue_len, Some(0));
    // Once the slot frees, clients are served again.
    drop(a);
    wait_for("the slot to free", || server.stats().open == 0);
    let mut c = connect(addr);
    assert_eq!(read_n(&mut c, 2), b"hi");
}

#[test]
fn accepting_in_workers_a_slot_freed_on_one_worker_wakes_them_all() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .accept_in_workers(true)
        .workers(2)
        .max_connections(2)
        .serve(hi_and_hold)
        .unwrap();
    let addr = server.local_addr();
    let mut held: Vec<_> = (0..2).map(|_| connect(addr)).collect();
    for c in &mut held {
        assert_eq!(read_n(c, 2), b"hi");
    }
    let mut waiting = connect(addr);
    wait_for("the third connection in the accept queue", || {
        server.stats().listeners[0].queue_len == Some(1)
    });
    // Whichever worker held the freed slot, a parked worker takes the waiting connection.
    drop(held.remove(0));
    assert_eq!(read_n(&mut waiting, 2), b"hi");
    let s = server.stats();
    assert_eq!(s.accepted, 3);
    assert!(s.limit_reached >= 1, "{s:?}");
}

/// With several acceptors sharing the limit, a connection under it is never reset: under the
/// reject policy a slot is taken for the connection in hand, after accept(), so another
/// acceptor's turn that finds its own queue empty cannot hold one meanwhile.
#[test]
fn reject_never_resets_a_connection_below_the_limit_with_several_acceptors() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(2)
        .reuse_port(true)
        .accept_in_workers(true)
        .max_connections(4)
        .overload_policy(OverloadPolicy::Reject)
        .serve(hi_and_hold)
        .unwrap();
    let addr = server.local_addr();
    for _ in 0..25 {
        let mut held: Vec<_> = (0..4).map(|_| connect(addr)).collect();
        for c in &mut held {
            assert_eq!(read_n(c, 2), b"hi");
        }
        drop(held);
        wait_for("every slot free again", || server.stats().open == 0);
    }
    assert_eq!(server.stats().rejected, 0);
}
