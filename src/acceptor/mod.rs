//! The acceptor: takes connections off the kernel's accept queue.
//!
//! By default each acceptor is a dedicated thread running a `mio::Poll` over its listeners and
//! a `mio::Waker` for control (pause, resume, stop, a slot freed in the connection limit); it
//! hands what it accepts to the workers ([`thread`]). With
//! [`accept_in_workers`](crate::ServerBuilder::accept_in_workers) each worker is its own
//! acceptor instead, the same loop run as a task on the worker's reactor ([`task`]), so a
//! connection reaches its handler without crossing threads. Both drive one [`AcceptCore`]
//! (`core.rs`); the server holds each acceptor by its [`AcceptorHandle`] (`handle.rs`).
//!
//! An acceptor thread's core is shared with one worker, which accepts for it while it has
//! nothing else to run ([`helper`]): the kernel wakes that worker for a new connection when it
//! is idle, and the acceptor thread only while the worker is busy (`EPOLLEXCLUSIVE`).
//!
//! On readiness an acceptor accepts until
//! `WouldBlock`, at most `accept_batch` per listener per round so one listener cannot starve
//! another, taking a slot in the connection limit before each `accept()` (Tomcat's order).
//!
//! Errors never make it spin (`backoff.rs`): per-connection errors (`ECONNABORTED`, `EPROTO`,
//! `EPERM`) are counted and skipped; resource exhaustion (`EMFILE`, `ENFILE`, `ENOBUFS`,
//! `ENOMEM`) takes the listener out of the poll for a back-off that doubles from `backoff_min`
//! to `backoff_max`, or, under [`FdExhaustionPolicy::Shed`], spends a reserved descriptor to
//! reset waiting clients.

use std::net::SocketAddr;
use std::sync::Weak;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::limit::OverloadPolicy;
use crate::shared::Shared;
use crate::sys;

mod backoff;
mod core;
mod entry;
mod handle;
pub(crate) mod helper;
pub(crate) mod task;
#[cfg(test)]
mod tests;
pub(crate) mod thread;

pub(crate) use self::core::AcceptCore;
pub(crate) use handle::{AcceptorDone, AcceptorHandle};
pub(crate) use helper::HelpTask;
pub(crate) use task::AcceptTask;

/// What an acceptor does when the process or the system runs out of file descriptors.
/// # Examples
///
/// ```
/// # fn main() -> Result<(), synack::Error> {
/// let builder = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .fd_exhaustion_policy(synack::FdExhaustionPolicy::Shed);
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
pub enum FdExhaustionPolicy {
    /// Stop polling the listener for a back-off that doubles (5 ms to 1 s by default), then try
    /// again. Waiting clients stay in the kernel queue meanwhile.
    #[default]
    Backoff,
    /// Keep one descriptor in reserve; on `EMFILE`/`ENFILE` release it, accept the waiting
    /// connections one by one and close each at once with RST, then take the reserve back, so
    /// clients fail fast instead of hanging in the queue. Falls back to back-off when the
    /// reserve cannot be had.
    Shed,
}

/// Settings of the accept loop.
#[derive(Debug, Clone)]
pub(crate) struct AcceptConfig {
    pub batch: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub overload: OverloadPolicy,
    pub fd_exhaustion: FdExhaustionPolicy,
}

/// Orders from the server to an acceptor.
#[derive(Debug)]
pub(crate) enum Control {
    /// Stop accepting; answer on the channel once no further `accept()` will happen.
    Pause(Sender<()>),
    /// Accept again.
    Resume,
    /// Accept what waits in the kernel queues (when `drain`) until `deadline`, then exit.
    Stop { drain: bool, deadline: Instant },
}

/// A listener as the death notice of its acceptor needs it: held weakly, so that keeping one
/// does not keep the listener open once the server has let go of it.
pub(crate) struct Watched {
    sock: Weak<Socket>,
    addr: SocketAddr,
    /// Whether this acceptor alone accepts from it (a `reuse_port` socket of its own).
    own: bool,
}

/// Acceptor `id` has died (`why`): marks it dead and shuts down each of its listeners that no
/// live acceptor accepts from any more (its own `reuse_port` socket; a shared one once every
/// acceptor is dead), so that the kernel stops queueing connections nobody will accept: new
/// clients are refused (or, with `reuse_port`, sent to the other sockets of the group), and
/// those already in that queue are reset.
pub(crate) fn acceptor_died(shared: &Shared, id: usize, listeners: &[Watched], why: &str) {
    shared.acceptors[id].alive.store(false, SeqCst);
    shared.acceptors[id].helper_stop.notify_one();
    let none_left = shared.acceptors.iter().all(|a| !a.alive.load(SeqCst));
    tracing::error!(target: "synack::acceptor", acceptor = id, reason = why, "acceptor died");
    for l in listeners.iter().filter(|l| l.own || none_left) {
        let Some(sock) = l.sock.upgrade() else {
            continue;
        };
        let queued = sys::listen_queue(&*sock).ok().flatten().map(|q| q.len);
        match sock.shutdown(std::net::Shutdown::Read) {
            Ok(()) => tracing::error!(target: "synack::acceptor", acceptor = id, addr = %l.addr,
                reset = ?queued, "no acceptor left on this listener: shut down (its queued connections reset, new ones refused)"),
            Err(e) => tracing::error!(target: "synack::acceptor", acceptor = id, addr = %l.addr,
                error = %e, queued = ?queued,
                "no acceptor left on this listener, and it cannot be shut down: connections queue there unaccepted"),
        }
    }
}

/// An acceptor's word that it has exited. (What is left in the kernel queues is read by the
/// server once every acceptor has exited: several acceptors may share a listener.)
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AcceptorExit;
