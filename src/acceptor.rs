//! The acceptor: takes connections off the kernel's accept queue.
//!
//! By default each acceptor is a dedicated thread running a `mio::Poll` over its listeners and
//! a `mio::Waker` for control (pause, resume, stop, a slot freed in the connection limit); it
//! hands what it accepts to the workers. With
//! [`accept_in_workers`](crate::ServerBuilder::accept_in_workers) each worker is its own
//! acceptor instead, the same loop run as a task on the worker's reactor (`task.rs`), so a
//! connection reaches its handler without crossing threads. Both drive one `AcceptCore`.
//!
//! On readiness an acceptor accepts until
//! `WouldBlock`, at most `accept_batch` per listener per round so one listener cannot starve
//! another, taking a slot in the connection limit before each `accept()` (Tomcat's order).
//!
//! Errors never make it spin: per-connection errors (`ECONNABORTED`, `EPROTO`, `EPERM`) are
//! counted and skipped; resource exhaustion (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) takes the
//! listener out of the poll for a back-off that doubles from `backoff_min` to `backoff_max`, or,
//! under [`FdExhaustionPolicy::Shed`], spends a reserved descriptor to reset waiting clients.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::SendError;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::Socket;
use tokio::sync::mpsc::UnboundedSender;

use crate::limit::{OverloadPolicy, Slot};
use crate::listener;
use crate::server::Shared;
use crate::stats::{AcceptErrorKind, AcceptorStats};
use crate::sys;
use crate::worker::{Accepted, WorkerMsg};

pub(crate) mod task;

const WAKER: Token = Token(usize::MAX);

/// What an acceptor does when the process or the system runs out of file descriptors.
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
    /// False once the acceptor has died (its thread or its worker): see [`acceptor_died`].
    pub alive: AtomicBool,
    /// Set by [`Server::pause`](crate::Server::pause) as it sends the order, cleared by
    /// `resume`: an accept burst checks it before each `accept()`, so that a pause ordered by
    /// a handler that the burst itself started (accepting in the workers) stops the burst at
    /// once, without the pause waiting for this acceptor's answer.
    pub pause_ordered: AtomicBool,
    pub waker: Wake,
}

impl AcceptorShared {
    pub fn new(waker: Wake) -> Self {
        AcceptorShared {
            stats: AcceptorStats::new(),
            parked: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            pause_ordered: AtomicBool::new(false),
            waker,
        }
    }
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

/// One listener as an acceptor sees it.
pub(crate) struct Entry {
    pub index: usize,
    pub sock: Arc<Socket>,
    pub fd: RawFd,
    pub addr: SocketAddr,
    specific: Option<SocketAddr>,
    /// Whether this acceptor alone accepts from it (a `reuse_port` socket of its own).
    own: bool,
    /// Whether the driver is watching it for readiness.
    pub registered: bool,
    /// Whether an `accept()` may find a connection (no `WouldBlock` seen since the last
    /// readiness).
    pub ready: bool,
    pub backoff_until: Option<Instant>,
    backoff: Duration,
}

impl Entry {
    /// Whether the accept loop should call `accept()` on it now.
    pub fn acceptable(&self) -> bool {
        self.registered && self.ready && self.backoff_until.is_none()
    }
}

/// A warning that is logged at most once a second, with the count of those held back.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Where an acceptor's connections go.
pub(crate) trait Dispatch {
    /// The worker the next connection goes to.
    fn pick(&mut self, shared: &Shared) -> usize;
    /// Hands `acc` to worker `worker`.
    fn deliver(&mut self, shared: &Shared, worker: usize, acc: Accepted);
}

/// The accept logic both drivers share: the connection limit, the accept bursts, error
/// back-off and shedding, pause and drain. The driver waits for readiness, orders and time.
pub(crate) struct AcceptCore {
    pub id: usize,
    pub entries: Vec<Entry>,
    shared: Arc<Shared>,
    cfg: AcceptConfig,
    paused: bool,
    pub at_limit: bool,
    draining: Option<Instant>,
    next_listener: usize,
    seq: u64,
    reserve: Option<File>,
    error_log: RateLimited,
    limit_log: RateLimited,
}

/// What the driver should do after [`AcceptCore::finish_turn`].
pub(crate) enum Next {
    /// Exit now, reporting this.
    Exit(AcceptorExit),
    /// Go on at once: a listener may still have connections waiting (its batch ran out).
    Again,
    /// Wait for readiness, an order or a freed slot, at most until this time (if any).
    Wait(Option<Instant>),
}

impl AcceptCore {
    /// Prepares acceptor `id` over `listeners` (index, socket, address, whether it is this
    /// acceptor's alone).
    pub fn new(
        id: usize,
        listeners: Vec<(usize, Arc<Socket>, SocketAddr, bool)>,
        shared: Arc<Shared>,
        cfg: AcceptConfig,
    ) -> Self {
        let entries = listeners
            .into_iter()
            .map(|(index, sock, addr, own)| Entry {
                index,
                fd: sock.as_raw_fd(),
                sock,
                addr,
                specific: (!addr.ip().is_unspecified()).then_some(addr),
                own,
                registered: false,
                ready: true,
                backoff_until: None,
                backoff: cfg.backoff_min,
            })
            .collect();
        let reserve = match cfg.fd_exhaustion {
            FdExhaustionPolicy::Shed => open_reserve(),
            FdExhaustionPolicy::Backoff => None,
        };
        AcceptCore {
            id,
            entries,
            shared,
            cfg,
            paused: false,
            at_limit: false,
            draining: None,
            next_listener: 0,
            seq: 0,
            reserve,
            error_log: RateLimited::default(),
            limit_log: RateLimited::default(),
        }
    }

    /// Its listeners, for [`acceptor_died`].
    pub fn listeners(&self) -> Vec<Watched> {
        self.entries
            .iter()
            .map(|e| Watched {
                sock: Arc::downgrade(&e.sock),
                addr: e.addr,
                own: e.own,
            })
            .collect()
    }

    fn me(&self) -> &AcceptorShared {
        &self.shared.acceptors[self.id]
    }

    fn stats(&self) -> &AcceptorStats {
        &self.shared.acceptors[self.id].stats
    }

    /// Whether the listeners should be watched and accepted from now.
    pub fn active(&self) -> bool {
        (!self.paused || self.draining.is_some()) && !self.at_limit
    }

    /// The part of a turn before the driver (de)registers its listeners: orders, a freed slot,
    /// back-offs run out. `Some` when the acceptor should exit now.
    pub fn begin_turn(&mut self, ctrl: &Receiver<Control>) -> Option<AcceptorExit> {
        if let Some(exit) = self.handle_control(ctrl) {
            return Some(exit);
        }
        if self.at_limit && self.try_unpark() {
            self.at_limit = false;
            if let Some(held) = self.limit_log.allow(Instant::now()) {
                tracing::info!(target: "synack::acceptor", acceptor = self.id, held_back = held,
                    "connection limit has room again; accepting");
            }
            for e in &mut self.entries {
                e.ready = true;
            }
        }
        // The clock is read only when a back-off may have run out (not on the accept path).
        if self.entries.iter().any(|e| e.backoff_until.is_some()) {
            let now = Instant::now();
            for e in &mut self.entries {
                if e.backoff_until.is_some_and(|t| t <= now) {
                    e.backoff_until = None;
                    e.ready = true;
                }
            }
        }
        None
    }

    /// The rest of a turn, once the driver's registrations match [`active`](Self::active):
    /// accepts what waits, then says what the driver should do next.
    pub fn finish_turn(&mut self, dispatch: &mut impl Dispatch) -> Next {
        if self.active() {
            self.accept_round(dispatch);
        }
        if let Some(deadline) = self.draining
            && (Instant::now() >= deadline || self.drained())
        {
            return Next::Exit(self.exit());
        }
        // At the limit: park (the next slot freed wakes us), unless a slot freed meanwhile.
        if self.at_limit && self.try_unpark() {
            return Next::Again;
        }
        if !self.at_limit && self.entries.iter().any(Entry::acceptable) {
            return Next::Again;
        }
        let mut until = self.entries.iter().filter_map(|e| e.backoff_until).min();
        if let Some(d) = self.draining {
            until = Some(until.map_or(d, |u| u.min(d)));
        }
        Next::Wait(until)
    }

    /// Processes pending orders; `Some` when the acceptor should exit now.
    fn handle_control(&mut self, ctrl: &Receiver<Control>) -> Option<AcceptorExit> {
        loop {
            match ctrl.try_recv() {
                Ok(Control::Pause(ack)) => {
                    self.paused = true;
                    let _ = ack.send(());
                }
                Ok(Control::Resume) => {
                    self.paused = false;
                    for e in &mut self.entries {
                        e.ready = true;
                    }
                }
                Ok(Control::Stop { drain, deadline }) => {
                    if !drain {
                        return Some(self.exit());
                    }
                    self.draining = Some(deadline);
                    for e in &mut self.entries {
                        e.ready = true;
                    }
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => {
                    if self.draining.is_none() {
                        return Some(self.exit());
                    }
                    return None;
                }
            }
        }
    }

    /// Whether every listener has been emptied (seen `WouldBlock`) during a drain.
    fn drained(&self) -> bool {
        self.entries
            .iter()
            .all(|e| !e.ready && e.backoff_until.is_none())
    }

    /// The acceptor stops. The driver stops watching the listeners.
    pub fn exit(&mut self) -> AcceptorExit {
        tracing::debug!(target: "synack::acceptor", acceptor = self.id, "acceptor stopped");
        AcceptorExit
    }

    /// Marks this acceptor parked and checks the limit once more (so a slot freed in between
    /// is not missed). True when there is room after all.
    fn try_unpark(&self) -> bool {
        self.me().parked.store(true, SeqCst);
        if self.shared.limit.has_room() {
            self.me().parked.store(false, SeqCst);
            true
        } else {
            false
        }
    }

    /// Brings what the driver watches in line with [`active`](Self::active): calls
    /// `watch(i, entry, on)` for each listener to start (`on`) or stop watching, and marks a
    /// listener watched again as possibly ready. A listener that cannot be watched is retried
    /// after its back-off.
    pub fn sync_watch(&mut self, mut watch: impl FnMut(usize, &Entry, bool) -> io::Result<()>) {
        let active = self.active();
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            let want = active && e.backoff_until.is_none();
            if want == e.registered {
                continue;
            }
            match watch(i, e, want) {
                Ok(()) => {
                    let e = &mut self.entries[i];
                    e.registered = want;
                    if want {
                        e.ready = true;
                    }
                }
                Err(err) => self.registration_failed(i, &err),
            }
        }
    }

    /// A listener the driver could not (de)register: retried after its back-off.
    pub fn registration_failed(&mut self, i: usize, err: &io::Error) {
        let e = &mut self.entries[i];
        tracing::error!(target: "synack::acceptor", addr = %e.addr, error = %err,
            "cannot (de)register listener with the poll; retrying after back-off");
        e.backoff_until = Some(Instant::now() + e.backoff);
    }

    fn accept_round(&mut self, dispatch: &mut impl Dispatch) {
        let n = self.entries.len();
        let start = self.next_listener;
        self.next_listener = (start + 1) % n.max(1);
        for k in 0..n {
            let i = (start + k) % n;
            if self.entries[i].acceptable() {
                self.accept_burst(i, dispatch);
            }
            if self.at_limit {
                break;
            }
        }
    }

    /// Accepts up to `batch` connections from listener `i`.
    fn accept_burst(&mut self, i: usize, dispatch: &mut impl Dispatch) {
        let mut accepted = 0u64;
        while accepted < self.cfg.batch as u64 {
            // A pause ordered since the turn began (by a handler this burst started, say):
            // the order is in the channel, taken at the start of the next turn.
            if self.draining.is_none() && self.me().pause_ordered.load(Relaxed) {
                break;
            }
            let have_slot = self.shared.limit.try_acquire();
            if !have_slot && self.cfg.overload == OverloadPolicy::Queue {
                self.reach_limit();
                break;
            }
            match sys::accept(&self.entries[i].sock) {
                Ok((stream, peer)) => {
                    let accepted_at = Instant::now();
                    accepted += 1;
                    self.entries[i].backoff = self.cfg.backoff_min;
                    if have_slot {
                        self.dispatch(i, stream, peer, accepted_at, dispatch);
                    } else {
                        // Counted before the RST, so whoever sees the reset sees the count.
                        self.stats().rejected.fetch_add(1, Relaxed);
                        listener::close_with_reset(stream);
                        tracing::debug!(target: "synack::acceptor", peer = %peer, "connection limit reached; rejected with RST");
                    }
                }
                Err(err) => {
                    if have_slot {
                        self.shared.release_slot();
                    }
                    match err.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.entries[i].ready = false;
                            break;
                        }
                        io::ErrorKind::Interrupted => continue,
                        _ => {
                            if !self.accept_error(i, err) {
                                break;
                            }
                        }
                    }
                }
            }
        }
        self.stats().record_batch(accepted);
    }

    fn reach_limit(&mut self) {
        self.at_limit = true;
        self.stats().limit_reached.fetch_add(1, Relaxed);
        if let Some(held) = self.limit_log.allow(Instant::now()) {
            tracing::info!(target: "synack::acceptor", acceptor = self.id,
                max_connections = self.shared.limit.max(), held_back = held,
                "connection limit reached; new connections wait in the kernel accept queue");
        }
    }

    /// Handles a failed `accept()`; true when the burst may go on.
    fn accept_error(&mut self, i: usize, err: io::Error) -> bool {
        let errno = err.raw_os_error().unwrap_or(0);
        let kind = AcceptErrorKind::from_errno(errno);
        self.stats().error(kind);
        if !kind.is_resource_exhaustion() && kind != AcceptErrorKind::Other {
            tracing::debug!(target: "synack::acceptor", addr = %self.entries[i].addr, error = %err, "accept error on one connection; going on");
            return true;
        }
        let fd_limit = matches!(
            kind,
            AcceptErrorKind::ProcessFdLimit | AcceptErrorKind::SystemFdLimit
        );
        if fd_limit && self.cfg.fd_exhaustion == FdExhaustionPolicy::Shed && self.shed(i) {
            return false;
        }
        let e = &mut self.entries[i];
        let delay = e.backoff;
        e.backoff_until = Some(Instant::now() + delay);
        e.backoff = (delay * 2).min(self.cfg.backoff_max);
        e.ready = false;
        let addr = e.addr;
        if let Some(held) = self.error_log.allow(Instant::now()) {
            tracing::warn!(target: "synack::acceptor", addr = %addr, error = %err, kind = kind.name(),
                backoff_ms = delay.as_millis() as u64, held_back = held,
                "accept failed; not accepting on this listener for the back-off");
        }
        false
    }

    /// Spends the reserved descriptor to reset the connections waiting on listener `i`.
    /// False when there was no reserve to spend.
    fn shed(&mut self, i: usize) -> bool {
        // A reserve lost to a race earlier is taken back first, if descriptors allow.
        let Some(reserve) = self.reserve.take().or_else(open_reserve) else {
            return false;
        };
        drop(reserve);
        let mut shed = 0u64;
        loop {
            match sys::accept(&self.entries[i].sock) {
                Ok((stream, _)) => {
                    self.stats().shed.fetch_add(1, Relaxed);
                    listener::close_with_reset(stream);
                    shed += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.entries[i].ready = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.reserve = open_reserve();
        let addr = self.entries[i].addr;
        if let Some(held) = self.error_log.allow(Instant::now()) {
            tracing::warn!(target: "synack::acceptor", addr = %addr, shed, held_back = held,
                reserve_restored = self.reserve.is_some(),
                "out of file descriptors; reset waiting connections with RST");
        }
        self.reserve.is_some() || shed > 0
    }

    fn dispatch(
        &mut self,
        i: usize,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        accepted_at: Instant,
        dispatch: &mut impl Dispatch,
    ) {
        let w = dispatch.pick(&self.shared);
        self.shared.workers[w].open.fetch_add(1, Relaxed);
        let id = self.seq * self.shared.acceptors.len() as u64 + self.id as u64;
        self.seq += 1;
        let e = &self.entries[i];
        let acc = Accepted {
            stream,
            peer,
            local: e.specific,
            listener: e.index,
            acceptor: self.id,
            id,
            accepted_at,
            slot: Slot::new(self.shared.clone(), w),
        };
        let stats = &self.shared.acceptors[self.id].stats;
        stats.accepted.fetch_add(1, Relaxed);
        if self.draining.is_some() {
            stats.drained.fetch_add(1, Relaxed);
        }
        dispatch.deliver(&self.shared, w, acc);
    }
}

/// A dedicated acceptor thread's dispatch: the least-loaded live worker, over its channel.
struct ToWorkers {
    senders: Vec<UnboundedSender<WorkerMsg>>,
    next: usize,
    lost_log: RateLimited,
}

impl ToWorkers {
    /// The least-loaded worker still alive (round-robin among equals), if any.
    fn least_loaded(&mut self, shared: &Shared) -> Option<usize> {
        let n = self.senders.len();
        let start = self.next;
        self.next = (start + 1) % n;
        let mut best: Option<(usize, u64)> = None;
        for k in 0..n {
            let w = (start + k) % n;
            let me = &shared.workers[w];
            if !me.alive.load(Relaxed) {
                continue;
            }
            let load = me.open.load(Relaxed);
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((w, load));
            }
        }
        best.map(|(w, _)| w)
    }
}

impl Dispatch for ToWorkers {
    fn pick(&mut self, shared: &Shared) -> usize {
        if self.senders.len() == 1 {
            return 0;
        }
        // With no worker alive, any: the delivery counts the connection as lost.
        self.least_loaded(shared).unwrap_or(0)
    }

    fn deliver(&mut self, shared: &Shared, worker: usize, acc: Accepted) {
        let mut w = worker;
        let mut msg = WorkerMsg::Conn(acc);
        loop {
            match self.senders[w].send(msg) {
                Ok(()) => return,
                // The worker is gone (its thread died): marked so, and the connection goes to
                // another one.
                Err(SendError(back)) => {
                    shared.workers[w].alive.store(false, SeqCst);
                    msg = back;
                }
            }
            let WorkerMsg::Conn(acc) = &mut msg else {
                return;
            };
            match self.least_loaded(shared) {
                Some(next) => {
                    acc.slot.move_to(next);
                    w = next;
                }
                None => {
                    shared.acceptors[acc.acceptor]
                        .stats
                        .lost
                        .fetch_add(1, Relaxed);
                    if let Some(held) = self.lost_log.allow(Instant::now()) {
                        tracing::error!(target: "synack::acceptor", acceptor = acc.acceptor, held_back = held,
                            "no worker is alive; connection closed unserved");
                    }
                    return;
                }
            }
        }
    }
}

/// A dedicated acceptor thread: an [`AcceptCore`] driven by a `mio::Poll`.
pub(crate) struct Acceptor {
    core: AcceptCore,
    poll: Poll,
    ctrl: Receiver<Control>,
    dispatch: ToWorkers,
}

impl Acceptor {
    /// Prepares acceptor `id` over `listeners` (index, socket, address).
    pub fn new(
        core: AcceptCore,
        poll: Poll,
        workers: Vec<UnboundedSender<WorkerMsg>>,
        ctrl: Receiver<Control>,
    ) -> Self {
        Acceptor {
            core,
            poll,
            ctrl,
            dispatch: ToWorkers {
                senders: workers,
                next: 0,
                lost_log: RateLimited::default(),
            },
        }
    }

    /// The accept loop; returns when stopped.
    pub fn run(mut self) -> AcceptorExit {
        let mut events = Events::with_capacity(64);
        let id = self.core.id;
        tracing::debug!(target: "synack::acceptor", acceptor = id, listeners = self.core.entries.len(), "acceptor started");
        loop {
            if let Some(exit) = self.core.begin_turn(&self.ctrl) {
                return self.exit(exit);
            }
            let registry = self.poll.registry();
            self.core.sync_watch(|i, e, on| {
                if on {
                    registry.register(&mut SourceFd(&e.fd), Token(i), Interest::READABLE)
                } else {
                    registry.deregister(&mut SourceFd(&e.fd))
                }
            });
            let timeout = match self.core.finish_turn(&mut self.dispatch) {
                Next::Exit(exit) => return self.exit(exit),
                Next::Again => Some(Duration::ZERO),
                Next::Wait(until) => until.map(|t| t.saturating_duration_since(Instant::now())),
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(target: "synack::acceptor", acceptor = id, error = %e, "poll failed; acceptor exits");
                let exit = self.core.exit();
                let exit = self.exit(exit);
                acceptor_died(
                    &self.core.shared,
                    id,
                    &self.core.listeners(),
                    "its poll failed",
                );
                return exit;
            }
            for ev in events.iter() {
                if ev.token() != WAKER
                    && let Some(e) = self.core.entries.get_mut(ev.token().0)
                {
                    e.ready = true;
                }
            }
        }
    }

    fn exit(&mut self, exit: AcceptorExit) -> AcceptorExit {
        for e in &mut self.core.entries {
            if e.registered {
                let _ = self.poll.registry().deregister(&mut SourceFd(&e.fd));
                e.registered = false;
            }
        }
        exit
    }
}

fn open_reserve() -> Option<File> {
    match File::open("/dev/null") {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(target: "synack::acceptor", error = %e, "cannot open the reserve descriptor for shedding");
            None
        }
    }
}
