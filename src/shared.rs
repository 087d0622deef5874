//! The state the server handle, its acceptors, its workers and every open connection share,
//! and the one place a connection's slot is given back.
//!
//! A [`Slot`] is taken by an acceptor before `accept()` and owned by the connection; dropping
//! it runs the whole release path here: the worker's open count, the connection limit, the
//! parked acceptors' wakeup, and the shutdown's idle signal.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};

use mio::Waker;

use crate::limit::Limit;
use crate::probe::MonoClock;
use crate::stats::{AcceptorStats, Stats, WorkerStats};

/// State shared by the server handle, its acceptors, its workers and every open connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub limit: Limit,
    /// With TLS: the handshakes in progress, capped (`max_handshakes` per worker): at the
    /// cap the acceptors stop as at the connection limit.
    pub handshakes: Option<Limit>,
    pub workers: Box<[WorkerShared]>,
    pub acceptors: Box<[AcceptorShared]>,
    pub shutting_down: AtomicBool,
    pub idle: (Mutex<()>, Condvar),
    /// With the probe on: the clock its timestamps are read from.
    pub probe: Option<MonoClock>,
    /// Turns true when a graceful shutdown begins (see [`Connection::closing`]).
    ///
    /// [`Connection::closing`]: crate::Connection::closing
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Every acceptor's and worker's counters and histograms merged (no listener view).
    pub fn merged_stats(&self) -> Stats {
        let acceptors: Vec<_> = self.acceptors.iter().map(|a| &a.stats).collect();
        let workers: Vec<_> = self.workers.iter().map(|w| &w.stats).collect();
        let open = self.workers.iter().map(|w| w.open.load(Relaxed)).collect();
        let mut s = Stats::merge(&acceptors, &workers, open);
        s.workers_alive = self.workers.iter().map(|w| w.alive.load(Relaxed)).collect();
        s.acceptors_alive = self
            .acceptors
            .iter()
            .map(|a| a.alive.load(Relaxed))
            .collect();
        s
    }

    /// A connection on `worker` ended.
    fn release(&self, worker: usize) {
        self.workers[worker].open.fetch_sub(1, Relaxed);
        self.release_slot();
    }

    /// Gives a slot back to the limit and wakes whoever waits for one.
    pub fn release_slot(&self) {
        self.limit.release();
        self.wake_parked();
        if self.shutting_down.load(Relaxed) {
            let _guard = self.idle.0.lock();
            self.idle.1.notify_all();
        }
    }

    /// Whether an acceptor may take another connection: a slot in the limit, and (with TLS)
    /// room for another handshake.
    pub fn has_room(&self) -> bool {
        self.limit.has_room() && self.handshakes.as_ref().is_none_or(Limit::has_room)
    }

    /// Ends a handshake: its place in the cap back, parked acceptors woken.
    pub fn release_handshake(&self) {
        if let Some(h) = &self.handshakes {
            h.release();
            self.wake_parked();
        }
    }

    fn wake_parked(&self) {
        for a in self.acceptors.iter() {
            if a.parked.load(SeqCst) && a.parked.swap(false, SeqCst) {
                a.waker.wake();
            }
        }
    }
}

/// How an acceptor is woken for an order or a freed slot.
#[derive(Debug)]
pub(crate) enum Wake {
    /// A dedicated acceptor thread, asleep in `mio::Poll`.
    Poll(Waker),
    /// An accept task on a worker's runtime.
    Task(Arc<tokio::sync::Notify>),
}

impl Wake {
    pub fn wake(&self) {
        match self {
            Wake::Poll(w) => {
                if let Err(e) = w.wake() {
                    tracing::error!(target: "synack::acceptor", error = %e, "cannot wake an acceptor");
                }
            }
            // A permit is stored when the task is not waiting, so no wakeup is lost.
            Wake::Task(n) => n.notify_one(),
        }
    }
}

/// An acceptor's state seen by the server and by the connection slots.
#[derive(Debug)]
pub(crate) struct AcceptorShared {
    pub stats: AcceptorStats,
    /// Set while the acceptor sleeps waiting for a free slot.
    pub parked: AtomicBool,
    /// False once the acceptor has died (its thread or its worker): see
    /// [`acceptor_died`](crate::acceptor::acceptor_died).
    pub alive: AtomicBool,
    /// Set by [`Server::pause`](crate::Server::pause) as it sends the order, cleared by
    /// `resume`: an accept burst checks it before each `accept()`, so that a pause ordered by
    /// a handler that the burst itself started (accepting in the workers) stops the burst at
    /// once, without the pause waiting for this acceptor's answer.
    pub pause_ordered: AtomicBool,
    /// Set once the acceptor watches its listeners (its first turn): from then on it accepts
    /// what arrives. A handoff's new process reports ready only when every acceptor is.
    pub watching: AtomicBool,
    pub waker: Wake,
    /// Tells the worker that accepts for this acceptor thread while idle (if one does) that
    /// the acceptor has stopped or died: it lets go of the listeners.
    pub helper_stop: tokio::sync::Notify,
    /// The worker that accepts for this acceptor thread while idle, while it does
    /// ([`NO_HELPER`] otherwise).
    pub helper: AtomicUsize,
}

/// [`AcceptorShared::helper`] when no worker accepts for the acceptor.
pub(crate) const NO_HELPER: usize = usize::MAX;

impl AcceptorShared {
    pub fn new(waker: Wake) -> Self {
        AcceptorShared {
            stats: AcceptorStats::new(),
            parked: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            pause_ordered: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            waker,
            helper_stop: tokio::sync::Notify::new(),
            helper: AtomicUsize::new(NO_HELPER),
        }
    }
}

/// A worker's state seen by the acceptors and the server.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    /// Connections dispatched to this worker and not yet dropped.
    pub open: AtomicU64,
    /// False once the worker's thread has died: nothing is dispatched to it any more.
    pub alive: AtomicBool,
    /// The worker loop's turns so far: unchanged over a while, the worker is idle or stuck in
    /// a handler (read by an acceptor thread that leaves its listeners to this worker).
    pub turns: AtomicU64,
    pub stats: WorkerStats,
}

impl WorkerShared {
    pub fn new() -> Self {
        WorkerShared {
            open: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            turns: AtomicU64::new(0),
            stats: WorkerStats::new(),
        }
    }
}

/// A taken slot, owned by a [`Connection`](crate::Connection): dropping it frees the slot,
/// lowers its worker's open count and wakes an acceptor waiting for room.
#[derive(Debug)]
pub(crate) struct Slot {
    shared: Arc<Shared>,
    worker: usize,
}

impl Slot {
    /// Wraps a slot already taken with [`Limit::try_acquire`] for a connection on `worker`,
    /// counting it open there.
    pub fn new(shared: Arc<Shared>, worker: usize) -> Self {
        shared.workers[worker].open.fetch_add(1, Relaxed);
        Slot { shared, worker }
    }

    /// Moves the slot to another worker (its connection is dispatched again, its first worker
    /// having died).
    pub fn move_to(&mut self, worker: usize) {
        self.shared.workers[worker].open.fetch_add(1, Relaxed);
        self.shared.workers[self.worker].open.fetch_sub(1, Relaxed);
        self.worker = worker;
    }

    /// The server state the slot belongs to.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The statistics of the worker its connection is open on.
    pub fn worker_stats(&self) -> &crate::stats::WorkerStats {
        &self.shared.workers[self.worker].stats
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.release(self.worker);
    }
}

/// A place in the handshake cap (see [`Shared::handshakes`]), taken before `accept()` and
/// given back when the connection's TLS handshake ends, however it ends.
#[derive(Debug)]
pub(crate) struct HandshakePermit {
    shared: Arc<Shared>,
}

impl HandshakePermit {
    /// Wraps a place already taken with `try_acquire`.
    pub fn new(shared: Arc<Shared>) -> Self {
        HandshakePermit { shared }
    }
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        self.shared.release_handshake();
    }
}

thread_local! {
    /// On a worker's thread: the server it belongs to (for [`on_worker_of`]).
    static WORKER_OF: std::cell::Cell<*const Shared> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// Marks the calling thread as a worker of the server `shared` belongs to.
pub(crate) fn enter_worker_of(shared: &Arc<Shared>) {
    WORKER_OF.with(|w| w.set(Arc::as_ptr(shared)));
}

/// Whether the calling thread is one of the workers of the server `shared` belongs to.
pub(crate) fn on_worker_of(shared: &Shared) -> bool {
    WORKER_OF.with(|w| std::ptr::eq(w.get(), shared))
}
