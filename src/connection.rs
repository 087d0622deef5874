//! The connection a handler receives: a tokio `TcpStream` with what synack knows about it.
//! Dropping it frees its slot in the connection limit.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::limit::Slot;

/// Where a connection came from and how it travelled through the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The acceptor thread that accepted it.
    pub acceptor: usize,
    /// The worker that runs its handler.
    pub worker: usize,
    /// When `accept()` returned it.
    pub accepted_at: Instant,
    /// When its handler was started on the worker.
    pub dispatched_at: Instant,
}

/// Resolves when the server begins a graceful shutdown (or is gone); see
/// [`Connection::closing`].
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
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    info: ConnInfo,
    _slot: Slot,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream, info: ConnInfo, slot: Slot) -> Self {
        Connection {
            stream,
            info,
            _slot: slot,
        }
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

    /// The inner tokio stream.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// The inner tokio stream, mutably (to split it, set options, ...).
    pub fn get_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
