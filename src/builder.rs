//! Configuring a server: where to listen, the backlog, the limits, the threads.

use std::future::Future;
use std::net::ToSocketAddrs;
use std::time::Duration;

use socket2::Socket;

use crate::acceptor::{AcceptConfig, FdExhaustionPolicy};
use crate::connection::Connection;
use crate::error::Error;
use crate::inherit::SurplusMembers;
use crate::limit::OverloadPolicy;
use crate::listener::{self, Keepalive, ListenOptions};
use crate::observe::ObserveSettings;
use crate::server::Server;
use crate::start::{self, Bind, Settings};
use crate::worker::HandlerOutput;

/// The most acceptor or worker threads one server may ask for.
pub const MAX_THREADS: usize = 4096;

/// The default [accept batch](ServerBuilder::accept_batch) of acceptor threads.
const THREAD_ACCEPT_BATCH: usize = 64;

/// The default [accept batch](ServerBuilder::accept_batch) when accepting in the workers.
pub const IN_WORKER_ACCEPT_BATCH: usize = 4;

/// Tomcat's default `maxConnections` (NIO connector).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// The default [handshake cap](ServerBuilder::max_handshakes) per worker (actix-tls's).
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;

/// The default [handshake timeout](ServerBuilder::handshake_timeout).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

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
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .backlog(512)
///     .max_connections(1000)
///     .workers(2)
///     .accept_backoff(Duration::from_millis(10), Duration::from_secs(2))
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// println!("listening on {}", server.local_addr());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ServerBuilder {
    binds: Vec<Bind>,
    opts: ListenOptions,
    max_connections: usize,
    workers: Option<usize>,
    acceptors: usize,
    overload: OverloadPolicy,
    fd_exhaustion: FdExhaustionPolicy,
    backoff: (Duration, Duration),
    probe: bool,
    queue_sampling: Option<Duration>,
    metrics: Option<Duration>,
    sched_batch: bool,
    acceptor_sched_batch: bool,
    accept_in_workers: bool,
    idle_worker_accepts: bool,
    fin_with_data: bool,
    accept_batch: Option<usize>,
    inherit: bool,
    surplus: SurplusMembers,
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    max_handshakes: usize,
    handshake_timeout: Duration,
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
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), synack::Error> {
    /// let builder = synack::ServerBuilder::new().bind("127.0.0.1:0")?;
    /// assert!(builder.check().is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Self {
        ServerBuilder {
            binds: Vec::new(),
            opts: ListenOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            workers: None,
            acceptors: 1,
            overload: OverloadPolicy::Queue,
            fd_exhaustion: FdExhaustionPolicy::Backoff,
            backoff: (Duration::from_millis(5), Duration::from_secs(1)),
            probe: false,
            queue_sampling: None,
            metrics: None,
            sched_batch: false,
            acceptor_sched_batch: true,
            accept_in_workers: false,
            idle_worker_accepts: true,
            fin_with_data: true,
            accept_batch: None,
            inherit: true,
            surplus: SurplusMembers::Accept,
            #[cfg(feature = "tls")]
            tls: None,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Adds a listener on `addr` (`"127.0.0.1:8080"`, `"[::1]:0"`, `"localhost:8080"`, a
    /// `SocketAddr`). A name that resolves to several addresses gets one listener on each. May
    /// be called several times. Fails only when the name does not resolve; the socket is bound
    /// by [`serve`](Self::serve).
    /// # Errors
    ///
    /// [`Error::Resolve`] when `addr` does not resolve, [`Error::NoAddress`] when it resolves to no
    /// address not already bound.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), synack::Error> {
    /// let builder = synack::Server::builder()
    ///     .bind("127.0.0.1:0")?
    ///     .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    /// # let _ = builder;
    /// assert!(matches!(
    ///     synack::Server::builder().bind("no such host.invalid:80"),
    ///     Err(synack::Error::Resolve { .. })
    /// ));
    /// # Ok(())
    /// # }
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A socket bound by someone else (systemd, a supervisor, a test).
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// let server = synack::Server::builder()
    ///     .adopt(listener)
    ///     .backlog(256)
    ///     .workers(1)
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// assert_eq!(server.local_addr(), addr);
    /// assert!(server.listeners()[0].adopted);
    /// # Ok(())
    /// # }
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = synack::Server::builder().keepalive(synack::Keepalive::after(Duration::from_secs(60)));
    /// assert!(builder.check().is_ok());
    /// ```
    pub fn keepalive(mut self, keepalive: Keepalive) -> Self {
        self.opts.keepalive = Some(keepalive);
        self
    }

    /// What happens at the connection limit. Default [`OverloadPolicy::Queue`].
    pub fn overload_policy(mut self, policy: OverloadPolicy) -> Self {
        self.overload = policy;
        self
    }

    /// What happens when file descriptors run out. Default [`FdExhaustionPolicy::Backoff`].
    pub fn fd_exhaustion_policy(mut self, policy: FdExhaustionPolicy) -> Self {
        self.fd_exhaustion = policy;
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
        self.backoff = (min, max);
        self
    }

    /// Writes the [probe header](crate::probe) (accept and dispatch times, 24 bytes) on every
    /// connection before its handler runs, for `synack-load flood --probe`. Default off: it
    /// changes what clients receive.
    ///
    /// With [`tls`](Self::tls) the header is the session's first plaintext, and the dispatch
    /// time is taken after the handshake (so the accept-to-dispatch span includes it).
    ///
    /// Never turn it on for a public listener: every client receives the host's
    /// `CLOCK_MONOTONIC` in nanoseconds (its uptime) and the server's accept and dispatch
    /// timing. It is meant for a load test on one host.
    pub fn probe(mut self, on: bool) -> Self {
        self.probe = on;
        self
    }

    /// Runs the worker threads under Linux's `SCHED_BATCH` policy: their wakeups no longer
    /// preempt a running thread, at the price of some wakeup latency for the handlers. Default
    /// off. (Acceptor threads have their own knob, [`acceptor_sched_batch`], on by default.)
    /// Elsewhere a warning is logged and the threads run as usual.
    ///
    /// [`acceptor_sched_batch`]: Self::acceptor_sched_batch
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), synack::Error> {
    /// let builder = synack::ServerBuilder::new().bind("127.0.0.1:0")?.sched_batch(true);
    /// assert!(builder.check().is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn sched_batch(mut self, on: bool) -> Self {
        self.sched_batch = on;
        self
    }

    /// Runs the acceptor threads under Linux's `SCHED_BATCH` policy. Default **on**: a new
    /// connection then wakes its acceptor without preempting the worker running on that core,
    /// so the acceptor takes what arrived meanwhile in one burst when the worker blocks (or at
    /// the end of its time slice) instead of cutting into the worker once per connection. On a
    /// shared core in the comparison harness that halves the acceptor's CPU per connection
    /// (docs/performance.md has the figures). An idle core runs the woken
    /// acceptor at once, so an unloaded server accepts as fast either way; on a core busy with
    /// other programs, a connection may wait up to a scheduler slice for its accept. Off: the
    /// acceptor preempts like any thread. Without acceptor threads
    /// ([`accept_in_workers`](Self::accept_in_workers)) it changes nothing.
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), synack::Error> {
    /// // The scheduling of every thread as before this default.
    /// let builder = synack::ServerBuilder::new().bind("127.0.0.1:0")?.acceptor_sched_batch(false);
    /// assert!(builder.check().is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn acceptor_sched_batch(mut self, on: bool) -> Self {
        self.acceptor_sched_batch = on;
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
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:0")?
    ///     .workers(2)
    ///     .accept_in_workers(true)
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// std::net::TcpStream::connect(server.local_addr())?.read_to_end(&mut Vec::new())?;
    /// // One acceptor per worker.
    /// assert_eq!(server.stats().acceptors_alive.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn accept_in_workers(mut self, on: bool) -> Self {
        self.accept_in_workers = on;
        self
    }

    /// With acceptor threads, lets worker `k` accept for acceptor `k` while the worker has
    /// nothing else to run. Default **on**.
    ///
    /// Both watch the listeners with `EPOLLEXCLUSIVE`, the worker's watch registered first, so
    /// for each new connection the kernel wakes the worker when it is idle and the acceptor
    /// thread only while the worker is busy. An idle worker then takes the connection itself:
    /// no wakeup of the acceptor, no channel, no context switch between the two (on a core they
    /// share, that switch was the acceptor design's main cost: docs/performance.md has the
    /// figures). A busy worker leaves it to the acceptor thread, which accepts
    /// it at once and hands it to the least-loaded worker, as before, unless that would only
    /// move the connection from the kernel's queue to the same worker's channel: while the
    /// worker would get it anyway (no worker has fewer open), keeps moving and at most half
    /// the backlog waits, the acceptor thread stops watching and looks again within 1 to 4 ms
    /// (a worker stuck in a handler is noticed within about 8 ms). Everything else is the
    /// acceptor's: the connection limit (a slot taken before `accept()`), its
    /// [`OverloadPolicy`], pause, the drain at shutdown (done by the acceptor thread alone),
    /// back-off, and its statistics; [`Stats::worker_accepted`](crate::Stats::worker_accepted)
    /// counts what the workers took. The worker takes at most `accept_batch` per listener at a
    /// time (default [`IN_WORKER_ACCEPT_BATCH`]) before its other handlers get a turn, and
    /// dispatches to the least-loaded worker too, keeping a connection while no worker has
    /// fewer open.
    ///
    /// Where the watch cannot be made exclusive (Linux before 4.5, no `/proc`, other systems)
    /// it is logged once per worker at info level and the acceptor accepts alone. Off: the
    /// acceptor threads accept everything. Without acceptor threads
    /// ([`accept_in_workers`](Self::accept_in_workers)) it changes nothing.
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
    /// let s = server.stats();
    /// assert_eq!(s.accepted, 1);
    /// // The idle worker most likely took it itself (the acceptor thread otherwise).
    /// assert!(s.worker_accepted <= 1);
    /// // Every accept on the acceptor thread, as Tomcat does:
    /// let builder = synack::Server::builder().bind("127.0.0.1:0")?.idle_worker_accepts(false);
    /// assert!(builder.check().is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn idle_worker_accepts(mut self, on: bool) -> Self {
        self.idle_worker_accepts = on;
        self
    }

    /// Lets the FIN leave in the same segment as the handler's last write, when the handler
    /// writes and then drops its connection within one poll (a greeting, a response followed
    /// by a close). Default **on**.
    ///
    /// While a handler's poll runs, its writes go to the kernel with `MSG_MORE`, which keeps a
    /// segment that is not full queued, for the rest of that poll only. When the poll ends:
    /// - if the handler dropped the connection, the socket is shut down and closed: the data
    ///   and the FIN leave together and the peer acknowledges them once. A greeting costs 5
    ///   segments on the wire instead of 7, and the server about 15% less CPU
    ///   (docs/performance.md has the figures);
    /// - if the connection lives on, what is queued is pushed at once (one `setsockopt`): the
    ///   bytes leave at the end of the poll that wrote them, never later. A read that has to
    ///   wait, or [`Connection::tokio_stream`], pushes them earlier. A flush does not: like a
    ///   tokio `TcpStream`'s, it hands user-space buffers to the kernel, and there are none (a
    ///   handler that flushes and then computes for long within the same poll delays its bytes
    ///   until that poll ends).
    ///
    /// A request/response handler that closes after its answer gains as a greeting does, and
    /// so does hyper answering a `Connection: close` request (it writes, flushes and shuts
    /// down in one poll). A connection that lives on past a poll whose writes were held is not
    /// held again: a keep-alive connection pays one push, on its first answer.
    ///
    /// Each worker learns whether this pays for its handlers: while FINs ride less than once
    /// per three pushes, it holds only one connection in 32, to notice a change. Nothing is
    /// lost either way: the bytes written are in the kernel before the write returns, and the
    /// shutdown sends them before any RST a close with unread input would send.
    /// [`Stats::fin_with_data`](crate::Stats::fin_with_data) and
    /// [`Stats::held_pushed`](crate::Stats::held_pushed) count both outcomes. TLS connections
    /// are not concerned. Off: every write is sent at once, as with a plain tokio `TcpStream`.
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
    ///     .fin_with_data(true)
    ///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
    /// let mut got = String::new();
    /// std::net::TcpStream::connect(server.local_addr())?.read_to_string(&mut got)?;
    /// assert_eq!(got, "hi\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn fin_with_data(mut self, on: bool) -> Self {
        self.fin_with_data = on;
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

    /// Whether [`serve`](Self::serve) adopts listeners this process inherited (default on):
    /// from a [handoff](crate::Handoff) (the same sockets as the old process, matched by the
    /// address asked for; an address not inherited is bound as usual), or from systemd socket
    /// activation (`LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`, also as `systemfd` sets them;
    /// matched by address, and served when no `bind` asks for them). The environment is read
    /// once per process, by the first server started.
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), synack::Error> {
    /// // A server that always binds its own sockets.
    /// let builder = synack::Server::builder().bind("127.0.0.1:0")?.inherit(false);
    /// assert!(builder.check().is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn inherit(mut self, on: bool) -> Self {
        self.inherit = on;
        self
    }

    /// Serves TLS (feature `tls`): every connection starts with a rustls handshake, run on its
    /// worker as part of the connection (never in an acceptor, nor ahead of the next accept),
    /// and the handler gets the TLS stream through the same [`Connection`], with what was
    /// negotiated in [`ConnInfo::tls`](crate::ConnInfo::tls).
    /// [`tls::server_config`](crate::tls::server_config) reads PEM files.
    /// # Examples
    ///
    /// ```no_run
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> Result<(), synack::Error> {
    /// let config = synack::tls::server_config("cert.pem", "key.pem", &[b"http/1.1"])?;
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:8443")?
    ///     .tls(config)
    ///     .serve(|mut conn: synack::Connection| async move {
    ///         let version = conn.info().tls.as_ref().map_or("none", |t| t.version);
    ///         conn.write_all(format!("hello over {version}\n").as_bytes()).await
    ///     })?;
    /// # drop(server);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: impl Into<std::sync::Arc<rustls::ServerConfig>>) -> Self {
        self.tls = Some(config.into());
        self
    }

    /// TLS handshakes in progress per worker (the whole server allows this times the workers);
    /// at the cap the acceptors stop, and new connections wait in the kernel's accept queue,
    /// where the backlog applies. At least 1. Default [`DEFAULT_MAX_HANDSHAKES`].
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n;
        self
    }

    /// How long a TLS handshake may take before its connection is closed (and counted in
    /// [`TlsFailures::timeout`](crate::TlsFailures::timeout)). Above zero. Default 3 s.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// What to do with inherited `SO_REUSEPORT` members beyond this server's acceptors.
    /// Default [`SurplusMembers::Accept`].
    pub fn surplus_members(mut self, policy: SurplusMembers) -> Self {
        self.surplus = policy;
        self
    }

    /// Checks every setting without opening anything: the errors [`serve`](Self::serve)
    /// would give for bad values.
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], naming the setting and what it accepts.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = synack::Server::builder().max_connections(0).check().unwrap_err();
    /// assert!(matches!(err, synack::Error::InvalidConfig { .. }));
    /// ```
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

    /// Checks every setting and resolves every derived value (the worker count, the
    /// acceptors, the accept batch) once, for start-up.
    fn validate(&self) -> Result<Settings, Error> {
        self.check_limits()?;
        let workers = self.check_threads()?;
        self.check_accept()?;
        self.check_tls()?;
        self.check_socket_options()?;
        self.check_intervals()?;
        let acceptors = if self.accept_in_workers {
            workers
        } else {
            self.acceptors
        };
        let batch = match self.accept_batch {
            Some(n) => n,
            None if self.accept_in_workers => IN_WORKER_ACCEPT_BATCH,
            None => THREAD_ACCEPT_BATCH,
        };
        #[cfg(feature = "tls")]
        let tls = self.tls.clone().map(|config| crate::tls::TlsSettings {
            config,
            timeout: self.handshake_timeout,
        });
        #[cfg(feature = "tls")]
        let handshake_cap = tls
            .as_ref()
            .map(|_| self.max_handshakes.saturating_mul(workers));
        #[cfg(not(feature = "tls"))]
        let handshake_cap = None;
        Ok(Settings {
            #[cfg(feature = "tls")]
            tls,
            handshake_cap,
            opts: self.opts.clone(),
            max_connections: self.max_connections,
            workers,
            acceptors,
            accept_in_workers: self.accept_in_workers,
            idle_worker_accepts: self.idle_worker_accepts && !self.accept_in_workers,
            help_batch: self.accept_batch.unwrap_or(IN_WORKER_ACCEPT_BATCH),
            accept: AcceptConfig {
                batch,
                backoff_min: self.backoff.0,
                backoff_max: self.backoff.1,
                overload: self.overload,
                fd_exhaustion: self.fd_exhaustion,
            },
            probe: self.probe,
            sched_batch: self.sched_batch,
            fin_with_data: self.fin_with_data,
            acceptor_sched_batch: self.acceptor_sched_batch,
            inherit: self.inherit,
            surplus: self.surplus,
            observe: ObserveSettings {
                queue_sampling: self.queue_sampling,
                metrics: self.metrics,
            },
        })
    }

    fn check_limits(&self) -> Result<(), Error> {
        listener::validate_backlog(self.opts.backlog)?;
        if self.max_connections == 0 {
            return Err(Error::invalid(
                "max_connections",
                0,
                "at least 1 connection must be allowed",
            ));
        }
        Ok(())
    }

    /// The worker count, checked with the acceptors.
    fn check_threads(&self) -> Result<usize, Error> {
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
        Ok(workers)
    }

    fn check_tls(&self) -> Result<(), Error> {
        if self.max_handshakes == 0 {
            return Err(Error::invalid(
                "max_handshakes",
                0,
                "at least 1 handshake in progress per worker",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::invalid(
                "handshake_timeout",
                "0s",
                "a timeout above zero",
            ));
        }
        Ok(())
    }

    fn check_accept(&self) -> Result<(), Error> {
        if self.accept_batch == Some(0) {
            return Err(Error::invalid(
                "accept_batch",
                0,
                "at least 1 accept per wakeup",
            ));
        }
        let (min, max) = self.backoff;
        if min.is_zero() || min > max {
            return Err(Error::invalid(
                "accept_backoff",
                format!("{min:?}..{max:?}"),
                "a minimum above zero and not above the maximum",
            ));
        }
        Ok(())
    }

    fn check_socket_options(&self) -> Result<(), Error> {
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
        Ok(())
    }

    fn check_intervals(&self) -> Result<(), Error> {
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
        Ok(())
    }

    /// Opens the listeners and starts the acceptor and worker threads; every accepted
    /// connection is passed to `handler` on a worker.
    ///
    /// The handler's future runs on the worker's single-threaded runtime, so it need not be
    /// `Send`; it may return `()` or a `Result` (errors are counted and logged at debug level).
    /// Needs no runtime in the calling thread.
    /// # Errors
    ///
    /// [`Error::NoListener`] without a listen address, [`Error::InvalidConfig`] for a setting out
    /// of range (as [`check`](Self::check)), and, for OS reasons: [`Error::Socket`],
    /// [`Error::SocketOption`], [`Error::Bind`] (the address is in use, or not this host's),
    /// [`Error::Listen`], [`Error::Adopt`] for a listener, and [`Error::Start`] when a poll, a
    /// runtime or a thread cannot be had (descriptors or threads exhausted).
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // An echo server: each connection's handler runs on a worker's runtime.
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:0")?
    ///     .serve(|mut conn: synack::Connection| async move {
    ///         let mut buf = [0u8; 1024];
    ///         loop {
    ///             let n = conn.read(&mut buf).await?;
    ///             if n == 0 {
    ///                 return Ok::<_, std::io::Error>(());
    ///             }
    ///             conn.write_all(&buf[..n]).await?;
    ///         }
    ///     })?;
    /// # drop(server);
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve<H, Fut>(self, handler: H) -> Result<Server, Error>
    where
        H: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: HandlerOutput,
    {
        // Without a bind, inherited sockets (socket activation) may still be served: start
        // says NoListener when there are none.
        if self.binds.is_empty() && !self.inherit {
            return Err(Error::NoListener);
        }
        let settings = self.validate()?;
        start::start(self.binds, settings, handler)
    }
}
