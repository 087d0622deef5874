//! A dedicated acceptor thread: an [`AcceptCore`] driven by a `mio::Poll` over its listeners
//! and a `mio::Waker` for orders and freed slots, handing what it accepts to the least-loaded
//! worker.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use tokio::sync::mpsc::UnboundedSender;

use super::core::{AcceptCore, Next};
use super::{AcceptorExit, Control, acceptor_died};
use crate::dispatch::{LeastLoaded, WorkerMsg};
use crate::error::Error;
use crate::shared::{NO_HELPER, Shared};
use crate::sys;
use crate::threads;

const WAKER: Token = Token(usize::MAX);

/// How soon an acceptor thread that left its listeners to its busy worker looks again: at
/// first, and after each look that finds the worker moving and the queue short, twice as late,
/// up to [`YIELD_CHECK_MAX`].
const YIELD_CHECK: Duration = Duration::from_millis(1);

/// The longest wait between two looks (so a worker stuck in a handler is noticed within two).
const YIELD_CHECK_MAX: Duration = Duration::from_millis(4);

/// Looks in a row that found nothing waiting after which the acceptor thread watches its
/// listeners again (so that a worker kept busy by timers alone does not keep it ticking).
const YIELD_IDLE_CHECKS: u32 = 8;

/// The poll of acceptor `k`, and the waker that interrupts it.
pub(crate) fn new_poll(k: usize) -> Result<(Poll, Waker), Error> {
    let start = |source| Error::Start {
        what: format!("the poll of acceptor {k}"),
        source,
    };
    let poll = Poll::new().map_err(start)?;
    let waker = Waker::new(poll.registry(), WAKER).map_err(start)?;
    Ok((poll, waker))
}

/// Starts acceptor `core` on a thread of its own (under `SCHED_BATCH` when asked); a panic of
/// its loop marks it dead (see [`acceptor_died`]). The core is shared with the worker that
/// accepts for it while idle, if one does (see [`helper`](super::helper)).
pub(crate) fn spawn(
    core: Arc<Mutex<AcceptCore>>,
    poll: Poll,
    workers: Vec<UnboundedSender<WorkerMsg>>,
    ctrl: Receiver<Control>,
    shared: Arc<Shared>,
    sched_batch: bool,
    yield_batch: usize,
) -> Result<std::thread::JoinHandle<AcceptorExit>, Error> {
    let (k, listeners) = {
        let c = lock(&core);
        (c.id, c.listeners())
    };
    let acceptor = Acceptor {
        core,
        poll,
        ctrl,
        dispatch: LeastLoaded::new(workers),
        yielder: Yielder {
            batch: yield_batch as u64,
            last_turns: 0,
            idle_checks: 0,
            next_look: YIELD_CHECK,
        },
    };
    std::thread::Builder::new()
        .name(format!("synack-acceptor-{k}"))
        .spawn(move || {
            if sched_batch {
                threads::enter_sched_batch();
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| acceptor.run())) {
                Ok(exit) => exit,
                Err(panic) => {
                    let why = format!("panicked: {}", threads::panic_message(&*panic));
                    threads::forget_panic(panic);
                    acceptor_died(&shared, k, &listeners, &why);
                    AcceptorExit
                }
            }
        })
        .map_err(|source| Error::Start {
            what: format!("acceptor thread {k}"),
            source,
        })
}

/// The accept core, whoever panicked while holding it: its state is plain flags and counters,
/// each left whole.
pub(crate) fn lock(core: &Mutex<AcceptCore>) -> MutexGuard<'_, AcceptCore> {
    core.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A dedicated acceptor thread: an [`AcceptCore`] driven by a `mio::Poll`.
struct Acceptor {
    core: Arc<Mutex<AcceptCore>>,
    poll: Poll,
    ctrl: Receiver<Control>,
    dispatch: LeastLoaded,
    yielder: Yielder,
}

/// When an acceptor thread leaves its listeners to its worker: see [`Yielder::consider`].
struct Yielder {
    /// The most connections left waiting for the worker while the thread yields to it when
    /// half the backlog is fewer (`accept_batch`).
    batch: u64,
    /// The worker's turns at the last look, while yielding.
    last_turns: u64,
    /// Looks in a row, while yielding, that found nothing waiting.
    idle_checks: u32,
    /// How long until the next look.
    next_look: Duration,
}

impl Acceptor {
    /// The accept loop; returns when stopped. The core is locked for each turn, never while
    /// the thread waits.
    fn run(mut self) -> AcceptorExit {
        let mut events = Events::with_capacity(64);
        let id = lock(&self.core).id;
        tracing::debug!(target: "synack::acceptor", acceptor = id, "acceptor started");
        loop {
            let timeout = {
                let mut core = lock(&self.core);
                let mut listener_woke = false;
                for ev in events.iter() {
                    if ev.token() != WAKER
                        && let Some(e) = core.entries.get_mut(ev.token().0)
                    {
                        e.ready = true;
                        listener_woke = true;
                    }
                }
                self.yielder
                    .consider(&mut core, &self.dispatch, listener_woke);
                if let Some(exit) = core.begin_turn(&self.ctrl) {
                    return unwatch_all(&self.poll, &mut core, exit);
                }
                let registry = self.poll.registry();
                let poll_fd = self.poll.as_raw_fd();
                core.sync_watch(|i, e, on| watch(registry, poll_fd, i, e.fd, on));
                match core.finish_turn(&mut self.dispatch) {
                    Next::Exit(exit) => return unwatch_all(&self.poll, &mut core, exit),
                    Next::Again => Some(Duration::ZERO),
                    Next::Wait(until) => {
                        let until = until.map(|t| t.saturating_duration_since(Instant::now()));
                        if core.yielding {
                            let look = self.yielder.next_look;
                            Some(until.map_or(look, |u| u.min(look)))
                        } else {
                            until
                        }
                    }
                }
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(target: "synack::acceptor", acceptor = id, error = %e, "poll failed; acceptor exits");
                let mut core = lock(&self.core);
                let exit = core.exit();
                let exit = unwatch_all(&self.poll, &mut core, exit);
                acceptor_died(&core.shared, id, &core.listeners(), "its poll failed");
                return exit;
            }
        }
    }
}

impl Yielder {
    /// Whether to leave the listeners to the worker that accepts for this acceptor while idle
    /// (and stop watching them), decided when a new connection woke this thread and again at
    /// each look while it yields.
    ///
    /// The kernel wakes this thread only while that worker is busy. When the worker would be
    /// the one to get the connection anyway (no worker has fewer open) and the queue has room
    /// (at most half the backlog waits), accepting here would only add a wakeup, a channel and
    /// two context switches: the thread stops watching and looks again after [`YIELD_CHECK`],
    /// then less often, up to [`YIELD_CHECK_MAX`]. It takes the listeners back at once when the worker stops helping or
    /// dies, when the acceptor is paused, draining or at its limit, when another worker would
    /// get the connection, when more than half the backlog waits, when the worker has not
    /// moved since the last look (idle, or stuck in a handler: what waits is accepted now),
    /// and when nothing has waited for [`YIELD_IDLE_CHECKS`] looks.
    fn consider(&mut self, core: &mut AcceptCore, dispatch: &LeastLoaded, listener_woke: bool) {
        if !core.yielding && !listener_woke {
            return;
        }
        let shared = &core.shared;
        let helper = shared.acceptors[core.id].helper.load(SeqCst);
        let possible = helper != NO_HELPER
            && shared.workers[helper].alive.load(Relaxed)
            && !core.alone()
            && dispatch.would_pick(shared, helper);
        let queued = if possible { core.queued() } else { None };
        let turns = if possible {
            shared.workers[helper].turns.load(Relaxed)
        } else {
            0
        };
        // Few enough wait for the worker: not past half the backlog (the rest is the room
        // that keeps the kernel from dropping SYNs), or `accept_batch` on a small one.
        let short = queued.is_some_and(|(q, max)| q <= (max / 2).max(self.batch));
        if !core.yielding {
            if short {
                core.yielding = true;
                self.last_turns = turns;
                self.idle_checks = 0;
                self.next_look = YIELD_CHECK;
            }
            return;
        }
        let moved = turns != self.last_turns;
        self.last_turns = turns;
        self.idle_checks = if queued.is_some_and(|(q, _)| q == 0) {
            self.idle_checks + 1
        } else {
            0
        };
        if short && moved && self.idle_checks < YIELD_IDLE_CHECKS {
            self.next_look = (self.next_look * 2).min(YIELD_CHECK_MAX);
        } else {
            core.yielding = false;
        }
    }
}

/// Starts (`on`) or stops watching listener `fd` under token `i`. Watched with
/// `EPOLLEXCLUSIVE` where the kernel has it: the kernel then wakes this thread for a new
/// connection only when no exclusive watcher registered before it is waiting, that is, when
/// the worker that accepts for it while idle (registered first) is busy. Elsewhere (Linux
/// before 4.5, other systems), a plain registration.
fn watch(registry: &Registry, poll_fd: RawFd, i: usize, fd: RawFd, on: bool) -> io::Result<()> {
    if !on {
        return registry.deregister(&mut SourceFd(&fd));
    }
    match sys::epoll_add_exclusive(poll_fd, fd, i as u64) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            registry.register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
        }
        r => r,
    }
}

/// Stops watching every listener, on the way out.
fn unwatch_all(poll: &Poll, core: &mut AcceptCore, exit: AcceptorExit) -> AcceptorExit {
    for e in &mut core.entries {
        if e.registered {
            let _ = poll.registry().deregister(&mut SourceFd(&e.fd));
            e.registered = false;
        }
    }
    exit
}
