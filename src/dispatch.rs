//! What travels from an acceptor to a worker, and how the worker is chosen.
//!
//! An acceptor wraps each connection it accepts in an [`Accepted`] (the socket, where it came
//! from, and its [`Slot`] in the connection limit) and hands it to a [`Dispatch`]: with
//! acceptor threads, [`LeastLoaded`] sends it as a [`WorkerMsg`] to the live worker with the
//! fewest open connections; accepting in the workers, the worker's own dispatch starts its
//! handler at once (see `worker/`).

use std::net::SocketAddr;
use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::mpsc::error::SendError;

use crate::shared::{HandshakePermit, Shared, Slot};
use crate::throttle::RateLimited;

/// An accepted socket on its way from an acceptor to a worker.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    /// The listener's address when it is a specific one; `None` for a wildcard listener, whose
    /// connection's local address the worker reads with `getsockname`.
    pub local: Option<SocketAddr>,
    pub listener: usize,
    pub acceptor: usize,
    pub id: u64,
    pub accepted_at: Instant,
    pub slot: Slot,
    /// With TLS: its place in the handshake cap, given back when the handshake ends.
    pub handshake: Option<HandshakePermit>,
}

/// Messages from the acceptors and the server to a worker.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    /// Run the handler on this connection.
    Conn(Accepted),
    /// Cancel every handler still running and exit.
    Stop,
}

/// Where an acceptor's connections go.
pub(crate) trait Dispatch {
    /// The worker the next connection goes to.
    fn pick(&mut self, shared: &Shared) -> usize;
    /// Hands `acc` to worker `worker`.
    fn deliver(&mut self, shared: &Shared, worker: usize, acc: Accepted);
}

/// A dedicated acceptor thread's dispatch: the least-loaded live worker, over its channel.
pub(crate) struct LeastLoaded {
    senders: Vec<UnboundedSender<WorkerMsg>>,
    next: usize,
    lost_log: RateLimited,
}

impl LeastLoaded {
    /// Dispatches over the workers' channels, in worker order.
    pub fn new(senders: Vec<UnboundedSender<WorkerMsg>>) -> Self {
        LeastLoaded {
            senders,
            next: 0,
            lost_log: RateLimited::default(),
        }
    }

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

    /// Whether worker `w` is among the least loaded of the live workers (the only one, or
    /// none has fewer open connections): where a connection accepted now would likely go.
    pub fn would_pick(&self, shared: &Shared, w: usize) -> bool {
        let mine = shared.workers[w].open.load(Relaxed);
        shared
            .workers
            .iter()
            .all(|o| !o.alive.load(Relaxed) || o.open.load(Relaxed) >= mine)
    }
}

impl Dispatch for LeastLoaded {
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

/// The dispatch of a worker accepting for its acceptor thread (see `acceptor/helper.rs`): the
/// least-loaded worker, this one whenever none is less loaded. What stays on this worker is
/// kept in `mine`, for the worker to start once it has let go of the acceptor's lock.
pub(crate) struct Helping {
    others: LeastLoaded,
    me: usize,
    pub mine: Vec<Accepted>,
}

impl Helping {
    /// Worker `me`'s dispatch, over every worker's channel.
    pub fn new(senders: Vec<UnboundedSender<WorkerMsg>>, me: usize) -> Self {
        Helping {
            others: LeastLoaded::new(senders),
            me,
            mine: Vec::new(),
        }
    }

    /// The worker this dispatch is of.
    pub fn worker(&self) -> usize {
        self.me
    }
}

impl Dispatch for Helping {
    fn pick(&mut self, shared: &Shared) -> usize {
        if self.others.would_pick(shared, self.me) {
            self.me
        } else {
            self.others.pick(shared)
        }
    }

    fn deliver(&mut self, shared: &Shared, worker: usize, acc: Accepted) {
        if worker == self.me {
            self.mine.push(acc);
        } else {
            self.others.deliver(shared, worker, acc);
        }
    }
}
