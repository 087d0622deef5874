//! The listening socket: built with socket2, `listen(backlog)` with an explicit backlog, and the
//! backlog the kernel really granted read back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use crate::error::Error;
use crate::sys;

/// The largest backlog synack accepts: `listen(2)` takes a C `int`.
pub const MAX_BACKLOG: u32 = i32::MAX as u32;

/// TCP keepalive on accepted connections.
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let mut k = synack::Keepalive::after(Duration::from_secs(60));
/// k.interval = Some(Duration::from_secs(10));
/// k.retries = Some(3);
/// assert!(synack::Server::builder().keepalive(k).check().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub idle: Duration,
    /// Time between probes (`TCP_KEEPINTVL`); the OS default when `None`.
    pub interval: Option<Duration>,
    /// Probes before the connection is dropped (`TCP_KEEPCNT`); the OS default when `None`.
    pub retries: Option<u32>,
}

impl Keepalive {
    /// Keepalive probes after `idle` seconds of silence, with the OS's interval and count.
    pub fn after(idle: Duration) -> Self {
        Keepalive {
            idle,
            interval: None,
            retries: None,
        }
    }

    fn to_socket2(self) -> TcpKeepalive {
        let mut k = TcpKeepalive::new().with_time(self.idle);
        if let Some(i) = self.interval {
            k = k.with_interval(i);
        }
        if let Some(r) = self.retries {
            k = k.with_retries(r);
        }
        k
    }
}

/// The socket options every listener of a server gets.
#[derive(Debug, Clone)]
pub(crate) struct ListenOptions {
    pub backlog: u32,
    pub reuse_address: bool,
    pub reuse_port: bool,
    pub only_v6: Option<bool>,
    pub nodelay: bool,
    pub defer_accept: Option<Duration>,
    pub fastopen: Option<u32>,
    pub recv_buffer_size: Option<usize>,
    pub send_buffer_size: Option<usize>,
    pub keepalive: Option<Keepalive>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            reuse_address: true,
            reuse_port: false,
            only_v6: None,
            nodelay: true,
            defer_accept: None,
            fastopen: None,
            recv_buffer_size: None,
            send_buffer_size: None,
            keepalive: None,
        }
    }
}

/// What a listener is, once listening: its address and the backlog the kernel granted.
/// # Examples
///
/// ```
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .backlog(128)
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// let info = &server.listeners()[0];
/// assert_eq!(info.requested_backlog, 128);
/// // Capped by net.core.somaxconn, when the kernel says.
/// println!("granted: {:?} (somaxconn {:?})", info.effective_backlog, info.somaxconn);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerInfo {
    /// Index of this listener in [`Server::listeners`](crate::Server::listeners); connections
    /// carry it in [`ConnInfo::listener`](crate::ConnInfo::listener).
    pub index: usize,
    /// The bound address (with the real port when port 0 was asked for).
    pub local_addr: SocketAddr,
    /// The address asked for in [`bind`](crate::ServerBuilder::bind) (port 0 stays 0; the
    /// local address for an adopted socket): how a [handoff](crate::Handoff)'s new process,
    /// asking for the same, finds this socket.
    pub requested_addr: SocketAddr,
    /// The backlog passed to `listen(2)`.
    pub requested_backlog: u32,
    /// The backlog the kernel granted: on Linux read back with `TCP_INFO` (`tcpi_sacked`);
    /// elsewhere `min(requested, somaxconn)` when somaxconn is known; `None` when unknown.
    pub effective_backlog: Option<u32>,
    /// `net.core.somaxconn` when the listener was opened, if known.
    pub somaxconn: Option<u32>,
    /// With `SO_REUSEPORT` and several acceptors, each acceptor owns its own socket: this is the
    /// owner. `None` when every acceptor polls this listener.
    pub acceptor: Option<usize>,
    /// Whether the socket was not bound here: handed in with
    /// [`ServerBuilder::adopt`](crate::ServerBuilder::adopt), or inherited (see
    /// [`origin`](Self::origin)).
    pub adopted: bool,
    /// Where the socket came from.
    pub origin: ListenerOrigin,
}

/// Where a listener's socket came from.
/// # Examples
///
/// ```
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// // Not started by a handoff nor by systemd: bound here.
/// assert_eq!(server.listeners()[0].origin, synack::ListenerOrigin::Bound);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerOrigin {
    /// Created and bound by this server.
    Bound,
    /// Handed in with [`ServerBuilder::adopt`](crate::ServerBuilder::adopt).
    Adopted,
    /// Inherited from the process before this one in a [handoff](crate::Handoff): the same
    /// socket, its accept queue kept.
    Handoff {
        /// The old process.
        from_pid: u32,
        /// Its `SO_REUSEPORT` member index there, if it was one.
        member: Option<usize>,
    },
    /// Passed by systemd socket activation (or `systemfd`): `LISTEN_FDS`.
    SocketActivation {
        /// Its name in `LISTEN_FDNAMES` (`FileDescriptorName=`), if any.
        name: Option<String>,
    },
}

/// A listening socket and what is known of it.
#[derive(Debug)]
pub(crate) struct Listener {
    pub sock: Arc<Socket>,
    pub info: ListenerInfo,
}

fn opt(addr: SocketAddr, option: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::SocketOption {
        addr,
        option,
        source,
    }
}

/// Checks a backlog value: 1 ..= [`MAX_BACKLOG`].
pub(crate) fn validate_backlog(backlog: u32) -> Result<(), Error> {
    if backlog == 0 || backlog > MAX_BACKLOG {
        return Err(Error::invalid(
            "backlog",
            backlog,
            format!("the listen(2) backlog must be between 1 and {MAX_BACKLOG}"),
        ));
    }
    Ok(())
}

/// Creates, configures, binds and listens a socket on `addr`.
pub(crate) fn open(
    addr: SocketAddr,
    opts: &ListenOptions,
    index: usize,
    acceptor: Option<usize>,
) -> Result<Listener, Error> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|source| Error::Socket { addr, source })?;
    if opts.reuse_address {
        sock.set_reuse_address(true)
            .map_err(opt(addr, "SO_REUSEADDR"))?;
    }
    if opts.reuse_port {
        sock.set_reuse_port(true)
            .map_err(opt(addr, "SO_REUSEPORT"))?;
    }
    if let (Some(v6only), true) = (opts.only_v6, addr.is_ipv6()) {
        sock.set_only_v6(v6only).map_err(opt(addr, "IPV6_V6ONLY"))?;
    }
    sock.bind(&addr.into())
        .map_err(|source| Error::bind(addr, source))?;
    finish(sock, addr, opts, index, acceptor, ListenerOrigin::Bound)
}

/// Takes over a socket bound elsewhere (systemd socket activation, a std listener, a socket2
/// socket), applies the options that can still be applied, and listens with the backlog.
pub(crate) fn adopt(
    sock: Socket,
    opts: &ListenOptions,
    index: usize,
    acceptor: Option<usize>,
    origin: ListenerOrigin,
) -> Result<Listener, Error> {
    let ty = sock.r#type().map_err(|e| Error::Adopt {
        reason: "cannot read the socket type (is it a socket?)".into(),
        source: Some(e),
    })?;
    if ty != Type::STREAM {
        return Err(Error::Adopt {
            reason: "not a stream socket".into(),
            source: None,
        });
    }
    let addr = sock
        .local_addr()
        .map_err(|e| Error::Adopt {
            reason: "cannot read the local address".into(),
            source: Some(e),
        })?
        .as_socket()
        .ok_or_else(|| Error::Adopt {
            reason: "not bound to an IPv4 or IPv6 address".into(),
            source: None,
        })?;
    if addr.port() == 0 {
        return Err(Error::Adopt {
            reason: format!("socket is not bound (local address {addr})"),
            source: None,
        });
    }
    finish(sock, addr, opts, index, acceptor, origin)
}

fn finish(
    sock: Socket,
    addr: SocketAddr,
    opts: &ListenOptions,
    index: usize,
    acceptor: Option<usize>,
    origin: ListenerOrigin,
) -> Result<Listener, Error> {
    let adopted = origin != ListenerOrigin::Bound;
    sock.set_nonblocking(true)
        .map_err(opt(addr, "O_NONBLOCK"))?;
    // Accepted sockets inherit these from the listener on Linux: set once here, not per
    // connection on the accept path.
    apply_connection_options(&sock, opts).map_err(|(o, e)| opt(addr, o)(e))?;
    if let Some(d) = opts.defer_accept {
        let secs = u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        sys::set_defer_accept(&sock, secs).map_err(opt(addr, "TCP_DEFER_ACCEPT"))?;
    }
    if let Some(q) = opts.fastopen {
        sys::set_fastopen(&sock, q).map_err(opt(addr, "TCP_FASTOPEN"))?;
    }
    sock.listen(opts.backlog as i32)
        .map_err(|source| Error::Listen {
            addr,
            backlog: opts.backlog,
            source,
        })?;
    let local_addr = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    let somaxconn = sys::somaxconn();
    let effective_backlog = match sys::listen_queue(&sock) {
        Ok(Some(q)) => Some(q.max),
        _ => somaxconn.map(|s| s.min(opts.backlog)),
    };
    if let Some(eff) = effective_backlog
        && eff < opts.backlog
    {
        tracing::warn!(
            target: "synack::listener",
            addr = %local_addr,
            requested = opts.backlog,
            effective = eff,
            somaxconn = ?somaxconn,
            "listen backlog capped by the kernel: asked for {}, granted {}; raise net.core.somaxconn \
             (sysctl -w net.core.somaxconn={}) to get the backlog asked for",
            opts.backlog,
            eff,
            opts.backlog
        );
    }
    tracing::info!(
        target: "synack::listener",
        addr = %local_addr,
        requested_backlog = opts.backlog,
        effective_backlog = ?effective_backlog,
        origin = ?origin,
        "listening"
    );
    Ok(Listener {
        sock: Arc::new(sock),
        info: ListenerInfo {
            index,
            local_addr,
            requested_addr: addr,
            requested_backlog: opts.backlog,
            effective_backlog,
            somaxconn,
            acceptor,
            adopted,
            origin,
        },
    })
}

/// Sets the per-connection options (nodelay, buffers, keepalive) on a socket: on the listener
/// where accepted sockets inherit them, on each accepted socket elsewhere.
pub(crate) fn apply_connection_options(
    sock: &Socket,
    opts: &ListenOptions,
) -> Result<(), (&'static str, std::io::Error)> {
    if opts.nodelay {
        sock.set_tcp_nodelay(true).map_err(|e| ("TCP_NODELAY", e))?;
    }
    if let Some(n) = opts.recv_buffer_size {
        sock.set_recv_buffer_size(n).map_err(|e| ("SO_RCVBUF", e))?;
    }
    if let Some(n) = opts.send_buffer_size {
        sock.set_send_buffer_size(n).map_err(|e| ("SO_SNDBUF", e))?;
    }
    if let Some(k) = opts.keepalive {
        sock.set_tcp_keepalive(&k.to_socket2())
            .map_err(|e| ("SO_KEEPALIVE", e))?;
    }
    Ok(())
}

/// Applies the per-connection options to an accepted stream where the OS does not let it
/// inherit them from the listener. A no-op on Linux.
pub(crate) fn configure_accepted(stream: &std::net::TcpStream, opts: &ListenOptions) {
    if sys::ACCEPTED_INHERITS_OPTIONS {
        return;
    }
    let sock = SockRef::from(stream);
    let sock: &Socket = &sock;
    if let Err((o, e)) = apply_connection_options(sock, opts) {
        tracing::debug!(target: "synack::listener", option = o, error = %e, "cannot set option on accepted socket");
    }
}

/// Closes a connection with RST instead of FIN (`SO_LINGER` 0), so the peer sees
/// `ECONNRESET` at once and neither side keeps a `TIME_WAIT`.
pub(crate) fn close_with_reset(stream: std::net::TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
