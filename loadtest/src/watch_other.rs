//! `--watch-listener` off Linux: inet_diag is Linux's, so the watch says so instead of guessing.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One reading of the listener's queue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueuePoint {
    /// Milliseconds since the watch started.
    pub t_ms: f64,
    /// Connections waiting in the accept queue.
    pub len: u32,
    /// The effective backlog.
    pub backlog: u32,
}

/// What the watch saw over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueWatch {
    /// The listening sockets found on the target's port.
    pub sockets: usize,
    /// The effective backlog.
    pub effective_backlog: u32,
    /// The deepest queue seen.
    pub peak: u32,
    /// Readings taken.
    pub samples: usize,
    /// Readings with the queue at or past the effective backlog.
    pub full_samples: usize,
    /// Sampling interval, milliseconds.
    pub interval_ms: f64,
    /// The readings, oldest first.
    pub series: Vec<QueuePoint>,
}

/// Never constructed off Linux.
pub struct Watcher;

impl Watcher {
    /// Refuses: inet_diag is Linux-only.
    pub fn start(_target: SocketAddr, _interval: Duration) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--watch-listener reads the kernel's queue through inet_diag, which only Linux has",
        ))
    }

    /// Unreachable.
    pub fn finish(self) -> io::Result<QueueWatch> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "no watch"))
    }
}
