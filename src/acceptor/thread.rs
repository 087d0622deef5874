//! A dedicated acceptor thread: an [`AcceptCore`] driven by a `mio::Poll` over its listeners
//! and a `mio::Waker` for orders and freed slots, handing what it accepts to the least-loaded
//! worker.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc::UnboundedSender;

use super::core::{AcceptCore, Next};
use super::{AcceptorExit, Control, acceptor_died};
use crate::dispatch::{LeastLoaded, WorkerMsg};
use crate::error::Error;
use crate::shared::Shared;
use crate::threads;

const WAKER: Token = Token(usize::MAX);

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
/// its loop marks it dead (see [`acceptor_died`]).
pub(crate) fn spawn(
    core: AcceptCore,
    poll: Poll,
    workers: Vec<UnboundedSender<WorkerMsg>>,
    ctrl: Receiver<Control>,
    shared: Arc<Shared>,
    sched_batch: bool,
) -> Result<std::thread::JoinHandle<AcceptorExit>, Error> {
    let k = core.id;
    let listeners = core.listeners();
    let acceptor = Acceptor::new(core, poll, workers, ctrl);
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

/// A dedicated acceptor thread: an [`AcceptCore`] driven by a `mio::Poll`.
struct Acceptor {
    core: AcceptCore,
    poll: Poll,
    ctrl: Receiver<Control>,
    dispatch: LeastLoaded,
}

impl Acceptor {
    /// Drives `core`, woken by `poll`, sending what it accepts to `workers`, ordered over
    /// `ctrl`.
    fn new(
        core: AcceptCore,
        poll: Poll,
        workers: Vec<UnboundedSender<WorkerMsg>>,
        ctrl: Receiver<Control>,
    ) -> Self {
        Acceptor {
            core,
            poll,
            ctrl,
            dispatch: LeastLoaded::new(workers),
        }
    }

    /// The accept loop; returns when stopped.
    fn run(mut self) -> AcceptorExit {
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
