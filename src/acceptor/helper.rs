//! A worker that accepts for its acceptor thread while it has nothing else to run (the
//! default with acceptor threads: [`idle_worker_accepts`](crate::ServerBuilder::idle_worker_accepts)).
//!
//! Acceptor `k`'s listeners are registered with worker `k`'s reactor as well, before the
//! acceptor thread registers them, and both registrations are `EPOLLEXCLUSIVE`. For each new
//! connection the kernel wakes one exclusive watcher that is waiting, the first registered:
//! the worker when it is idle (parked in its reactor), the acceptor thread only while the worker
//! is busy. So an idle worker takes the connection itself and starts its handler on the spot,
//! without a wakeup of the acceptor, a channel or a context switch; a busy worker leaves it to
//! the acceptor thread, which accepts at once and hands it to the least-loaded worker, as
//! Tomcat's acceptor does. Both drive the acceptor's one [`AcceptCore`], under its lock, so the
//! connection limit (the slot taken before `accept()`), pause, drain, back-off and statistics
//! are the acceptor's own; the worker leaves the drain, and any park at the limit or back-off
//! after an error, to the acceptor thread, which it wakes for that. What the worker accepts goes
//! to the least-loaded worker too: itself while it is among the least loaded. And while the
//! worker is busy but keeps up, the acceptor thread leaves the listeners to it altogether
//! (`Yielder` in `thread.rs`).
//!
//! Where the registration cannot be made exclusive (a kernel before 4.5, no `/proc`), the
//! worker does not accept at all: both would be woken for every connection.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use socket2::Socket;
use tokio::io::unix::AsyncFd;

use super::core::{AcceptCore, Help};
use super::thread::lock;
use crate::dispatch::{Accepted, Helping};
use crate::shared::{NO_HELPER, Shared};
use crate::sys;

/// What a worker needs to accept for acceptor thread `id`: the acceptor's core and the
/// worker's own exclusive registrations of its listeners.
pub(crate) struct HelpTask {
    core: Arc<Mutex<AcceptCore>>,
    fds: Vec<AsyncFd<Arc<Socket>>>,
    shared: Arc<Shared>,
    id: usize,
}

impl HelpTask {
    /// Registers the acceptor's listeners with the current runtime's reactor (the worker's,
    /// entered on the thread that starts it) and makes each registration exclusive. Must run
    /// before the acceptor thread registers them. `Err` says why the worker cannot help.
    pub fn register(core: Arc<Mutex<AcceptCore>>) -> Result<HelpTask, String> {
        let (socks, shared, id) = {
            let c = lock(&core);
            let socks: Vec<_> = c.entries.iter().map(|e| (e.sock.clone(), e.fd)).collect();
            (socks, c.shared.clone(), c.id)
        };
        let mut fds = Vec::with_capacity(socks.len());
        for (sock, fd) in socks {
            let registered = sys::register_listener(sock)
                .map_err(|e| format!("the worker's reactor cannot watch the listener: {e}"))?;
            sys::make_registration_exclusive(fd)
                .map_err(|e| format!("its watch cannot be made exclusive (EPOLLEXCLUSIVE): {e}"))?;
            fds.push(registered);
        }
        Ok(HelpTask {
            core,
            fds,
            shared,
            id,
        })
    }
}

/// Worker `worker` named as acceptor `id`'s helper, for as long as it lives.
struct Published<'a> {
    shared: &'a Shared,
    id: usize,
}

impl<'a> Published<'a> {
    fn new(shared: &'a Shared, id: usize, worker: usize) -> Self {
        shared.acceptors[id].helper.store(worker, SeqCst);
        Published { shared, id }
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        self.shared.acceptors[self.id]
            .helper
            .store(NO_HELPER, SeqCst);
        // An acceptor thread leaving its listeners to this worker takes them back.
        self.shared.acceptors[self.id].waker.wake();
    }
}

/// Accepts for the acceptor whenever the kernel wakes this worker for one of its listeners,
/// at most `batch` per listener before the worker's other work gets a turn; each connection
/// kept for this worker is passed to `start` once the acceptor's lock is let go (so no
/// handler runs under it). Returns when the acceptor stops.
pub(crate) async fn run(
    task: HelpTask,
    batch: usize,
    mut dispatch: Helping,
    mut start: impl FnMut(Accepted),
) {
    let HelpTask {
        core,
        fds,
        shared,
        id,
    } = task;
    let me = &shared.acceptors[id];
    // Known to the acceptor thread while this runs (it leaves its listeners to a helper it
    // knows of only), forgotten when it ends, however it ends.
    let _published = Published::new(&shared, id, dispatch.worker());
    let mut stopped = pin!(me.helper_stop.notified());
    let mut ready = vec![false; fds.len()];
    tracing::debug!(target: "synack::acceptor", acceptor = id, listeners = fds.len(),
        "worker accepts for its acceptor while idle");
    loop {
        let go = poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            let mut any = false;
            for (i, fd) in fds.iter().enumerate() {
                match fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        // Cleared before accepting: a connection arriving after the clear
                        // sets readiness again.
                        guard.clear_ready();
                        ready[i] = true;
                        any = true;
                    }
                    // The reactor gave up on it: the acceptor thread still watches it.
                    Poll::Ready(Err(e)) => {
                        tracing::warn!(target: "synack::acceptor", acceptor = id, error = %e,
                            "the worker can no longer watch a listener; its acceptor thread accepts alone");
                        return Poll::Ready(false);
                    }
                    Poll::Pending => {}
                }
            }
            if any { Poll::Ready(true) } else { Poll::Pending }
        })
        .await;
        if !go {
            return;
        }
        loop {
            let end = lock(&core).help(&mut ready, batch, &mut dispatch);
            for acc in dispatch.mine.drain(..) {
                start(acc);
            }
            match end {
                Help::Done => break,
                Help::Again => tokio::task::yield_now().await,
                Help::HandOver => {
                    me.waker.wake();
                    break;
                }
                Help::Exited => return,
            }
        }
    }
}
