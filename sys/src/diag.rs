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

/// One TCP listening socket, as inet_diag shows it (what `ss -lnt` prints a line of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListeningSocket {
    /// The address it is bound to (`0.0.0.0` or `[::]` for the wildcard).
    pub local: SocketAddr,
    /// Its inode: the `socket:[N]` a process's `/proc/PID/fd` links to.
    pub inode: u32,
    /// The user id that owns it.
    pub uid: u32,
    /// Connections waiting in its accept queue (`ss` Recv-Q).
    pub len: u32,
    /// Its effective backlog (`ss` Send-Q): what the kernel granted.
    pub backlog: u32,
    /// Its `sk_drops`: SYNs and final ACKs it dropped, where the kernel reports it.
    pub drops: Option<u64>,
    /// An IPv6 socket that takes no IPv4 connections.
    pub v6only: bool,
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

    /// Every TCP listening socket of this network namespace, IPv4 and IPv6, in one dump each;
    /// with `meminfo`, each one's `sk_drops` too (without it, `drops` is `None` and the dump
    /// costs the kernel less).
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// let mut diag = synack_sys::diag::Diag::new()?;
    /// for l in diag.listeners(true)? {
    ///     println!("{} {} of {}", l.local, l.len, l.backlog);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A netlink error, or a reply that does not parse.
    pub fn listeners(&mut self, meminfo: bool) -> io::Result<Vec<ListeningSocket>> {
        #[cfg(target_os = "linux")]
        {
            self.inner.listeners(meminfo)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = meminfo;
            match self.inner {}
        }
    }

    /// As [`Diag::listeners`], for IPv4 (`v4`) and/or IPv6 (`v6`) sockets only: the kernel
    /// walks every listener once per family, so a family with none is worth leaving out.
    ///
    /// # Errors
    ///
    /// A netlink error, or a reply that does not parse.
    pub fn listeners_of(
        &mut self,
        v4: bool,
        v6: bool,
        meminfo: bool,
    ) -> io::Result<Vec<ListeningSocket>> {
        #[cfg(target_os = "linux")]
        {
            self.inner.listeners_of(v4, v6, meminfo)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (v4, v6, meminfo);
            match self.inner {}
        }
    }

    /// As [`Diag::listeners_of`], for the listeners on `ports` (1 to 1024) only: the kernel
    /// runs a filter program on each listener and fills in only those on the ports, so the
    /// other listeners of a busy host cost it little.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for no port or more than 1024; a netlink error, or a reply that does not
    /// parse.
    pub fn listeners_on(
        &mut self,
        ports: &[u16],
        v4: bool,
        v6: bool,
        meminfo: bool,
    ) -> io::Result<Vec<ListeningSocket>> {
        #[cfg(target_os = "linux")]
        {
            self.inner.listeners_on(ports, v4, v6, meminfo)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (ports, v4, v6, meminfo);
            match self.inner {}
        }
    }

    /// The listener that takes connections to `local`, by an exact lookup (not a dump: the
    /// kernel finds it as it would for a SYN, whatever the number of listeners); `None` when
    /// there is none. With SO_REUSEPORT it is one socket of the group.
    ///
    /// # Errors
    ///
    /// A netlink error, or a reply that does not parse.
    pub fn listener_at(
        &mut self,
        local: SocketAddr,
        meminfo: bool,
    ) -> io::Result<Option<ListeningSocket>> {
        #[cfg(target_os = "linux")]
        {
            self.inner.listener_at(local, meminfo)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (local, meminfo);
            match self.inner {}
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
