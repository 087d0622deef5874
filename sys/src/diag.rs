//! inet_diag: what `ss -lnt` reads. Any TCP listener on this host (this network namespace),
//! ours or not: its accept queue, its effective backlog, and the SYNs and final ACKs it dropped.

use std::io;
use std::net::SocketAddr;

#[cfg(target_os = "linux")]
#[path = "diag_linux.rs"]
mod imp;

/// The listening sockets that take connections to one address, as inet_diag shows them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerSample {
    /// Listening sockets matched (several with `SO_REUSEPORT`).
    pub sockets: usize,
    /// Connections waiting in their accept queues, summed.
    pub len: u32,
    /// Their effective backlogs, summed.
    pub backlog: u32,
    /// Their `sk_drops`, summed: every SYN or final ACK a listener dropped (a full accept
    /// queue among them: the kernel's `tcp_listendrop`), this listener's own count, where the
    /// kernel reports it.
    pub drops: Option<u64>,
    /// Each matched socket's inode and `sk_drops`, so a count can be followed per socket while
    /// sockets come and go.
    pub socket_drops: Vec<(u32, u64)>,
}

/// A netlink socket that reads TCP listeners.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let mut diag = synack_sys::diag::Diag::new()?;
/// let q = diag.listener_queue("127.0.0.1:8080".parse().unwrap())?;
/// println!("{} waiting of {}, {:?} dropped", q.len, q.backlog, q.drops);
/// # Ok(())
/// # }
/// ```
pub struct Diag {
    #[cfg(target_os = "linux")]
    inner: imp::Diag,
    /// Off Linux a `Diag` cannot exist.
    #[cfg(not(target_os = "linux"))]
    inner: std::convert::Infallible,
}

impl Diag {
    /// Opens the netlink socket.
    ///
    /// # Errors
    ///
    /// `Unsupported` off Linux; the socket's own error if netlink refuses.
    pub fn new() -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            Ok(Diag {
                inner: imp::Diag::new()?,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "inet_diag (NETLINK_SOCK_DIAG) is Linux-only",
            ))
        }
    }

    /// The TCP listeners on `target`'s port that take connections to `target`: bound to its
    /// address or to the wildcard (a dual-stack `[::]` one unless it is IPv6-only).
    ///
    /// # Errors
    ///
    /// A netlink error, or a reply that does not parse.
    pub fn listener_queue(&mut self, target: SocketAddr) -> io::Result<ListenerSample> {
        #[cfg(target_os = "linux")]
        {
            self.inner.listener_queue(target)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = target;
            match self.inner {}
        }
    }
}
