//! The user's server, started per backlog (`tune --server-cmd`): its command line filled in,
//! started in its own process group, watched until its listener appears (inet_diag), and
//! stopped whole (SIGTERM, then SIGKILL after a grace period), also when this process is
//! interrupted (Ctrl-C, SIGTERM, SIGHUP) or fails, or dies (the kernel's parent-death signal).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use synack_sys::diag::{Diag, ListenerSample};
use synack_sys::process::{Stop, group_alive, signal_group, spawn_group_on};

use crate::error::LoadError;
use crate::report::tune::Stopped;

/// The placeholder for the backlog in `--server-cmd`.
pub const BACKLOG: &str = "{backlog}";
/// The placeholder for the port in `--server-cmd`.
pub const PORT: &str = "{port}";

/// The lines of a server's output kept to show when it fails to start.
const TAIL_LINES: usize = 12;

/// The process groups started and not yet stopped, for the interrupt handler.
fn live_groups() -> &'static Mutex<Vec<u32>> {
    static LIVE: OnceLock<Mutex<Vec<u32>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(Vec::new()))
}

/// Installs (once) the handler that stops every server still running when this process is
/// interrupted, then exits 130.
fn stop_servers_on_interrupt() -> Result<(), LoadError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            ctrlc::set_handler(|| {
                let groups: Vec<u32> = live_groups().lock().map(|g| g.clone()).unwrap_or_default();
                for &g in &groups {
                    let _ = signal_group(g, Stop::Term);
                }
                let deadline = Instant::now() + Duration::from_secs(2);
                while groups.iter().any(|&g| group_alive(g)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                for &g in &groups {
                    let _ = signal_group(g, Stop::Kill);
                }
                eprintln!(
                    "synack-load: interrupted; stopped {} server process group(s)",
                    groups.len()
                );
                std::process::exit(130);
            })
            .map_err(|e| format!("cannot install the interrupt handler ({e})"))
        })
        .clone()
        .map_err(LoadError::Run)
}

/// The command line for one backlog and port, placeholders filled.
///
/// ```
/// use synack_load::tune::process::fill;
///
/// assert_eq!(fill("srv --port {port} --backlog {backlog}", 8080, 64), "srv --port 8080 --backlog 64");
/// ```
pub fn fill(template: &str, port: u16, backlog: u32) -> String {
    template
        .replace(PORT, &port.to_string())
        .replace(BACKLOG, &backlog.to_string())
}

/// One run of the user's server.
///
/// ```no_run
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use synack_load::tune::process::{ServerProcess, fill, free_port};
///
/// let port = free_port()?;
/// let line = fill("./my-server --port {port} --backlog {backlog}", port, 256);
/// let mut server = ServerProcess::start(&line, 256)?;
/// let addr = SocketAddr::from(([127, 0, 0, 1], port));
/// let listener = server.wait_listening(addr, Duration::from_secs(10))?;
/// println!("listening on {addr}, effective backlog {}", listener.backlog);
/// let stopped = server.stop(Duration::from_secs(3));
/// assert!(!stopped.killed, "it took longer than 3 s to exit after SIGTERM");
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pgid: u32,
    command: String,
    backlog: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
    stopped: bool,
}

impl ServerProcess {
    /// Starts `sh -c COMMAND` in its own process group, its output kept (the last lines).
    ///
    /// # Errors
    ///
    /// [`LoadError::Run`] when the shell cannot be started or the interrupt handler cannot be
    /// installed.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use synack_load::tune::process::ServerProcess;
    ///
    /// let server = ServerProcess::start("echo starting; exec sleep 30", 64)?;
    /// std::thread::sleep(Duration::from_millis(100));
    /// assert_eq!(server.output(), "starting");
    /// // Dropped, it is stopped: SIGTERM to its whole process group.
    /// drop(server);
    /// # Ok::<(), synack_load::error::LoadError>(())
    /// ```
    pub fn start(command: &str, backlog: u32) -> Result<Self, LoadError> {
        Self::start_on(command, backlog, None)
    }

    /// [`start`](Self::start), the server restricted to `cpus` when given (`--server-cpus`).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start); also when the CPU set cannot be applied.
    pub fn start_on(
        command: &str,
        backlog: u32,
        cpus: Option<&[usize]>,
    ) -> Result<Self, LoadError> {
        stop_servers_on_interrupt()?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(shell_line(command))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_group_on(&mut cmd, cpus).map_err(|e| {
            LoadError::Run(format!(
                "--server-cmd: cannot start sh -c {command:?} ({e})"
            ))
        })?;
        let pgid = child.id();
        if let Ok(mut g) = live_groups().lock() {
            g.push(pgid);
        }
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let outputs: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
        ];
        for out in outputs.into_iter().flatten() {
            let tail = tail.clone();
            // Drains the pipe (a server blocked on a full pipe would stall) and keeps the
            // last lines; ends when the pipe closes. Never joined: a process that escaped
            // its group could hold the pipe open.
            let _ = std::thread::Builder::new()
                .name("synack-load-server-output".into())
                .spawn(move || {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        if let Ok(mut t) = tail.lock() {
                            if t.len() == TAIL_LINES {
                                t.pop_front();
                            }
                            t.push_back(line);
                        }
                    }
                });
        }
        Ok(ServerProcess {
            child,
            pgid,
            command: command.to_string(),
            backlog,
            tail,
            stopped: false,
        })
    }

    /// The last lines the server wrote (stdout and stderr), joined with ` | `.
    pub fn output(&self) -> String {
        let t = self.tail.lock().map(|t| t.clone()).unwrap_or_default();
        if t.is_empty() {
            "(it wrote nothing)".into()
        } else {
            Vec::from(t).join(" | ")
        }
    }

    /// Waits until a listener takes connections to `addr` (inet_diag), the server exits, or
    /// `timeout` passes; returns what the kernel shows of the listener.
    ///
    /// # Errors
    ///
    /// [`LoadError::Usage`] (the command cannot work as given) when the server exits first or
    /// never listens there, with its last output; [`LoadError::Run`] when inet_diag fails.
    pub fn wait_listening(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<ListenerSample, LoadError> {
        let mut diag = Diag::new()
            .map_err(|e| LoadError::Run(format!("inet_diag, to see the server listen: {e}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                // Let the output threads take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                self.stopped = true;
                self.forget();
                return Err(LoadError::Usage(format!(
                    "--server-cmd {:?} exited ({}) before listening on {addr}; its output: {}",
                    self.command,
                    describe(status),
                    self.output()
                )));
            }
            let q = diag
                .listener_queue(addr)
                .map_err(|e| LoadError::Run(format!("inet_diag on {addr}: {e}")))?;
            if q.sockets > 0 {
                return Ok(q);
            }
            if Instant::now() >= deadline {
                let out = self.output();
                self.stop(Duration::from_secs(1));
                return Err(LoadError::Usage(format!(
                    "--server-cmd {:?} did not listen on {addr} within {} (--startup-timeout); its output: {out}",
                    self.command,
                    humantime::format_duration(timeout)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the whole process group: SIGTERM, then SIGKILL once `grace` has passed.
    pub fn stop(&mut self, grace: Duration) -> Stopped {
        let mut killed = false;
        let status = if self.stopped {
            self.child.try_wait().ok().flatten()
        } else {
            let _ = signal_group(self.pgid, Stop::Term);
            let deadline = Instant::now() + grace;
            let mut status = None;
            // The group's leader (the shell) and whatever it started must all be gone.
            while Instant::now() < deadline {
                if status.is_none() {
                    status = self.child.try_wait().ok().flatten();
                }
                if status.is_some() && !group_alive(self.pgid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if status.is_none() || group_alive(self.pgid) {
                killed = true;
                let _ = signal_group(self.pgid, Stop::Kill);
            }
            let status = status.or_else(|| self.child.wait().ok());
            // The rest of the group, reparented, is reaped by init: give it a moment.
            let deadline = Instant::now() + Duration::from_secs(1);
            while group_alive(self.pgid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            status
        };
        self.stopped = true;
        self.forget();
        Stopped {
            backlog: self.backlog,
            command: self.command.clone(),
            exit: status.map_or_else(|| "unknown".into(), describe),
            killed,
        }
    }

    fn forget(&self) {
        if let Ok(mut g) = live_groups().lock() {
            g.retain(|&p| p != self.pgid);
        }
    }
}

impl Drop for ServerProcess {
    /// A server is never left running: dropped before [`ServerProcess::stop`] (an error, a
    /// panic), it is stopped here.
    fn drop(&mut self) {
        if !self.stopped {
            self.stop(Duration::from_secs(2));
        }
        // Reap the leader if it is still a zombie.
        let _ = self.child.try_wait();
    }
}

/// The line the shell runs: a simple command is `exec`'d, so that the server itself is the
/// group's leader and gets the parent-death signal (a shell's children would not: it is not
/// inherited across fork). A compound command (`;`, `&&`, a pipe, a redirection) runs as
/// written: `exec` its server yourself to have the same.
fn shell_line(command: &str) -> String {
    let compound = ["&", "|", ";", "<", ">", "(", ")", "`", "$(", "\n"]
        .iter()
        .any(|m| command.contains(m));
    if compound || command.trim_start().starts_with("exec ") {
        command.to_string()
    } else {
        format!("exec {command}")
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(libc::SIGTERM)) => "stopped by SIGTERM".into(),
        (None, Some(libc::SIGKILL)) => "killed by SIGKILL".into(),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "unknown".into(),
    }
}

/// A free port on 127.0.0.1 now (the kernel's pick, released at once): the usual race with
/// anyone else picking ports is left to the listener check that follows.
///
/// # Errors
///
/// [`LoadError::Run`] when no port can be bound.
pub fn free_port() -> Result<u16, LoadError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| LoadError::Run(format!("no free loopback port for the server: {e}")))
}

/// Whether something listens on `addr` already (inet_diag).
///
/// # Errors
///
/// [`LoadError::Run`] when inet_diag fails.
pub fn already_listening(addr: SocketAddr) -> Result<Option<ListenerSample>, LoadError> {
    let mut diag = Diag::new()
        .map_err(|e| LoadError::Run(format!("inet_diag, to see the server listen: {e}")))?;
    let q = diag
        .listener_queue(addr)
        .map_err(|e| LoadError::Run(format!("inet_diag on {addr}: {e}")))?;
    Ok((q.sockets > 0).then_some(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_ignores_sigterm_is_killed_with_its_children() {
        // The shell starts a child that ignores SIGTERM, then waits: both must go.
        let mut p = ServerProcess::start("trap '' TERM; sleep 30 & wait", 1).unwrap();
        let pgid = p.pgid;
        std::thread::sleep(Duration::from_millis(100));
        let s = p.stop(Duration::from_millis(200));
        assert!(s.killed, "{s:?}");
        assert!(!group_alive(pgid));
        assert!(!live_groups().lock().unwrap().contains(&pgid));
    }

    #[test]
    fn a_server_that_exits_at_once_is_named_with_its_output() {
        let mut p = ServerProcess::start("echo 'no such option' >&2; exit 3", 1).unwrap();
        let e = p
            .wait_listening("127.0.0.1:1".parse().unwrap(), Duration::from_secs(5))
            .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.exit_code(), 2);
        assert!(text.contains("exit status 3"), "{text}");
        assert!(text.contains("no such option"), "{text}");
    }

    #[test]
    fn a_simple_command_is_execd_and_a_compound_one_runs_as_written() {
        assert_eq!(shell_line("srv --port 80"), "exec srv --port 80");
        assert_eq!(shell_line("exec srv"), "exec srv");
        for c in ["a && b", "a; b", "a | b", "a > f", "(a)", "echo $(id)"] {
            assert_eq!(shell_line(c), c);
        }
    }

    #[test]
    fn a_dropped_server_is_stopped() {
        let p = ServerProcess::start("sleep 30", 1).unwrap();
        let pgid = p.pgid;
        drop(p);
        assert!(!group_alive(pgid));
    }
}
