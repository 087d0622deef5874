//! Accept errors never spin: descriptor exhaustion in a child process with a low
//! RLIMIT_NOFILE, under both policies. The server runs in the child (the limit is per process);
//! the clients run here.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect, hi_and_hold, read_n, wait_for};
use synack::{AcceptErrorKind, FdExhaustionPolicy, Server};

const CLIENTS: usize = 100;
/// Descriptors left to the child's server for connections.
const SPARE_FDS: u64 = 30;

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// The server side, run by the tests below in a child process of this test binary.
#[test]
#[ignore = "run in a child process by the fd-exhaustion tests"]
fn fd_exhaustion_child() {
    let Ok(policy) = std::env::var("SYNACK_FD_POLICY") else {
        common::skipped(
            "fd_exhaustion_child",
            "a helper run in a child process by the fd-exhaustion tests; it checks nothing on its own",
        );
        return;
    };
    let policy = match policy.as_str() {
        "shed" => FdExhaustionPolicy::Shed,
        _ => FdExhaustionPolicy::Backoff,
    };
    let in_workers = std::env::var("SYNACK_IN_WORKERS").is_ok_and(|v| v == "1");
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .accept_in_workers(in_workers)
        .fd_exhaustion_policy(policy)
        .serve(hi_and_hold)
        .unwrap();
    let (_, hard) = synack_sys::nofile_limit().unwrap();
    synack_sys::set_nofile_limit(open_fds() + SPARE_FDS, hard).unwrap();
    // Written to the real stdout: the test harness captures println!.
    let mut out = std::io::stdout();
    writeln!(out, "PORT {}", server.local_addr().port()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lines() {
        match line.unwrap().as_str() {
            "stats" => {
                let s = server.stats();
                writeln!(
                    out,
                    "STATS accepted={} fd_errors={} errors={} shed={} open={}",
                    s.accepted,
                    s.accept_errors.get(AcceptErrorKind::ProcessFdLimit),
                    s.accept_errors.total(),
                    s.shed,
                    s.open
                )
                .unwrap();
                out.flush().unwrap();
            }
            _ => break,
        }
    }
}

struct ChildServer {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl ChildServer {
    fn start(policy: &str, in_workers: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "fd_exhaustion_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SYNACK_FD_POLICY", policy)
            .env("SYNACK_IN_WORKERS", if in_workers { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let port = loop {
            let line = read_line(&mut out);
            // libtest may have written "test fd_exhaustion_child ... " on the same line.
            if let Some((_, p)) = line.split_once("PORT ") {
                break p.trim().parse::<u16>().unwrap();
            }
        };
        ChildServer {
            child,
            stdin,
            out,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn stats(&mut self) -> HashMap<String, u64> {
        writeln!(self.stdin, "stats").unwrap();
        loop {
            let line = read_line(&mut self.out);
            if let Some((_, rest)) = line.split_once("STATS ") {
                return rest
                    .split_whitespace()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_string(), v.parse().unwrap())
                    })
                    .collect();
            }
        }
    }

    fn stop(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child server failed: {status}");
    }
}

fn read_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    let n = out.read_line(&mut line).unwrap();
    assert!(n > 0, "the child server exited early");
    line
}

#[test]
fn backoff_keeps_errors_few_and_recovers() {
    backoff_case(false);
}

#[test]
fn backoff_keeps_errors_few_and_recovers_accepting_in_workers() {
    backoff_case(true);
}

/// The most accept errors the back-off (5 ms doubling to 1 s, the child's defaults) allows on
/// one listener within `elapsed`: the first, then one each time a back-off ends. The first
/// eight back-offs (5, 10, ... 640 ms) end within 1.28 s, each later one lasts 1 s: at most
/// 9 + ceil(elapsed in seconds). Timers never fire early, so a slow or stalled machine only
/// makes `elapsed`, and with it the bound, larger; a spinning acceptor counts thousands of
/// errors a second. (A count bounded from the clock, not a duration asserted.)
fn backoff_error_bound(elapsed: Duration) -> u64 {
    9 + elapsed.as_secs() + 1
}

fn backoff_case(in_workers: bool) {
    let mut server = ChildServer::start("backoff", in_workers);
    // No error can come before the clients do: the episode is at most this long.
    let episode = Instant::now();
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(server.addr)).collect();
    wait_for("the child to run out of descriptors", || {
        server.stats()["fd_errors"] >= 1
    });
    // Let the episode last (a wait, not a measurement): a spinning acceptor would show.
    std::thread::sleep(Duration::from_secs(2));
    let bound = backoff_error_bound(episode.elapsed());
    let s = server.stats();
    eprintln!("backoff, after a 2 s episode: {s:?}, bound {bound}");
    assert!(s["accepted"] < CLIENTS as u64, "{s:?}");
    assert!(
        s["errors"] <= bound,
        "accept errors spun: {s:?}, bound {bound}"
    );
    assert_eq!(s["errors"], s["fd_errors"], "{s:?}");

    // Descriptors come back when the clients leave; the server takes the rest by itself.
    drop(clients);
    wait_for("the queued connections to be accepted", || {
        server.stats()["accepted"] == CLIENTS as u64
    });
    wait_for("every connection closed", || server.stats()["open"] == 0);
    let mut c = connect(server.addr);
    assert_eq!(read_n(&mut c, 2), b"hi");
    drop(c);
    // Recovering, each successful accept restarts the back-off at 5 ms, so a descriptor
    // shortage again (the queued connections arrive faster than their handlers close) may
    // add episodes of up to 9 errors each: 100 leaves room for about ten of them, where a
    // spinning acceptor would count thousands.
    let s = server.stats();
    assert!(s["errors"] < 100, "{s:?}");
    server.stop();
}

#[test]
fn shed_resets_clients_fast_and_recovers() {
    shed_case(false);
}

#[test]
fn shed_resets_clients_fast_and_recovers_accepting_in_workers() {
    shed_case(true);
}

fn shed_case(in_workers: bool) {
    let mut server = ChildServer::start("shed", in_workers);
    // A shed connection's RST may reach the client before its connect() returns (the server
    // accepted and reset it that fast): connect then reports the reset itself.
    let mut reset = 0;
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .filter_map(|_| match TcpStream::connect(server.addr) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                Some(s)
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                reset += 1;
                None
            }
            Err(e) => panic!("connect {}: {e}", server.addr),
        })
        .collect();
    wait_for("every connection served or shed", || {
        let s = server.stats();
        s["accepted"] + s["shed"] == CLIENTS as u64
    });
    let s = server.stats();
    eprintln!("shed: {s:?}");
    assert!(s["shed"] > 0, "{s:?}");
    assert!(s["errors"] <= s["shed"] + 10, "accept errors spun: {s:?}");
    let mut served = 0;
    for c in &mut clients {
        let mut buf = [0u8; 2];
        match c.read_exact(&mut buf) {
            Ok(()) => {
                assert_eq!(&buf, b"hi");
                served += 1;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => reset += 1,
            Err(e) => panic!("unexpected client error: {e}"),
        }
    }
    assert_eq!(served, s["accepted"]);
    assert_eq!(reset, s["shed"]);

    drop(clients);
    wait_for("every connection closed", || server.stats()["open"] == 0);
    let mut c = connect(server.addr);
    assert_eq!(read_n(&mut c, 2), b"hi");
    server.stop();
}
