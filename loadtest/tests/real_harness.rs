//! The harness for real servers nobody here wrote (tests/common/real.rs): nginx counts each
//! request in its access log, and tests/data/backlog_server.py listens with the backlog it is
//! asked for. They skip visibly without nginx or python3 (and fail under CI=true).
//! No timed assertions: bounded waits only.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use synack_sys::diag::Diag;

mod common;
use common::real::{Nginx, backlog_server_script, free_port, python3};
use common::skip_or_fail;

const BOUND: Duration = Duration::from_secs(5);

/// Sends `request` on a new connection and reads the answer to EOF (bounded: 5 s per read).
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect_timeout(&addr, BOUND).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("reading the answer from {addr}: {e}"));
    String::from_utf8_lossy(&answer).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// The effective backlog of the listener on `addr`, as inet_diag shows it.
fn backlog_of(addr: SocketAddr) -> u32 {
    let q = Diag::new().unwrap().listener_queue(addr).unwrap();
    assert_eq!(q.sockets, 1, "{q:?}");
    q.backlog
}

#[test]
fn nginx_serves_and_logs_each_request() {
    let Some(nginx) = Nginx::start(
        64,
        r#"location = /health { return 200 "ok\n"; } location / { return 404; }"#,
    ) else {
        return skip_or_fail(
            "nginx_serves_and_logs_each_request",
            "no nginx in PATH or /usr/sbin",
        );
    };
    assert_eq!(backlog_of(nginx.addr), 64);
    for _ in 0..5 {
        let answer = get(nginx.addr, "/health");
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    }
    for _ in 0..2 {
        let answer = get(nginx.addr, "/nope");
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    }
    let error_log = nginx.error_log();
    let log = nginx.stop_and_log();
    let mut statuses = BTreeMap::new();
    for line in &log {
        assert_eq!(line.method, "GET", "{line:?}");
        let uri = if line.status == 200 {
            "/health"
        } else {
            "/nope"
        };
        assert_eq!(line.uri, uri, "{line:?}");
        *statuses.entry(line.status).or_insert(0u64) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 5), (404, 2)]),
        "{log:?}\nerror.log:\n{error_log}"
    );
}

#[test]
fn nginx_statuses_count_while_running_and_every_instance_has_its_own_dir() {
    let locations = r#"location = /health { return 200 "ok\n"; }"#;
    let (Some(a), Some(b)) = (Nginx::start(16, locations), Nginx::start(16, locations)) else {
        return skip_or_fail(
            "nginx_statuses_count_while_running_and_every_instance_has_its_own_dir",
            "no nginx in PATH or /usr/sbin",
        );
    };
    assert_ne!(a.dir(), b.dir());
    assert_ne!(a.addr, b.addr);
    get(a.addr, "/health");
    get(b.addr, "/elsewhere");
    // Each request is written when it is done, not only at exit.
    common::wait_for(|| a.statuses() == BTreeMap::from([(200, 1)]));
    common::wait_for(|| b.statuses() == BTreeMap::from([(404, 1)]));
    let dir = a.dir().to_path_buf();
    a.stop();
    b.stop();
    assert!(dir.join("access.log").is_file());
}

/// Kills the child at the end, also when the test panics.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn python_backlog_server_listens_with_the_backlog_asked() {
    let Some(python) = python3() else {
        return skip_or_fail(
            "python_backlog_server_listens_with_the_backlog_asked",
            "no python3 in PATH or /usr/bin",
        );
    };
    let port = free_port();
    let mut server = Reap(
        Command::new(&python)
            .arg(backlog_server_script())
            .args(["--port", &port.to_string(), "--backlog", "7"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Its line, read on a thread so that the wait is bounded.
    let stdout = server.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("backlog_server.py said nothing in 10 s");
    assert_eq!(line, format!("listening 127.0.0.1:{port} backlog 7\n"));

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(backlog_of(addr), 7);
    assert_eq!(exchange(addr, b"hello\r\n\r\n"), "ok\n");

    let pid = server.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "backlog_server.py still runs 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}
