//! ServerConfig from TOML: every knob, unknown keys and bad values refused by key.

mod common;

use std::time::Duration;

use common::wait_for;
use synack::{Error, ServerConfig};

#[test]
fn the_commented_example_file_parses_and_serves() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/synack.toml");
    let cfg = ServerConfig::from_file(path).unwrap();
    assert_eq!(cfg.backlog, Some(1024));
    assert_eq!(
        cfg.accept_backoff.as_ref().unwrap().max,
        Duration::from_secs(1)
    );
    // Serve on a free port instead of the file's 7878.
    let mut cfg = cfg;
    cfg.bind = vec!["127.0.0.1:0".into()];
    let server = cfg.builder().unwrap().workers(1).serve(common::hi).unwrap();
    assert_eq!(server.listeners()[0].effective_backlog, Some(1024));
    assert_eq!(common::fetch(server.local_addr()), "hi");
}

/// What a connection's handler sees of its socket and thread: `nodelay keepalive idle
/// interval retries sched_policy acceptor worker`.
async fn describe(mut conn: synack::Connection) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let line = {
        let s = conn.sock_ref().unwrap();
        let i = conn.info().clone();
        // Field 41 of /proc/thread-self/stat is the scheduling policy (3 = SCHED_BATCH).
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let policy = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(38)
            .unwrap()
            .to_string();
        format!(
            "{} {} {} {} {} {} {} {}\n",
            s.tcp_nodelay()?,
            s.keepalive()?,
            s.tcp_keepalive_time()?.as_secs(),
            s.tcp_keepalive_interval()?.as_secs(),
            s.tcp_keepalive_retries()?,
            policy,
            i.acceptor,
            i.worker
        )
    };
    conn.write_all(line.as_bytes()).await?;
    let mut buf = [0u8; 64];
    while conn.read(&mut buf).await? != 0 {}
    Ok(())
}

/// Connects and sends a byte at once (the listener defers accepting until data arrives).
fn connect_and_send(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use std::io::Write;
    let mut c = common::connect(addr);
    c.write_all(b"x").unwrap();
    c
}

fn devnull_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p == std::path::Path::new("/dev/null"))
        .count()
}

/// Every key of the file, checked at the server (or on its sockets) where it can be seen.
/// Not observable here: `only_v6` (the tests listen on 127.0.0.1 only, and the option applies
/// to IPv6 listeners) and `accept_backoff` (it shows only when descriptors run out; the
/// back-off is exercised in tests/accept_errors.rs); `fd_exhaustion_policy = "shed"` shows
/// only as the descriptor each acceptor keeps in reserve (shedding itself is in
/// tests/accept_errors.rs). Those three are checked as parsed.
#[test]
fn every_knob_reaches_the_server() {
    use std::io::{ErrorKind, Read};
    let cfg = ServerConfig::from_toml_str(
        r#"
        bind = ["127.0.0.1:0"]
        backlog = 77
        max_connections = 3
        workers = 2
        reuse_address = false
        reuse_port = true
        only_v6 = true
        nodelay = false
        defer_accept = "2s"
        fastopen = 8
        recv_buffer_size = 65536
        send_buffer_size = 65536
        keepalive = { idle = "30s", interval = "7s", retries = 4 }
        overload_policy = "reject"
        fd_exhaustion_policy = "shed"
        accept_batch = 16
        accept_backoff = { min = "10ms", max = "2s" }
        probe = true
        sched_batch = true
        accept_in_workers = true
        idle_worker_accepts = false
        fin_with_data = false
        queue_sampling = "5ms"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.only_v6, Some(true));
    assert_eq!(cfg.idle_worker_accepts, Some(false));
    assert_eq!(cfg.fin_with_data, Some(false));
    assert_eq!(
        cfg.accept_backoff,
        Some(synack::BackoffConfig {
            min: Duration::from_millis(10),
            max: Duration::from_secs(2)
        })
    );
    assert_eq!(
        cfg.fd_exhaustion_policy,
        Some(synack::FdExhaustionPolicy::Shed)
    );
    let reserves_before = devnull_fds();
    let server = cfg.builder().unwrap().serve(describe).unwrap();
    // accept_in_workers with workers = 2: two acceptors, and with reuse_port a socket each.
    let s = server.stats();
    assert_eq!(s.workers_alive, vec![true, true]);
    assert_eq!(s.acceptors_alive, vec![true, true]);
    assert_eq!(s.max_connections, 3);
    // fd_exhaustion_policy = "shed": each acceptor keeps a descriptor in reserve.
    assert_eq!(devnull_fds() - reserves_before, 2);
    let ls = server.listeners();
    assert_eq!(ls.len(), 2);
    for (k, l) in ls.iter().enumerate() {
        assert_eq!(l.acceptor, Some(k));
        assert_eq!((l.requested_backlog, l.effective_backlog), (77, Some(77)));
        let fd = server.listener_fd(k).unwrap();
        let sock = socket2::SockRef::from(&fd);
        assert!(!sock.reuse_address().unwrap());
        assert!(sock.reuse_port().unwrap());
        // The kernel doubles what is set, for its bookkeeping.
        assert!(sock.recv_buffer_size().unwrap() >= 65536);
        assert!(sock.send_buffer_size().unwrap() >= 65536);
        assert_eq!(synack_sys::fastopen(&fd).unwrap(), 8);
        assert!(synack_sys::defer_accept(&fd).unwrap() >= 2);
    }
    let addr = server.local_addr();

    // probe: the header comes first; then what the handler sees: nodelay off, keepalive 30 s
    // / 7 s / 4, SCHED_BATCH, and the connection accepted by the worker that runs it.
    let mut c1 = connect_and_send(addr);
    let mut header = [0u8; synack::probe::LEN];
    c1.read_exact(&mut header).unwrap();
    assert!(synack::probe::ProbeHeader::decode(&header).is_some());
    let mut line = [0u8; 64];
    let n = c1.read(&mut line).unwrap();
    let line = String::from_utf8_lossy(&line[..n]).to_string();
    let f: Vec<_> = line.split_whitespace().collect();
    assert_eq!(&f[..6], ["false", "true", "30", "7", "4", "3"], "{line}");
    assert_eq!(f[6], f[7], "{line}");

    // max_connections = 3 with overload_policy = "reject": the fourth is reset.
    let mut held = vec![c1];
    for _ in 0..2 {
        let mut c = connect_and_send(addr);
        let mut h = [0u8; synack::probe::LEN];
        c.read_exact(&mut h).unwrap();
        held.push(c);
    }
    let mut c4 = connect_and_send(addr);
    let e = c4.read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert_eq!(server.stats().rejected, 1);

    // accept_batch = 16 (4 by default in the workers), and queue_sampling: 20 connections
    // queued while paused, split between the two sockets by the kernel, so one of them holds
    // at least 10; resumed, its first batch takes more than 4 and at most 16 (all reset: the
    // limit is taken).
    server.pause();
    let mut queued: Vec<_> = (0..20).map(|_| connect_and_send(addr)).collect();
    let depth = |s: &synack::Stats, f: fn(&synack::ListenerStats) -> Option<u32>| {
        s.listeners.iter().map(|l| f(l).unwrap_or(0)).sum::<u32>()
    };
    wait_for("20 connections queued", || {
        depth(&server.stats(), |l| l.queue_len) == 20
    });
    wait_for("the sampler to see them", || {
        depth(&server.stats(), |l| l.peak_queue_len) == 20
    });
    server.resume();
    for c in &mut queued {
        let e = c.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    }
    wait_for("every rejection counted", || server.stats().rejected == 21);
    let batch = server.stats().accept_batch.max();
    assert!(
        batch > synack::IN_WORKER_ACCEPT_BATCH as u64 && batch <= 16,
        "largest accept batch {batch}"
    );
    drop(held);

    // acceptors = 2 (acceptor threads), and reuse_address left at its default (on).
    let cfg = ServerConfig::from_toml_str(
        r#"
        bind = ["127.0.0.1:0"]
        acceptors = 2
        workers = 1
        "#,
    )
    .unwrap();
    let server = cfg.builder().unwrap().serve(common::hi).unwrap();
    assert_eq!(server.stats().acceptors_alive, vec![true, true]);
    assert_eq!(server.listeners().len(), 1);
    assert_eq!(server.listeners()[0].acceptor, None);
    let fd = server.listener_fd(0).unwrap();
    assert!(socket2::SockRef::from(&fd).reuse_address().unwrap());
    assert_eq!(common::fetch(server.local_addr()), "hi");
}

fn refused(toml: &str) -> String {
    match ServerConfig::from_toml_str(toml) {
        Err(e @ Error::Config { .. }) => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let e = refused("bakclog = 5");
    assert!(e.contains("bakclog"), "{e}");
    let e = refused("keepalive = { idle = \"60s\", intervall = \"1s\" }");
    assert!(e.contains("keepalive") && e.contains("intervall"), "{e}");
    let e = refused("backlog = 0");
    assert!(
        e.contains("key `backlog`") && e.contains("between 1 and"),
        "{e}"
    );
    let e = refused("backlog = -3");
    assert!(e.contains("backlog"), "{e}");
    let e = refused("overload_policy = \"drop\"");
    assert!(e.contains("overload_policy") && e.contains("queue"), "{e}");
    let e = refused("queue_sampling = \"soon\"");
    assert!(e.contains("queue_sampling"), "{e}");
    let e = refused("workers = 0");
    assert!(e.contains("key `workers`"), "{e}");
    let e = refused("accept_backoff = { min = \"2s\", max = \"1s\" }");
    assert!(e.contains("accept_backoff"), "{e}");
    let e = refused("bind = [\"no-such-host.invalid:80\"]");
    assert!(
        e.contains("key `bind`") && e.contains("no-such-host.invalid"),
        "{e}"
    );
    let e = refused("defer_accept = \"500ms\"");
    assert!(
        e.contains("key `defer_accept`") && e.contains("500ms") && e.contains("at least 1 s"),
        "{e}"
    );
    let e = refused("keepalive = { idle = \"200ms\" }");
    assert!(
        e.contains("key `keepalive.idle`") && e.contains("200ms") && e.contains("at least 1 s"),
        "{e}"
    );
    let e = refused("keepalive = { idle = \"60s\", interval = \"0s\" }");
    assert!(e.contains("key `keepalive.interval`"), "{e}");
    let e = refused("keepalive = { idle = \"60s\", retries = 0 }");
    assert!(e.contains("key `keepalive.retries`"), "{e}");
    let e = refused("backlog = ");
    assert!(e.contains("<string>"), "{e}");
    let err = ServerConfig::from_file("/nonexistent/synack.toml").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/synack.toml"),
        "{err}"
    );
}

#[test]
fn sub_second_defer_accept_and_keepalive_are_refused_by_the_builder() {
    let b = || synack::Server::builder().bind("127.0.0.1:0").unwrap();
    let e = b()
        .defer_accept(Duration::from_millis(999))
        .check()
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidConfig { name: "defer_accept", value, .. } if value == "999ms"),
        "{e}"
    );
    let e = b()
        .keepalive(synack::Keepalive::after(Duration::from_millis(10)))
        .check()
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::InvalidConfig {
                name: "keepalive.idle",
                ..
            }
        ),
        "{e}"
    );
    // Whole seconds are taken.
    b().defer_accept(Duration::from_secs(1)).check().unwrap();
    b().keepalive(synack::Keepalive::after(Duration::from_secs(1)))
        .check()
        .unwrap();
}
