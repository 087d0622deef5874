//! Graceful shutdown: drain the kernel queue, let handlers finish, abort after the grace.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{connect, hi, read_n, wait_for};
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
    assert_eq!(report.drained, 3);
    assert_eq!(report.completed, 3);
    assert_eq!(report.aborted, 0);
    assert_eq!(report.left_in_queue, 0);
    assert_eq!(
        report.open_at_start + report.drained,
        report.completed + report.aborted
    );
    for c in &mut clients {
        assert_eq!(read_n(c, 2), b"hi");
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
    assert_eq!(report.open_at_start, 1);
    assert_eq!(report.aborted, 1);
    assert_eq!(report.completed, 0);
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
        .serve(|mut conn: synack::Connection| async move {
            conn.write_all(b"hi").await?;
            let mut b = [0u8; 1];
            conn.read_exact(&mut b).await?;
            conn.write_all(b"done").await
        })
        .unwrap();
    let addr = server.local_addr();
    let client = std::thread::spawn(move || {
        let mut c = connect(addr);
        assert_eq!(read_n(&mut c, 2), b"hi");
        c
    });
    let mut c = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(30)));
    // Once the listener is closed the shutdown is under way, and the handler still waits.
    tokio::task::spawn_blocking(move || {
        wait_for("the listener to close", || {
            std::net::TcpStream::connect(addr).is_err()
        })
    })
    .await
    .unwrap();
    c.write_all(b"x").unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    })
    .await
    .unwrap();
    assert_eq!(got, "done");
    let report = shutdown.await.unwrap();
    // Our connection was open at the start; probes that raced the close may add to it.
    assert!(report.open_at_start >= 1, "{report:?}");
    assert_eq!(report.completed, report.open_at_start + report.drained);
    assert_eq!(report.aborted, 0);
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
