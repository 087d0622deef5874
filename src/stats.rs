//! Statistics: each acceptor and worker records into its own counters and histograms (no lock
//! shared between threads on the accept path); [`Server::stats`](crate::Server::stats) merges
//! them into a [`Stats`] snapshot.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Why an `accept()` failed, grouped as the kernel reports it.
/// # Examples
///
/// ```
/// use synack::AcceptErrorKind;
///
/// let kind = AcceptErrorKind::from_errno(libc::EMFILE);
/// assert_eq!(kind, AcceptErrorKind::ProcessFdLimit);
/// assert!(kind.is_resource_exhaustion());
/// assert_eq!(kind.name(), "process_fd_limit");
/// assert!(!AcceptErrorKind::from_errno(libc::ECONNABORTED).is_resource_exhaustion());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AcceptErrorKind {
    /// `ECONNABORTED`: the client reset the connection while it waited in the queue.
    ConnectionAborted,
    /// `EPROTO` and the network errors Linux passes up from the new socket (`ENETDOWN`,
    /// `EHOSTUNREACH`, ...): that one connection is lost, the listener is fine.
    Protocol,
    /// `EPERM`: a firewall rule forbade the connection.
    Permission,
    /// `EMFILE`: the process is out of file descriptors (`RLIMIT_NOFILE`).
    ProcessFdLimit,
    /// `ENFILE`: the system is out of file descriptors (`fs.file-max`).
    SystemFdLimit,
    /// `ENOBUFS`: socket buffer memory exhausted.
    NoBuffers,
    /// `ENOMEM`: kernel memory exhausted.
    NoMemory,
    /// Anything else (logged with its errno).
    Other,
}

impl AcceptErrorKind {
    /// Every kind, in a fixed order.
    pub const ALL: [AcceptErrorKind; 8] = [
        AcceptErrorKind::ConnectionAborted,
        AcceptErrorKind::Protocol,
        AcceptErrorKind::Permission,
        AcceptErrorKind::ProcessFdLimit,
        AcceptErrorKind::SystemFdLimit,
        AcceptErrorKind::NoBuffers,
        AcceptErrorKind::NoMemory,
        AcceptErrorKind::Other,
    ];

    /// Classifies an errno returned by `accept`.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ECONNABORTED => AcceptErrorKind::ConnectionAborted,
            e if crate::sys::errno::is_pending_network_error(e) => AcceptErrorKind::Protocol,
            libc::EPERM => AcceptErrorKind::Permission,
            libc::EMFILE => AcceptErrorKind::ProcessFdLimit,
            libc::ENFILE => AcceptErrorKind::SystemFdLimit,
            libc::ENOBUFS => AcceptErrorKind::NoBuffers,
            libc::ENOMEM => AcceptErrorKind::NoMemory,
            _ => AcceptErrorKind::Other,
        }
    }

    /// Whether the error means a resource is exhausted, so accepting again at once would spin.
    pub fn is_resource_exhaustion(self) -> bool {
        matches!(
            self,
            AcceptErrorKind::ProcessFdLimit
                | AcceptErrorKind::SystemFdLimit
                | AcceptErrorKind::NoBuffers
                | AcceptErrorKind::NoMemory
        )
    }

    /// A short stable name (`connection_aborted`, `process_fd_limit`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AcceptErrorKind::ConnectionAborted => "connection_aborted",
            AcceptErrorKind::Protocol => "protocol",
            AcceptErrorKind::Permission => "permission",
            AcceptErrorKind::ProcessFdLimit => "process_fd_limit",
            AcceptErrorKind::SystemFdLimit => "system_fd_limit",
            AcceptErrorKind::NoBuffers => "no_buffers",
            AcceptErrorKind::NoMemory => "no_memory",
            AcceptErrorKind::Other => "other",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Accept errors counted by kind.
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
/// let errors = server.stats().accept_errors;
/// for (kind, n) in errors.iter().filter(|(_, n)| *n > 0) {
///     println!("{}: {n}", kind.name());
/// }
/// assert_eq!(errors.get(synack::AcceptErrorKind::ProcessFdLimit), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptErrors {
    counts: [u64; AcceptErrorKind::ALL.len()],
}

impl AcceptErrors {
    /// The count for one kind.
    pub fn get(&self, kind: AcceptErrorKind) -> u64 {
        self.counts[kind.slot()]
    }

    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(kind, count)` for every kind, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (AcceptErrorKind, u64)> + '_ {
        AcceptErrorKind::ALL.iter().map(|k| (*k, self.get(*k)))
    }
}

/// Microsecond histogram bounds: 1 us to one hour, 3 significant figures.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

fn batch_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << 20, 3).expect("static histogram bounds are valid")
}

/// One acceptor's counters. Written by that acceptor (and, under its lock, by the worker
/// that accepts for it while idle) only. (Public, through
/// `__bench`, for the micro-benchmarks only.)
#[doc(hidden)]
#[allow(missing_docs)]
#[derive(Debug)]
pub struct AcceptorStats {
    pub accepted: AtomicU64,
    /// Of `accepted`, those its idle worker accepted for it.
    pub worker_accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub shed: AtomicU64,
    pub drained: AtomicU64,
    pub limit_reached: AtomicU64,
    /// Accepted, then closed unserved: no worker was alive.
    pub lost: AtomicU64,
    pub errors: [AtomicU64; AcceptErrorKind::ALL.len()],
    pub batch: Mutex<Histogram<u64>>,
}

impl Default for AcceptorStats {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(missing_docs)]
impl AcceptorStats {
    pub fn new() -> Self {
        AcceptorStats {
            accepted: AtomicU64::new(0),
            worker_accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            limit_reached: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            errors: Default::default(),
            batch: Mutex::new(batch_histogram()),
        }
    }

    pub fn error(&self, kind: AcceptErrorKind) {
        self.errors[kind.slot()].fetch_add(1, Relaxed);
    }

    pub fn record_batch(&self, n: u64) {
        if n > 0
            && let Ok(mut h) = self.batch.lock()
        {
            h.saturating_record(n);
        }
    }
}

/// One worker's counters. Written by that worker thread only. (Public, through `__bench`,
/// for the micro-benchmarks only.)
#[doc(hidden)]
#[allow(missing_docs)]
#[derive(Debug)]
pub struct WorkerStats {
    pub completed: AtomicU64,
    pub aborted: AtomicU64,
    pub panics: AtomicU64,
    pub handler_errors: AtomicU64,
    /// Dispatched to this worker, then closed unserved: the worker had died.
    pub lost: AtomicU64,
    /// Connections whose FIN left with their handler's held writes, and pushes of held
    /// writes (see `fin_with_data`).
    pub fin_with_data: AtomicU64,
    pub held_pushed: AtomicU64,
    pub dispatch_us: Mutex<Histogram<u64>>,
    /// TLS handshakes done, resumed, and failed by kind (indexed by the crate's `TlsFailure`).
    pub tls_done: AtomicU64,
    pub tls_resumed: AtomicU64,
    pub tls_failed: [AtomicU64; 4],
    pub tls_handshake_us: Mutex<Histogram<u64>>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(missing_docs)]
impl WorkerStats {
    /// What a worker records when it dispatches a connection (the hot path's bookkeeping).
    pub fn record_dispatch(&self, waited: std::time::Duration) {
        if let Ok(mut h) = self.dispatch_us.lock() {
            h.saturating_record((waited.as_micros() as u64).max(1));
        }
    }

    pub fn new() -> Self {
        WorkerStats {
            completed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            handler_errors: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            fin_with_data: AtomicU64::new(0),
            held_pushed: AtomicU64::new(0),
            dispatch_us: Mutex::new(latency_histogram()),
            tls_done: AtomicU64::new(0),
            tls_resumed: AtomicU64::new(0),
            tls_failed: Default::default(),
            tls_handshake_us: Mutex::new(latency_histogram()),
        }
    }
}

/// The kernel's view of one listener at snapshot time.
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
/// for l in server.stats().listeners {
///     println!("listener {} on {}: {:?} of {:?} waiting", l.index, l.local_addr, l.queue_len, l.effective_backlog);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Index in [`Server::listeners`](crate::Server::listeners).
    pub index: usize,
    /// The bound address.
    pub local_addr: SocketAddr,
    /// Connections waiting in the kernel's accept queue (Linux `TCP_INFO` `tcpi_unacked`).
    pub queue_len: Option<u32>,
    /// The effective backlog (Linux `TCP_INFO` `tcpi_sacked`).
    pub effective_backlog: Option<u32>,
    /// With queue sampling on: the deepest queue seen.
    pub peak_queue_len: Option<u32>,
    /// With queue sampling on: time the queue was seen full (past the effective backlog, where
    /// Linux refuses the next connection).
    pub time_full: Duration,
    /// With queue sampling on: samples taken.
    pub queue_samples: u64,
}

/// A snapshot of a server's statistics, merged from every acceptor and worker.
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
/// std::net::TcpStream::connect(server.local_addr())?.read_to_end(&mut Vec::new())?;
/// let s: synack::Stats = server.stats();
/// assert_eq!(s.accepted, 1);
/// assert_eq!(s.accept_errors.total(), 0);
/// let l = &s.listeners[0];
/// println!("{}: {:?} waiting, backlog {:?}", l.local_addr, l.queue_len, l.effective_backlog);
/// let dispatch: &synack::Histogram<u64> = &s.dispatch_latency_us;
/// println!("median dispatch {} us", dispatch.value_at_quantile(0.5));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted and handed to a worker (drained ones included).
    pub accepted: u64,
    /// Of [`accepted`](Self::accepted), those a worker accepted itself, for its acceptor
    /// thread, while it had nothing else to run (see
    /// [`idle_worker_accepts`](crate::ServerBuilder::idle_worker_accepts)): no handoff between
    /// threads. Zero with [`accept_in_workers`](crate::ServerBuilder::accept_in_workers), where
    /// every accept is the worker's own.
    pub worker_accepted: u64,
    /// Connections accepted and closed at once with RST because the connection limit was
    /// reached under [`OverloadPolicy::Reject`](crate::OverloadPolicy::Reject).
    pub rejected: u64,
    /// Connections accepted and closed at once with RST because file descriptors ran out,
    /// under [`FdExhaustionPolicy::Shed`](crate::FdExhaustionPolicy::Shed).
    pub shed: u64,
    /// Connections taken from the kernel queue during shutdown.
    pub drained: u64,
    /// Connections open now: accepted and not yet dropped by their handler.
    pub open: u64,
    /// Open connections per worker.
    pub open_per_worker: Vec<u64>,
    /// Handlers that returned (or panicked).
    pub completed: u64,
    /// Handlers cancelled before their end: at the end of a shutdown's grace period, or with
    /// their worker when it died.
    pub aborted: u64,
    /// Connections accepted and then closed without a handler, because their worker had died
    /// (or no worker was alive): see [`workers_alive`](Self::workers_alive).
    pub lost: u64,
    /// Handlers that panicked, in their code or in their future's `Drop` (counted in
    /// `completed` too, or in `aborted` when the panic came as they were cancelled).
    pub handler_panics: u64,
    /// Handlers that returned an error (counted in `completed` too).
    pub handler_errors: u64,
    /// Connections whose FIN was sent while their handler's last writes were still queued (see
    /// [`fin_with_data`](crate::ServerBuilder::fin_with_data)): the kernel puts it in the last
    /// segment of that data.
    pub fin_with_data: u64,
    /// Times writes held for the FIN were pushed on their own because the connection lived on
    /// past the poll that wrote them (one `setsockopt` each).
    pub held_pushed: u64,
    /// Times an acceptor stopped accepting because the connection limit was reached.
    pub limit_reached: u64,
    /// Accept errors by kind.
    pub accept_errors: AcceptErrors,
    /// Accept to handler start, microseconds.
    pub dispatch_latency_us: Histogram<u64>,
    /// Connections accepted per listener readiness wakeup.
    pub accept_batch: Histogram<u64>,
    /// The kernel's view of each listener.
    pub listeners: Vec<ListenerStats>,
    /// Whether accepting is paused.
    pub paused: bool,
    /// The connection limit.
    pub max_connections: usize,
    /// Per worker: whether its thread is alive. A worker whose thread died (a panic outside
    /// any handler's, such as one in a tracing layer) gets no more connections; it is logged
    /// at error level on `synack::worker`.
    pub workers_alive: Vec<bool>,
    /// Per acceptor (with `accept_in_workers`, one per worker): whether it is still accepting
    /// or able to. A dead one is logged at error level on `synack::acceptor`, and each listener
    /// no live acceptor takes from any more is shut down.
    pub acceptors_alive: Vec<bool>,
    /// TLS handshakes (zeros on plain TCP): done, resumed, failed by kind, in progress, and
    /// their latency. Failed ones count in [`completed`](Self::completed) too: their task ended.
    pub tls: TlsStats,
}

impl Stats {
    /// Merges per-thread recorders into a snapshot.
    pub(crate) fn merge(
        acceptors: &[&AcceptorStats],
        workers: &[&WorkerStats],
        open_per_worker: Vec<u64>,
    ) -> Self {
        let mut s = Stats {
            accepted: 0,
            worker_accepted: 0,
            rejected: 0,
            shed: 0,
            drained: 0,
            open: open_per_worker.iter().sum(),
            open_per_worker,
            completed: 0,
            aborted: 0,
            lost: 0,
            handler_panics: 0,
            handler_errors: 0,
            fin_with_data: 0,
            held_pushed: 0,
            limit_reached: 0,
            accept_errors: AcceptErrors::default(),
            dispatch_latency_us: latency_histogram(),
            accept_batch: batch_histogram(),
            listeners: Vec::new(),
            paused: false,
            max_connections: 0,
            workers_alive: Vec::new(),
            acceptors_alive: Vec::new(),
            tls: TlsStats::default(),
        };
        for a in acceptors {
            s.accepted += a.accepted.load(Relaxed);
            s.worker_accepted += a.worker_accepted.load(Relaxed);
            s.rejected += a.rejected.load(Relaxed);
            s.shed += a.shed.load(Relaxed);
            s.drained += a.drained.load(Relaxed);
            s.limit_reached += a.limit_reached.load(Relaxed);
            s.lost += a.lost.load(Relaxed);
            for (i, c) in a.errors.iter().enumerate() {
                s.accept_errors.counts[i] += c.load(Relaxed);
            }
            if let Ok(h) = a.batch.lock() {
                let _ = s.accept_batch.add(&*h);
            }
        }
        for w in workers {
            s.completed += w.completed.load(Relaxed);
            s.aborted += w.aborted.load(Relaxed);
            s.handler_panics += w.panics.load(Relaxed);
            s.handler_errors += w.handler_errors.load(Relaxed);
            s.lost += w.lost.load(Relaxed);
            s.fin_with_data += w.fin_with_data.load(Relaxed);
            s.held_pushed += w.held_pushed.load(Relaxed);
            if let Ok(h) = w.dispatch_us.lock() {
                let _ = s.dispatch_latency_us.add(&*h);
            }
            s.tls.handshakes += w.tls_done.load(Relaxed);
            s.tls.resumed += w.tls_resumed.load(Relaxed);
            let f = |kind: TlsFailure| w.tls_failed[kind as usize].load(Relaxed);
            s.tls.failed.timeout += f(TlsFailure::Timeout);
            s.tls.failed.protocol += f(TlsFailure::Protocol);
            s.tls.failed.certificate += f(TlsFailure::Certificate);
            s.tls.failed.io += f(TlsFailure::Io);
            if let Ok(h) = w.tls_handshake_us.lock() {
                let _ = s.tls.handshake_us.add(&*h);
            }
        }
        s
    }
}

/// A failed handshake's kind: the index of its counter in [`WorkerStats::tls_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) enum TlsFailure {
    Timeout = 0,
    Protocol = 1,
    Certificate = 2,
    Io = 3,
}

impl WorkerStats {
    /// Counts a failed TLS handshake of `kind`.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn tls_failure(&self, kind: TlsFailure) {
        self.tls_failed[kind as usize].fetch_add(1, Relaxed);
    }
}

/// Why TLS handshakes failed, counted by kind: in [`Stats::tls`](crate::Stats::tls).
/// # Examples
///
/// ```
/// let f = synack::TlsFailures::default();
/// assert_eq!(f.total(), 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFailures {
    /// Not done within the handshake timeout (a client that never finishes, a stall).
    pub timeout: u64,
    /// A protocol error or an alert: no common version or cipher suite, bad messages.
    pub protocol: u64,
    /// A certificate the peer refused (its alert says so), or a client certificate refused.
    pub certificate: u64,
    /// The connection failed under the handshake (the peer closed or reset it).
    pub io: u64,
}

impl TlsFailures {
    /// Every failed handshake.
    pub fn total(&self) -> u64 {
        self.timeout + self.protocol + self.certificate + self.io
    }
}

/// The TLS handshakes of a server: in [`Stats::tls`](crate::Stats::tls).
/// # Examples
///
/// ```
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// let tls = server.stats().tls;
/// // A plain-TCP server does no handshakes.
/// assert_eq!(tls.handshakes + tls.failed.total(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsStats {
    /// Handshakes done (full and resumed).
    pub handshakes: u64,
    /// Of those, resumed.
    pub resumed: u64,
    /// Handshakes that failed, by kind (each closed its connection).
    pub failed: TlsFailures,
    /// Handshakes in progress now.
    pub in_progress: u64,
    /// Handshake latency, microseconds (done ones).
    pub handshake_us: Histogram<u64>,
}

impl Default for TlsStats {
    fn default() -> Self {
        TlsStats {
            handshakes: 0,
            resumed: 0,
            failed: TlsFailures::default(),
            in_progress: 0,
            handshake_us: latency_histogram(),
        }
    }
}
