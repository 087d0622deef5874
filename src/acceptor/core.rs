//! The accept core both drivers share: the connection limit, the accept bursts, pause and
//! drain. The drivers ([`thread`](super::thread), [`task`](super::task)) wait for readiness,
//! orders and time; the core decides what to accept and when to stop. Errors and their
//! back-off are in [`backoff`](super::backoff), each listener's state in
//! [`entry`](super::entry).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use socket2::Socket;

use super::backoff::Backoff;
use super::entry::Entry;
use super::{AcceptConfig, AcceptorExit, Control, Watched};
use crate::dispatch::{Accepted, Dispatch};
use crate::limit::OverloadPolicy;
use crate::listener;
use crate::shared::{AcceptorShared, HandshakePermit, Shared, Slot};
use crate::stats::AcceptorStats;
use crate::sys;
use crate::throttle::RateLimited;

/// The accept logic both drivers share: the connection limit, the accept bursts, error
/// back-off and shedding, pause and drain. The driver waits for readiness, orders and time.
pub(crate) struct AcceptCore {
    pub id: usize,
    pub entries: Vec<Entry>,
    pub(super) shared: Arc<Shared>,
    cfg: AcceptConfig,
    paused: bool,
    pub at_limit: bool,
    draining: Option<Instant>,
    next_listener: usize,
    seq: u64,
    backoff: Backoff,
    limit_log: RateLimited,
    /// Set once the acceptor has stopped: its worker no longer accepts for it either.
    pub exited: bool,
    /// While its worker accepts for it (counted as such).
    helping: bool,
    /// Set by the acceptor thread while it leaves its listeners to its worker (it stops
    /// watching them; see `thread.rs`). Cleared whenever connections may wait that the worker
    /// has not been told of: on resume, a stop, room at the limit, a back-off's end.
    pub yielding: bool,
}

/// How a round accepted by the acceptor's worker ([`AcceptCore::help`]) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Help {
    /// Nothing more to take now (every listener seen ready said `WouldBlock`, or the acceptor
    /// is paused, draining or at its limit).
    Done,
    /// A batch ran out: connections may still wait; go on after the worker's other work.
    Again,
    /// The limit, the handshake cap or an accept error stopped the round: the acceptor thread
    /// must be woken to park or back off, as it does for its own accepts.
    HandOver,
    /// The acceptor has stopped.
    Exited,
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
        let backoff = Backoff::new(&cfg);
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
            backoff,
            limit_log: RateLimited::default(),
            exited: false,
            helping: false,
            yielding: false,
        }
    }

    /// Its listeners, for [`acceptor_died`](super::acceptor_died).
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

    /// Whether the acceptor thread decides alone now, its worker neither accepting for it nor
    /// left its listeners: while it is paused, draining or at its limit.
    pub fn alone(&self) -> bool {
        self.paused || self.draining.is_some() || self.at_limit
    }

    /// Connections waiting in its listeners' kernel queues and those queues' capacity (the
    /// effective backlogs), from `TCP_INFO`; `None` where one cannot be read.
    pub fn queued(&self) -> Option<(u64, u64)> {
        self.entries.iter().try_fold((0u64, 0u64), |(n, max), e| {
            let q = sys::listen_queue(&*e.sock).ok().flatten()?;
            Some((n + u64::from(q.len), max + u64::from(q.max)))
        })
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
            self.yielding = false;
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
                    self.yielding = false;
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
                    self.yielding = false;
                    for e in &mut self.entries {
                        e.ready = true;
                    }
                }
                Ok(Control::Stop { drain, deadline }) => {
                    if !drain {
                        return Some(self.exit());
                    }
                    self.draining = Some(deadline);
                    self.yielding = false;
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
        self.exited = true;
        // Its worker, if it accepts for it, lets go of the listeners.
        self.me().helper_stop.notify_one();
        AcceptorExit
    }

    /// A round of accepts made by the acceptor's worker for it, while the worker had nothing
    /// else to run: at most `batch` from each listener in `ready` (those the worker's reactor
    /// saw readable; each left true when its batch ran out). The acceptor's own rules apply:
    /// nothing while it is paused, draining (the acceptor drains) or at its limit; the slot is
    /// taken before `accept()`. What stops the round at the limit or on an error is handed to
    /// the acceptor thread, which parks or backs off as for its own accepts.
    pub fn help(&mut self, ready: &mut [bool], batch: usize, dispatch: &mut impl Dispatch) -> Help {
        if self.exited {
            return Help::Exited;
        }
        if self.alone() {
            ready.fill(false);
            return Help::Done;
        }
        self.helping = true;
        let mut again = false;
        let mut end = Help::Done;
        for (i, r) in ready.iter_mut().enumerate() {
            if !*r || self.entries[i].backoff_until.is_some() {
                *r = false;
                continue;
            }
            *r = self.accept_burst(i, batch, dispatch);
            again |= *r;
            if self.at_limit || self.entries[i].backoff_until.is_some() {
                end = Help::HandOver;
                break;
            }
        }
        self.helping = false;
        match end {
            Help::Done if again => Help::Again,
            end => end,
        }
    }

    /// Marks this acceptor parked and checks the limit once more (so a slot freed in between
    /// is not missed). True when there is room after all.
    fn try_unpark(&self) -> bool {
        self.me().parked.store(true, SeqCst);
        if self.shared.has_room() {
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
        let active = self.active() && !self.yielding;
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
        if !self.me().watching.load(SeqCst) {
            self.me().watching.store(true, SeqCst);
        }
    }

    /// A listener the driver could not (de)register: retried after its back-off.
    pub fn registration_failed(&mut self, i: usize, err: &io::Error) {
        Backoff::registration_failed(&mut self.entries[i], err);
    }

    fn accept_round(&mut self, dispatch: &mut impl Dispatch) {
        let n = self.entries.len();
        let start = self.next_listener;
        self.next_listener = (start + 1) % n.max(1);
        for k in 0..n {
            let i = (start + k) % n;
            if self.entries[i].acceptable() {
                self.accept_burst(i, self.cfg.batch, dispatch);
            }
            if self.at_limit {
                break;
            }
        }
    }

    /// Accepts up to `batch` connections from listener `i`; true when the batch ran out (more
    /// may wait).
    fn accept_burst(&mut self, i: usize, batch: usize, dispatch: &mut impl Dispatch) -> bool {
        let mut accepted = 0u64;
        while accepted < batch as u64 {
            // A pause ordered since the turn began (by a handler this burst started, say):
            // the order is in the channel, taken at the start of the next turn.
            if self.draining.is_none() && self.me().pause_ordered.load(Relaxed) {
                break;
            }
            // Queue: the slot is taken before accept(), so that at the limit the connection
            // stays in the kernel's queue (Tomcat's order). Reject: after, for the connection
            // in hand; taken before, a slot held only across another acceptor's accept() that
            // finds its queue empty would get this acceptor's connection reset below the limit.
            let queue = self.cfg.overload == OverloadPolicy::Queue;
            if queue && !self.shared.limit.try_acquire() {
                self.reach_limit();
                break;
            }
            // TLS: a place for the handshake, before accept() too, so that at the cap the
            // connection stays in the kernel's queue.
            let permit = match &self.shared.handshakes {
                Some(h) if !h.try_acquire() => {
                    if queue {
                        self.shared.release_slot();
                    }
                    self.reach_handshake_cap(h.max());
                    break;
                }
                Some(_) => Some(HandshakePermit::new(self.shared.clone())),
                None => None,
            };
            match sys::accept(&self.entries[i].sock) {
                Ok((stream, peer)) => {
                    let accepted_at = Instant::now();
                    accepted += 1;
                    self.backoff.reset(&mut self.entries[i]);
                    if queue || self.shared.limit.try_acquire() {
                        self.dispatch(i, stream, peer, accepted_at, permit, dispatch);
                    } else {
                        // Counted before the RST, so whoever sees the reset sees the count.
                        self.stats().rejected.fetch_add(1, Relaxed);
                        listener::close_with_reset(stream);
                        tracing::debug!(target: "synack::acceptor", peer = %peer, "connection limit reached; rejected with RST");
                    }
                }
                Err(err) => {
                    if queue {
                        self.shared.release_slot();
                    }
                    match err.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.entries[i].ready = false;
                            break;
                        }
                        io::ErrorKind::Interrupted => continue,
                        _ => {
                            let stats = &self.shared.acceptors[self.id].stats;
                            if !self.backoff.accept_error(&mut self.entries[i], stats, err) {
                                break;
                            }
                        }
                    }
                }
            }
        }
        self.stats().record_batch(accepted);
        // Every early end (WouldBlock, the limit, a pause, an error) leaves the loop below the
        // batch.
        accepted == batch as u64
    }

    /// At the handshake cap: parked like at the connection limit.
    fn reach_handshake_cap(&mut self, cap: usize) {
        self.at_limit = true;
        self.stats().limit_reached.fetch_add(1, Relaxed);
        if let Some(held) = self.limit_log.allow(Instant::now()) {
            tracing::info!(target: "synack::acceptor", acceptor = self.id,
                max_handshakes = cap, held_back = held,
                "TLS handshake cap reached; new connections wait in the kernel accept queue");
        }
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

    fn dispatch(
        &mut self,
        i: usize,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        accepted_at: Instant,
        handshake: Option<HandshakePermit>,
        dispatch: &mut impl Dispatch,
    ) {
        let w = dispatch.pick(&self.shared);
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
            // Counts it open on worker `w`.
            slot: Slot::new(self.shared.clone(), w),
            handshake,
        };
        let stats = &self.shared.acceptors[self.id].stats;
        stats.accepted.fetch_add(1, Relaxed);
        if self.helping {
            stats.worker_accepted.fetch_add(1, Relaxed);
        }
        if self.draining.is_some() {
            stats.drained.fetch_add(1, Relaxed);
        }
        dispatch.deliver(&self.shared, w, acc);
    }
}
