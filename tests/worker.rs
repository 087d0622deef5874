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
    // The client sees the close as the handler drops its connection, a moment before the
    // handler's end is counted.
    wait_for("three handlers done", || server.stats().completed == 3);
    let s = server.stats();
    assert_eq!(s.open, 0);
    assert_eq!(s.accepted, 3);
}

/// A future that runs `F`, then panics when it is dropped (after it returned, or when it is
/// cancelled): handler code that runs outside the handler's poll.
struct PanicsOnDrop<F> {
    fut: std::pin::Pin<Box<F>>,
    armed: bool,
}

impl<F: std::future::Future> std::future::Future for PanicsOnDrop<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.fut.as_mut().poll(cx)
    }
}

impl<F> Drop for PanicsOnDrop<F> {
    fn drop(&mut self) {
        if self.armed {
            panic!("the handler's future panicked in Drop");
        }
    }
}

#[test]
fn a_handler_future_that_panics_when_dropped_is_counted_and_the_worker_lives_on() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|conn: synack::Connection| PanicsOnDrop {
            armed: conn.info().id == 0,
            fut: Box::pin(hi(conn)),
        })
        .unwrap();
    // The first handler greets and returns; its future panics as it is dropped.
    assert_eq!(fetch(server.local_addr()), "hi");
    wait_for("the first handler counted", || {
        server.stats().completed == 1
    });
    let s = server.stats();
    assert_eq!(s.handler_panics, 1, "{s:?}");
    assert_eq!(s.workers_alive, vec![true], "{s:?}");
    // The worker goes on serving.
    for _ in 0..2 {
        assert_eq!(fetch(server.local_addr()), "hi");
    }
    wait_for("three handlers done", || server.stats().completed == 3);
    let s = server.stats();
    assert_eq!(
        (s.accepted, s.open, s.aborted, s.lost),
        (3, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.handler_panics, 1, "{s:?}");
    assert_eq!(s.workers_alive, vec![true], "{s:?}");
}

/// Dropped when its handler is cancelled, across the await it was held over: panics.
struct Bomb(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Bomb {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        panic!("a value held by the handler panicked in Drop");
    }
}

#[test]
fn handlers_whose_futures_panic_when_cancelled_are_all_counted_as_aborted() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(move |mut conn: synack::Connection| {
            let bomb = Bomb(d.clone());
            async move {
                let _bomb = bomb;
                conn.write_all(b"hi").await?;
                std::future::pending::<()>().await;
                Ok::<_, std::io::Error>(())
            }
        })
        .unwrap();
    let mut clients: Vec<_> = (0..2).map(|_| connect(server.local_addr())).collect();
    for c in &mut clients {
        assert_eq!(read_n(c, 2), b"hi");
    }
    let report = server.shutdown_blocking(std::time::Duration::from_millis(100));
    // Both futures were dropped (the first one's panic did not stop the second's drop), and
    // both connections are closed and counted.
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    assert_eq!(report.open_at_start, 2, "{report:?}");
    assert_eq!(report.aborted, 2, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
    for c in &mut clients {
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }
}

#[test]
fn conn_info_describes_the_connection() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|mut conn: synack::Connection| async move {
            let i = conn.info().clone();
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
    // A wildcard listener's connections are checked in tests/namespace.rs, inside a network
    // namespace of their own: here it would listen on every interface of the host.
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

/// Handlers share their worker's thread but not a task: each may spawn local tasks, yield, and
/// wait on timers and on one another, and a stalled one does not stall the rest.
fn handlers_interleave_on_one_worker(in_workers: bool) {
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .accept_in_workers(in_workers)
        .serve(move |mut conn: synack::Connection| {
            let mut gate = gate_rx.clone();
            async move {
                let id = conn.info().id;
                if id == 0 {
                    // The first connection waits until the test opens the gate.
                    let _ = gate.wait_for(|open| *open).await;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                // A task of its own on the worker's LocalSet; !Send is fine there.
                let rc = Rc::new(id);
                let echoed = tokio::task::spawn_local(async move { *rc }).await.unwrap();
                conn.write_all(format!("{echoed}").as_bytes()).await
            }
        })
        .unwrap();
    let addr = server.local_addr();
    let mut first = connect(addr);
    wait_for("the first handler to start", || {
        server.stats().accepted == 1
    });
    // Later connections are served while the first one waits.
    for _ in 0..5 {
        let got = fetch(addr);
        assert!(got.parse::<u64>().unwrap() >= 1, "{got}");
    }
    gate_tx.send_replace(true);
    let mut got = String::new();
    first.read_to_string(&mut got).unwrap();
    assert_eq!(got, "0");
    wait_for("every handler done", || server.stats().completed == 6);
    assert_eq!(server.stats().handler_panics, 0);
}

#[test]
fn handlers_interleave_on_one_worker_with_an_acceptor_thread() {
    handlers_interleave_on_one_worker(false);
}

#[test]
fn handlers_interleave_on_one_worker_accepting_in_workers() {
    handlers_interleave_on_one_worker(true);
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
