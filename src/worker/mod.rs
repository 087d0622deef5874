//! Workers: each a thread running a tokio current-thread runtime, fed
//! accepted sockets over a channel by the acceptors, running the user's handler per connection.
//! With [`accept_in_workers`](crate::ServerBuilder::accept_in_workers) each worker also runs
//! its own acceptor as a task, and hands its connections to itself.
//!
//! Handlers run on a `LocalSet`, so their futures need not be `Send`. A panicking handler is
//! caught and counted; its connection is closed, its slot freed, and the worker goes on. So is
//! a panic in what runs of the handler's code outside its poll: dropping its future (when it
//! ends, or is cancelled), its error's `Display`, its output's `Drop`. Should a worker's loop
//! still die (a panic in a tracing layer, say), the worker is marked dead: the acceptors stop
//! dispatching to it, what waited in its channel is counted as lost, and, when it was accepting
//! for itself on a socket of its own, that socket is shut down so the kernel stops queueing
//! connections there.

//!
//! This file starts a worker and runs its loop; `supervised.rs` runs one connection's handler
//! to its end and counts how it ended.

use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use futures_util::future::Either;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::acceptor::{self, AcceptCore, AcceptTask, HelpTask, Watched, helper, task};
use crate::connection::Connection;
use crate::dispatch::Helping;
use crate::dispatch::{Accepted, Dispatch, WorkerMsg};
use crate::error::Error;
use crate::listener::ListenOptions;
use crate::observe::{DispatchHook, ObserveSettings};
use crate::shared::{self, Shared};
use crate::threads;

mod supervised;

pub use supervised::HandlerOutput;
use supervised::serve_one;

/// The server's end of a worker.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    pub tx: UnboundedSender<WorkerMsg>,
    pub thread: Option<JoinHandle<()>>,
}

/// What a worker's connections share: the worker, the server, the handler.
pub(super) struct Ctx<H> {
    pub(super) index: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) handler: Arc<H>,
    pub(super) opts: Arc<ListenOptions>,
    /// Whether a handler's writes may wait for its FIN (see `connection::cork`).
    pub(super) fin_with_data: bool,
    /// The observers' hook on each dispatch.
    pub(super) hook: DispatchHook,
    /// TLS: the sessions' configuration, and the handshakes' timeout.
    #[cfg(feature = "tls")]
    pub(super) tls: Option<crate::tls::TlsSettings>,
}

/// An accept loop's dispatch on its own worker: `start` runs each connection's handler at
/// once, before the next `accept()` of the batch.
struct Local<F> {
    worker: usize,
    start: F,
}

impl<F: FnMut(Accepted)> Dispatch for Local<F> {
    fn pick(&mut self, _shared: &Shared) -> usize {
        self.worker
    }

    fn deliver(&mut self, _shared: &Shared, _worker: usize, acc: Accepted) {
        (self.start)(acc);
    }
}

/// The most new connections a worker takes from its channel before running its handlers.
const RECV_BATCH: usize = 64;

/// How a worker takes part in accepting, besides running what acceptor threads send it.
pub(crate) enum WorkerAccept {
    /// It is its own acceptor ([`accept_in_workers`](crate::ServerBuilder::accept_in_workers)).
    Own(Box<AcceptTask>),
    /// It accepts for an acceptor thread while idle (see `acceptor/helper.rs`), at most
    /// `batch` per listener at a time, dispatching over every worker's channel.
    Help {
        core: Arc<std::sync::Mutex<AcceptCore>>,
        batch: usize,
        senders: Vec<UnboundedSender<WorkerMsg>>,
    },
}

/// A worker's accepting once started: its own acceptor, or the registrations it helps with.
enum Accepting {
    Own(Box<AcceptTask>),
    Help(HelpTask, usize, Helping),
}

/// What every worker is started with, besides the handler.
pub(crate) struct WorkerSetup {
    /// The listeners' options, for the accepted sockets that do not inherit them.
    pub opts: Arc<ListenOptions>,
    /// Run the worker under `SCHED_BATCH`.
    pub sched_batch: bool,
    /// The FIN with the handler's last write (see `connection::cork`).
    pub fin_with_data: bool,
    pub observe: ObserveSettings,
    /// TLS: the handshake each connection starts with.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsSettings>,
}

/// Starts worker `index`, fed over `channel`.
pub(crate) fn spawn<H, Fut>(
    index: usize,
    shared: Arc<Shared>,
    handler: Arc<H>,
    setup: &WorkerSetup,
    accept: Option<WorkerAccept>,
    channel: (UnboundedSender<WorkerMsg>, UnboundedReceiver<WorkerMsg>),
) -> Result<WorkerHandle, Error>
where
    H: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Start {
            what: format!("the tokio runtime of worker {index}"),
            source,
        })?;
    let (tx, rx) = channel;
    // Registered here, in the worker's reactor, before any acceptor thread registers the same
    // listeners: the order the kernel prefers exclusive watchers in.
    let accept = match accept {
        None => None,
        Some(WorkerAccept::Own(a)) => Some(Accepting::Own(a)),
        Some(WorkerAccept::Help {
            core,
            batch,
            senders,
        }) => {
            let _in_runtime = rt.enter();
            match HelpTask::register(core) {
                Ok(task) => Some(Accepting::Help(task, batch, Helping::new(senders, index))),
                Err(why) => {
                    tracing::info!(target: "synack::acceptor", worker = index, reason = %why,
                        "this worker does not accept for its acceptor thread; the acceptor accepts alone");
                    None
                }
            }
        }
    };
    let ctx = Ctx {
        index,
        hook: setup.observe.dispatch_hook(),
        shared,
        handler,
        opts: setup.opts.clone(),
        fin_with_data: setup.fin_with_data,
        #[cfg(feature = "tls")]
        tls: setup.tls.clone(),
    };
    let sched_batch = setup.sched_batch;
    let thread = std::thread::Builder::new()
        .name(format!("synack-worker-{index}"))
        .spawn(move || {
            if sched_batch {
                threads::enter_sched_batch();
            }
            let shared = ctx.shared.clone();
            shared::enter_worker_of(&shared);
            // The listeners this worker accepts from as their own acceptor, for its death
            // notice.
            let listeners = match &accept {
                Some(Accepting::Own(a)) => Some(a.core.listeners()),
                _ => None,
            };
            let mut rx = rx;
            let ended =
                std::panic::catch_unwind(AssertUnwindSafe(|| run(rt, &mut rx, ctx, accept)));
            if let Err(panic) = ended {
                died(index, &shared, &mut rx, listeners, &*panic);
                threads::forget_panic(panic);
            }
        })
        .map_err(|source| Error::Start {
            what: format!("worker thread {index}"),
            source,
        })?;
    Ok(WorkerHandle {
        tx,
        thread: Some(thread),
    })
}

/// A worker's loop died: marks it (and its accept task) dead, shuts down the sockets nobody
/// accepts from any more, and counts what waited in its channel as lost.
fn died(
    index: usize,
    shared: &Shared,
    rx: &mut UnboundedReceiver<WorkerMsg>,
    listeners: Option<Vec<Watched>>,
    panic: &(dyn std::any::Any + Send),
) {
    let msg = threads::panic_message(panic);
    tracing::error!(target: "synack::worker", worker = index, panic = %msg,
        "worker died; its connections were cancelled, new ones go to the other workers");
    if let Some(listeners) = listeners {
        // The worker was an acceptor too (accept_in_workers): acceptor `index`.
        acceptor::acceptor_died(shared, index, &listeners, "its worker died");
    }
    // Marked dead before its channel is closed: an acceptor that still finds it open may
    // send, and what it sends is counted below; one that finds it closed dispatches again.
    shared.workers[index].alive.store(false, SeqCst);
    rx.close();
    let stats = &shared.workers[index].stats;
    let mut lost = 0u64;
    while let Ok(msg) = rx.try_recv() {
        if let WorkerMsg::Conn(acc) = msg {
            stats.lost.fetch_add(1, Relaxed);
            lost += 1;
            drop(acc);
        }
    }
    if lost > 0 {
        tracing::error!(target: "synack::worker", worker = index, lost,
            "connections waiting for the dead worker were closed");
    }
}

fn run<H, Fut>(
    rt: tokio::runtime::Runtime,
    rx: &mut UnboundedReceiver<WorkerMsg>,
    ctx: Ctx<H>,
    accept: Option<Accepting>,
) where
    H: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let ctx = Rc::new(ctx);
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        // The worker's connections, each a future polled only when woken: one allocation per
        // connection and no task of its own (tokio tasks cost an aligned allocation, a
        // registration in the runtime's task list and several moves of the future).
        let conns = Rc::new(RefCell::new(FuturesUnordered::new()));
        // The waker of the worker's own task, for handlers started by the accept loop.
        let waker: Rc<RefCell<Option<Waker>>> = Rc::new(RefCell::new(None));
        // Accepting in this worker (its own acceptor, or helping an acceptor thread): the
        // accept loop is polled by the worker's loop itself, and each connection it keeps has
        // its handler started (its first poll, with the worker's waker) before the next accept
        // of the batch: no channel, no wakeup, and no connection waits for the accepts and
        // handlers of the rest of its batch. The loop sits in a set of its own, which polls it
        // only when its listeners, orders or timers woke it, not on every handler's wakeup.
        let mut accept_loop = FuturesUnordered::new();
        if let Some(accepting) = accept {
            let (set, ctx, waker) = (conns.clone(), ctx.clone(), waker.clone());
            let worker = ctx.index;
            let start = move |acc| {
                let mut set = set.borrow_mut();
                set.push(serve_one(acc, ctx.clone()));
                if let Some(w) = waker.borrow().as_ref() {
                    let mut cx = Context::from_waker(w);
                    while let Poll::Ready(Some(())) = set.poll_next_unpin(&mut cx) {}
                }
            };
            accept_loop.push(match accepting {
                Accepting::Own(a) => Either::Left(async move {
                    let dispatch = Local { worker, start };
                    let exit = task::run(a.core, a.ctrl, a.notify, dispatch).await;
                    let _ = a.done.send(exit);
                }),
                Accepting::Help(h, batch, dispatch) => {
                    Either::Right(helper::run(h, batch, dispatch, start))
                }
            });
        }
        let turns = &ctx.shared.workers[ctx.index].turns;
        let mut turn = 0u64;
        std::future::poll_fn(|cx| {
            // Progress, for an acceptor thread that leaves its listeners to this worker.
            turn += 1;
            turns.store(turn, Relaxed);
            {
                let mut w = waker.borrow_mut();
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
            }
            // Ready(None) once it has ended (or there is none): nothing more to do there.
            let _ = accept_loop.poll_next_unpin(cx);
            let mut conns = conns.borrow_mut();
            // New connections from acceptor threads, a bounded number per turn so running
            // handlers keep up.
            let mut taken = 0;
            loop {
                if taken == RECV_BATCH {
                    cx.waker().wake_by_ref();
                    break;
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(WorkerMsg::Conn(acc))) => {
                        conns.push(serve_one(acc, ctx.clone()));
                        taken += 1;
                    }
                    Poll::Ready(Some(WorkerMsg::Stop)) | Poll::Ready(None) => {
                        return Poll::Ready(());
                    }
                    Poll::Pending => break,
                }
            }
            // Every handler that was woken; the set yields by itself after a round.
            while let Poll::Ready(Some(())) = conns.poll_next_unpin(cx) {}
            Poll::Pending
        })
        .await;
        // Cancels every handler still running: their guards count them as aborted.
        drop(std::mem::take(&mut *conns.borrow_mut()));
    });
    // Cancels the tasks the handlers spawned.
    drop(local);
    rx.close();
    let stats = &ctx.shared.workers[ctx.index].stats;
    while let Ok(msg) = rx.try_recv() {
        if let WorkerMsg::Conn(acc) = msg {
            stats.aborted.fetch_add(1, Relaxed);
            drop(acc);
        }
    }
    drop(rt);
    tracing::debug!(target: "synack::worker", worker = ctx.index, "worker stopped");
}
