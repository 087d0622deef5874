//! Listener: IPv4/IPv6, explicit and validated backlog, effective backlog, socket options,
//! bind errors, adoption, SO_REUSEPORT.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{fetch, hi, wait_for};
use socket2::SockRef;
use synack::{Error, Keepalive, Server};
use tokio::io::AsyncWriteExt;

#[test]
fn binds_ipv4_and_ipv6_with_the_backlog_asked() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .bind("[::1]:0")
        .unwrap()
        .only_v6(true)
        .backlog(128)
        .workers(1)
        .serve(hi)
        .unwrap();
    let ls = server.listeners();
    assert_eq!(ls.len(), 2);
    assert!(ls[0].local_addr.is_ipv4() && ls[1].local_addr.is_ipv6());
    for l in ls {
        assert_ne!(l.local_addr.port(), 0);
        assert_eq!(l.requested_backlog, 128);
        assert_eq!(l.effective_backlog, Some(128));
        assert_eq!(fetch(l.local_addr), "hi");
    }
    assert_eq!(server.local_addrs().len(), 2);
    let v6 = server.listener_fd(1).unwrap();
    assert!(SockRef::from(&v6).only_v6().unwrap());
}

#[test]
fn backlog_zero_or_out_of_range_is_refused_by_name() {
    for bad in [0u32, u32::MAX] {
        let err = Server::builder()
            .bind("127.0.0.1:0")
            .unwrap()
            .backlog(bad)
            .serve(hi)
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                name: "backlog",
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains(&format!("backlog {bad}")), "{msg}");
        assert!(msg.contains("between 1 and"), "{msg}");
    }
}

#[test]
fn other_bad_settings_are_refused_by_name() {
    let b = || Server::builder().bind("127.0.0.1:0").unwrap();
    let cases: Vec<(&str, Error)> = vec![
        ("workers 0", b().workers(0).serve(hi).unwrap_err()),
        ("acceptors 0", b().acceptors(0).serve(hi).unwrap_err()),
        (
            "max_connections 0",
            b().max_connections(0).serve(hi).unwrap_err(),
        ),
        ("accept_batch 0", b().accept_batch(0).serve(hi).unwrap_err()),
        (
            "accept_backoff",
            b().accept_backoff(Duration::from_secs(2), Duration::from_secs(1))
                .serve(hi)
                .unwrap_err(),
        ),
        ("no listener", Server::builder().serve(hi).unwrap_err()),
    ];
    for (want, err) in cases {
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    let err = Server::builder()
        .bind("no-such-host.invalid:80")
        .unwrap_err();
    assert!(matches!(err, Error::Resolve { .. }));
    assert!(err.to_string().contains("no-such-host.invalid:80"), "{err}");
}

#[test]
fn bind_in_use_names_the_address_and_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Server::builder().bind(addr).unwrap().serve(hi).unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(msg.contains("already in use"), "{msg}");
}

#[test]
fn backlog_above_somaxconn_is_capped_reported_and_warned() {
    let somaxconn = synack_sys::somaxconn().expect("somaxconn is readable on Linux");
    let asked = somaxconn + 1000;
    let logs = common::Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let server = tracing::subscriber::with_default(subscriber, || {
        Server::builder()
            .bind("127.0.0.1:0")
            .unwrap()
            .backlog(asked)
            .workers(1)
            .serve(hi)
            .unwrap()
    });
    let l = &server.listeners()[0];
    assert_eq!(l.requested_backlog, asked);
    assert_eq!(l.effective_backlog, Some(somaxconn));
    assert_eq!(l.somaxconn, Some(somaxconn));
    assert_eq!(
        server.stats().listeners[0].effective_backlog,
        Some(somaxconn)
    );
    let text = logs.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("net.core.somaxconn"), "{text}");
}

#[test]
fn connection_options_reach_accepted_sockets() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .keepalive(Keepalive::after(Duration::from_secs(42)))
        .recv_buffer_size(256 * 1024)
        .workers(1)
        .serve(|mut conn: synack::Connection| async move {
            let s = conn.sock_ref().expect("an open socket");
            let line = format!(
                "nodelay={} keepalive={} idle={} rcvbuf={}",
                s.tcp_nodelay()?,
                s.keepalive()?,
                s.tcp_keepalive_time()?.as_secs(),
                s.recv_buffer_size()?
            );
            conn.write_all(line.as_bytes()).await?;
            conn.shutdown().await
        })
        .unwrap();
    let got = fetch(server.local_addr());
    assert!(got.contains("nodelay=true"), "{got}");
    assert!(got.contains("keepalive=true"), "{got}");
    assert!(got.contains("idle=42"), "{got}");
    // Linux doubles SO_RCVBUF for bookkeeping.
    let rcvbuf: usize = got.rsplit("rcvbuf=").next().unwrap().parse().unwrap();
    assert!(rcvbuf >= 256 * 1024, "{got}");

    let plain = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .nodelay(false)
        .workers(1)
        .serve(|mut conn: synack::Connection| async move {
            let nd = conn.sock_ref().expect("an open socket").tcp_nodelay()?;
            conn.write_all(format!("nodelay={nd}").as_bytes()).await
        })
        .unwrap();
    assert_eq!(fetch(plain.local_addr()), "nodelay=false");
}

#[test]
fn defer_accept_and_fastopen_are_set_on_the_listener() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .defer_accept(Duration::from_secs(5))
        .fastopen(16)
        .workers(1)
        .serve(common::hi)
        .unwrap();
    let fd = server.listener_fd(0).unwrap();
    assert!(synack_sys::defer_accept(&fd).unwrap() >= 5);
    assert_eq!(synack_sys::fastopen(&fd).unwrap(), 16);
    // With TCP_DEFER_ACCEPT the connection reaches the handler once the client speaks.
    let mut c = common::connect(server.local_addr());
    std::io::Write::write_all(&mut c, b"x").unwrap();
    assert_eq!(common::read_n(&mut c, 2), b"hi");
}

#[test]
fn adopts_a_bound_std_listener() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let server = Server::builder()
        .adopt(std_listener)
        .backlog(77)
        .workers(1)
        .serve(hi)
        .unwrap();
    let l = &server.listeners()[0];
    assert!(l.adopted);
    assert_eq!(l.local_addr, addr);
    assert_eq!(l.effective_backlog, Some(77));
    assert_eq!(fetch(addr), "hi");

    // A socket2 socket that is bound but not yet listening works too.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let server = Server::builder().adopt(sock).workers(1).serve(hi).unwrap();
    assert_eq!(fetch(server.local_addr()), "hi");

    // An unbound socket is refused with the reason.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let err = Server::builder().adopt(sock).serve(hi).unwrap_err();
    assert!(err.to_string().contains("not bound"), "{err}");
}

#[test]
fn reuse_port_gives_each_acceptor_its_own_socket() {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let seen2 = seen.clone();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .reuse_port(true)
        .acceptors(2)
        .workers(1)
        .serve(move |conn: synack::Connection| {
            seen2
                .lock()
                .unwrap()
                .insert((conn.info().acceptor, conn.info().listener));
            hi(conn)
        })
        .unwrap();
    let ls = server.listeners();
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[0].local_addr, ls[1].local_addr);
    assert_eq!(ls[0].acceptor, Some(0));
    assert_eq!(ls[1].acceptor, Some(1));
    assert_eq!(server.local_addrs(), vec![ls[0].local_addr]);
    // The kernel hashes each connection's 4-tuple to one socket: over many connections from
    // different source ports, both sockets (and so both acceptors) get some.
    let mut n = 0;
    wait_for("both acceptors to accept", || {
        n += 1;
        assert!(n <= 2000, "2000 connections all went to one acceptor");
        assert_eq!(fetch(server.local_addr()), "hi");
        seen.lock().unwrap().len() == 2
    });
    let seen = seen.lock().unwrap();
    assert!(seen.contains(&(0, 0)) && seen.contains(&(1, 1)), "{seen:?}");
}
