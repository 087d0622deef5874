//! The FIN with the handler's last write ([`ServerBuilder::fin_with_data`]).
//!
//! While a handler's poll runs on a worker, what it writes goes to the kernel with `MSG_MORE`
//! (straight on a socket not yet registered with the reactor, through the reactor's readiness
//! on a registered one), which keeps a segment that is not full queued. When the poll ends, the worker either pushes what is queued (the
//! connection lives on: one `setsockopt`), or, when the handler dropped the connection in that
//! poll, shuts the socket down and closes it: then the data and the FIN leave in one segment,
//! and the peer acknowledges them once. On loopback, a greeting server's connection then costs
//! 5 segments instead of 7. A connection that lived on past a poll whose writes were held (the
//! worker pushed them) is not held again.
//!
//! Each worker thread learns whether holding pays here: a FIN that rode with the data saves two
//! segments, a push costs a system call. It holds while FINs ride at least once per three
//! pushes and, when they do not, holds one connection in [`PROBE_EVERY`] to notice a change.
//!
//! [`ServerBuilder::fin_with_data`]: crate::ServerBuilder::fin_with_data

use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};

use crate::stats::WorkerStats;

/// While holding does not pay, one connection in this many is held anyway, to find out whether
/// that changed.
const PROBE_EVERY: u32 = 32;

/// What a FIN that rode adds to a thread's score, what a push takes away, and the score's
/// bound either way (so that a change of the handlers' habits shows within a few dozen).
const RODE: i32 = 3;
const PUSHED: i32 = 1;
const BOUND: i32 = 48;

/// A socket written with `MSG_MORE`, shared by its connection and the cork of the worker thread
/// whose handler poll wrote it, until that poll ends.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) sock: Sock,
    /// Whether something was sent with `MSG_MORE` since the last push. Set only by the thread
    /// whose cork holds the socket; cleared by whoever pushes (or closes) it.
    queued: AtomicBool,
    /// Whether the cork pushed it at the end of a poll: the connection lived on past the poll
    /// that wrote it.
    pushed: AtomicBool,
}

/// The socket held: not registered with the reactor yet, or registered.
#[derive(Debug)]
pub(super) enum Sock {
    Raw(std::net::TcpStream),
    Registered(tokio::net::TcpStream),
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Raw(s) => s.as_fd(),
            Sock::Registered(s) => s.as_fd(),
        }
    }
}

impl Held {
    /// Whether what it queued was ever pushed on its own: its connection lived on past a poll
    /// that wrote it.
    pub(super) fn was_pushed(&self) -> bool {
        self.pushed.load(Relaxed)
    }

    /// Sends what is queued now, if anything is, counted as a push (in `stats` and on this
    /// thread's score). The one place a push is made, by the cork or by the connection.
    pub(super) fn push(&self, stats: &WorkerStats) {
        if !self.take_queued() {
            return;
        }
        // An error means the connection is broken; its next read or write says so.
        let _ = synack_sys::push(&self.sock);
        self.pushed.store(true, Relaxed);
        stats.held_pushed.fetch_add(1, Relaxed);
        CORK.with(|c| c.score.set((c.score.get() - PUSHED).max(-BOUND)));
    }

    /// Takes the "queued" mark: true when writes wait for a push or the FIN.
    pub(super) fn take_queued(&self) -> bool {
        self.queued.swap(false, AcqRel)
    }

    pub(super) fn mark_queued(&self) {
        self.queued.store(true, Relaxed);
    }
}

/// One worker thread's cork.
struct Cork {
    /// Whether a handler's poll runs on this thread, with holding on.
    open: Cell<bool>,
    /// The socket written with `MSG_MORE` during that poll (one at a time).
    held: RefCell<Option<Arc<Held>>>,
    /// [`RODE`] per FIN that rode, minus [`PUSHED`] per push, within [`BOUND`]: holding while
    /// it is not negative.
    score: Cell<i32>,
    /// Connections not held since the score went negative, to pick the probes.
    skipped: Cell<u32>,
}

thread_local! {
    static CORK: Cork = const {
        Cork {
            open: Cell::new(false),
            held: RefCell::new(None),
            score: Cell::new(0),
            skipped: Cell::new(0),
        }
    };
}

/// Whether a write may be held now: a handler's poll runs on this thread with holding on, no
/// other socket is held in it, and holding pays (or this is a probe).
pub(super) fn may_hold() -> bool {
    CORK.with(|c| {
        if !c.open.get() || c.held.borrow().is_some() {
            return false;
        }
        if c.score.get() >= 0 {
            return true;
        }
        let n = c.skipped.get().wrapping_add(1);
        c.skipped.set(n);
        n % PROBE_EVERY == 0
    })
}

/// Makes `sock` this thread's held socket until the poll ends (marked queued once a write
/// with `MSG_MORE` went into it).
pub(super) fn hold(sock: Sock) -> Arc<Held> {
    let held = Arc::new(Held {
        sock,
        queued: AtomicBool::new(false),
        pushed: AtomicBool::new(false),
    });
    CORK.with(|c| {
        let was = c.held.borrow_mut().replace(held.clone());
        debug_assert!(was.is_none(), "may_hold said the cork was free");
    });
    held
}

/// Whether `held` is this thread's held socket in the poll running now (so that writes on it
/// may be held too).
pub(super) fn holds(held: &Arc<Held>) -> bool {
    CORK.with(|c| {
        c.open.get()
            && c.held
                .borrow()
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(h, held))
    })
}

/// The connection takes `held` back before the poll ends: this thread's cork lets go of it.
pub(super) fn release(held: &Arc<Held>) {
    CORK.with(|c| {
        let mut slot = c.held.borrow_mut();
        if slot.as_ref().is_some_and(|h| Arc::ptr_eq(h, held)) {
            *slot = None;
        }
    });
}

/// Counts a FIN that rode with held writes.
pub(super) fn rode(stats: &WorkerStats) {
    stats.fin_with_data.fetch_add(1, Relaxed);
    CORK.with(|c| {
        c.score.set((c.score.get() + RODE).min(BOUND));
    });
}

/// One poll of a handler with holding on (see the module): opened before the poll, ended when
/// dropped (after it, or as a panic unwinds from it).
pub(crate) struct PollScope<'a> {
    stats: &'a WorkerStats,
}

impl<'a> PollScope<'a> {
    /// Opens this thread's cork for a handler's poll; `None` when `on` is false.
    pub(crate) fn open(on: bool, stats: &'a WorkerStats) -> Option<Self> {
        if !on {
            return None;
        }
        CORK.with(|c| c.open.set(true));
        Some(PollScope { stats })
    }
}

impl Drop for PollScope<'_> {
    /// Ends the poll's holding: the held socket's writes are pushed if its connection lives on,
    /// or leave with the FIN as the socket closes here, its connection dropped in the poll.
    fn drop(&mut self) {
        let held = CORK.with(|c| {
            c.open.set(false);
            c.held.borrow_mut().take()
        });
        let Some(held) = held else {
            return;
        };
        if Arc::strong_count(&held) > 1 {
            held.push(self.stats);
        } else if held.take_queued() {
            // The connection is gone: the FIN goes now, in the segment of what is queued. A
            // shutdown rather than the close alone, because a close with unread data in the
            // receive queue would send only an RST and drop what is queued, where a plain
            // write would have sent it before (the same shutdown costs no more than the close
            // then: the close has no FIN left to send).
            let _ = socket2::SockRef::from(&held.sock).shutdown(std::net::Shutdown::Write);
            rode(self.stats);
        }
        drop(held);
    }
}
