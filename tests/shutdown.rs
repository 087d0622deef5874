//! Graceful shutdown: drain the kernel queue, let handlers finish, abort after the grace.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{connect, hi, hi_and_hold, read_n, wait_for};
use synack::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn shutdown_drains_the_kernel_queue_into_handlers() {
    drain_on_shutdown(false);
}

#[test]
fn shutdown_drains_the_kernel_queue_into_handlers_accepting_in_workers() {
    drain_on_shutdown(true);
}

fn drain_on_shutdown(in_workers: bool) {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .accept_in_workers(in_workers)
        .workers(1)
        .serve(hi)
        .unwrap();
    server.pause();
    let mut clients: Vec<_> = (0..3).map(|_| connect(server.local_addr())).collect();
    wait_for("three connections queued", || {
        server.stats().listeners[0].queue_len == Some(3)
    });
    let report = server.shutdown_blocking(Duration::from_secs(10));
    // Paused from the start: none of the clients this test connected was open, each was drained.
    assert_eq!(report.open_at_start, 0, "{report:?}");
    assert_eq!(report.drained, clients.len() as u64, "{report:?}");
    assert_eq!(report.completed, clients.len() as u64, "{report:?}");
    assert_eq!((report.aborted, report.lost), (0, 0), "{report:?}");
    assert_eq!(report.left_in_queue, 0, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
    for c in &mut clients {
        assert_eq!(read_n(c, 2), b"hi");
    }
}

#[test]
fn what_is_left_in_a_shared_queue_is_counted_once_with_two_acceptors() {
    left_in_a_shared_queue(false);
}

#[test]
fn what_is_left_in_a_shared_queue_is_counted_once_accepting_in_two_workers() {
    left_in_a_shared_queue(true);
}

/// Two acceptors on one socket (no `reuse_port`), at the connection limit: the connections
/// waiting in its queue when the drain runs out are counted once, not once per acceptor.
fn left_in_a_shared_queue(in_workers: bool) {
    let builder = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .max_connections(1);
    let builder = if in_workers {
        builder.accept_in_workers(true).workers(2)
    } else {
        builder.acceptors(2).workers(1)
    };
    let server = builder.serve(hi_and_hold).unwrap();
    let addr = server.local_addr();
    let mut held = connect(addr);
    assert_eq!(read_n(&mut held, 2), b"hi");
    let mut waiting: Vec<_> = (0..5).map(|_| connect(addr)).collect();
    wait_for("five connections queued at the limit", || {
        server.stats().listeners[0].queue_len == Some(5)
    });
    // At the limit, the drain takes nothing: the grace runs out with the five still queued.
    let report = server.shutdown_blocking(Duration::from_millis(100));
    assert_eq!(report.left_in_queue, waiting.len() as u64, "{report:?}");
    assert_eq!(report.open_at_start, 1, "{report:?}");
    assert_eq!((report.drained, report.aborted), (0, 1), "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
    // The kernel reset them when the listener closed.
    for c in &mut waiting {
        let e = c.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
}

#[test]
fn handlers_past_the_grace_period_are_aborted() {
    abort_after_grace(false);
}

#[test]
fn handlers_past_the_grace_period_are_aborted_accepting_in_workers() {
    abort_after_grace(true);
}

fn abort_after_grace(in_workers: bool) {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .accept_in_workers(in_workers)
        .serve(|mut conn: synack::Connection| async move {
            conn.write_all(b"hi").await?;
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let mut c = connect(server.local_addr());
    assert_eq!(read_n(&mut c, 2), b"hi");
    let report = server.shutdown_blocking(Duration::from_millis(100));
    // The one client this test connected was open, and its handler never ends.
    assert_eq!(report.open_at_start, 1, "{report:?}");
    assert_eq!(report.drained, 0, "{report:?}");
    assert_eq!(report.aborted, 1, "{report:?}");
    assert_eq!(report.completed, 0, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
    // The aborted connection is closed.
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[tokio::test]
async fn an_in_flight_handler_finishes_within_the_grace_period() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(finishes_when_told)
        .unwrap();
    let addr = server.local_addr();
    let mut c = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        assert_eq!(read_n(&mut c, 2), b"hi");
        c
    })
    .await
    .unwrap();
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(30)));
    // The handler sees the shutdown begin, and still finishes.
    tokio::task::spawn_blocking(move || finish(&mut c))
        .await
        .unwrap();
    let report = shutdown.await.unwrap();
    // The one client this test connected, open at the start, finished in the grace period.
    assert_eq!(report.open_at_start, 1, "{report:?}");
    assert_eq!(report.drained, 0, "{report:?}");
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(report.aborted, 0, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
    let e = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn dropping_the_server_stops_its_threads_and_closes_the_listener() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(2)
        .serve(hi)
        .unwrap();
    let addr = server.local_addr();
    drop(server);
    let e = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// With metrics on, the publisher runs through the grace period; the listener still closes as
/// soon as the acceptors are done, so a client arriving then is refused at once instead of
/// being queued and reset (uncounted) when the grace ends.
#[cfg(feature = "metrics")]
#[test]
fn with_metrics_on_the_listener_closes_when_the_drain_ends() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .metrics(Duration::from_millis(1))
        .serve(|mut conn: synack::Connection| async move {
            conn.write_all(b"hi").await?;
            let mut b = [0u8; 1];
            conn.read_exact(&mut b).await?;
            conn.write_all(b"done").await
        })
        .unwrap();
    let addr = server.local_addr();
    let mut c = connect(addr);
    assert_eq!(read_n(&mut c, 2), b"hi");
    let shutdown = std::thread::spawn(move || server.shutdown_blocking(Duration::from_secs(60)));
    // The handler waits for our byte, so the grace period is on while this polls. Probes that
    // connect before the listener closes are drained (or reset with it).
    let mut refused = None;
    wait_for(
        "the listener to close during the grace period",
        || match std::net::TcpStream::connect(addr) {
            Ok(_) => false,
            Err(e) => {
                refused = Some(e.kind());
                true
            }
        },
    );
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
    c.write_all(b"x").unwrap();
    let mut rest = String::new();
    c.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "done");
    let report = shutdown.join().unwrap();
    assert_eq!(report.aborted, 0, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
}

/// A handler that greets, says when the shutdown begins, then waits for a byte to finish.
async fn finishes_when_told(mut conn: synack::Connection) -> std::io::Result<()> {
    conn.write_all(b"hi").await?;
    conn.closing().wait().await;
    conn.write_all(b"closing").await?;
    let mut b = [0u8; 1];
    conn.read_exact(&mut b).await?;
    conn.write_all(b"done").await
}

/// Tells a `finishes_when_told` handler to finish once the shutdown has begun.
fn finish(c: &mut std::net::TcpStream) {
    assert_eq!(read_n(c, 7), b"closing");
    c.write_all(b"x").unwrap();
    let mut rest = String::new();
    c.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "done");
}

#[test]
fn a_grace_of_duration_max_waits_for_the_handlers_without_panicking() {
    for in_workers in [false, true] {
        let server = Server::builder()
            .bind("127.0.0.1:0")
            .unwrap()
            .workers(1)
            .accept_in_workers(in_workers)
            .serve(finishes_when_told)
            .unwrap();
        let mut c = connect(server.local_addr());
        assert_eq!(read_n(&mut c, 2), b"hi");
        let shutdown = std::thread::spawn(move || server.shutdown_blocking(Duration::MAX));
        finish(&mut c);
        let report = shutdown
            .join()
            .expect("shutdown_blocking(Duration::MAX) panicked");
        assert_eq!(
            (report.open_at_start, report.completed),
            (1, 1),
            "{report:?}"
        );
        assert_eq!((report.aborted, report.unaccounted), (0, 0), "{report:?}");
    }
}

#[tokio::test]
async fn an_async_shutdown_with_a_grace_of_duration_max_reports() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(finishes_when_told)
        .unwrap();
    let addr = server.local_addr();
    let mut c = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        assert_eq!(read_n(&mut c, 2), b"hi");
        c
    })
    .await
    .unwrap();
    let shutdown = tokio::spawn(server.shutdown(Duration::MAX));
    tokio::task::spawn_blocking(move || finish(&mut c))
        .await
        .unwrap();
    // A panic on the shutdown thread would have given the default report.
    let report = shutdown.await.unwrap();
    assert_eq!(
        (report.open_at_start, report.completed),
        (1, 1),
        "{report:?}"
    );
    assert_eq!((report.aborted, report.unaccounted), (0, 0), "{report:?}");
}
