//! The connection limit: Tomcat's `maxConnections` with its `LimitLatch`, and what to do when
//! it is reached.
//!
//! A connection takes a slot before `accept()` and gives it back when its handler drops the
//! [`Connection`](crate::Connection). With no slot free, an acceptor under
//! [`OverloadPolicy::Queue`] stops accepting: new connections finish the handshake in the kernel
//! and wait in the accept queue (up to the effective backlog; past it the kernel drops SYNs),
//! exactly as Tomcat's acceptor blocks in `LimitLatch.countUpOrAwait()`. The slot freed wakes it.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// What an acceptor does when the connection limit is reached.
/// # Examples
///
/// ```
/// # fn main() -> Result<(), synack::Error> {
/// // Reset connections past 10,000 at once instead of letting them wait in the kernel.
/// let builder = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .max_connections(10_000)
///     .overload_policy(synack::OverloadPolicy::Reject);
/// assert!(builder.check().is_ok());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum OverloadPolicy {
    /// Stop accepting until a connection closes: new clients wait in the kernel's accept queue,
    /// and once it is full their SYNs are dropped and retransmitted (Tomcat's behaviour).
    #[default]
    Queue,
    /// Keep accepting, and close each connection past the limit at once with RST, so clients
    /// fail fast with `ECONNRESET` instead of waiting out SYN retransmissions.
    Reject,
}

/// A counting limit, lock-free: `try_acquire` before accept (after it, with the reject policy),
/// `release` when a connection ends.
/// (Public, through `__bench`, for the micro-benchmarks only.)
#[doc(hidden)]
#[derive(Debug)]
pub struct Limit {
    max: usize,
    count: AtomicUsize,
}

#[allow(missing_docs)]
impl Limit {
    pub fn new(max: usize) -> Self {
        Limit {
            max,
            count: AtomicUsize::new(0),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections holding a slot now.
    pub fn count(&self) -> usize {
        self.count.load(SeqCst)
    }

    /// Takes a slot if one is free.
    pub fn try_acquire(&self) -> bool {
        self.count
            .fetch_update(SeqCst, SeqCst, |c| (c < self.max).then_some(c + 1))
            .is_ok()
    }

    /// Whether a slot is free now.
    pub fn has_room(&self) -> bool {
        self.count.load(SeqCst) < self.max
    }

    /// Gives a slot back. The caller wakes parked acceptors (see `Slot` in `shared.rs`).
    pub fn release(&self) {
        self.count.fetch_sub(1, SeqCst);
    }
}
