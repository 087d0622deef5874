//! The acceptor: a dedicated thread that takes connections off the kernel's accept queue.
//!
//! Each acceptor runs a `mio::Poll` over its listeners and a `mio::Waker` for control (pause,
//! resume, stop, a slot freed in the connection limit). On readiness it accepts until
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

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

/// An acceptor's state seen by the server and by the connection slots.
#[derive(Debug)]
pub(crate) struct AcceptorShared {
    pub stats: AcceptorStats,
    /// Set while the acceptor sleeps waiting for a free slot.
    pub parked: AtomicBool,
    pub waker: Waker,
}

/// What an acceptor leaves behind when it exits.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AcceptorExit {
    /// Connections still in the kernel queues of its listeners when it stopped: the kernel
    /// resets them when the listener closes.
    pub left_in_queue: u64,
}

struct Entry {
    index: usize,
    sock: Arc<Socket>,
    fd: RawFd,
    addr: SocketAddr,
    specific: Option<SocketAddr>,
    registered: bool,
    ready: bool,
    backoff_until: Option<Instant>,
    backoff: Duration,
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

/// One acceptor thread's state.
pub(crate) struct Acceptor {
    id: usize,
    poll: Poll,
    entries: Vec<Entry>,
    shared: Arc<Shared>,
    workers: Vec<UnboundedSender<WorkerMsg>>,
    ctrl: Receiver<Control>,
    cfg: AcceptConfig,
    paused: bool,
    at_limit: bool,
    draining: Option<Instant>,
    next_worker: usize,
    next_listener: usize,
    seq: u64,
    reserve: Option<File>,
    error_log: RateLimited,
    limit_log: RateLimited,
}

impl Acceptor {
    /// Prepares acceptor `id` over `listeners` (index, socket, address).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        poll: Poll,
        listeners: Vec<(usize, Arc<Socket>, SocketAddr)>,
        shared: Arc<Shared>,
        workers: Vec<UnboundedSender<WorkerMsg>>,
        ctrl: Receiver<Control>,
        cfg: AcceptConfig,
    ) -> Self {
        let entries = listeners
            .into_iter()
            .map(|(index, sock, addr)| Entry {
                index,
                fd: sock.as_raw_fd(),
                sock,
                addr,
                specific: (!addr.ip().is_unspecified()).then_some(addr),
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
        Acceptor {
            id,
            poll,
            entries,
            shared,
            workers,
            ctrl,
            cfg,
            paused: false,
            at_limit: false,
            draining: None,
            next_worker: 0,
            next_listener: 0,
            seq: 0,
            reserve,
            error_log: RateLimited::default(),
            limit_log: RateLimited::default(),
        }
    }

    fn me(&self) -> &crate::acceptor::AcceptorShared {
        &self.shared.acceptors[self.id]
    }

    fn stats(&self) -> &AcceptorStats {
        &self.shared.acceptors[self.id].stats
    }

    /// The accept loop; returns when stopped.
    pub fn run(mut self) -> AcceptorExit {
        let mut events = Events::with_capacity(64);
        tracing::debug!(target: "synack::acceptor", acceptor = self.id, listeners = self.entries.len(), "acceptor started");
        loop {
            if let Some(exit) = self.handle_control() {
                return exit;
            }
            let now = Instant::now();
            if self.at_limit && self.try_unpark() {
                self.at_limit = false;
                if let Some(held) = self.limit_log.allow(now) {
                    tracing::info!(target: "synack::acceptor", acceptor = self.id, held_back = held,
                        "connection limit has room again; accepting");
                }
                for e in &mut self.entries {
                    e.ready = true;
                }
            }
            for e in &mut self.entries {
                if e.backoff_until.is_some_and(|t| t <= now) {
                    e.backoff_until = None;
                    e.ready = true;
                }
            }
            let active = (!self.paused || self.draining.is_some()) && !self.at_limit;
            self.sync_registrations(active);
            if active {
                self.accept_round();
            }
            if let Some(deadline) = self.draining
                && (now >= deadline || self.drained())
            {
                return self.exit();
            }
            // At the limit: park (the next slot freed wakes us), unless a slot freed meanwhile.
            if self.at_limit && self.try_unpark() {
                continue;
            }
            let more = !self.at_limit
                && self
                    .entries
                    .iter()
                    .any(|e| e.registered && e.ready && e.backoff_until.is_none());
            let timeout = self.poll_timeout(more);
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(target: "synack::acceptor", acceptor = self.id, error = %e, "poll failed; acceptor exits");
                return self.exit();
            }
            for ev in events.iter() {
                if ev.token() != WAKER
                    && let Some(e) = self.entries.get_mut(ev.token().0)
                {
                    e.ready = true;
                }
            }
        }
    }

    fn poll_timeout(&self, more: bool) -> Option<Duration> {
        if more {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut until = self.entries.iter().filter_map(|e| e.backoff_until).min();
        if let Some(d) = self.draining {
            until = Some(until.map_or(d, |u| u.min(d)));
        }
        until.map(|t| t.saturating_duration_since(now))
    }

    /// Processes pending orders; `Some` when the acceptor should exit now.
    fn handle_control(&mut self) -> Option<AcceptorExit> {
        loop {
            match self.ctrl.try_recv() {
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

    fn exit(&mut self) -> AcceptorExit {
        let mut left = 0u64;
        for e in &mut self.entries {
            if let Ok(Some(q)) = sys::listen_queue(&*e.sock) {
                left += u64::from(q.len);
            }
            if e.registered {
                let _ = self.poll.registry().deregister(&mut SourceFd(&e.fd));
                e.registered = false;
            }
        }
        tracing::debug!(target: "synack::acceptor", acceptor = self.id, left_in_queue = left, "acceptor stopped");
        AcceptorExit {
            left_in_queue: left,
        }
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

    fn sync_registrations(&mut self, active: bool) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            let want = active && e.backoff_until.is_none();
            if want == e.registered {
                continue;
            }
            let reg = self.poll.registry();
            let res = if want {
                reg.register(&mut SourceFd(&e.fd), Token(i), Interest::READABLE)
            } else {
                reg.deregister(&mut SourceFd(&e.fd))
            };
            match res {
                Ok(()) => {
                    e.registered = want;
                    if want {
                        e.ready = true;
                    }
                }
                Err(err) => {
                    tracing::error!(target: "synack::acceptor", addr = %e.addr, error = %err,
                        "cannot (de)register listener with the poll; retrying after back-off");
                    e.backoff_until = Some(Instant::now() + e.backoff);
                }
            }
        }
    }

    fn accept_round(&mut self) {
        let n = self.entries.len();
        let start = self.next_listener;
        self.next_listener = (start + 1) % n.max(1);
        for k in 0..n {
            let i = (start + k) % n;
            let e = &self.entries[i];
            if e.registered && e.ready && e.backoff_until.is_none() {
                self.accept_burst(i);
            }
            if self.at_limit {
                break;
            }
        }
    }

    /// Accepts up to `batch` connections from listener `i`.
    fn accept_burst(&mut self, i: usize) {
        let mut accepted = 0u64;
        while accepted < self.cfg.batch as u64 {
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
                        self.dispatch(i, stream, peer, accepted_at);
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

    fn pick_worker(&mut self) -> usize {
        let n = self.workers.len();
        if n == 1 {
            return 0;
        }
        let start = self.next_worker;
        self.next_worker = (start + 1) % n;
        let mut best = start;
        let mut best_load = self.shared.workers[start].open.load(Relaxed);
        for k in 1..n {
            let w = (start + k) % n;
            let load = self.shared.workers[w].open.load(Relaxed);
            if load < best_load {
                best = w;
                best_load = load;
            }
        }
        best
    }

    fn dispatch(
        &mut self,
        i: usize,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        accepted_at: Instant,
    ) {
        let w = self.pick_worker();
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
        if self.workers[w].send(WorkerMsg::Conn(acc)).is_err() {
            tracing::error!(target: "synack::acceptor", worker = w, "worker is gone; connection dropped");
        }
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
