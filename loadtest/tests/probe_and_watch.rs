//! synack-load against real servers on loopback: looking into the server: the synack probe header,
//! and any listener's queue through inet_diag.
//! No timed assertions: counts and classes only.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

mod common;
use common::{bin, flood, greeting_server};

#[test]
fn probe_splits_each_connection_at_the_servers_accept() {
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .probe(true)
        .workers(1)
        .serve(|mut c: synack::Connection| async move {
            c.write_all(b"hi").await?;
            c.shutdown().await
        })
        .unwrap();
    let (out, rep) = flood(
        &server.local_addr().to_string(),
        &["--connections", "200", "--probe", "--read", "2"],
        "probe",
    );
    assert_eq!(rep.outcomes["ok"], 200, "{rep:#?}");
    for part in ["handshake", "queue_wait", "dispatch", "rest", "first_byte"] {
        assert_eq!(rep.latency_us[part].count, 200, "{part}");
    }
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("accept queue"), "{table}");
}

#[test]
fn probe_against_a_server_without_it_fails_clearly() {
    let server = greeting_server();
    let err = common::fails_with(
        bin().args([
            "flood",
            &server.local_addr().to_string(),
            "--quiet",
            "--connections",
            "50",
            "--probe",
        ]),
        1,
    );
    assert!(
        err.contains("no synack probe header") && err.contains("probe enabled"),
        "{err}"
    );
}

#[test]
fn watch_listener_reads_a_plain_std_listeners_queue() {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(16).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let (out, rep) = flood(
        &addr.to_string(),
        &[
            "--connections",
            "6",
            "--concurrency",
            "6",
            "--read",
            "1",
            "--read-timeout",
            "300ms",
            "--watch-listener",
            "--watch-interval",
            "2ms",
        ],
        "watch",
    );
    let q = rep.listener_queue.expect("a queue watch");
    assert_eq!(q.sockets, 1);
    assert_eq!(q.effective_backlog, 16);
    assert_eq!(q.peak, 6, "{q:?}");
    assert!(q.series.iter().any(|p| p.len == 6));
    assert_eq!(rep.outcomes["unserved"], 6);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("effective backlog 16, peak 6"), "{table}");
    drop(sock);
}

#[test]
fn watch_listener_refuses_a_target_off_this_host() {
    let out = bin()
        .args(["flood", "192.0.2.1:80", "--quiet", "--watch-listener"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an address of this host"), "{err}");
}
