//! `synack-load diagnose` on real listeners: a backlog-5 listener that never accepts, made to
//! overflow; two SO_REUSEPORT sockets as one group; the exporter's scrape; a namespace whose
//! somaxconn clamps a backlog (root); a listener of another user's process (root). Reading
//! only: diagnose itself sends nothing. Bounded waits, no timed assertions.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use synack_load::report::diagnose::DiagnoseReport;

mod common;
use common::real::python3;
use common::{Netns, bin, ip, serial, skip_or_fail, tmp};

/// A listener on 127.0.0.1 with `backlog` that never accepts.
fn listener(backlog: i32, reuseport: Option<u16>) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if reuseport.is_some() {
        s.set_reuse_port(true).unwrap();
    }
    let addr: SocketAddr = ([127, 0, 0, 1], reuseport.unwrap_or(0)).into();
    s.bind(&addr.into()).unwrap();
    s.listen(backlog).unwrap();
    s
}

fn port(s: &Socket) -> u16 {
    s.local_addr().unwrap().as_socket().unwrap().port()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Starts `synack-load diagnose ARGS --json FILE`; waits for it with [`finish`].
fn diagnose(args: &[&str], name: &str) -> (Child, std::path::PathBuf) {
    let json = tmp(&format!("{name}.json"));
    let child = bin()
        .arg("diagnose")
        .args(args)
        .args(["--json", json.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, json)
}

fn finish(child: Child, json: &std::path::Path) -> (Output, DiagnoseReport) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rep: DiagnoseReport = serde_json::from_str(&std::fs::read_to_string(json).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out, rep)
}

/// Waits (bounded: 10 s) until diagnose has taken its first reading: its JSON does not exist
/// yet, so wait for the listener's inode to be read through /proc by... the simplest sign is
/// time; diagnose reads within milliseconds of starting, so wait until it has run 300 ms.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// Non-blocking connects from 127.0.0.1 to `port`: `n` of them, kept open.
fn connects(port: u16, n: usize) -> Vec<Socket> {
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    (0..n)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&to.into());
            s
        })
        .collect()
}

#[test]
fn a_full_listener_is_found_with_its_drops_its_process_and_a_finding() {
    let _turn = serial();
    let l = listener(5, None);
    let p = port(&l);
    let (child, json) = diagnose(
        &[&p.to_string(), "--duration", "2s", "--interval", "10ms"],
        "full",
    );
    settle();
    // 40 clients at a queue of 6 (backlog 5): the rest of the SYNs are dropped, and dropped
    // again when they are retransmitted a second later.
    let _clients = connects(p, 40);
    let (out, rep) = finish(child, &json);
    let all = text(&out);
    assert_eq!(rep.schema, synack_load::report::diagnose::SCHEMA);
    assert_eq!(rep.listeners.len(), 1, "{all}");
    let me = &rep.listeners[0];
    assert_eq!(me.address, format!("127.0.0.1:{p}"));
    assert_eq!(me.effective_backlog, 5);
    assert_eq!(me.peak_queue, 6, "Linux holds backlog + 1: {all}");
    assert!(me.full_fraction > 0.0, "{all}");
    assert!(me.drops.unwrap() > 0, "{all}");
    assert!(
        me.processes.iter().any(|p| p.pid == std::process::id()),
        "{:?}",
        me.processes
    );
    let f = &rep.findings[0];
    assert_eq!(f.severity, "problem", "{all}");
    assert_eq!(f.listener.as_deref(), Some(me.address.as_str()));
    assert!(
        f.text
            .contains(&format!("dropped {} SYNs/ACKs", me.drops.unwrap())),
        "{}",
        f.text
    );
    assert!(all.contains("problem:"), "{all}");
    // The JSON reads back as written.
    let again: DiagnoseReport =
        serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
    assert_eq!(again, rep);
    drop(l);
}

#[test]
fn so_reuseport_sockets_on_one_address_are_one_group() {
    let _turn = serial();
    let a = listener(16, Some(0));
    let p = port(&a);
    let b = listener(16, Some(p));
    let (child, json) = diagnose(&[&p.to_string(), "--duration", "300ms"], "reuseport");
    let (out, rep) = finish(child, &json);
    assert_eq!(rep.listeners.len(), 1, "{}", text(&out));
    assert_eq!(rep.listeners[0].sockets, 2);
    assert_eq!(rep.listeners[0].members.len(), 2);
    assert_eq!(rep.listeners[0].effective_backlog, 32);
    drop((a, b));
}

#[test]
fn what_cannot_be_watched_is_refused() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = free.local_addr().unwrap().port();
    drop(free);
    for (args, want) in [
        (vec![p.to_string()], "nothing listens on it"),
        (vec!["192.0.2.7:80".into()], "not an address of this host"),
        (vec!["eighty".into()], "expected a port"),
        (vec!["--interval".into(), "0s".into()], "must be above zero"),
        // The exporter runs until stopped: a duration would be ignored.
        (
            vec![
                "--serve".into(),
                "127.0.0.1:1".into(),
                "--duration".into(),
                "1s".into(),
            ],
            "cannot be used with",
        ),
    ] {
        let out = bin().arg("diagnose").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
}

/// `GET /metrics` from `addr` (bounded: 5 s), retried until it answers (bounded: 10 s).
fn scrape(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.contains("synack_listener_backlog") {
                return body;
            }
        }
        assert!(Instant::now() < deadline, "no metrics from {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_exporter_serves_a_scrape_that_parses() {
    let _turn = serial();
    let l = listener(7, None);
    let p = port(&l);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = free.local_addr().unwrap();
    drop(free);
    let json = tmp("exporter.json");
    let mut child = bin()
        .args(["diagnose", &p.to_string(), "--serve", &at.to_string()])
        .args(["--json", json.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _clients = connects(p, 3);
    let body = scrape(at);
    let body = body.split("\r\n\r\n").nth(1).unwrap_or(&body).to_string();
    // Every sample line: `name{labels} value`, the value a number.
    let mut samples = 0;
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(name.starts_with("synack_"), "{line}");
        samples += 1;
    }
    assert!(samples > 0, "{body}");
    let ours = format!("address=\"127.0.0.1:{p}\"");
    let backlog = body
        .lines()
        .find(|l| l.starts_with("synack_listener_backlog{") && l.contains(&ours))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(backlog.ends_with(" 7"), "{backlog}");
    // A second scrape has the peak since the first.
    let body = scrape(at);
    assert!(body.contains("synack_listener_queue_peak{"), "{body}");
    // Ctrl-C ends it with a report.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "diagnose --serve ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(json.exists());
    drop(l);
}

/// A python3 listener asking for `backlog`, run by `prefix` (a namespace, another user; the
/// system's interpreter, which another user can reach, where there is one).
fn python_listener(prefix: &[&str], backlog: u32) -> Option<Child> {
    let system = std::path::PathBuf::from("/usr/bin/python3");
    let python = if system.exists() { system } else { python3()? };
    let code = format!(
        "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen({backlog})\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)"
    );
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..])
        .arg(python)
        .args(["-c", &code])
        .stdout(Stdio::piped());
    Some(cmd.spawn().unwrap())
}

fn read_port(child: &mut Child) -> u16 {
    use std::io::BufRead as _;
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the listener said nothing");
    line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"))
}

#[test]
fn a_backlog_clamped_by_the_namespaces_somaxconn_is_found() {
    let _turn = serial();
    let name = format!("synack-diag-{}", std::process::id());
    if let Err(why) = ip(&["netns", "add", &name]) {
        return skip_or_fail(
            "a_backlog_clamped_by_the_namespaces_somaxconn_is_found",
            &format!("needs root and iproute2 ({why})"),
        );
    }
    let ns = Netns(name);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
    let set = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "sysctl",
            "-qw",
            "net.core.somaxconn=64",
        ])
        .status()
        .unwrap();
    assert!(set.success());
    let Some(mut server) = python_listener(&["ip", "netns", "exec", &ns.0], 1024) else {
        return skip_or_fail(
            "a_backlog_clamped_by_the_namespaces_somaxconn_is_found",
            "python3 is not installed",
        );
    };
    let p = read_port(&mut server);
    let json = tmp("clamp.json");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_synack-load")])
        .args(["diagnose", &p.to_string(), "--duration", "300ms"])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "{}", text(&out));
    let rep: DiagnoseReport =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep.sysctls["net.core.somaxconn"], "64");
    assert_eq!(
        rep.listeners[0].effective_backlog, 64,
        "asked 1024, granted 64"
    );
    assert!(
        rep.findings
            .iter()
            .any(|f| f.severity == "warning" && f.text.contains("probably clamped")),
        "{:?}",
        rep.findings
    );
}

#[test]
fn a_listener_of_another_users_process_is_seen_as_root() {
    let _turn = serial();
    if !synack_sys::is_root() {
        return skip_or_fail(
            "a_listener_of_another_users_process_is_seen_as_root",
            "needs root",
        );
    }
    // nobody (65534) runs it; setpriv is util-linux's.
    let Some(mut server) = python_listener(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        9,
    ) else {
        return skip_or_fail(
            "a_listener_of_another_users_process_is_seen_as_root",
            "python3 is not installed",
        );
    };
    let p = read_port(&mut server);
    let (child, json) = diagnose(&[&p.to_string(), "--duration", "300ms"], "other-user");
    let (out, rep) = finish(child, &json);
    let pid = server.id();
    let _ = server.kill();
    let _ = server.wait();
    let l = &rep.listeners[0];
    assert_eq!(l.uid, 65534, "{}", text(&out));
    assert_eq!(l.effective_backlog, 9);
    // The interpreter itself holds it (setpriv execs it): its pid, its command.
    assert!(
        l.processes
            .iter()
            .any(|p| p.pid == pid && p.command.starts_with("python")),
        "{:?}",
        l.processes
    );
}

#[test]
fn the_grafana_dashboard_asks_only_for_metrics_the_exporter_serves() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana/synack-diagnose.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // The metrics the exporter's documentation lists (src/exporter.rs).
    let exporter = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/exporter.rs"),
    )
    .unwrap();
    let mut exprs = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            exprs += 1;
            for name in e
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("synack_"))
            {
                assert!(
                    exporter.contains(&format!("`{name}`")),
                    "{name} (in {e:?}) is not a metric the exporter serves"
                );
            }
        }
    }
    assert!(exprs >= 8, "{exprs}");
}
