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
    /// Run the handler on each of these, accepted in one burst: one message, so one wakeup
    /// of the worker for the whole burst.
    Batch(Vec<Accepted>),
    /// Cancel every handler still running and exit.
    Stop,
}

/// Where an acceptor's connections go.
pub(crate) trait Dispatch {
    /// The worker the next connection goes to.
    fn pick(&mut self, shared: &Shared) -> usize;
    /// Hands `acc` to worker `worker` (or keeps it for [`flush`](Self::flush)).
    fn deliver(&mut self, shared: &Shared, worker: usize, acc: Accepted);
    /// Hands over what [`deliver`](Self::deliver) kept: called at the end of every accept
    /// burst, before the acceptor waits.
    fn flush(&mut self, _shared: &Shared) {}
}

impl WorkerMsg {
    /// The connections it carries, for counting those a worker never ran.
    pub fn connections(&self) -> usize {
        match self {
            WorkerMsg::Conn(_) => 1,
            WorkerMsg::Batch(v) => v.len(),
            WorkerMsg::Stop => 0,
        }
    }
}

/// A dedicated acceptor thread's dispatch: the least-loaded live worker, over its channel.
///
/// A burst's connections for one worker travel together: they are kept until the burst ends
/// and then sent as one message. A worker woken per connection, on the acceptor's core,
/// preempts the acceptor for every one (two context switches each); woken per burst, it runs
/// the burst's handlers in one go.
pub(crate) struct LeastLoaded {
    senders: Vec<UnboundedSender<WorkerMsg>>,
    /// Per worker, what this burst accepted for it.
    pending: Vec<Vec<Accepted>>,
    next: usize,
    lost_log: RateLimited,
}

impl LeastLoaded {
    /// Dispatches over the workers' channels, in worker order.
    pub fn new(senders: Vec<UnboundedSender<WorkerMsg>>) -> Self {
        LeastLoaded {
            pending: senders.iter().map(|_| Vec::new()).collect(),
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
}

impl Dispatch for LeastLoaded {
    fn pick(&mut self, shared: &Shared) -> usize {
        if self.senders.len() == 1 {
            return 0;
        }
        // With no worker alive, any: the delivery counts the connection as lost.
        self.least_loaded(shared).unwrap_or(0)
    }

    fn deliver(&mut self, _shared: &Shared, worker: usize, acc: Accepted) {
        self.pending[worker].push(acc);
    }

    fn flush(&mut self, shared: &Shared) {
        for w in 0..self.pending.len() {
            let msg = match self.pending[w].len() {
                0 => continue,
                1 => WorkerMsg::Conn(self.pending[w].pop().expect("one")),
                n => WorkerMsg::Batch(std::mem::replace(
                    &mut self.pending[w],
                    Vec::with_capacity(n),
                )),
            };
            match self.senders[w].send(msg) {
                Ok(()) => {}
                // The worker is gone (its thread died): marked so, and its connections go to
                // the others, one by one.
                Err(SendError(back)) => {
                    shared.workers[w].alive.store(false, SeqCst);
                    let back = match back {
                        WorkerMsg::Conn(acc) => vec![acc],
                        WorkerMsg::Batch(v) => v,
                        WorkerMsg::Stop => Vec::new(),
                    };
                    for acc in back {
                        self.redeliver(shared, acc);
                    }
                }
            }
        }
    }
}

impl LeastLoaded {
    /// Sends `acc`, which a dead worker was to run, to another live worker, or counts it lost
    /// when none is alive.
    fn redeliver(&mut self, shared: &Shared, mut acc: Accepted) {
        loop {
            let Some(w) = self.least_loaded(shared) else {
                shared.acceptors[acc.acceptor]
                    .stats
                    .lost
                    .fetch_add(1, Relaxed);
                if let Some(held) = self.lost_log.allow(Instant::now()) {
                    tracing::error!(target: "synack::acceptor", acceptor = acc.acceptor, held_back = held,
                        "no worker is alive; connection closed unserved");
                }
                return;
            };
            acc.slot.move_to(w);
            match self.senders[w].send(WorkerMsg::Conn(acc)) {
                Ok(()) => return,
                // That one is gone too: marked so, and the next is tried.
                Err(SendError(back)) => {
                    shared.workers[w].alive.store(false, SeqCst);
                    let WorkerMsg::Conn(back) = back else {
                        return;
                    };
                    acc = back;
                }
            }
        }
    }
}
