//! The connection a handler receives: a tokio `TcpStream` with what synack knows about it.
//! Dropping it frees its slot in the connection limit.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::shared::Slot;
use crate::tls::TlsInfo;

mod cork;
pub(crate) use cork::PollScope;
use cork::Sock;

/// Where a connection came from and how it travelled through the server.
/// # Examples
///
/// ```
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .serve(|mut conn: synack::Connection| async move {
///         let info = conn.info().clone();
///         let waited = info.dispatched_at - info.accepted_at;
///         let line = format!("#{} from {} on worker {} after {waited:?}\n", info.id, info.peer_addr, info.worker);
///         conn.write_all(line.as_bytes()).await
///     })?;
/// # drop(server);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// Unique per server, in accept order per acceptor.
    pub id: u64,
    /// The client's address.
    pub peer_addr: SocketAddr,
    /// The server-side address of the connection.
    pub local_addr: SocketAddr,
    /// Index of the listener that accepted it (see [`Server::listeners`](crate::Server::listeners)).
    pub listener: usize,
    /// The acceptor that accepted it (with
    /// [`accept_in_workers`](crate::ServerBuilder::accept_in_workers), its worker's index).
    pub acceptor: usize,
    /// The worker that runs its handler.
    pub worker: usize,
    /// When `accept()` returned it.
    pub accepted_at: Instant,
    /// When its handler was started on the worker (its first poll); `accepted_at` to this is
    /// the dispatch latency.
    pub dispatched_at: Instant,
    /// What the TLS handshake negotiated (version, ALPN, SNI, resumed), on a server with
    /// [`tls`](crate::ServerBuilder::tls); `None` on plain TCP.
    pub tls: Option<Box<TlsInfo>>,
}

/// Resolves when the server begins a graceful shutdown (or is gone); see
/// [`Connection::closing`].
/// # Examples
///
/// ```
/// use std::io::Read;
/// use std::time::Duration;
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A handler that holds its connection until the server begins to shut down.
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .workers(1)
///     .serve(|mut conn: synack::Connection| async move {
///         let mut closing = conn.closing();
///         closing.wait().await;
///         assert!(closing.is_closing());
///         conn.write_all(b"bye\n").await
///     })?;
/// let mut client = std::net::TcpStream::connect(server.local_addr())?;
/// // Bounded wait until the handler holds the connection.
/// for _ in 0..500 {
///     if server.stats().open == 1 {
///         break;
///     }
///     std::thread::sleep(Duration::from_millis(10));
/// }
/// let report = server.shutdown_blocking(Duration::from_secs(10));
/// let mut got = String::new();
/// client.read_to_string(&mut got)?;
/// assert_eq!(got, "bye\n");
/// assert_eq!(report.aborted, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Closing(tokio::sync::watch::Receiver<bool>);

impl Closing {
    /// Whether the shutdown has begun.
    pub fn is_closing(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the shutdown begins.
    pub async fn wait(&mut self) {
        // An error means the server is gone, which is closing too.
        let _ = self.0.wait_for(|c| *c).await;
    }
}

/// An accepted TCP connection, handed to the handler.
///
/// It implements tokio's [`AsyncRead`] and [`AsyncWrite`], so any tokio-based protocol stack
/// (hyper, tokio-util codecs, `tokio::io::copy`) can use it directly. It counts as open in
/// the connection limit until it is dropped.
///
/// I/O is optimistic: reads and writes go straight to the socket, and the socket joins the
/// worker's reactor only when one of them would block. A handler that answers at once (write,
/// close) costs no `epoll_ctl` at all, and its answer and FIN share a segment (see
/// [`fin_with_data`](crate::ServerBuilder::fin_with_data)).
/// # Examples
///
/// ```
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A line-echo handler: Connection is AsyncRead + AsyncWrite, so tokio's helpers apply.
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .serve(|conn: synack::Connection| async move {
///         let mut lines = BufReader::new(conn).lines();
///         while let Some(line) = lines.next_line().await? {
///             let conn = lines.get_mut().get_mut();
///             conn.write_all(line.as_bytes()).await?;
///             conn.write_all(b"\n").await?;
///         }
///         Ok::<_, std::io::Error>(())
///     })?;
/// # drop(server);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Connection {
    io: Io,
    info: ConnInfo,
    _slot: Slot,
    /// It lived on past a poll whose writes were held: not held again (see `cork`).
    lives_on: bool,
}

#[derive(Debug)]
enum Io {
    /// Not registered with the reactor yet.
    Raw(std::net::TcpStream),
    /// Written with `MSG_MORE` in the handler poll running now, registered or not (shared
    /// with the worker's cork until it ends: see `cork`).
    Held(Arc<cork::Held>),
    /// Registered.
    Tokio(TcpStream),
    /// TLS over a registered socket, the handshake done.
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsStream>),
    /// The registration failed and took the socket with it.
    Closed,
}

impl Connection {
    pub(crate) fn new(stream: std::net::TcpStream, info: ConnInfo, slot: Slot) -> Self {
        Connection {
            io: Io::Raw(stream),
            info,
            _slot: slot,
            lives_on: false,
        }
    }

    /// Marks when the handler was started.
    pub(crate) fn set_dispatched_at(&mut self, at: Instant) {
        self.info.dispatched_at = at;
    }

    /// Writes `buf` to the socket at once, before the handler has it; an error if it does not
    /// all fit (into a fresh socket's empty send buffer, a short header does).
    pub(crate) fn write_now(&mut self, buf: &[u8]) -> io::Result<()> {
        let n = match &mut self.io {
            Io::Raw(s) => (&*s).write(buf)?,
            Io::Held(h) => match &h.sock {
                Sock::Raw(s) => (&*s).write(buf)?,
                Sock::Registered(s) => s.try_write(buf)?,
            },
            Io::Tokio(s) => s.try_write(buf)?,
            // Over TLS: the first plaintext of the session, sent at once if the socket takes it
            // (else with the handler's first write).
            #[cfg(feature = "tls")]
            Io::Tls(t) => {
                t.write_now(buf)?;
                buf.len()
            }
            Io::Closed => return Err(io::ErrorKind::NotConnected.into()),
        };
        if n < buf.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        Ok(())
    }

    /// What synack knows about this connection.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.info.peer_addr
    }

    /// The server-side address.
    pub fn local_addr(&self) -> SocketAddr {
        self.info.local_addr
    }

    /// A signal that turns on when the server begins a graceful shutdown: a protocol that keeps
    /// connections open (HTTP keep-alive, long polls) should then finish what is in flight and
    /// close. A connection taken from the queue during the shutdown sees it on at once.
    pub fn closing(&self) -> Closing {
        Closing(self._slot.shared().closing.subscribe())
    }

    /// The socket, to read or set options through socket2's API; `None` only after the
    /// socket could not be registered with the worker's reactor (it is closed then).
    pub fn sock_ref(&self) -> Option<SockRef<'_>> {
        match &self.io {
            Io::Raw(s) => Some(SockRef::from(s)),
            Io::Held(h) => Some(SockRef::from(&h.sock)),
            Io::Tokio(s) => Some(SockRef::from(s)),
            #[cfg(feature = "tls")]
            Io::Tls(t) => Some(SockRef::from(t.get_ref().0)),
            Io::Closed => None,
        }
    }

    /// The tokio stream (registering the socket with the worker's reactor if it is not yet):
    /// to split it, use tokio's own readiness API, and so on. Must be called on the worker.
    /// # Errors
    ///
    /// The error of registering the socket with the worker's reactor (`epoll_ctl`: out of memory,
    /// or the descriptor limit of the epoll instance); the connection is closed then.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), synack::Error> {
    /// let server = synack::Server::builder()
    ///     .bind("127.0.0.1:0")?
    ///     .serve(|mut conn: synack::Connection| async move {
    ///         let (mut rd, mut wr) = conn.tokio_stream()?.split();
    ///         tokio::io::copy(&mut rd, &mut wr).await
    ///     })?;
    /// # drop(server);
    /// # Ok(())
    /// # }
    /// ```
    pub fn tokio_stream(&mut self) -> io::Result<&mut TcpStream> {
        self.register()?;
        match &mut self.io {
            Io::Tokio(s) => Ok(s),
            #[cfg(feature = "tls")]
            Io::Tls(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a TLS connection: read and write the Connection itself",
            )),
            _ => Err(closed()),
        }
    }

    /// The plain socket, registered, taken out for a TLS handshake (the connection is closed
    /// until [`set_tls`](Self::set_tls) puts the stream back).
    #[cfg(feature = "tls")]
    pub(crate) fn take_tcp(&mut self) -> io::Result<TcpStream> {
        self.register()?;
        match std::mem::replace(&mut self.io, Io::Closed) {
            Io::Tokio(s) => Ok(s),
            other => {
                self.io = other;
                Err(closed())
            }
        }
    }

    /// The TLS stream, its handshake done, and what it negotiated.
    #[cfg(feature = "tls")]
    pub(crate) fn set_tls(&mut self, tls: crate::tls::TlsStream, info: TlsInfo) {
        self.io = Io::Tls(Box::new(tls));
        self.info.tls = Some(Box::new(info));
    }

    /// Registers a raw socket with the worker's reactor (a no-op once registered), pushing
    /// what it has held first. If that fails, tokio has consumed the socket and the connection
    /// stays closed.
    fn register(&mut self) -> io::Result<()> {
        self.settle(true);
        match std::mem::replace(&mut self.io, Io::Closed) {
            Io::Raw(std) => self.io = Io::Tokio(TcpStream::from_std(std)?),
            other => self.io = other,
        }
        Ok(())
    }
}

impl Connection {
    /// Takes a held socket back from the worker's cork: plain (or registered) again, what it
    /// held pushed (`push`), or left queued for a FIN the caller sends next (then true).
    fn settle(&mut self, push: bool) -> bool {
        let Io::Held(held) = &self.io else {
            return false;
        };
        cork::release(held);
        if push {
            held.push(self._slot.worker_stats());
        }
        let queued = held.take_queued();
        // It lived on past a poll that wrote it: not held again.
        self.lives_on |= held.was_pushed();
        let Io::Held(held) = std::mem::replace(&mut self.io, Io::Closed) else {
            unreachable!("matched above");
        };
        self.io = match Arc::try_unwrap(held) {
            Ok(h) => match h.sock {
                Sock::Raw(s) => Io::Raw(s),
                Sock::Registered(s) => Io::Tokio(s),
            },
            // Another thread's cork still holds it: the connection was moved there during the
            // poll that wrote it. An unregistered socket gets a descriptor of its own, so that
            // it can be registered (the cork's closes when that poll ends); a registered one
            // stays shared, read and written through it, until then.
            Err(held) => match &held.sock {
                Sock::Raw(s) => match s.try_clone() {
                    Ok(s) => Io::Raw(s),
                    Err(_) => Io::Held(held),
                },
                Sock::Registered(_) => Io::Held(held),
            },
        };
        queued
    }

    /// Whether a write may be held now: already held in this poll, or a plain or registered
    /// socket (taken back from an earlier poll's cork first) that the worker's cork may hold.
    fn may_hold(&mut self) -> bool {
        if let Io::Held(h) = &self.io
            && cork::holds(h)
        {
            return true;
        }
        // A plain send, or one the cork holds now, sends what was queued before it.
        self.settle(false);
        matches!(self.io, Io::Raw(_) | Io::Tokio(_)) && !self.lives_on && cork::may_hold()
    }

    /// A write on an unregistered socket: sent with `MSG_MORE` (`more`) while the worker's
    /// cork may hold it, else plainly (`plain`); `None` when the caller must go through the
    /// reactor (see [`optimistic`](Self::optimistic)).
    fn write_optimistic(
        &mut self,
        plain: impl FnOnce(&std::net::TcpStream) -> io::Result<usize>,
        more: impl FnOnce(&std::net::TcpStream) -> io::Result<usize>,
    ) -> Option<io::Result<usize>> {
        if self.kind() != Some(Kind::Raw) {
            return None;
        }
        if !self.may_hold() {
            return self.optimistic(plain);
        }
        let done = self.optimistic(more)?;
        if let Ok(n) = &done
            && *n > 0
        {
            if let Io::Raw(_) = &self.io
                && let Io::Raw(s) = std::mem::replace(&mut self.io, Io::Closed)
            {
                self.io = Io::Held(cork::hold(Sock::Raw(s)));
            }
            if let Io::Held(h) = &self.io {
                h.mark_queued();
            }
        }
        Some(done)
    }

    /// A write on a registered socket while the worker's cork may hold it: sent with
    /// `MSG_MORE` (`more`) through the reactor's readiness. `None` when tokio's own write
    /// applies (the cork may not hold it, or the socket is not registered).
    fn write_registered_held(
        &mut self,
        cx: &mut Context<'_>,
        more: impl Fn(&TcpStream) -> io::Result<usize>,
        plain: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Option<Poll<io::Result<usize>>> {
        if self.kind() != Some(Kind::Registered) {
            return None;
        }
        if !self.may_hold() {
            // Still shared with another thread's cork: written plainly through it.
            let Io::Held(h) = &self.io else {
                return None;
            };
            let Sock::Registered(s) = &h.sock else {
                return None;
            };
            return Some(poll_io(s, cx, Interest::WRITABLE, || plain(s)));
        }
        if let Io::Tokio(_) = &self.io
            && let Io::Tokio(s) = std::mem::replace(&mut self.io, Io::Closed)
        {
            self.io = Io::Held(cork::hold(Sock::Registered(s)));
        }
        let Io::Held(h) = &self.io else {
            return None;
        };
        let Sock::Registered(s) = &h.sock else {
            return None;
        };
        let done = poll_io(s, cx, Interest::WRITABLE, || more(s));
        if let Poll::Ready(Ok(n)) = &done
            && *n > 0
        {
            h.mark_queued();
        }
        Some(done)
    }

    /// A plain TCP socket's state, held or not: registered with the reactor or not (`None`
    /// over TLS or closed).
    fn kind(&self) -> Option<Kind> {
        match &self.io {
            Io::Raw(_) => Some(Kind::Raw),
            Io::Held(h) if matches!(h.sock, Sock::Raw(_)) => Some(Kind::Raw),
            Io::Tokio(_) | Io::Held(_) => Some(Kind::Registered),
            _ => None,
        }
    }

    /// The registered socket, when it is held (in this poll, or by another thread's).
    fn held_registered(&self) -> Option<&TcpStream> {
        match &self.io {
            Io::Held(h) => match &h.sock {
                Sock::Registered(s) => Some(s),
                Sock::Raw(_) => None,
            },
            _ => None,
        }
    }
}

/// Whether a plain socket is registered with the reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Registered,
}

/// Runs `op` on a registered socket when the reactor says it is ready for `interest`, until it
/// does not would-block (tokio's own `poll_read`/`poll_write`, on a shared stream).
fn poll_io<T>(
    s: &TcpStream,
    cx: &mut Context<'_>,
    interest: Interest,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        let ready = if interest == Interest::WRITABLE {
            s.poll_write_ready(cx)
        } else {
            s.poll_read_ready(cx)
        };
        if let Err(e) = std::task::ready!(ready) {
            return Poll::Ready(Err(e));
        }
        match s.try_io(interest, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection could not be registered with the worker's reactor",
    )
}

impl Connection {
    /// Tries `op` straight on a raw (unregistered) socket. `Some` when it completed (or failed
    /// for good); `None` when the socket is registered (now, because `op` would block, or
    /// before) and the caller must go through tokio.
    fn optimistic<T>(
        &mut self,
        op: impl FnOnce(&std::net::TcpStream) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        let s = match &self.io {
            Io::Raw(s) => s,
            Io::Held(h) => match &h.sock {
                Sock::Raw(s) => s,
                Sock::Registered(_) => return None,
            },
            _ => return None,
        };
        match op(s) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            done => return Some(done),
        }
        self.register().err().map(Err)
    }

    fn registered(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match &mut self.io {
            Io::Tokio(t) => Ok(Pin::new(t)),
            _ => Err(closed()),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        #[cfg(feature = "tls")]
        if let Io::Tls(t) = &mut this.io {
            return Pin::new(&mut **t).poll_read(cx, buf);
        }
        if let Some(done) = this.optimistic(|mut s| s.read(buf.initialize_unfilled())) {
            return Poll::Ready(done.map(|n| buf.advance(n)));
        }
        // Registered and held (what it holds leaves when the poll ends, or when a poll that
        // finds it held no more takes it back).
        if let Some(s) = this.held_registered() {
            let n = std::task::ready!(poll_io(s, cx, Interest::READABLE, || s
                .try_read(buf.initialize_unfilled())))?;
            buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.registered()?.poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        #[cfg(feature = "tls")]
        if let Io::Tls(t) = &mut this.io {
            return Pin::new(&mut **t).poll_write(cx, buf);
        }
        if let Some(done) =
            this.write_optimistic(|mut s| s.write(buf), |s| synack_sys::send_more(s, buf))
        {
            return Poll::Ready(done);
        }
        if let Some(done) =
            this.write_registered_held(cx, |s| synack_sys::send_more(s, buf), |s| s.try_write(buf))
        {
            return done;
        }
        this.registered()?.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What this thread's cork holds in the poll running now leaves at its end, or with the
        // FIN: a flush, as a tokio `TcpStream`'s, hands user-space buffers to the kernel, and
        // there are none. Held past its poll (on another thread): pushed now.
        if !matches!(&this.io, Io::Held(h) if cork::holds(h)) {
            this.settle(true);
        }
        match &mut this.io {
            Io::Tokio(t) => Pin::new(t).poll_flush(cx),
            #[cfg(feature = "tls")]
            Io::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What is held leaves with the FIN.
        let queued = this.settle(false);
        let done = match &mut this.io {
            Io::Raw(s) => s.shutdown(std::net::Shutdown::Write),
            // Still shared with another thread's cork (see `settle`).
            Io::Held(h) => SockRef::from(&h.sock).shutdown(std::net::Shutdown::Write),
            Io::Tokio(t) => std::task::ready!(Pin::new(t).poll_shutdown(cx)),
            #[cfg(feature = "tls")]
            Io::Tls(t) => return Pin::new(&mut **t).poll_shutdown(cx),
            Io::Closed => return Poll::Ready(Err(closed())),
        };
        if queued && done.is_ok() {
            cork::rode(this._slot.worker_stats());
        }
        Poll::Ready(done)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        #[cfg(feature = "tls")]
        if let Io::Tls(t) = &mut this.io {
            return Pin::new(&mut **t).poll_write_vectored(cx, bufs);
        }
        if let Some(done) = this.write_optimistic(
            |mut s| s.write_vectored(bufs),
            |s| synack_sys::send_vectored_more(s, bufs),
        ) {
            return Poll::Ready(done);
        }
        if let Some(done) = this.write_registered_held(
            cx,
            |s| synack_sys::send_vectored_more(s, bufs),
            |s| s.try_write_vectored(bufs),
        ) {
            return done;
        }
        this.registered()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}
