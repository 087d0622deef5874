//! Workers: least-loaded dispatch, panics caught, ConnInfo, handler results, !Send futures.

mod common;

use std::io::Read;
use std::rc::Rc;

use common::{connect, fetch, hi, hi_and_hold, read_n, wait_for};
use synack::Server;
use tokio::io::AsyncWriteExt;

#[test]
fn held_connections_spread_to_the_least_loaded_worker() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(2)
        .serve(hi_and_hold)
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = connect(server.local_addr());
        assert_eq!(read_n(&mut c, 2), b"hi");
        held.push(c);
    }
    assert_eq!(server.stats().open_per_worker, vec![2, 2]);
    // Connections alternate between equally loaded workers: 0, 1, 0, 1. Close both of
    // worker 0's: the next two both go to worker 0, the least loaded.
    held.remove(2);
    held.remove(0);
    wait_for("two connections closed", || server.stats().open == 2);
    assert_eq!(server.stats().open_per_worker, vec![0, 2]);
    for _ in 0..2 {
        let mut c = connect(server.local_addr());
        assert_eq!(read_n(&mut c, 2), b"hi");
        held.push(c);
    }
    assert_eq!(server.stats().open_per_worker, vec![2, 2]);
}

#[test]
fn a_panicking_handler_is_counted_and_the_worker_lives_on() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|conn: synack::Connection| {
            let id = conn.info().id;
            if id == 1 {
                panic!("handler panicked before its future");
            }
            async move {
                if id == 0 {
                    panic!("handler panicked inside its future");
                }
                hi(conn).await
            }
        })
        .unwrap();
    for _ in 0..2 {
        let mut c = connect(server.local_addr());
        let mut buf = Vec::new();
        // The connection is closed without a greeting.
        let _ = c.read_to_end(&mut buf);
        assert!(buf.is_empty());
    }
    wait_for("two panics counted", || server.stats().handler_panics == 2);
    assert_eq!(fetch(server.local_addr()), "hi");
    let s = server.stats();
    assert_eq!(s.open, 0);
    assert_eq!(s.completed, 3);
    assert_eq!(s.accepted, 3);
}

#[test]
fn conn_info_describes_the_connection() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|mut conn: synack::Connection| async move {
            let i = *conn.info();
            let line = format!(
                "{} {} {} {} {} {} {}",
                i.id,
                i.peer_addr,
                i.local_addr,
                i.listener,
                i.acceptor,
                i.worker,
                i.dispatched_at >= i.accepted_at
            );
            conn.write_all(line.as_bytes()).await
        })
        .unwrap();
    let addr = server.local_addr();
    for id in 0..2 {
        let mut c = connect(addr);
        let me = c.local_addr().unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, format!("{id} {me} {addr} 0 0 0 true"));
    }
    // A wildcard listener reports the address the client actually reached.
    let wild = Server::builder()
        .bind("0.0.0.0:0")
        .unwrap()
        .workers(1)
        .serve(|mut conn: synack::Connection| async move {
            let l = conn.local_addr();
            conn.write_all(l.to_string().as_bytes()).await
        })
        .unwrap();
    let port = wild.local_addr().port();
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(fetch(target), target.to_string());
}

#[test]
fn handler_errors_are_counted_and_futures_need_not_be_send() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|mut conn: synack::Connection| async move {
            // An Rc held across an await: this future is !Send, which workers allow.
            let shared = Rc::new(conn.info().id);
            conn.write_all(b"hi").await?;
            if *shared % 2 == 1 {
                return Err(std::io::Error::other("odd connection"));
            }
            Ok(())
        })
        .unwrap();
    for _ in 0..4 {
        assert_eq!(fetch(server.local_addr()), "hi");
    }
    wait_for("four handlers done", || server.stats().completed == 4);
    assert_eq!(server.stats().handler_errors, 2);
}

#[test]
fn sched_batch_puts_the_workers_under_sched_batch() {
    // Field 41 of /proc/thread-self/stat is the scheduling policy (3 = SCHED_BATCH).
    fn policy() -> String {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_comm = stat.rsplit_once(')').unwrap().1;
        after_comm.split_whitespace().nth(38).unwrap().to_string()
    }
    for (on, want) in [(true, "3"), (false, "0")] {
        let server = Server::builder()
            .bind("127.0.0.1:0")
            .unwrap()
            .workers(1)
            .sched_batch(on)
            .serve(|mut conn: synack::Connection| async move {
                conn.write_all(policy().as_bytes()).await
            })
            .unwrap();
        assert_eq!(fetch(server.local_addr()), want);
    }
}
