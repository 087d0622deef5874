//! synack-load against real servers on loopback: how attempts fail, as the kernel reports it:
//! refused, timeouts and overflows behind a full queue, SYN retransmissions, unserved connections.
//! No timed assertions: counts and classes only.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

mod common;
use common::flood;

#[test]
fn a_closed_port_gives_only_refused() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (out, rep) = flood(
        &format!("127.0.0.1:{port}"),
        &["--connections", "50", "--concurrency", "5"],
        "refused",
    );
    assert_eq!(rep.attempts, 50);
    assert_eq!(rep.established, 0);
    assert_eq!(rep.outcomes["refused"], 50);
    assert_eq!(rep.outcomes.values().sum::<u64>(), 50);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("nothing listens on that port"), "{table}");
}

/// A listener with backlog 0 that never accepts, its one queue place taken.
fn full_listener() -> (socket2::Socket, Vec<std::net::TcpStream>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    // Connect until one is not answered: the queue is then full.
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fill.push(s),
            Err(_) => break,
        }
    }
    (sock, fill)
}

#[test]
fn a_full_queue_that_never_accepts_gives_timeouts_and_overflows() {
    let (sock, _fill) = full_listener();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let (_, rep) = flood(
        &addr.to_string(),
        &[
            "--connections",
            "4",
            "--concurrency",
            "4",
            "--connect-timeout",
            "300ms",
        ],
        "timeout",
    );
    assert_eq!(rep.attempts, 4);
    assert_eq!(rep.outcomes["timeout"], 4, "{rep:#?}");
    let k = rep.kernel.unwrap();
    assert!(k.counters["TcpExt.ListenOverflows"] > 0, "{k:?}");
}

#[test]
fn a_slow_acceptor_behind_a_full_queue_causes_syn_retransmissions() {
    let (sock, fill) = full_listener();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // Accept one connection every ~1.5 s, a bounded number of times.
    let acceptor = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(1500));
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            if let Ok(c) = sock.accept() {
                held.push(c);
            }
        }
    });
    let (_, rep) = flood(
        &addr.to_string(),
        &[
            "--connections",
            "3",
            "--concurrency",
            "3",
            "--connect-timeout",
            "8s",
        ],
        "retrans",
    );
    stop.store(true, Ordering::Relaxed);
    drop(fill);
    let retransmitted: u64 = rep
        .syn_retransmits
        .iter()
        .filter(|b| b.retransmits >= 1)
        .map(|b| b.connections)
        .sum();
    assert!(retransmitted >= 1, "{rep:#?}");
    assert!(rep.notes.iter().any(|n| n.contains("retransmissions")));
    acceptor.join().unwrap();
}

#[test]
fn connections_left_in_the_queue_are_established_but_unserved() {
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .backlog(4)
        .workers(1)
        .serve(|mut c: synack::Connection| async move { c.write_all(b"hi").await })
        .unwrap();
    server.pause();
    let (out, rep) = flood(
        &server.local_addr().to_string(),
        &[
            "--connections",
            "10",
            "--concurrency",
            "10",
            "--read",
            "2",
            "--read-timeout",
            "300ms",
            "--connect-timeout",
            "300ms",
        ],
        "unserved",
    );
    // The queue holds backlog + 1 = 5: those handshakes complete and are never served; the
    // kernel drops the rest of the SYNs (timeouts), or their final ACKs (also unserved).
    assert!(rep.outcomes["unserved"] >= 5, "{rep:#?}");
    assert_eq!(rep.outcomes["unserved"] + rep.outcomes["timeout"], 10);
    assert_eq!(server.stats().accepted, 0);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("never took it from its queue"), "{table}");
}
