//! `--watch-listener`: the target listener's accept queue, read from the kernel through
//! `NETLINK_SOCK_DIAG` (inet_diag, what `ss -lnt` uses), for any server on this host.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{Diag, ListenerSample, Watcher};

/// The most samples kept.
pub const MAX_SAMPLES: usize = 100_000;

/// One reading of the listener's queue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueuePoint {
    /// Milliseconds since the watch started.
    pub t_ms: f64,
    /// Connections waiting in the accept queue (summed over every socket on the port).
    pub len: u32,
    /// The effective backlog (summed likewise).
    pub backlog: u32,
}

/// What the watch saw over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueWatch {
    /// The listening sockets found on the target's port (several with SO_REUSEPORT).
    pub sockets: usize,
    /// The effective backlog (the last reading).
    pub effective_backlog: u32,
    /// The deepest queue seen.
    pub peak: u32,
    /// Readings taken.
    pub samples: usize,
    /// Readings with the queue full: past the effective backlog (Linux drops at
    /// `len > backlog`).
    pub full_samples: usize,
    /// Sampling interval, milliseconds.
    pub interval_ms: f64,
    /// The readings, oldest first.
    pub series: Vec<QueuePoint>,
    /// SYNs and final ACKs this listener dropped over the watch (its `sk_drops`, which the
    /// kernel bumps on every listen overflow): this listener's own count, unlike the host-wide
    /// `TcpExt.ListenOverflows`. `None` where the kernel does not report it.
    #[serde(default)]
    pub drops: Option<u64>,
}

/// Whether `ip` is an address of this host (the only place its listeners can be read).
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Off Linux there is no inet_diag: the watch says so instead of guessing.
#[cfg(not(target_os = "linux"))]
pub struct Watcher;

#[cfg(not(target_os = "linux"))]
impl Watcher {
    /// Refuses: inet_diag is Linux-only.
    pub fn start(_target: SocketAddr, _interval: std::time::Duration) -> std::io::Result<Self> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "--watch-listener reads the kernel's queue through inet_diag, which only Linux has",
        ))
    }

    /// Never reached: `start` refuses.
    pub fn finish(self) -> std::io::Result<QueueWatch> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no watch",
        ))
    }
}
