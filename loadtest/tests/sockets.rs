//! synack-load against real servers on loopback: the generator's sockets: source addresses, and
//! reused sockets against fresh ones.
//! No timed assertions: counts and classes only.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;

mod common;
use common::{flood, wait_for};

#[test]
fn source_addresses_spread_the_connections() {
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let seen = peers.clone();
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(move |c: synack::Connection| {
            seen.lock().unwrap().insert(c.peer_addr().ip());
            async {}
        })
        .unwrap();
    let (_, rep) = flood(
        &server.local_addr().to_string(),
        &[
            "--connections",
            "40",
            "--source",
            "127.0.0.2-127.0.0.5",
            "--threads",
            "1",
        ],
        "sources",
    );
    assert_eq!(rep.established, 40);
    let want: HashSet<IpAddr> = (2..=5).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    wait_for(|| *peers.lock().unwrap() == want);
}

/// Sockets reused after an RST (the default) and fresh ones give the same accounting: every
/// attempt a new connection the server accepts and serves, none misread as an error,
/// whichever phase the socket was in (read, send, hold, several sources).
#[test]
fn reused_and_fresh_sockets_account_for_every_connection_alike() {
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let seen = peers.clone();
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(move |mut c: synack::Connection| {
            seen.lock().unwrap().insert(c.peer_addr());
            async move {
                c.write_all(b"hi").await?;
                c.shutdown().await
            }
        })
        .unwrap();
    let addr = server.local_addr().to_string();
    let cases: &[&[&str]] = &[
        &["--read", "2"],
        &["--read", "2", "--fresh-sockets"],
        &["--send", "3", "--read", "2"],
        &["--hold", "20ms"],
        &["--source", "127.0.0.2-127.0.0.3", "--read", "2"],
        &["--close", "fin", "--read", "2"],
    ];
    let mut total = 0;
    for (i, case) in cases.iter().enumerate() {
        let before = server.stats().accepted;
        let (_, rep) = flood(
            &addr,
            &[
                &[
                    "--connections",
                    "200",
                    "--concurrency",
                    "8",
                    "--threads",
                    "1",
                ],
                *case,
            ]
            .concat(),
            &format!("reuse-{i}"),
        );
        assert_eq!(rep.established, 200, "{case:?}: {:?}", rep.outcomes);
        assert_eq!(
            rep.outcomes.get("ok"),
            Some(&200),
            "{case:?}: {:?}",
            rep.outcomes
        );
        assert_eq!(server.stats().accepted - before, 200, "{case:?}");
        total += 200;
    }
    // Reused sockets connect from new local ports: 8 sockets made 200 connections per case
    // from far more than 8 addresses (the kernel may come round to a port again, so not
    // every one is asked to be new).
    wait_for(|| peers.lock().unwrap().len() >= total / 2);
}
