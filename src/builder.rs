//! Configuring a server: where to listen, the backlog, the limits, the threads.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::acceptor::{
    self, AcceptConfig, AcceptCore, AcceptTask, AcceptorDone, AcceptorHandle, FdExhaustionPolicy,
};
use crate::connection::Connection;
use crate::error::Error;
use crate::limit::{Limit, OverloadPolicy};
use crate::listener::{self, Keepalive, ListenOptions, Listener};
use crate::probe::MonoClock;
use crate::sampler::{self, QueueGauge};
use crate::server::Server;
use crate::shared::{AcceptorShared, Shared, Wake, WorkerShared};
use crate::worker::{self, HandlerOutput};

/// The most acceptor or worker threads one server may ask for.
pub const MAX_THREADS: usize = 4096;

/// The default [accept batch](ServerBuilder::accept_batch) of acceptor threads.
const THREAD_ACCEPT_BATCH: usize = 64;

/// The default [accept batch](ServerBuilder::accept_batch) when accepting in the workers.
pub const IN_WORKER_ACCEPT_BATCH: usize = 4;

/// Tomcat's default `maxConnections` (NIO connector).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

#[derive(Debug)]
enum Bind {
    Addr(SocketAddr),
    Adopt(Socket),
}

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }
}

/// Configures and starts a [`Server`]. Obtained from [`Server::builder`].
///
/// Every setting has a default; only a listen address ([`bind`](Self::bind) or
/// [`adopt`](Self::adopt)) is required. Values are checked by [`serve`](Self::serve), which
/// names the setting and what it accepts when one is out of range.
#[derive(Debug)]
pub struct ServerBuilder {
    binds: Vec<Bind>,
    opts: ListenOptions,
    max_connections: usize,
    workers: Option<usize>,
    acceptors: usize,
    accept: AcceptConfig,
    probe: bool,
    queue_sampling: Option<Duration>,
    metrics: Option<Duration>,
    sched_batch: bool,
    accept_in_workers: bool,
    accept_batch: Option<usize>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// A builder with the defaults: backlog 1024, 8192 connections, one worker per core, one
    /// acceptor, `SO_REUSEADDR` and `TCP_NODELAY` on, [`OverloadPolicy::Queue`],
    /// [`FdExhaustionPolicy::Backoff`] from 5 ms to 1 s, at most 64 accepts per listener per
    /// wakeup (4 when accepting in the workers).
    pub fn new() -> Self {
        ServerBuilder {
            binds: Vec::new(),
            opts: ListenOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            workers: None,
            acceptors: 1,
            accept: AcceptConfig {
                // Set by `serve`, from `accept_batch` or the mode's default.
                batch: THREAD_ACCEPT_BATCH,
                backoff_min: Duration::from_millis(5),
                backoff_max: Duration::from_secs(1),
                overload: OverloadPolicy::Queue,
                fd_exhaustion: FdExhaustionPolicy::Backoff,
            },
            probe: false,
            queue_sampling: None,
            metrics: None,
            sched_batch: false,
            accept_in_workers: false,
            accept_batch: None,
        }
    }

    /// Adds a listener on `addr` (`"127.0.0.1:8080"`, `"[::1]:0"`, `"localhost:8080"`, a
    /// `SocketAddr`). A name that resolves to several addresses gets one listener on each. May
    /// be called several times. Fails only when the name does not resolve; the socket is bound
    /// by [`serve`](Self::serve).
    pub fn bind<A: ToSocketAddrs + std::fmt::Debug>(mut self, addr: A) -> Result<Self, Error> {
        let shown = format!("{addr:?}");
        let addrs = addr.to_socket_addrs().map_err(|source| Error::Resolve {
            addr: shown.clone(),
            source,
        })?;
        let before = self.binds.len();
        for a in addrs {
            if !self
                .binds
                .iter()
                .any(|b| matches!(b, Bind::Addr(x) if *x == a && a.port() != 0))
            {
                self.binds.push(Bind::Addr(a));
            }
        }
        if self.binds.len() == before {
            return Err(Error::NoAddress { addr: shown });
        }
        Ok(self)
    }

    /// Adopts a listener bound elsewhere: a `std::net::TcpListener`, a `socket2::Socket` (bound,
    /// listening or not), or a descriptor inherited through systemd socket activation (wrap it
    /// with `TcpListener::from(OwnedFd)`). synack calls `listen` on it again with this builder's
    /// backlog (Linux updates the backlog of a listening socket) and applies the per-connection
    /// options; bind-time options (`reuse_address`, `reuse_port`, `only_v6`) are left as they are.
    pub fn adopt(mut self, listener: impl Into<Socket>) -> Self {
        self.binds.push(Bind::Adopt(listener.into()));
        self
    }

    /// The `listen(2)` backlog: how many connections may wait in the kernel's accept queue.
    /// Between 1 and [`MAX_BACKLOG`](crate::listener::MAX_BACKLOG); the kernel caps it at
    /// `net.core.somaxconn` (see [`ListenerInfo::effective_backlog`](crate::ListenerInfo)).
    /// Default 1024.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.opts.backlog = backlog;
        self
    }

    /// The most connections open at once (Tomcat's `maxConnections`); at the limit the
    /// [`OverloadPolicy`] applies. At least 1. Default 8192.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Worker threads, each a tokio current-thread runtime. Default: the available parallelism.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Acceptor threads. With [`reuse_port`](Self::reuse_port) each owns its own socket per
    /// address and the kernel spreads connections over them; without, they all poll the same
    /// sockets. Default 1.
    pub fn acceptors(mut self, n: usize) -> Self {
        self.acceptors = n;
        self
    }

    /// `SO_REUSEADDR` (default on): rebind at once over connections in `TIME_WAIT`.
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.opts.reuse_address = on;
        self
    }

    /// `SO_REUSEPORT` (default off): several sockets on one address, the kernel balancing
    /// connections across them. With several acceptors, each gets its own socket.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.opts.reuse_port = on;
        self
    }

    /// `IPV6_V6ONLY` on IPv6 listeners: `true` accepts only IPv6, `false` IPv4-mapped too.
    /// Default: the system's (`net.ipv6.bindv6only`).
    pub fn only_v6(mut self, on: bool) -> Self {
        self.opts.only_v6 = Some(on);
        self
    }

    /// `TCP_NODELAY` on accepted connections (default on).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.opts.nodelay = on;
        self
    }

    /// `TCP_DEFER_ACCEPT` (Linux): the kernel hands a connection to `accept` only once the
    /// client has sent data, or after about this long (whole seconds; a fraction is dropped).
    /// At least 1 s: the kernel counts seconds, and 0 would turn it off. Default off.
    pub fn defer_accept(mut self, wait: Duration) -> Self {
        self.opts.defer_accept = Some(wait);
        self
    }

    /// `TCP_FASTOPEN` (Linux): the queue length for TFO requests. Default off.
    pub fn fastopen(mut self, queue_len: u32) -> Self {
        self.opts.fastopen = Some(queue_len);
        self
    }

    /// `SO_RCVBUF` of accepted connections (set on the listener, before `listen`, so the window
    /// scale fits). Default: the system's.
    pub fn recv_buffer_size(mut self, bytes: usize) -> Self {
        self.opts.recv_buffer_size = Some(bytes);
        self
    }

    /// `SO_SNDBUF` of accepted connections. Default: the system's.
    pub fn send_buffer_size(mut self, bytes: usize) -> Self {
        self.opts.send_buffer_size = Some(bytes);
        self
    }

    /// TCP keepalive on accepted connections. The idle time and interval are whole seconds
    /// (at least 1 s each), the retries at least 1. Default off.
    pub fn keepalive(mut self, keepalive: Keepalive) -> Self {
        self.opts.keepalive = Some(keepalive);
        self
    }

    /// What happens at the connection limit. Default [`OverloadPolicy::Queue`].
    pub fn overload_policy(mut self, policy: OverloadPolicy) -> Self {
        self.accept.overload = policy;
        self
    }

    /// What happens when file descriptors run out. Default [`FdExhaustionPolicy::Backoff`].
    pub fn fd_exhaustion_policy(mut self, policy: FdExhaustionPolicy) -> Self {
        self.accept.fd_exhaustion = policy;
        self
    }

    /// The most connections accepted from one listener per wakeup before the others get a
    /// turn (and, when [accepting in the workers](Self::accept_in_workers), before the
    /// worker's other handlers do). At least 1. Default 64 with acceptor threads,
    /// [`IN_WORKER_ACCEPT_BATCH`] in the workers: there each connection's handler is started
    /// before the next `accept()`, so a batch holds up the worker's other handlers by that many
    /// handler starts, while the rest of the queue waits in the kernel, where the backlog
    /// applies.
    pub fn accept_batch(mut self, n: usize) -> Self {
        self.accept_batch = Some(n);
        self
    }

    /// The back-off after a resource-exhaustion accept error: starts at `min`, doubles up to
    /// `max`, resets after a successful accept. Default 5 ms to 1 s.
    pub fn accept_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.accept.backoff_min = min;
        self.accept.backoff_max = max;
        self
    }

    /// Writes the [probe header](crate::probe) (accept and dispatch times, 24 bytes) on every
    /// connection before its handler runs, for `synack-load flood --probe`. Default off: it
    /// changes what clients receive.
    ///
    /// Never turn it on for a public listener: every client receives the host's
    /// `CLOCK_MONOTONIC` in nanoseconds (its uptime) and the server's accept and dispatch
    /// timing. It is meant for a load test on one host.
    pub fn probe(mut self, on: bool) -> Self {
        self.probe = on;
        self
    }

    /// Runs the acceptor and worker threads under Linux's `SCHED_BATCH` policy: wakeups no
    /// longer preempt a running thread, so an acceptor and a worker sharing a core switch far
    /// less (about 15% less CPU per connection measured here), at the price of some wakeup
    /// latency. Default off. Elsewhere a warning is logged and the threads run as usual.
    pub fn sched_batch(mut self, on: bool) -> Self {
        self.sched_batch = on;
        self
    }

    /// Accepts on the workers themselves instead of on dedicated acceptor threads: each worker
    /// runs the accept loop as a task on its own runtime (the listeners registered with its
    /// reactor) and runs the handlers of what it accepts, so a connection reaches its handler
    /// without crossing threads. Everything else is as with acceptor threads: the connection
    /// limit and its [`OverloadPolicy`], the accept batch (after a full batch the worker runs
    /// its handlers before accepting more), error back-off and shedding, pause, drain on
    /// shutdown, the statistics (one acceptor per worker). Cheaper per connection (no handoff),
    /// but a worker busy in a handler accepts nothing meanwhile (and [`Server::pause`] waits
    /// for every worker to take the order, except when called from a handler, where it
    /// cannot: see there), and with several workers on
    /// one socket every worker is woken for each new connection; with
    /// [`reuse_port`](Self::reuse_port) each worker gets a socket of its own instead (the
    /// kernel then spreads connections by hash, whatever each worker's load).
    /// [`acceptors`](Self::acceptors) must stay 1. Default off.
    pub fn accept_in_workers(mut self, on: bool) -> Self {
        self.accept_in_workers = on;
        self
    }

    /// Samples each listener's accept queue (`TCP_INFO`) every `interval` on a thread of its
    /// own; [`Stats::listeners`](crate::Stats::listeners) then carries the peak depth and the
    /// time spent full, and [`Server::queue_samples`](crate::Server::queue_samples) the series.
    /// Default off. At least 1 ms.
    pub fn queue_sampling(mut self, interval: Duration) -> Self {
        self.queue_sampling = Some(interval);
        self
    }

    /// Checks every setting without opening anything: the errors [`serve`](Self::serve)
    /// would give for bad values.
    pub fn check(&self) -> Result<(), Error> {
        self.validate().map(|_| ())
    }

    /// Publishes the statistics through the `metrics` facade every `interval`, and dispatch
    /// latency as it happens (feature `metrics`; names in [`crate::metrics`]). Install the
    /// recorder before `serve()`. At least 1 ms.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, interval: Duration) -> Self {
        self.metrics = Some(interval);
        self
    }

    fn validate(&self) -> Result<usize, Error> {
        listener::validate_backlog(self.opts.backlog)?;
        if self.max_connections == 0 {
            return Err(Error::invalid(
                "max_connections",
                0,
                "at least 1 connection must be allowed",
            ));
        }
        let workers = match self.workers {
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        for (name, n) in [("workers", workers), ("acceptors", self.acceptors)] {
            if n == 0 || n > MAX_THREADS {
                return Err(Error::invalid(
                    name,
                    n,
                    format!("between 1 and {MAX_THREADS} threads"),
                ));
            }
        }
        if self.accept_in_workers && self.acceptors != 1 {
            return Err(Error::invalid(
                "acceptors",
                self.acceptors,
                "1 (the default) with accept_in_workers, where every worker is its own acceptor",
            ));
        }
        if self.accept_batch == Some(0) {
            return Err(Error::invalid(
                "accept_batch",
                0,
                "at least 1 accept per wakeup",
            ));
        }
        let (min, max) = (self.accept.backoff_min, self.accept.backoff_max);
        if min.is_zero() || min > max {
            return Err(Error::invalid(
                "accept_backoff",
                format!("{min:?}..{max:?}"),
                "a minimum above zero and not above the maximum",
            ));
        }
        if let Some(d) = self.opts.defer_accept
            && d < Duration::from_secs(1)
        {
            return Err(Error::invalid(
                "defer_accept",
                format!("{d:?}"),
                "at least 1 s (TCP_DEFER_ACCEPT counts whole seconds, and 0 turns it off; leave \
                 it unset for off)",
            ));
        }
        if let Some(k) = self.opts.keepalive {
            let seconds = "at least 1 s (TCP keepalive counts whole seconds)";
            if k.idle < Duration::from_secs(1) {
                return Err(Error::invalid(
                    "keepalive.idle",
                    format!("{:?}", k.idle),
                    seconds,
                ));
            }
            if let Some(i) = k.interval
                && i < Duration::from_secs(1)
            {
                return Err(Error::invalid(
                    "keepalive.interval",
                    format!("{i:?}"),
                    seconds,
                ));
            }
            if k.retries == Some(0) {
                return Err(Error::invalid(
                    "keepalive.retries",
                    0,
                    "at least 1 probe (leave it unset for the OS default)",
                ));
            }
        }
        if let Some(i) = self.metrics
            && i < Duration::from_millis(1)
        {
            return Err(Error::invalid(
                "metrics",
                format!("{i:?}"),
                "an interval of at least 1 ms",
            ));
        }
        if let Some(i) = self.queue_sampling
            && i < Duration::from_millis(1)
        {
            return Err(Error::invalid(
                "queue_sampling",
                format!("{i:?}"),
                "an interval of at least 1 ms",
            ));
        }
        Ok(workers)
    }

    /// Opens every listener; with `reuse_port`, one socket per address for each of the
    /// `acceptors` acceptors.
    fn open_listeners(&mut self, acceptors: usize) -> Result<Vec<Listener>, Error> {
        let split = self.opts.reuse_port && acceptors > 1;
        let mut out = Vec::new();
        for bind in std::mem::take(&mut self.binds) {
            match bind {
                Bind::Addr(addr) if split => {
                    let mut addr = addr;
                    for k in 0..acceptors {
                        let l = listener::open(addr, &self.opts, out.len(), Some(k))?;
                        addr = l.info.local_addr;
                        out.push(l);
                    }
                }
                Bind::Addr(addr) => {
                    let l = listener::open(addr, &self.opts, out.len(), None)?;
                    out.push(l);
                }
                Bind::Adopt(sock) => {
                    let l = listener::adopt(sock, &self.opts, out.len())?;
                    out.push(l);
                }
            }
        }
        Ok(out)
    }

    /// Opens the listeners and starts the acceptor and worker threads; every accepted
    /// connection is passed to `handler` on a worker.
    ///
    /// The handler's future runs on the worker's single-threaded runtime, so it need not be
    /// `Send`; it may return `()` or a `Result` (errors are counted and logged at debug level).
    /// Needs no runtime in the calling thread.
    pub fn serve<H, Fut>(mut self, handler: H) -> Result<Server, Error>
    where
        H: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: HandlerOutput,
    {
        if self.binds.is_empty() {
            return Err(Error::NoListener);
        }
        let n_workers = self.validate()?;
        let n_acceptors = if self.accept_in_workers {
            n_workers
        } else {
            self.acceptors
        };
        self.accept.batch = match self.accept_batch {
            Some(n) => n,
            None if self.accept_in_workers => IN_WORKER_ACCEPT_BATCH,
            None => THREAD_ACCEPT_BATCH,
        };
        let listeners = self.open_listeners(n_acceptors)?;
        let mut polls = Vec::with_capacity(n_acceptors);
        let mut notifies = Vec::new();
        let mut acceptor_shared = Vec::with_capacity(n_acceptors);
        for k in 0..n_acceptors {
            let waker = if self.accept_in_workers {
                let notify = Arc::new(tokio::sync::Notify::new());
                notifies.push(notify.clone());
                Wake::Task(notify)
            } else {
                let (poll, waker) = acceptor::thread::new_poll(k)?;
                polls.push(poll);
                Wake::Poll(waker)
            };
            acceptor_shared.push(AcceptorShared::new(waker));
        }
        let shared = Arc::new(Shared {
            limit: Limit::new(self.max_connections),
            workers: (0..n_workers).map(|_| WorkerShared::new()).collect(),
            acceptors: acceptor_shared.into_boxed_slice(),
            shutting_down: AtomicBool::new(false),
            idle: (Mutex::new(()), Condvar::new()),
            probe: self.probe.then(MonoClock::new),
            #[cfg(feature = "metrics")]
            metrics: self.metrics.is_some(),
            closing: tokio::sync::watch::Sender::new(false),
        });
        let gauges: Arc<[QueueGauge]> = listeners.iter().map(|_| QueueGauge::default()).collect();
        let mut server = Server {
            shared: shared.clone(),
            listeners: listeners.iter().map(|l| l.info.clone()).collect(),
            sockets: listeners.iter().map(|l| l.sock.clone()).collect(),
            acceptors: Vec::new(),
            workers: Vec::new(),
            paused: AtomicBool::new(false),
            gauges: gauges.clone(),
            sampler: None,
            #[cfg(feature = "metrics")]
            publisher: None,
        };
        #[cfg(feature = "metrics")]
        if let Some(interval) = self.metrics {
            let ls = listeners
                .iter()
                .map(|l| (l.info.clone(), l.sock.clone()))
                .collect();
            let p = crate::metrics::Publisher::spawn(shared.clone(), ls, interval).map_err(
                |source| Error::Start {
                    what: "the metrics publisher thread".into(),
                    source,
                },
            )?;
            server.publisher = Some(p);
        }
        if let Some(interval) = self.queue_sampling {
            let socks = listeners.iter().map(|l| l.sock.clone()).collect();
            let sampler =
                sampler::spawn(socks, gauges, interval, Instant::now()).map_err(|source| {
                    Error::Start {
                        what: "the queue sampler thread".into(),
                        source,
                    }
                })?;
            server.sampler = Some(sampler);
        }
        let handler = Arc::new(handler);
        let opts = Arc::new(self.opts.clone());
        // The listeners of acceptor `k`, and the server's end of its orders.
        let mut acceptor_parts = (0..n_acceptors).map(|k| {
            let mine = listeners
                .iter()
                .filter(|l| l.info.acceptor.is_none_or(|a| a == k))
                .map(|l| {
                    let own = l.info.acceptor.is_some();
                    (l.info.index, l.sock.clone(), l.info.local_addr, own)
                })
                .collect();
            let core = AcceptCore::new(k, mine, shared.clone(), self.accept.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            (core, tx, rx)
        });
        for i in 0..n_workers {
            let mine = if self.accept_in_workers {
                acceptor_parts.next()
            } else {
                None
            };
            let accept = match mine {
                Some((core, ctrl_tx, ctrl)) => {
                    let (done, done_rx) = std::sync::mpsc::channel();
                    server.acceptors.push(AcceptorHandle {
                        ctrl: ctrl_tx,
                        done: Some(AcceptorDone::Task(Mutex::new(done_rx))),
                    });
                    Some(AcceptTask {
                        notify: notifies[core.id].clone(),
                        core,
                        ctrl,
                        done,
                    })
                }
                None => None,
            };
            let w = worker::spawn(
                i,
                shared.clone(),
                handler.clone(),
                opts.clone(),
                self.sched_batch,
                accept,
            )?;
            server.workers.push(w);
        }
        let senders: Vec<_> = server.workers.iter().map(|w| w.tx.clone()).collect();
        let sched_batch = self.sched_batch;
        for (poll, (core, ctrl_tx, ctrl)) in polls.into_iter().zip(acceptor_parts) {
            let thread = acceptor::thread::spawn(
                core,
                poll,
                senders.clone(),
                ctrl,
                shared.clone(),
                sched_batch,
            )?;
            server.acceptors.push(AcceptorHandle {
                ctrl: ctrl_tx,
                done: Some(AcceptorDone::Thread(thread)),
            });
        }
        tracing::info!(target: "synack::server", listeners = server.listeners.len(),
            acceptors = n_acceptors, accept_in_workers = self.accept_in_workers, workers = n_workers, max_connections = self.max_connections,
            "server started");
        Ok(server)
    }
}
