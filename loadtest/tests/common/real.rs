//! Real servers that nobody here wrote, for tests: an nginx in a prefix directory of its own
//! (never /etc/nginx or /var/log/nginx) that counts every request in its access log, and a
//! small python3 TCP server (tests/data/backlog_server.py) with an explicit listen backlog.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::tmp;

/// Numbers the prefix directories of the nginx instances this test process starts.
static NEXT_NGINX: AtomicUsize = AtomicUsize::new(0);

/// A free TCP port on 127.0.0.1: bound to port 0 and closed again (someone else may take it
/// before the caller does; callers that can retry, do).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The files `name` in PATH's directories, in order, then `fallback`: those that exist.
fn find_in_path(name: &str, fallback: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    found.push(PathBuf::from(fallback));
    found.retain(|p| p.is_file());
    found
}

/// The nginx binary: from PATH, else /usr/sbin/nginx.
fn nginx_bin() -> Option<PathBuf> {
    find_in_path("nginx", "/usr/sbin/nginx").into_iter().next()
}

/// Whether this nginx knows `-e` (the early error log, nginx >= 1.19.5); assumed when its
/// version does not parse.
fn knows_early_error_log(bin: &Path) -> bool {
    let Ok(out) = Command::new(bin).arg("-v").output() else {
        return true;
    };
    // "nginx version: nginx/1.22.1" (on stderr).
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let Some(v) = text.split("nginx/").nth(1) else {
        return true;
    };
    let v: Vec<u32> = v
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    v.len() < 3 || (v[0], v[1], v[2]) >= (1, 19, 5)
}

/// The pids whose parent is `pid` (Linux: /proc; elsewhere none).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// Sends `signal` ("TERM", "KILL") to `pid` with the kill command.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A file's text, or "" (with a note) when it cannot be read.
fn read_or_note(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// One line of the access log (`log_format synack '$status $request_method $request_uri
/// $request_length'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    pub status: u16,
    pub method: String,
    pub uri: String,
}

/// An nginx (master and one worker) on 127.0.0.1, in a prefix directory of its own under the
/// test's temporary directory. Dropping it stops it, also when a test panics.
pub struct Nginx {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

/// How a start attempt ended.
enum Start {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

impl Nginx {
    /// Starts nginx with one `server` listening on a free port of 127.0.0.1 with `backlog`,
    /// holding the caller's `location` blocks, e.g. `location = /health { return 200 "ok\n"; }`.
    /// Waits (bounded: 10 s) until the port takes connections. None when there is no nginx
    /// (the caller then calls `skip_or_fail`).
    ///
    /// # Panics
    ///
    /// If nginx does not come up: with its error log.
    pub fn start(backlog: u32, locations: &str) -> Option<Nginx> {
        Self::start_with(backlog, locations, None)
    }

    /// As [`Nginx::start`], serving TLS with the PEM `(certificate, key)` (OpenSSL, nginx's
    /// own session cache and tickets on), each handshake logged to `tls.log` as
    /// `$ssl_session_reused $ssl_protocol` (see [`Nginx::tls_log`]).
    pub fn start_tls(backlog: u32, locations: &str, cert: &Path, key: &Path) -> Option<Nginx> {
        Self::start_with(backlog, locations, Some((cert, key)))
    }

    fn start_with(backlog: u32, locations: &str, tls: Option<(&Path, &Path)>) -> Option<Nginx> {
        let bin = nginx_bin()?;
        let early_log = knows_early_error_log(&bin);
        let dir = tmp(&format!(
            "nginx-{}",
            NEXT_NGINX.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let error_log = dir.join("error.log");
        for _attempt in 0..5 {
            let port = free_port();
            std::fs::write(
                dir.join("nginx.conf"),
                config(&dir, port, backlog, locations, tls),
            )
            .unwrap();
            let _ = std::fs::remove_file(dir.join("nginx.pid"));
            let logged_before = std::fs::metadata(&error_log).map_or(0, |m| m.len() as usize);
            let mut cmd = Command::new(&bin);
            cmd.arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"));
            if early_log {
                cmd.arg("-e").arg(&error_log);
            }
            let stderr = File::create(dir.join("stderr.log")).unwrap();
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut nginx = Nginx {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir: dir.clone(),
                child,
            };
            match nginx.wait_ready(Duration::from_secs(10)) {
                Start::Ready => return Some(nginx),
                Start::Exited(status) => {
                    let log = nginx.error_log();
                    let this_attempt = log.get(logged_before..).unwrap_or(&log);
                    // A port someone took between free_port() and nginx's bind(): another port.
                    if this_attempt.contains("in use") {
                        continue;
                    }
                    panic!(
                        "nginx exited at start ({status})\nerror.log:\n{log}\nstderr:\n{}",
                        read_or_note(&dir.join("stderr.log"))
                    );
                }
                Start::TimedOut => panic!(
                    "nginx did not take connections on {} in 10 s\nerror.log:\n{}\nstderr:\n{}",
                    nginx.addr,
                    nginx.error_log(),
                    read_or_note(&dir.join("stderr.log"))
                ),
            }
        }
        panic!(
            "nginx found its port taken 5 times\nerror.log:\n{}",
            read_or_note(&error_log)
        );
    }

    /// Ready: the pid file holds our master's pid (written after the listening sockets are
    /// bound, so the port is ours) and a connect succeeds (a connection that sends nothing is
    /// not logged).
    fn wait_ready(&mut self, within: Duration) -> Start {
        let deadline = Instant::now() + within;
        let pid = self.child.id().to_string();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Start::Exited(status);
            }
            let ours =
                std::fs::read_to_string(self.dir.join("nginx.pid")).is_ok_and(|p| p.trim() == pid);
            if ours && TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Start::Ready;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Start::TimedOut
    }

    /// The prefix directory (nginx.conf, error.log, access.log, the temp paths).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The error log's text so far.
    pub fn error_log(&self) -> String {
        read_or_note(&self.dir.join("error.log"))
    }

    /// The access log so far, one line per request nginx finished (complete after `stop`).
    ///
    /// # Panics
    ///
    /// On a line that is not `status method uri length`.
    pub fn access_log(&self) -> Vec<AccessLine> {
        let text = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                assert!(f.len() >= 4, "access.log line not understood: {line:?}");
                AccessLine {
                    status: f[0]
                        .parse()
                        .unwrap_or_else(|_| panic!("access.log status not understood: {line:?}")),
                    method: f[1].to_string(),
                    uri: f[2..f.len() - 1].join(" "),
                }
            })
            .collect()
    }

    /// Each TLS request's `(session reused, protocol)` from `tls.log` (with `start_tls`).
    pub fn tls_log(&self) -> Vec<(bool, String)> {
        let text = std::fs::read_to_string(self.dir.join("tls.log")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (reused, proto) = l.split_once(' ').unwrap_or((l, ""));
                (reused == "r", proto.to_string())
            })
            .collect()
    }

    /// Requests per status, from the access log.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        let mut counts = BTreeMap::new();
        for line in self.access_log() {
            *counts.entry(line.status).or_insert(0) += 1;
        }
        counts
    }

    /// Stops nginx (see `Drop`).
    pub fn stop(self) {
        drop(self);
    }

    /// Stops nginx, then reads the access log, complete: the master has exited, after its
    /// workers.
    pub fn stop_and_log(mut self) -> Vec<AccessLine> {
        self.terminate();
        self.access_log()
    }

    /// SIGTERM (nginx's fast shutdown: the master stops its workers, waits for them, exits);
    /// after 5 s SIGKILL to the master and to the workers it had. Idempotent.
    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let master = self.child.id();
        let workers = children_of(master);
        signal(master, "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The master waits for its workers before it exits; should one outlive it all the
        // same (or the master was killed), it goes too.
        for w in workers {
            let comm = std::fs::read_to_string(format!("/proc/{w}/comm")).unwrap_or_default();
            if comm.trim() == "nginx" {
                signal(w, "KILL");
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The nginx.conf of an instance in `dir`: everything it writes stays in `dir`.
fn config(
    dir: &Path,
    port: u16,
    backlog: u32,
    locations: &str,
    tls: Option<(&Path, &Path)>,
) -> String {
    let d = dir.display();
    let (ssl, tls_conf) = match tls {
        Some((cert, key)) => (
            " ssl",
            format!(
                "ssl_certificate \"{}\";\n        ssl_certificate_key \"{}\";\n        \
                 ssl_session_cache shared:SYNACK:1m;\n        ssl_session_tickets on;\n        \
                 access_log \"{d}/tls.log\" synack_tls;",
                cert.display(),
                key.display()
            ),
        ),
        None => ("", String::new()),
    };
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
pid "{d}/nginx.pid";
error_log "{d}/error.log" warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path "{d}/client_body_temp";
    proxy_temp_path "{d}/proxy_temp";
    fastcgi_temp_path "{d}/fastcgi_temp";
    uwsgi_temp_path "{d}/uwsgi_temp";
    scgi_temp_path "{d}/scgi_temp";
    log_format synack '$status $request_method $request_uri $request_length';
    log_format synack_tls '$ssl_session_reused $ssl_protocol';
    access_log "{d}/access.log" synack;
    server {{
        listen 127.0.0.1:{port}{ssl} backlog={backlog};
        access_log "{d}/access.log" synack;
        {tls_conf}
        {locations}
    }}
}}
"#
    )
}

/// A python3 interpreter (from PATH, else /usr/bin/python3) that can `import socket`.
pub fn python3() -> Option<PathBuf> {
    find_in_path("python3", "/usr/bin/python3")
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import socket"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// tests/data/backlog_server.py: a TCP server that listens with the backlog it is given and
/// serves at most N connections at once (the rest wait in the accept queue).
pub fn backlog_server_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/backlog_server.py")
}

/// backlog_server.py running on a port of 127.0.0.1 (`--port 0`: the kernel picks), started
/// by the test; dropping it kills it.
pub struct PythonServer {
    pub addr: SocketAddr,
    child: Child,
}

impl PythonServer {
    /// Starts it with `backlog`, `workers` and `service_ms`, and waits (bounded: 10 s) for
    /// its `listening` line. None without python3 (the caller then calls `skip_or_fail`).
    pub fn start(backlog: u32, workers: u32, service_ms: u32) -> Option<PythonServer> {
        use std::io::BufRead as _;
        let python = python3()?;
        let mut child = Command::new(python)
            .arg(backlog_server_script())
            .args(["--port", "0", "--backlog", &backlog.to_string()])
            .args(["--workers", &workers.to_string()])
            .args(["--service-ms", &service_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = PythonServer {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("backlog_server.py said nothing in 10 s");
        // "listening 127.0.0.1:PORT backlog B"
        let addr = line
            .split_whitespace()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("backlog_server.py said {line:?}"));
        server.addr = addr;
        Some(server)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
