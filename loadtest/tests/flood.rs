//! synack-load against real servers on loopback (and one network namespace of its own).
//! No timed assertions: counts and classes only.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synack_load::report::{FloodReport, SCHEMA, hlog};
use tokio::io::AsyncWriteExt;

mod common;
use common::{bin, flood, greeting_server, skip_or_fail, tmp, wait_for};

#[test]
fn every_attempt_is_accounted_for_in_table_json_and_hlog() {
    let server = greeting_server();
    let addr = server.local_addr().to_string();
    let hlog_path = tmp("accounting.hlog");
    let (out, rep) = flood(
        &addr,
        &[
            "--connections",
            "500",
            "--concurrency",
            "16",
            "--read",
            "2",
            "--threads",
            "2",
            "--hlog",
            hlog_path.to_str().unwrap(),
        ],
        "accounting",
    );
    assert_eq!(rep.schema, SCHEMA);
    assert_eq!(rep.attempts, 500);
    assert_eq!(rep.established, 500);
    assert_eq!(rep.outcomes["ok"], 500);
    assert_eq!(rep.outcomes.values().sum::<u64>(), 500);
    assert_eq!(rep.latency_us["connect"].count, 500);
    assert_eq!(rep.latency_us["first_byte"].count, 500);
    assert_eq!(
        rep.syn_retransmits
            .iter()
            .map(|b| b.connections)
            .sum::<u64>(),
        500
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("attempts 500   established 500   ok 500"),
        "{table}"
    );
    let kernel = rep.kernel.as_ref().expect("Linux publishes TCP counters");
    assert_eq!(kernel.scope, "host");
    assert!(kernel.counters["Tcp.ActiveOpens"] >= 500);
    // The interval log holds the same 500 connects.
    let intervals = hlog::read(&hlog_path).unwrap();
    assert!(!intervals.is_empty());
    let total: u64 = intervals.iter().map(|i| i.histogram.len()).sum();
    assert_eq!(total, 500);
    assert!(
        intervals
            .iter()
            .all(|i| i.tag.as_deref() == Some(hlog::CONNECT_TAG))
    );
    let merged = bin()
        .args([
            "merge",
            hlog_path.to_str().unwrap(),
            hlog_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(merged.status.success());
    let text = String::from_utf8(merged.stdout).unwrap();
    assert!(text.contains("1000 values"), "{text}");
    // The server agrees.
    let s = server.stats();
    assert_eq!(s.accepted, 500);
}

#[test]
fn json_report_round_trips() {
    let server = greeting_server();
    let (_, rep) = flood(
        &server.local_addr().to_string(),
        &["--connections", "20", "--rate", "2k"],
        "roundtrip",
    );
    let text = serde_json::to_string(&rep).unwrap();
    let back: FloodReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, rep);
    assert_eq!(rep.mode, "open");
    assert_eq!(rep.attempts, 20);
    assert_eq!(rep.latency_us["from_schedule"].count, 20);
    assert_eq!(rep.latency_us["start_lag"].count, 20);
}

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

#[test]
fn hold_keeps_connections_open_for_the_server() {
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|mut c: synack::Connection| async move {
            let mut b = [0u8; 16];
            while tokio::io::AsyncReadExt::read(&mut c, &mut b).await? != 0 {}
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let addr = server.local_addr().to_string();
    let child = bin()
        .args([
            "flood",
            &addr,
            "--quiet",
            "--connections",
            "10",
            "--concurrency",
            "10",
            "--hold",
            "3s",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| server.stats().open == 10);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    wait_for(|| server.stats().open == 0);
}

#[test]
fn bad_input_is_refused_with_the_flag_and_exit_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["flood", "no-such-host.invalid:80"],
            "no-such-host.invalid:80",
        ),
        (&["flood", "127.0.0.1:0"], "port 0"),
        (&["flood", "127.0.0.1"], "127.0.0.1"),
        (&["flood", "127.0.0.1:9", "--rate", "0"], "--rate"),
        (
            &["flood", "127.0.0.1:9", "--rate", "1k", "--concurrency", "4"],
            "--concurrency",
        ),
        (&["flood", "127.0.0.1:9", "--ramp", "5k..1k"], "--ramp"),
        (
            &["flood", "127.0.0.1:9", "--duration", "soon"],
            "--duration",
        ),
        (&["flood", "127.0.0.1:9", "--source", "::1"], "--source"),
        (&["flood", "127.0.0.1:9", "--threads", "0"], "--threads"),
        (
            &["flood", "127.0.0.1:9", "--server-workers", "2"],
            "--server-workers",
        ),
        (
            &["flood", "127.0.0.1:9", "--server-accept-in-workers"],
            "--server-accept-in-workers",
        ),
    ];
    for (args, needle) in cases {
        let out = bin().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let out = bin().args(["flood", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--rate",
        "--concurrency",
        "--ramp",
        "--duration",
        "--connections",
        "--send",
        "--read",
        "--read-timeout",
        "--hold",
        "--close",
        "--fresh-sockets",
        "--threads",
        "--source",
        "--connect-timeout",
        "--json",
        "--hlog",
        "--quiet",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("[default: 10s]"));
    assert!(help.contains("[default: 3s]"));
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn an_unreachable_route_in_a_namespace_gives_unreachable() {
    let name = format!("synack-load-test-{}", std::process::id());
    if let Err(why) = ip(&["netns", "add", &name]) {
        return skip_or_fail(
            "an_unreachable_route_in_a_namespace_gives_unreachable",
            &format!("needs root and iproute2 ({why})"),
        );
    }
    let ns = Netns(name);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
    // TEST-NET-1, only inside this namespace, routed nowhere: no packet leaves.
    ip(&["-n", &ns.0, "route", "add", "unreachable", "192.0.2.0/24"]).unwrap();
    let json = tmp("unreachable.json");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_synack-load")])
        .args([
            "flood",
            "192.0.2.1:80",
            "--quiet",
            "--connections",
            "5",
            "--concurrency",
            "5",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: FloodReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep.outcomes["unreachable"], 5, "{rep:#?}");
    // Without --connections, a closed loop whose every start fails at once still ends at
    // --duration (it used to spin forever), with each attempt classified.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_synack-load")])
        .args([
            "flood",
            "192.0.2.1:80",
            "--quiet",
            "--duration",
            "300ms",
            "--concurrency",
            "5",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: FloodReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(rep.outcomes["unreachable"] >= 1, "{rep:#?}");
    assert_eq!(rep.outcomes.values().sum::<u64>(), rep.attempts);
    assert_eq!(rep.outcomes["unreachable"], rep.attempts);
}

#[test]
fn embedded_runs_a_synack_server_and_floods_it() {
    let out = bin()
        .args([
            "flood",
            "--embedded",
            "--quiet",
            "--connections",
            "100",
            "--read",
            "18",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("established 100   ok 100"), "{text}");
    assert!(text.contains("embedded synack server 127.0.0.1:"), "{text}");
    assert!(text.contains("accepted 100"), "{text}");
}

#[test]
fn send_then_read_round_trips_through_an_echo_server() {
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|conn: synack::Connection| async move {
            let (mut rd, mut wr) = tokio::io::split(conn);
            tokio::io::copy(&mut rd, &mut wr).await
        })
        .unwrap();
    let (_, rep) = flood(
        &server.local_addr().to_string(),
        &[
            "--connections",
            "30",
            "--send",
            "100",
            "--read",
            "100",
            "--close",
            "fin",
        ],
        "echo",
    );
    assert_eq!(rep.outcomes["ok"], 30, "{rep:#?}");
    assert_eq!(rep.latency_us["first_byte"].count, 30);
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
    let out = bin()
        .args([
            "flood",
            &server.local_addr().to_string(),
            "--quiet",
            "--connections",
            "50",
            "--probe",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
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
