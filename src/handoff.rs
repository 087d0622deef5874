//! Restarts that lose nothing: a running server hands every listening socket it owns to a new
//! process, which adopts them instead of binding; the sockets are never closed, so what waits
//! in their accept queues is kept.
//!
//! The order of a [`Server::handoff`]:
//!
//! 1. The new process starts (by default this program again, with the same arguments) with
//!    the listeners at descriptors 3, 4, ... (each `SO_REUSEPORT` member, in index order) and
//!    their description in `SYNACK_HANDOFF` and `SYNACK_HANDOFF_LISTENERS` (see
//!    `inherit.rs`), plus a pipe.
//! 2. Its [`ServerBuilder::serve`](crate::ServerBuilder::serve) adopts the sockets whose
//!    address it asks for (a listener asked for that was not inherited is bound as usual),
//!    starts, and writes `ready` on the pipe (or why it failed).
//! 3. Only then does this process stop accepting, let go of its descriptors, and let its
//!    handlers finish within the grace period: [`HandoffReport`] says what it counted. If the
//!    new process fails, exits, or is not ready in time, this one keeps serving
//!    ([`HandoffFailed`] gives the server back): a rollback, never an outage.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::inherit::{self, Inheritance};
use crate::notify;
use crate::server::{Server, ShutdownReport};
use crate::sys;

/// How a [`Server::handoff`] starts the new process and how long it waits.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// // This program again, with its arguments (the default), ready within 10 s, then 30 s for
/// // the old process's handlers to finish.
/// let h = synack::Handoff::new()
///     .ready_timeout(Duration::from_secs(10))
///     .grace(Duration::from_secs(30));
/// // Or another binary (a new version, installed beside the old).
/// let h = h.command("/usr/local/bin/my-server-v2", ["--port", "8080"]);
/// # let _ = h;
/// ```
#[derive(Debug, Clone)]
pub struct Handoff {
    program: Option<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    ready_timeout: Duration,
    grace: Duration,
    signal: i32,
}

impl Default for Handoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Handoff {
    /// Re-executes this program (`argv[0]`, or the running executable when that is not a
    /// path) with the same arguments; the new process has 30 s to be ready, the old one's
    /// handlers 30 s to finish; [`run_with_handoff`](Server::run_with_handoff) hands off on
    /// `SIGHUP`.
    pub fn new() -> Self {
        Handoff {
            program: None,
            args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            signal: libc::SIGHUP,
        }
    }

    /// Starts `program` with `args` instead of re-executing this program.
    pub fn command<I, S>(mut self, program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.program = Some(program.into());
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets a variable in the new process's environment (on top of this one's).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How long the new process may take to be ready before it is stopped and this one keeps
    /// serving. Default 30 s.
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.ready_timeout = d;
        self
    }

    /// How long this process's handlers may run on once the new process serves. Default 30 s.
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// The signal [`run_with_handoff`](Server::run_with_handoff) hands off on (a raw signal
    /// number such as `libc::SIGUSR2`). Default `SIGHUP`.
    pub fn signal(mut self, signal: i32) -> Self {
        self.signal = signal;
        self
    }

    fn program_and_args(&self) -> (OsString, Vec<OsString>) {
        if let Some(p) = &self.program {
            return (p.clone(), self.args.clone());
        }
        let mut args = std::env::args_os();
        let argv0 = args.next();
        let rest: Vec<OsString> = args.collect();
        // argv[0] names the binary as installed: after an upgrade that is the new one, where
        // /proc/self/exe still points at the old (deleted) file.
        let program = argv0
            .filter(|a| {
                let p = std::path::Path::new(a);
                p.components().count() > 1 && p.exists()
            })
            .or_else(|| std::env::current_exe().ok().map(Into::into))
            .unwrap_or_else(|| "/proc/self/exe".into());
        (program, rest)
    }
}

/// What a successful [`Server::handoff`] did, as the old process saw it.
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server: synack::Server = unimplemented!();
/// match server.handoff(&synack::Handoff::new()) {
///     Ok(r) => println!("pid {} serves; ready after {:?}, old gone after {:?}, {} aborted",
///         r.new_pid, r.ready_after, r.duration, r.old.aborted),
///     Err(failed) => {
///         eprintln!("handoff failed, still serving: {}", failed.error);
///         let _server = *failed.server;
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandoffReport {
    /// The new process.
    pub new_pid: u32,
    /// How many handoffs led to the new process (1 for the first).
    pub generation: u64,
    /// Listening sockets handed over.
    pub listeners: usize,
    /// Of those, how many the new process did not keep (surplus `SO_REUSEPORT` members it
    /// closed, addresses it no longer asks for).
    pub let_go: usize,
    /// Connections waiting in the queues of the sockets let go when this process closed them
    /// too, and `net.ipv4.tcp_migrate_req` was off: the kernel reset them. (With it on, the
    /// kernel moved them to a member kept, and this is 0.)
    pub reset_at_close: u64,
    /// From the request to the new process's `ready`.
    pub ready_after: Duration,
    /// From the request to this process accepting no more.
    pub stopped_after: Duration,
    /// From the request to this process's last handler done: the old process is gone (bar
    /// its exit) after this.
    pub duration: Duration,
    /// What this process counted while it wound down (its `left_in_queue` is 0: the queues
    /// were handed over, not reset).
    pub old: ShutdownReport,
}

/// Why a handoff did not happen. The old process keeps serving in every case.
/// # Examples
///
/// ```
/// let e = synack::HandoffError::NotReady { pid: 4242, timeout: std::time::Duration::from_secs(30) };
/// assert_eq!(e.to_string(), "new process 4242 was not ready within 30s; stopped it");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// Another handoff of this process is under way.
    #[error("a handoff is already in progress (one at a time); this request is refused")]
    InProgress,
    /// The new process could not be started.
    #[error("cannot start the new process {program:?}: {source}")]
    Spawn {
        /// The program.
        program: OsString,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The readiness pipe failed.
    #[error("handoff pipe: {0}")]
    Pipe(#[source] io::Error),
    /// The new process was not ready within the timeout; it was stopped.
    #[error("new process {pid} was not ready within {timeout:?}; stopped it")]
    NotReady {
        /// Its pid.
        pid: u32,
        /// The timeout.
        timeout: Duration,
    },
    /// The new process reported that it could not start.
    #[error("new process {pid} failed to start: {reason}")]
    Failed {
        /// Its pid.
        pid: u32,
        /// What it said.
        reason: String,
    },
    /// The new process exited without reporting ready.
    #[error("new process {pid} exited before it was ready ({status})")]
    Exited {
        /// Its pid.
        pid: u32,
        /// Its exit status, as the OS words it.
        status: String,
    },
}

/// A handoff that did not happen, with the server, which still serves.
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server: synack::Server = unimplemented!();
/// let server = match server.handoff(&synack::Handoff::new()) {
///     Ok(report) => return Ok(println!("pid {} serves now", report.new_pid)),
///     // The rollback: the same server, still accepting.
///     Err(failed) => *failed.server,
/// };
/// # let _ = server;
/// # Ok(())
/// # }
/// ```
pub struct HandoffFailed {
    /// The server, accepting as before.
    pub server: Box<Server>,
    /// Why.
    pub error: HandoffError,
}

impl std::fmt::Debug for HandoffFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffFailed")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for HandoffFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "handoff failed, the old process still serves: {}",
            self.error
        )
    }
}

impl std::error::Error for HandoffFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Whether a handoff of this process is under way.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Clears [`RUNNING`] when the handoff ends, however it ends.
struct Running;

impl Running {
    fn claim() -> Result<Running, HandoffError> {
        RUNNING
            .compare_exchange(false, true, SeqCst, SeqCst)
            .map(|_| Running)
            .map_err(|_| HandoffError::InProgress)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, SeqCst);
    }
}

/// Asks a server run by [`Server::run_with_handoff`] for a handoff, from anywhere in the
/// program (a handler, an admin endpoint). Cheap to clone.
/// # Examples
///
/// ```
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// let trigger = server.handoff_trigger();
/// // From an admin endpoint, say: the server's run loop hands off.
/// # let _ = trigger;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HandoffTrigger {
    notify: Arc<tokio::sync::Notify>,
}

impl HandoffTrigger {
    /// Requests a handoff.
    /// # Errors
    ///
    /// [`HandoffError::InProgress`] while one runs.
    pub fn request(&self) -> Result<(), HandoffError> {
        if RUNNING.load(SeqCst) {
            return Err(HandoffError::InProgress);
        }
        self.notify.notify_one();
        Ok(())
    }
}

/// How a [`Server::run_with_handoff`] ended.
/// # Examples
///
/// ```
/// fn exit_code(end: &synack::RunEnd) -> i32 {
///     match end {
///         synack::RunEnd::HandedOff(_) => 0,
///         synack::RunEnd::Stopped(r) if r.aborted == 0 => 0,
///         _ => 1,
///     }
/// }
/// # let _ = exit_code;
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RunEnd {
    /// Stopped by SIGINT or SIGTERM: the graceful shutdown's report.
    Stopped(ShutdownReport),
    /// Handed over to a new process, which serves now.
    HandedOff(HandoffReport),
}

impl Server {
    /// Hands every listening socket to a new process and winds this server down once that
    /// process is ready (see the [module](crate::Handoff) order). Blocks until the old
    /// handlers are done (or `grace` ran out); must not be called from inside a handler.
    /// # Errors
    ///
    /// [`HandoffFailed`] with the server, which still serves, and why:
    /// [`HandoffError::InProgress`], or the new process failed, exited or was not ready in
    /// time (it is stopped).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:8080")?
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// let report = server.handoff(&synack::Handoff::new())?;
    /// println!("handed to pid {}", report.new_pid);
    /// # Ok(())
    /// # }
    /// ```
    pub fn handoff(self, handoff: &Handoff) -> Result<HandoffReport, HandoffFailed> {
        let running = match Running::claim() {
            Ok(r) => r,
            Err(error) => {
                return Err(HandoffFailed {
                    server: Box::new(self),
                    error,
                });
            }
        };
        let start = Instant::now();
        notify::reloading();
        let generation = self.inheritance.as_ref().map_or(1, |i| i.generation + 1);
        tracing::info!(target: "synack::handoff", generation, listeners = self.sockets.len(), "handoff requested");
        let child = match self.start_new(handoff, generation) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(target: "synack::handoff", %error, "handoff failed; still serving");
                #[cfg(feature = "metrics")]
                metrics::counter!("synack_handoffs_total", "result" => "failed").increment(1);
                notify::ready_again();
                drop(running);
                return Err(HandoffFailed {
                    server: Box::new(self),
                    error,
                });
            }
        };
        let ready_after = start.elapsed();
        notify::main_pid(child.pid);
        let listeners = self.sockets.len();
        let mut reset_at_close = 0;
        let mut stopped_after = Duration::ZERO;
        let let_go = child.let_go.clone();
        let old = self.wind_down(handoff.grace, false, |s| {
            stopped_after = start.elapsed();
            let migrate = sys::sysctl("net.ipv4.tcp_migrate_req") == Some(1);
            for &i in &let_go {
                let queued = s
                    .sockets
                    .get(i)
                    .and_then(|sock| sys::listen_queue(&**sock).ok().flatten())
                    .map_or(0, |q| u64::from(q.len));
                if !migrate {
                    reset_at_close += queued;
                }
                tracing::info!(target: "synack::handoff", listener = i, queued, migrate, "a socket the new process let go is closed");
            }
        });
        let report = HandoffReport {
            new_pid: child.pid,
            generation,
            listeners,
            let_go: let_go.len(),
            reset_at_close,
            ready_after,
            stopped_after,
            duration: start.elapsed(),
            old,
        };
        #[cfg(feature = "metrics")]
        {
            metrics::counter!("synack_handoffs_total", "result" => "ok").increment(1);
            metrics::histogram!("synack_handoff_duration_seconds")
                .record(report.duration.as_secs_f64());
        }
        tracing::info!(target: "synack::handoff", new_pid = report.new_pid, generation,
            ready_ms = ready_after.as_secs_f64() * 1e3, stopped_ms = stopped_after.as_secs_f64() * 1e3,
            duration_ms = report.duration.as_secs_f64() * 1e3, completed = old.completed,
            aborted = old.aborted, reset_at_close, "handoff complete: the new process serves");
        drop(running);
        Ok(report)
    }

    /// Starts the new process and waits for its word.
    fn start_new(&self, h: &Handoff, generation: u64) -> Result<Started, HandoffError> {
        let described: Vec<_> = self
            .listeners
            .iter()
            .zip(&self.sockets)
            .map(|(info, sock)| {
                let same: Vec<_> = self
                    .listeners
                    .iter()
                    .filter(|o| o.local_addr == info.local_addr)
                    .collect();
                let member = (same.len() > 1)
                    .then(|| same.iter().position(|o| o.index == info.index))
                    .flatten();
                let reuse_port = sock.reuse_port().unwrap_or(false);
                (
                    info.requested_addr,
                    info.local_addr,
                    info.requested_backlog,
                    member,
                    reuse_port,
                )
            })
            .collect();
        let (desc, records, ready_fd) = inherit::describe(
            std::process::id(),
            generation,
            sys::monotonic_ns(),
            &described,
        );
        let (read, write) = sys::inherit::pipe().map_err(HandoffError::Pipe)?;
        let mut fds: Vec<(RawFd, RawFd)> = self
            .sockets
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_raw_fd(), inherit::FIRST_FD + i as RawFd))
            .collect();
        fds.push((write.as_raw_fd(), ready_fd));
        let (program, args) = h.program_and_args();
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .env(inherit::HANDOFF_ENV, desc)
            .env(inherit::LISTENERS_ENV, records)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES");
        for (k, v) in &h.env {
            cmd.env(k, v);
        }
        let mut child =
            sys::inherit::spawn_with_fds(&mut cmd, &fds).map_err(|source| HandoffError::Spawn {
                program: program.clone(),
                source,
            })?;
        drop(write);
        let pid = child.id();
        tracing::info!(target: "synack::handoff", pid, program = ?program, "new process started; waiting for its ready");
        let deadline = Instant::now() + h.ready_timeout;
        let mut said = Vec::new();
        let mut buf = [0u8; 512];
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(HandoffError::NotReady {
                    pid,
                    timeout: h.ready_timeout,
                });
            }
            match sys::inherit::read_timeout(&read, &mut buf, left) {
                Err(e) => break Err(HandoffError::Pipe(e)),
                Ok(None) => continue,
                Ok(Some(0)) => {
                    let text = String::from_utf8_lossy(&said).trim().to_string();
                    break Err(match text.strip_prefix("failed: ") {
                        Some(reason) => HandoffError::Failed {
                            pid,
                            reason: reason.to_string(),
                        },
                        None => {
                            let status = wait_briefly(&mut child);
                            HandoffError::Exited { pid, status }
                        }
                    });
                }
                Ok(Some(n)) => {
                    said.extend_from_slice(&buf[..n]);
                    if let Some(line) = said.split(|&b| b == b'\n').next()
                        && said.contains(&b'\n')
                    {
                        let line = String::from_utf8_lossy(line).to_string();
                        if let Some(rest) = line.strip_prefix("ready") {
                            break Ok(Started {
                                pid,
                                let_go: parse_let_go(rest),
                            });
                        }
                        if let Some(reason) = line.strip_prefix("failed: ") {
                            break Err(HandoffError::Failed {
                                pid,
                                reason: reason.to_string(),
                            });
                        }
                    }
                }
            }
        };
        if outcome.is_err() {
            // Stopped, so that it cannot start serving after this process gave up on it.
            let _ = child.kill();
            let _ = child.wait();
        }
        outcome
    }

    /// What this process inherited, when a handoff started it.
    pub fn inheritance(&self) -> Option<&Inheritance> {
        self.inheritance.as_ref()
    }

    /// A handle that asks [`run_with_handoff`](Self::run_with_handoff) for a handoff.
    pub fn handoff_trigger(&self) -> HandoffTrigger {
        HandoffTrigger {
            notify: self.trigger.clone(),
        }
    }

    /// Serves until SIGINT or SIGTERM (a graceful shutdown with `grace`), handing off to a
    /// new process on `handoff`'s signal (`SIGHUP` by default) or a
    /// [`HandoffTrigger`] request: the helper for binaries. A handoff that fails leaves this
    /// process serving and waiting again; a second request while one runs is refused (and
    /// logged). Blocks the calling thread.
    /// # Errors
    ///
    /// [`Error::Signal`] when the signal handlers (or the runtime waiting for them) cannot be
    /// set up.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:8080")?
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// match server.run_with_handoff(Duration::from_secs(30), &synack::Handoff::new())? {
    ///     synack::RunEnd::Stopped(r) => println!("stopped: {r:?}"),
    ///     synack::RunEnd::HandedOff(r) => println!("pid {} serves now", r.new_pid),
    ///     _ => {}
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn run_with_handoff(self, grace: Duration, handoff: &Handoff) -> Result<RunEnd, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Signal)?;
        rt.block_on(async move {
            let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
            let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
            let mut hup = signal(SignalKind::from_raw(handoff.signal)).map_err(Error::Signal)?;
            let mut server = self;
            loop {
                let trigger = server.trigger.clone();
                tokio::select! {
                    _ = int.recv() => return Ok(RunEnd::Stopped(stop(server, grace, "SIGINT").await)),
                    _ = term.recv() => return Ok(RunEnd::Stopped(stop(server, grace, "SIGTERM").await)),
                    _ = hup.recv() => {}
                    _ = trigger.notified() => {}
                }
                let h = handoff.clone();
                let mut job = tokio::task::spawn_blocking(move || server.handoff(&h));
                let mut stop_after: Option<&'static str> = None;
                let done = loop {
                    tokio::select! {
                        r = &mut job => break r,
                        _ = hup.recv() => tracing::warn!(target: "synack::handoff", "handoff signal refused: a handoff is already in progress"),
                        _ = int.recv() => stop_after = Some("SIGINT"),
                        _ = term.recv() => stop_after = Some("SIGTERM"),
                    }
                };
                match done {
                    Ok(Ok(report)) => return Ok(RunEnd::HandedOff(report)),
                    Ok(Err(failed)) => {
                        // Logged by handoff().
                        server = *failed.server;
                        if let Some(sig) = stop_after {
                            return Ok(RunEnd::Stopped(stop(server, grace, sig).await));
                        }
                    }
                    Err(join) => {
                        // The server went down with the task: nothing left to serve with.
                        tracing::error!(target: "synack::handoff", error = %join, "the handoff panicked");
                        return Ok(RunEnd::Stopped(ShutdownReport::default()));
                    }
                }
            }
        })
    }
}

async fn stop(server: Server, grace: Duration, signal: &'static str) -> ShutdownReport {
    tracing::info!(target: "synack::server", signal, "signal received");
    tokio::task::spawn_blocking(move || server.shutdown_blocking(grace))
        .await
        .unwrap_or_default()
}

/// A new process that reported ready, and which inherited sockets (by index) it let go.
struct Started {
    pid: u32,
    let_go: Vec<usize>,
}

/// `" pid=123 let_go=2,3"` → the indices let go.
fn parse_let_go(rest: &str) -> Vec<usize> {
    rest.split_whitespace()
        .find_map(|w| w.strip_prefix("let_go="))
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

/// The exit status of a child that closed its end of the pipe, waiting a little for it.
fn wait_briefly(child: &mut std::process::Child) -> String {
    for _ in 0..50 {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return format!("status unknown: {e}"),
        }
    }
    "it closed the pipe but still runs".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn let_go_lists() {
        assert_eq!(parse_let_go(" pid=5 let_go="), Vec::<usize>::new());
        assert_eq!(parse_let_go(" pid=5 let_go=2,3"), vec![2, 3]);
        assert!(!RUNNING.load(SeqCst));
        let held = Running::claim().unwrap();
        assert!(matches!(Running::claim(), Err(HandoffError::InProgress)));
        drop(held);
        assert!(Running::claim().is_ok());
    }
}
