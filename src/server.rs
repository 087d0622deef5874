//! The running server's handle: listeners, statistics, pause and resume, graceful shutdown.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::acceptor::{AcceptorHandle, Control};
use crate::dispatch::WorkerMsg;
use crate::inherit::Inheritance;
use crate::listener::ListenerInfo;
use crate::notify;
use crate::observe::Observers;
use crate::sampler::{QueueGauge, QueueSample};
use crate::shared::{self, Shared, Wake};
use crate::stats::{ListenerStats, Stats};
use crate::sys;
use crate::worker::WorkerHandle;

/// What a graceful shutdown did.
///
/// The figures are counted independently of one another: `open_at_start` from the open
/// connections and the accepts, the rest from how each handler ended. When every connection is
/// accounted for, `open_at_start + drained == completed + aborted + lost` (with no handler
/// keeping its connection past its end) and [`unaccounted`](Self::unaccounted) is 0.
/// # Examples
///
/// ```
/// use std::io::Read;
/// use std::time::Duration;
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .workers(1)
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// std::net::TcpStream::connect(server.local_addr())?.read_to_end(&mut Vec::new())?;
/// let report = server.shutdown_blocking(Duration::from_secs(5));
/// assert_eq!(report.unaccounted, 0, "every connection is accounted for");
/// assert_eq!(report.aborted, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections open (accepted, not yet closed) when the shutdown began, plus those accepted
    /// before the acceptors saw the stop. (A connection accepted at the very moment the shutdown
    /// begins may be counted here or missed: the open and accepted counts are read one after
    /// the other.)
    pub open_at_start: u64,
    /// Connections taken from the kernel accept queue during the shutdown and handed to handlers.
    pub drained: u64,
    /// Handlers that finished during the shutdown (panics and errors included).
    pub completed: u64,
    /// Handlers cancelled when the grace period ran out (or with a worker that died).
    pub aborted: u64,
    /// Connections accepted and closed during the shutdown without a handler, their worker
    /// having died (see [`Stats::lost`]).
    pub lost: u64,
    /// Over the server's whole life, once its workers have stopped: connections accepted less
    /// those completed, aborted, lost and still open. 0 when every connection is accounted
    /// for; above 0, connections vanished uncounted; below 0, some were counted twice (or a
    /// connection was kept, and counted open, after its handler completed).
    pub unaccounted: i64,
    /// Connections still in the kernel accept queue when the listeners closed: the kernel
    /// resets them (read from `TCP_INFO`; 0 where unknown).
    pub left_in_queue: u64,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

/// A running synack server.
///
/// Built with [`Server::builder`]. Dropping it stops it at once (no drain, no grace); call
/// [`Server::shutdown`] or [`Server::shutdown_blocking`] for a graceful stop.
/// # Examples
///
/// ```
/// use std::io::Read;
/// use std::time::Duration;
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .workers(1)
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// let mut client = std::net::TcpStream::connect(server.local_addr())?;
/// let mut got = String::new();
/// client.read_to_string(&mut got)?;
/// assert_eq!(got, "hi\n");
/// let report = server.shutdown_blocking(Duration::from_secs(5));
/// assert_eq!(report.unaccounted, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    pub(crate) shared: Arc<Shared>,
    pub(crate) listeners: Vec<ListenerInfo>,
    pub(crate) sockets: Vec<Arc<Socket>>,
    pub(crate) acceptors: Vec<AcceptorHandle>,
    pub(crate) workers: Vec<WorkerHandle>,
    pub(crate) paused: AtomicBool,
    pub(crate) gauges: Arc<[QueueGauge]>,
    pub(crate) observers: Observers,
    /// What this process inherited in a handoff, if it was started by one.
    pub(crate) inheritance: Option<Inheritance>,
    /// Wakes [`Server::run_with_handoff`] for a [`HandoffTrigger`](crate::HandoffTrigger).
    pub(crate) trigger: Arc<tokio::sync::Notify>,
}

impl Server {
    /// Every distinct address the server listens on, in bind order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for l in &self.listeners {
            if !out.contains(&l.local_addr) {
                out.push(l.local_addr);
            }
        }
        out
    }

    /// The first listen address (convenient when there is one).
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].local_addr
    }

    /// Every listening socket, with the backlog asked for and the backlog the kernel granted.
    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.listeners
    }

    /// The descriptor of listener `index`, to read socket options the server does not report.
    pub fn listener_fd(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.sockets.get(index).map(|s| s.as_fd())
    }

    /// A snapshot of the statistics, merged from every acceptor and worker, with the kernel's
    /// current view of each listener's accept queue.
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:0")?
    ///     .workers(1)
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// let mut client = std::net::TcpStream::connect(server.local_addr())?;
    /// client.read_to_end(&mut Vec::new())?;
    /// let stats = server.stats();
    /// assert_eq!(stats.accepted, 1);
    /// assert_eq!(stats.dispatch_latency_us.len(), 1);
    /// println!("p99 dispatch: {} us", stats.dispatch_latency_us.value_at_quantile(0.99));
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        let mut s = self.shared.merged_stats();
        s.paused = self.paused.load(Relaxed);
        s.max_connections = self.shared.limit.max();
        s.tls.in_progress = self
            .shared
            .handshakes
            .as_ref()
            .map_or(0, |h| h.count() as u64);
        s.listeners = self
            .listeners
            .iter()
            .zip(&self.sockets)
            .zip(self.gauges.iter())
            .map(|((info, sock), g)| {
                let q = sys::listen_queue(&**sock).ok().flatten();
                let sampled = self.observers.sampling();
                ListenerStats {
                    index: info.index,
                    local_addr: info.local_addr,
                    queue_len: q.map(|q| q.len),
                    effective_backlog: q.map(|q| q.max).or(info.effective_backlog),
                    peak_queue_len: sampled.then(|| g.peak.load(Relaxed)),
                    time_full: Duration::from_nanos(g.full_ns.load(Relaxed)),
                    queue_samples: g.samples.load(Relaxed),
                }
            })
            .collect();
        s
    }

    /// The accept-queue samples of listener `index` (with
    /// [`queue_sampling`](crate::ServerBuilder::queue_sampling) on; empty otherwise), oldest
    /// first, at most the newest 100,000.
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:0")?
    ///     .workers(1)
    ///     .queue_sampling(Duration::from_millis(10))
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// for s in server.queue_samples(0) {
    ///     println!("{:?}: {} of {} waiting", s.at, s.len, s.max);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn queue_samples(&self, index: usize) -> Vec<QueueSample> {
        self.gauges
            .get(index)
            .and_then(|g| g.series.lock().ok().map(|s| s.iter().copied().collect()))
            .unwrap_or_default()
    }

    /// Stops accepting. New connections complete the handshake in the kernel and wait in the
    /// accept queue (up to the effective backlog). When this returns, no acceptor will call
    /// `accept()` again until [`Server::resume`].
    ///
    /// It may be called from a handler (a handle shared into the handler, as a `Weak<Server>`
    /// for instance). With [`accept_in_workers`](crate::ServerBuilder::accept_in_workers),
    /// called there it does not wait for the workers to take the order: the caller's own
    /// worker cannot while its handler runs (waiting for it would deadlock the worker), nor
    /// can another one whose handler is pausing too. The order takes effect instead at each
    /// worker's next `accept()`, its own included (also within an accept batch that started
    /// the handler); an `accept()` already under way on another worker may still complete.
    /// # Examples
    ///
    /// ```
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:0")?
    ///     .workers(1)
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// server.pause();
    /// assert!(server.is_paused());
    /// // Connections wait in the kernel's accept queue meanwhile.
    /// server.resume();
    /// assert!(!server.is_paused());
    /// # Ok(())
    /// # }
    /// ```
    pub fn pause(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let from_worker = shared::on_worker_of(&self.shared);
        let mut asked = 0;
        for (i, a) in self.acceptors.iter().enumerate() {
            if a.ctrl.send(Control::Pause(tx.clone())).is_ok() {
                let me = &self.shared.acceptors[i];
                me.pause_ordered.store(true, SeqCst);
                me.waker.wake();
                if !(from_worker && matches!(me.waker, Wake::Task(_))) {
                    asked += 1;
                }
            }
        }
        drop(tx);
        for _ in 0..asked {
            if rx.recv().is_err() {
                break;
            }
        }
        self.paused.store(true, Relaxed);
        tracing::info!(target: "synack::server", "accepting paused");
    }

    /// Accepts again after [`Server::pause`].
    pub fn resume(&self) {
        for a in self.shared.acceptors.iter() {
            a.pause_ordered.store(false, SeqCst);
        }
        self.control(|| Control::Resume);
        self.paused.store(false, Relaxed);
        tracing::info!(target: "synack::server", "accepting resumed");
    }

    /// Whether accepting is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed)
    }

    fn control(&self, msg: impl Fn() -> Control) {
        for (i, a) in self.acceptors.iter().enumerate() {
            if a.ctrl.send(msg()).is_ok() {
                self.shared.acceptors[i].waker.wake();
            }
        }
    }

    /// Shuts down gracefully, without blocking the calling task: see
    /// [`Server::shutdown_blocking`].
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:0")?
    ///     .workers(1)
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// let report = server.shutdown(Duration::from_secs(5)).await;
    /// assert_eq!(report.aborted, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("synack-shutdown".into())
            .spawn(move || {
                let _ = tx.send(self.shutdown_blocking(grace));
            });
        match spawned {
            Ok(_) => rx.await.unwrap_or_default(),
            Err(e) => {
                tracing::error!(target: "synack::server", error = %e, "cannot start the shutdown thread");
                ShutdownReport::default()
            }
        }
    }

    /// Shuts down gracefully: stops accepting, takes the connections already waiting in the
    /// kernel accept queues and hands them to handlers (instead of letting the close reset
    /// them), waits for handlers until `grace` has passed since the call, then cancels the
    /// rest. A `grace` too long to add to the clock (`Duration::MAX`) means a century, which
    /// is to say: wait for every handler. Must not be called from inside a handler (it waits
    /// for the workers to exit).
    pub fn shutdown_blocking(self, grace: Duration) -> ShutdownReport {
        notify::stopping();
        self.wind_down(grace, true, |_| {})
    }

    /// The shutdown: stops accepting (draining the kernel queues when `drain`; when not, they
    /// are left to whoever else holds the sockets, as in a handoff), calls `stopped` once no
    /// acceptor accepts any more, then lets go of the listeners and waits for the handlers.
    pub(crate) fn wind_down(
        mut self,
        grace: Duration,
        drain: bool,
        stopped: impl FnOnce(&Server),
    ) -> ShutdownReport {
        let start = Instant::now();
        let deadline = deadline_after(start, grace);
        let before = self.stats();
        let open_now = before.open;
        self.shared.shutting_down.store(true, SeqCst);
        self.shared.closing.send_replace(true);
        tracing::info!(target: "synack::server", open = open_now, drain,
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX), "shutting down");
        self.stop_acceptors(drain, deadline);
        stopped(&self);
        // Each listener read once (several acceptors may share one), now that nothing accepts
        // from it and before it closes: the kernel resets what it holds then. Not so when
        // another process holds the same sockets (a handoff): their queues are its now.
        let left_in_queue = if drain {
            self.sockets
                .iter()
                .filter_map(|s| sys::listen_queue(&**s).ok().flatten())
                .map(|q| u64::from(q.len))
                .sum()
        } else {
            0
        };
        self.observers.stop_sampling();
        self.sockets.clear();
        {
            let (lock, cv) = &self.shared.idle;
            let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            while self.shared.limit.count() > 0 {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                guard = cv
                    .wait_timeout(guard, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        self.stop_workers();
        self.observers.stop();
        let after = self.stats();
        let drained = after.drained - before.drained;
        // Accepted since `before`: drained, or accepted before the acceptors saw the stop.
        let accepted = after.accepted - before.accepted;
        let ended = after.completed + after.aborted + after.lost + after.open;
        let report = ShutdownReport {
            open_at_start: open_now + accepted.saturating_sub(drained),
            drained,
            completed: after.completed - before.completed,
            aborted: after.aborted - before.aborted,
            lost: after.lost - before.lost,
            unaccounted: i64::try_from(after.accepted).unwrap_or(i64::MAX)
                - i64::try_from(ended).unwrap_or(i64::MAX),
            left_in_queue,
            elapsed: start.elapsed(),
        };
        if report.unaccounted != 0 {
            tracing::error!(target: "synack::server", unaccounted = report.unaccounted,
                accepted = after.accepted, completed = after.completed, aborted = after.aborted,
                lost = after.lost, open = after.open, "connections unaccounted for");
        }
        tracing::info!(target: "synack::server", open_at_start = report.open_at_start,
            drained = report.drained, completed = report.completed, aborted = report.aborted,
            lost = report.lost, left_in_queue = report.left_in_queue, "shutdown complete");
        report
    }

    /// Waits (at most `timeout`) until every live acceptor watches its listeners.
    pub(crate) fn wait_watching(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let all = || {
            self.shared
                .acceptors
                .iter()
                .all(|a| a.watching.load(SeqCst) || !a.alive.load(SeqCst))
        };
        while !all() {
            if Instant::now() >= deadline {
                tracing::warn!(target: "synack::server", "not every acceptor watches its listeners yet");
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub(crate) fn stop_acceptors(&mut self, drain: bool, deadline: Instant) {
        self.control(|| Control::Stop { drain, deadline });
        for a in &mut self.acceptors {
            if let Some(done) = a.done.take() {
                done.wait();
            }
        }
        self.acceptors.clear();
    }

    fn stop_workers(&mut self) {
        for w in &self.workers {
            let _ = w.tx.send(WorkerMsg::Stop);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take()
                && t.join().is_err()
            {
                tracing::error!(target: "synack::server", "a worker thread panicked");
            }
        }
        self.workers.clear();
    }

    /// Waits for SIGINT or SIGTERM, then shuts down gracefully with `grace`: the helper for
    /// binaries. Blocks the calling thread; from async code use [`shutdown_signal`] and
    /// [`Server::shutdown`] instead.
    /// # Errors
    ///
    /// [`Error::Signal`](crate::Error::Signal) when the signal handlers (or the runtime waiting
    /// for them) cannot be set up.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:0")?
    ///     .workers(1)
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// let report = server.run_until_signal(Duration::from_secs(30))?;
    /// println!("{report:?}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn run_until_signal(self, grace: Duration) -> Result<ShutdownReport, crate::Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(crate::Error::Signal)?;
        let sig = rt.block_on(shutdown_signal())?;
        tracing::info!(target: "synack::server", signal = sig, "signal received");
        Ok(self.shutdown_blocking(grace))
    }
}

/// `start + grace`, with `grace` capped at a century so that the sum cannot overflow (and a
/// day from now should even a century not fit the platform's clock).
fn deadline_after(start: Instant, grace: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start
        .checked_add(grace.min(CENTURY))
        .or_else(|| start.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(start)
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.acceptors.is_empty() || !self.workers.is_empty() {
            self.stop_acceptors(false, Instant::now());
            self.stop_workers();
        }
    }
}

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM; yields the signal's name.
/// # Errors
///
/// [`Error::Signal`](crate::Error::Signal) when a signal handler cannot be installed.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .workers(1)
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// let signal = synack::shutdown_signal().await?;
/// println!("{signal}: shutting down");
/// let report = server.shutdown(Duration::from_secs(30)).await;
/// # Ok(())
/// # }
/// ```
pub async fn shutdown_signal() -> Result<&'static str, crate::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).map_err(crate::Error::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(crate::Error::Signal)?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}

// A server handle is shared across threads (in an `Arc`, or a `Weak` inside a route): keep it
// `Send + Sync`.
const _: () = {
    fn send_sync<T: Send + Sync>() {}
    let _ = send_sync::<Server>;
};
