//! One listener as an acceptor sees it: what the accept core and its back-off know of it.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

/// One listener as an acceptor sees it.
pub(crate) struct Entry {
    pub index: usize,
    pub sock: Arc<Socket>,
    pub fd: RawFd,
    pub addr: SocketAddr,
    pub specific: Option<SocketAddr>,
    /// Whether this acceptor alone accepts from it (a `reuse_port` socket of its own).
    pub own: bool,
    /// Whether the driver is watching it for readiness.
    pub registered: bool,
    /// Whether an `accept()` may find a connection (no `WouldBlock` seen since the last
    /// readiness).
    pub ready: bool,
    /// Not accepted from until then (a back-off after an error).
    pub backoff_until: Option<Instant>,
    /// The next back-off, doubled after each one up to the maximum.
    pub backoff: Duration,
}

impl Entry {
    /// Whether the accept loop should call `accept()` on it now.
    pub fn acceptable(&self) -> bool {
        self.registered && self.ready && self.backoff_until.is_none()
    }
}
