//! Restarts that lose nothing, proven with the generator: `examples/greeting --handoff` under
//! an open-loop flood, handed over on SIGHUP several times in a row (every attempt ok, no SYN
//! retransmitted, a new pid each time); the same with 2 workers and `reuse_port`, in the
//! workers and on acceptor threads; a new process that fails to start (the old one still
//! serves); a shrink from 2 accept loops to 1 with and without `tcp_migrate_req` (root, in a
//! network namespace of the test's own); sockets from a simulated socket activation.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{Netns, greeting_bin, ip, serial, skip_or_fail, tmp};
use synack_load::report::FloodReport;

/// The classes a server (not the generator) is to blame for.
const SERVER_FAILURES: [&str; 8] = [
    "refused",
    "timeout",
    "reset",
    "unserved",
    "no_answer",
    "bad_response",
    "unreachable",
    "other",
];

/// A greeting server (and the processes it hands over to): their shared stdout and stderr,
/// line by line.
struct Greeting {
    out: Receiver<String>,
    err: Receiver<String>,
    first: Child,
    /// The pid serving now.
    pid: u32,
    port: u16,
    log: Vec<String>,
}

fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Greeting {
    /// Starts `greeting --handoff --greeting "pid {pid}"` with `args` (in `netns` if given).
    fn start(args: &[&str], netns: Option<&Netns>) -> Greeting {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.0]).arg(greeting_bin());
                c
            }
            None => Command::new(greeting_bin()),
        };
        cmd.args([
            "--handoff",
            "--grace-ms",
            "5000",
            "--greeting",
            "pid {pid}\n",
        ])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut first = cmd.spawn().unwrap();
        let out = lines(first.stdout.take().unwrap());
        let err = lines(first.stderr.take().unwrap());
        let pid = first.id();
        let mut g = Greeting {
            out,
            err,
            first,
            pid,
            port: 0,
            log: Vec::new(),
        };
        let line = g.expect("greeting listening on ");
        let addr = line
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse::<std::net::SocketAddr>()
            .unwrap();
        g.port = addr.port();
        g
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits (bounded) for a stdout line containing `what`.
    fn expect(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(l) = self.out.recv_timeout(Duration::from_millis(100)) {
                self.log.push(l.clone());
                if l.contains(what) {
                    return l;
                }
            }
            self.drain_err();
        }
        panic!(
            "no line with {what:?} in 30 s; output so far:\n{}",
            self.log.join("\n")
        );
    }

    /// A stdout line containing `what`, seen already or waited for.
    fn seen(&mut self, what: &str) -> String {
        match self.log.iter().find(|l| l.contains(what)) {
            Some(l) => l.clone(),
            None => self.expect(what),
        }
    }

    /// Waits (bounded) for a stderr line containing `what`.
    fn expect_err(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(l) = self.err.recv_timeout(Duration::from_millis(100)) {
                self.log.push(l.clone());
                if l.contains(what) {
                    return l;
                }
            }
        }
        panic!(
            "no log line with {what:?} in 30 s; output so far:\n{}",
            self.log.join("\n")
        );
    }

    fn drain_err(&mut self) {
        while let Ok(l) = self.err.try_recv() {
            self.log.push(l);
        }
    }

    /// SIGHUP to the serving process; waits for its report; returns the report line.
    fn handoff(&mut self) -> String {
        signal(self.pid, libc_sighup());
        let line = self.expect("handed over to pid ");
        let new: u32 = line
            .split_whitespace()
            .nth(4)
            .unwrap()
            .trim_end_matches(':')
            .parse()
            .unwrap();
        assert_ne!(new, self.pid, "{line}");
        self.pid = new;
        line
    }
}

impl Drop for Greeting {
    fn drop(&mut self) {
        signal(self.pid, 9);
        let _ = self.first.kill();
        let _ = self.first.wait();
    }
}

fn libc_sighup() -> i32 {
    1
}

fn signal(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

/// What a direct connection is greeted with: `pid N`.
fn greeted_by(addr: &str) -> u32 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.trim().strip_prefix("pid ").unwrap().parse().unwrap()
}

/// A figure from a handoff report line: the number before `what`.
fn figure(line: &str, what: &str) -> u64 {
    let at = line
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} not in {line}"));
    line[..at]
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `synack-load flood` (in `netns` if given) on its own thread.
fn flood_thread(
    addr: String,
    args: Vec<String>,
    name: &str,
    netns: Option<String>,
) -> std::thread::JoinHandle<FloodReport> {
    let json = tmp(&format!("{name}.json"));
    std::thread::spawn(move || {
        let mut cmd = match &netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_synack-load")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_synack-load")),
        };
        cmd.args(["flood", &addr, "--quiet", "--json", json.to_str().unwrap()])
            .args(&args);
        common::json_run(&mut cmd, &json).1
    })
}

/// The flood every handoff test runs: open loop, each answer checked, 5 s.
fn flood_args(rate: u32) -> Vec<String> {
    [
        "--rate",
        &rate.to_string(),
        "--duration",
        "5s",
        "--expect",
        "pid ",
        "--connect-timeout",
        "3s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn server_failures(rep: &FloodReport) -> u64 {
    SERVER_FAILURES
        .iter()
        .map(|c| rep.outcomes.get(*c).copied().unwrap_or(0))
        .sum()
}

fn syn_retransmitted(rep: &FloodReport) -> u64 {
    rep.syn_retransmits
        .iter()
        .filter(|b| b.retransmits > 0)
        .map(|b| b.connections)
        .sum::<u64>()
        + rep.timeouts_retransmitted
}

/// Three handoffs in a row under a 1,000/s open-loop flood.
fn handoffs_under_flood(name: &str, server_args: &[&str]) {
    let _g = serial();
    let mut g = Greeting::start(server_args, None);
    let first = g.pid;
    assert_eq!(greeted_by(&g.addr()), first);
    let flood = flood_thread(g.addr(), flood_args(1000), name, None);
    let mut pids = vec![first];
    let mut reports = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1000));
        let line = g.handoff();
        // The old process's handlers all finished; nothing lost or unaccounted.
        assert_eq!(figure(&line, "aborted"), 0, "{line}");
        assert_eq!(figure(&line, "lost"), 0, "{line}");
        assert_eq!(figure(&line, "unaccounted"), 0, "{line}");
        assert_eq!(figure(&line, "reset at close"), 0, "{line}");
        assert_eq!(greeted_by(&g.addr()), g.pid, "the new process serves");
        pids.push(g.pid);
        reports.push(line);
    }
    let rep = flood.join().unwrap();
    eprintln!(
        "{name}: pids {pids:?}; flood {} attempts, outcomes {:?}\n{}",
        rep.attempts,
        rep.outcomes,
        reports.join("\n")
    );
    // The handoffs fell inside the flood, and every second of it was served.
    assert!(rep.per_second.len() >= 4, "{:?}", rep.per_second);
    assert_eq!(server_failures(&rep), 0, "{:?}", rep.outcomes);
    assert!(rep.outcomes["ok"] > 0);
    assert_eq!(syn_retransmitted(&rep), 0, "{:?}", rep.syn_retransmits);
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "a new pid each time: {pids:?}");
    signal(g.pid, 15);
    g.expect("stopped:");
}

#[test]
fn handoffs_in_a_row_under_a_flood_lose_nothing() {
    handoffs_under_flood(
        "handoff-plain",
        &["--addr", "127.0.0.1:0", "--workers", "1"],
    );
}

#[test]
fn handoffs_with_two_workers_each_accepting_on_its_own_reuse_port_socket() {
    handoffs_under_flood(
        "handoff-in-workers",
        &[
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--reuse-port",
            "--accept-in-workers",
        ],
    );
}

#[test]
fn handoffs_with_two_acceptor_threads_on_reuse_port_sockets() {
    handoffs_under_flood(
        "handoff-acceptors",
        &[
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--acceptors",
            "2",
            "--reuse-port",
        ],
    );
}

#[test]
fn a_new_process_that_fails_to_start_leaves_the_old_one_serving() {
    let _g = serial();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = tmp("handoff-fail.toml");
    let good = "bind = [\"127.0.0.1:0\"]\nworkers = 1\n";
    std::fs::write(&cfg, good).unwrap();
    let mut g = Greeting::start(&["--config", cfg.to_str().unwrap()], None);
    let old = g.pid;
    let flood = flood_thread(g.addr(), flood_args(500), "handoff-fail", None);
    std::thread::sleep(Duration::from_millis(500));

    // 1. The new process cannot read its configuration: it exits before it is ready.
    std::fs::write(&cfg, "workers = \"many\"\n").unwrap();
    signal(g.pid, libc_sighup());
    let why = g.expect_err("handoff failed");
    assert!(why.contains("exited before it was ready"), "{why}");
    assert_eq!(greeted_by(&g.addr()), old, "the old process still serves");

    // 2. The new process cannot bind an address it is asked for: it says so, the old serves.
    let bad = format!(
        "bind = [\"127.0.0.1:0\", \"{}\"]\nworkers = 1\n",
        busy.local_addr().unwrap()
    );
    std::fs::write(&cfg, bad).unwrap();
    signal(g.pid, libc_sighup());
    let why = g.expect_err("handoff failed");
    assert!(
        why.contains("failed to start") && why.contains("cannot bind"),
        "{why}"
    );
    assert_eq!(greeted_by(&g.addr()), old, "the old process still serves");

    // 3. Mended: the next handoff goes through.
    std::fs::write(&cfg, good).unwrap();
    g.handoff();
    assert_ne!(g.pid, old);
    assert_eq!(greeted_by(&g.addr()), g.pid);
    let rep = flood.join().unwrap();
    eprintln!("handoff-fail: outcomes {:?}", rep.outcomes);
    assert_eq!(server_failures(&rep), 0, "{:?}", rep.outcomes);
    assert_eq!(syn_retransmitted(&rep), 0);
    signal(g.pid, 15);
    g.expect("stopped:");
}

/// A namespace with loopback up and `tcp_migrate_req` as asked; `None` (skipped) without root.
fn netns_with_migrate(test: &str, migrate: bool) -> Option<Netns> {
    if !synack_sys::is_root() {
        skip_or_fail(test, "needs root for a network namespace and its sysctls");
        return None;
    }
    let name = format!("synack-handoff-{}-{}", std::process::id(), migrate as u8);
    if let Err(why) = ip(&["netns", "add", &name]) {
        skip_or_fail(test, &format!("ip netns add: {why}"));
        return None;
    }
    let ns = Netns(name);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
    let set = Command::new("ip")
        .args(["netns", "exec", &ns.0, "sysctl", "-qw"])
        .arg(format!("net.ipv4.tcp_migrate_req={}", migrate as u8))
        .status();
    if !set.is_ok_and(|s| s.success()) {
        skip_or_fail(
            test,
            "this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14)",
        );
        return None;
    }
    Some(ns)
}

/// From 2 workers on 2 reuse_port members to 1 worker, closing the surplus member (`policy`),
/// under a flood in the namespace; returns (reset at close as the old process counted it,
/// what the flood saw fail).
fn shrink(test: &str, migrate: bool, policy: &str) -> Option<(u64, u64, FloodReport)> {
    let ns = netns_with_migrate(test, migrate)?;
    let cfg = tmp(&format!("shrink-{migrate}-{policy}.toml"));
    let two =
        "bind = [\"127.0.0.1:0\"]\nworkers = 2\nreuse_port = true\naccept_in_workers = true\n";
    std::fs::write(&cfg, two).unwrap();
    let mut g = Greeting::start(&["--config", cfg.to_str().unwrap()], Some(&ns));
    let flood = flood_thread(g.addr(), flood_args(2000), test, Some(ns.0.clone()));
    std::thread::sleep(Duration::from_millis(1500));
    let one = format!("bind = [\"127.0.0.1:0\"]\nworkers = 1\nsurplus_members = \"{policy}\"\n");
    std::fs::write(&cfg, one).unwrap();
    let line = g.handoff();
    let rep = flood.join().unwrap();
    signal(g.pid, 15);
    g.expect("stopped:");
    let reset = figure(&line, "reset at close");
    eprintln!(
        "{test}: tcp_migrate_req={} surplus_members={policy}: {line}; flood outcomes {:?}",
        migrate as u8, rep.outcomes
    );
    Some((reset, server_failures(&rep), rep))
}

#[test]
fn shrinking_from_two_accept_loops_to_one_states_what_was_lost() {
    let _g = serial();
    let test = "shrinking_from_two_accept_loops_to_one_states_what_was_lost";
    // Kept and accepted from (the default): nothing can be lost, whatever the sysctl says.
    let Some((reset, failed, rep)) = shrink(test, false, "accept") else {
        return;
    };
    assert_eq!((reset, failed), (0, 0), "{:?}", rep.outcomes);
    // Closed with tcp_migrate_req on: the kernel moves the closed member's queue.
    let (reset, failed, rep) = shrink(test, true, "close").unwrap();
    assert_eq!((reset, failed), (0, 0), "{:?}", rep.outcomes);
    // Closed with it off: whatever waited on the closed member when the old process let go
    // of it too is reset. The old process counts it; every one it counted a client saw.
    let (reset, failed, rep) = shrink(test, false, "close").unwrap();
    eprintln!(
        "{test}: without tcp_migrate_req, closing the surplus member lost {reset} queued \
         connection(s) by the old process's count; the flood saw {failed} fail ({:?})",
        rep.outcomes
    );
    assert!(
        reset <= failed,
        "counted {reset} reset, clients saw {failed}"
    );
}

#[test]
fn growing_from_one_accept_loop_to_two_binds_a_member_beside_the_inherited_one() {
    let _g = serial();
    let cfg = tmp("grow.toml");
    std::fs::write(
        &cfg,
        "bind = [\"127.0.0.1:0\"]\nworkers = 1\nreuse_port = true\n",
    )
    .unwrap();
    let mut g = Greeting::start(&["--config", cfg.to_str().unwrap()], None);
    let flood = flood_thread(g.addr(), flood_args(1000), "grow", None);
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(
        &cfg,
        "bind = [\"127.0.0.1:0\"]\nworkers = 2\nreuse_port = true\naccept_in_workers = true\n",
    )
    .unwrap();
    let old = g.pid;
    let line = g.handoff();
    assert_eq!(figure(&line, "reset at close"), 0, "{line}");
    // The new process's two listeners: the inherited member, and one bound beside it.
    let inherited = g.seen(&format!("inherited from pid {old}"));
    assert!(inherited.contains(&g.addr()), "{inherited}");
    let rep = flood.join().unwrap();
    eprintln!("grow: {line}; flood outcomes {:?}", rep.outcomes);
    assert_eq!(server_failures(&rep), 0, "{:?}", rep.outcomes);
    assert_eq!(syn_retransmitted(&rep), 0);
    signal(g.pid, 15);
    g.expect("stopped:");
}

#[test]
fn sockets_from_socket_activation_are_served_and_readiness_is_notified() {
    let _g = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let notify_path = tmp("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    // As systemd (or systemfd) starts a service: the socket at descriptor 3, LISTEN_FDS=1,
    // its name, no LISTEN_PID (systemfd's way; systemd's own pid check is unit-tested).
    let mut cmd = Command::new(greeting_bin());
    cmd.args([
        "--addr",
        &addr,
        "--workers",
        "1",
        "--greeting",
        "pid {pid}\n",
    ])
    .env("LISTEN_FDS", "1")
    .env("LISTEN_FDNAMES", "greeting")
    .env("NOTIFY_SOCKET", &notify_path)
    .env_remove("LISTEN_PID")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child =
        synack_sys::inherit::spawn_with_fds(&mut cmd, &[(listener.as_raw_fd(), 3)]).unwrap();
    let out = lines(child.stdout.take().unwrap());
    let line = out.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        line.contains(&addr) && line.contains("socket activation") && line.contains("greeting"),
        "{line}"
    );
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).unwrap();
    let said = String::from_utf8_lossy(&buf[..n]);
    assert!(said.contains("READY=1"), "{said}");
    // Our socket, its queue theirs: a connection made to it is greeted by the child.
    assert_eq!(greeted_by(&addr), child.id());
    signal(child.id(), 15);
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(child.wait().unwrap().success());

    // LISTEN_PID naming another process: the variables are not for it; it binds the address
    // itself, which our listener holds.
    let mut cmd = Command::new(greeting_bin());
    cmd.args(["--addr", &addr, "--workers", "1"])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = synack_sys::inherit::spawn_with_fds(&mut cmd, &[(listener.as_raw_fd(), 3)])
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert!(!child.status.success());
    let err = String::from_utf8_lossy(&child.stderr);
    assert!(
        err.contains("cannot bind") && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn the_systemd_units_verify() {
    // No systemd runs here as init: the units are checked offline by systemd's own verifier,
    // with ExecStart pointed at the greeting built for this test.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_or_fail(
            "the_systemd_units_verify",
            "systemd-analyze is not installed",
        );
        return;
    }
    let dir = tmp("units");
    std::fs::create_dir_all(&dir).unwrap();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/systemd");
    let bin = greeting_bin();
    let mut units = Vec::new();
    for name in ["synack-greeting.socket", "synack-greeting.service"] {
        let text = std::fs::read_to_string(format!("{src}/{name}")).unwrap();
        let text = text.replace("/usr/local/bin/synack-greeting", bin.to_str().unwrap());
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
