//! Workers: each a thread running a tokio current-thread runtime (as actix-server does), fed
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

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::acceptor::{self, AcceptCore, AcceptorExit, Control, Dispatch};
use crate::connection::{ConnInfo, Connection};
use crate::error::Error;
use crate::limit::Slot;
use crate::listener::{self, ListenOptions};
use crate::probe::ProbeHeader;
use crate::server::Shared;
use crate::stats::WorkerStats;

/// What a handler's future may return: `()`, or any `Result` whose error is counted in
/// [`Stats::handler_errors`](crate::Stats::handler_errors) and logged at debug level.
pub trait HandlerOutput {
    /// The error, if the handler failed.
    fn error(&self) -> Option<&dyn fmt::Display>;
}

impl HandlerOutput for () {
    fn error(&self) -> Option<&dyn fmt::Display> {
        None
    }
}

impl<T, E: fmt::Display> HandlerOutput for Result<T, E> {
    fn error(&self) -> Option<&dyn fmt::Display> {
        self.as_ref().err().map(|e| e as &dyn fmt::Display)
    }
}

/// A worker's state seen by the acceptors and the server.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    /// Connections dispatched to this worker and not yet dropped.
    pub open: AtomicU64,
    /// False once the worker's thread has died: nothing is dispatched to it any more.
    pub alive: AtomicBool,
    pub stats: WorkerStats,
}

impl WorkerShared {
    pub fn new() -> Self {
        WorkerShared {
            open: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            stats: WorkerStats::new(),
        }
    }
}

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
}

/// Messages from the acceptors and the server to a worker.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    /// Run the handler on this connection.
    Conn(Accepted),
    /// Cancel every handler still running and exit.
    Stop,
}

/// The server's end of a worker.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    pub tx: UnboundedSender<WorkerMsg>,
    pub thread: Option<JoinHandle<()>>,
}

struct Ctx<H> {
    index: usize,
    shared: Arc<Shared>,
    handler: Arc<H>,
    opts: Arc<ListenOptions>,
    #[cfg(feature = "metrics")]
    dispatch_hist: Option<metrics::Histogram>,
}

/// Counts a handler as aborted unless it ran to the end. It is made before the task is
/// spawned, so a task cancelled before its first poll counts too.
struct AbortGuard<H> {
    ctx: Rc<Ctx<H>>,
    done: bool,
}

impl<H> AbortGuard<H> {
    fn stats(&self) -> &WorkerStats {
        &self.ctx.shared.workers[self.ctx.index].stats
    }
}

impl<H> Drop for AbortGuard<H> {
    fn drop(&mut self) {
        if !self.done {
            self.stats().aborted.fetch_add(1, Relaxed);
        }
    }
}

/// An acceptor a worker runs as a task of its own.
pub(crate) struct AcceptTask {
    pub core: AcceptCore,
    pub ctrl: std::sync::mpsc::Receiver<Control>,
    pub notify: Arc<tokio::sync::Notify>,
    /// Where the task reports how it ended.
    pub done: std::sync::mpsc::Sender<AcceptorExit>,
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

thread_local! {
    /// On a worker's thread: the server it belongs to (for [`on_worker_of`]).
    static WORKER_OF: std::cell::Cell<*const Shared> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// Whether the calling thread is one of the workers of the server `shared` belongs to.
pub(crate) fn on_worker_of(shared: &Shared) -> bool {
    WORKER_OF.with(|w| std::ptr::eq(w.get(), shared))
}

/// The most new connections a worker takes from its channel before running its handlers.
const RECV_BATCH: usize = 64;

/// Puts the calling thread under `SCHED_BATCH`, or says why not.
pub(crate) fn enter_sched_batch() {
    if let Err(e) = crate::sys::set_sched_batch() {
        tracing::warn!(target: "synack::worker", error = %e, "cannot run this thread under SCHED_BATCH");
    }
}

/// Starts worker `index`.
pub(crate) fn spawn<H, Fut>(
    index: usize,
    shared: Arc<Shared>,
    handler: Arc<H>,
    opts: Arc<ListenOptions>,
    sched_batch: bool,
    accept: Option<AcceptTask>,
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
    let (tx, rx) = unbounded_channel();
    let ctx = Ctx {
        index,
        #[cfg(feature = "metrics")]
        dispatch_hist: shared
            .metrics
            .then(|| metrics::histogram!(crate::metrics::DISPATCH_LATENCY)),
        shared,
        handler,
        opts,
    };
    let thread = std::thread::Builder::new()
        .name(format!("synack-worker-{index}"))
        .spawn(move || {
            if sched_batch {
                enter_sched_batch();
            }
            let shared = ctx.shared.clone();
            WORKER_OF.with(|w| w.set(Arc::as_ptr(&shared)));
            // The listeners this worker accepts from, for its death notice.
            let listeners = accept.as_ref().map(|a| a.core.listeners());
            let mut rx = rx;
            let ended =
                std::panic::catch_unwind(AssertUnwindSafe(|| run(rt, &mut rx, ctx, accept)));
            if let Err(panic) = ended {
                died(index, &shared, &mut rx, listeners, &*panic);
                forget_panic(panic);
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
    listeners: Option<Vec<acceptor::Watched>>,
    panic: &(dyn std::any::Any + Send),
) {
    let msg = panic_message(panic);
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

/// A panic's message, or a placeholder when its payload is not a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Drops a caught panic's payload, whose own `Drop` may panic too: that second payload is
/// leaked rather than let loose.
pub(crate) fn forget_panic(panic: Box<dyn std::any::Any + Send>) {
    if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(panic))) {
        std::mem::forget(again);
    }
}

fn run<H, Fut>(
    rt: tokio::runtime::Runtime,
    rx: &mut UnboundedReceiver<WorkerMsg>,
    ctx: Ctx<H>,
    accept: Option<AcceptTask>,
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
        // Accepting in this worker: the accept loop is polled by the worker's loop itself, and
        // each connection it accepts has its handler started (its first poll, with the
        // worker's waker) before the next accept of the batch: no channel, no wakeup, and no
        // connection waits for the accepts and handlers of the rest of its batch. The loop sits
        // in a set of its own, which polls it only when its listeners, orders or timers woke
        // it, not on every handler's wakeup.
        let mut accept_loop = FuturesUnordered::new();
        if let Some(a) = accept {
            let (set, ctx, waker) = (conns.clone(), ctx.clone(), waker.clone());
            let dispatch = Local {
                worker: ctx.index,
                start: move |acc| {
                    let mut set = set.borrow_mut();
                    set.push(serve_one(acc, ctx.clone()));
                    if let Some(w) = waker.borrow().as_ref() {
                        let mut cx = Context::from_waker(w);
                        while let Poll::Ready(Some(())) = set.poll_next_unpin(&mut cx) {}
                    }
                },
            };
            accept_loop.push(async move {
                let exit = acceptor::task::run(a.core, a.ctrl, a.notify, dispatch).await;
                let _ = a.done.send(exit);
            });
        }
        std::future::poll_fn(|cx| {
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

/// Sets a connection up for its handler. The setup is synchronous, so that nothing of it (the
/// accepted-socket record, the addresses) lives on in the task's state: the task holds the
/// connection, then the handler's future in its place, the span and a few pointers. The
/// handler is started at the task's first poll, which is also when dispatch latency is taken:
/// `accept()` to the handler's start, whatever queue (the acceptor's channel, the worker's
/// run queue) lies between.
fn serve_one<H, Fut>(acc: Accepted, ctx: Rc<Ctx<H>>) -> impl Future<Output = ()> + 'static
where
    H: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    // First, so that a connection lost to a panic from here on (its worker dying) is counted.
    let guard = AbortGuard { ctx, done: false };
    let ctx = &guard.ctx;
    listener::configure_accepted(&acc.stream, &ctx.opts);
    let local_addr = match acc.local {
        Some(a) => a,
        None => acc.stream.local_addr().unwrap_or(acc.peer),
    };
    let info = ConnInfo {
        id: acc.id,
        peer_addr: acc.peer,
        local_addr,
        listener: acc.listener,
        acceptor: acc.acceptor,
        worker: ctx.index,
        accepted_at: acc.accepted_at,
        // Set when the handler starts.
        dispatched_at: acc.accepted_at,
    };
    // One span per connection around its handler; nothing is built when debug is off.
    let span = tracing::debug_span!(target: "synack::conn", "conn", id = info.id,
        peer = %info.peer_addr, listener = info.listener, worker = info.worker);
    Supervised {
        stage: Stage::Waiting {
            conn: Some(Connection::new(acc.stream, info, acc.slot)),
        },
        span,
        guard,
    }
}

pin_project_lite::pin_project! {
    /// Where a connection's task is.
    #[project = StageProj]
    enum Stage<Fut> {
        /// Set up, its handler not started yet.
        Waiting { conn: Option<Connection> },
        /// The handler's future.
        Running { #[pin] fut: Fut },
        /// Ended (only seen if polled again).
        Ended,
    }
}

pin_project_lite::pin_project! {
    /// A connection's handler run to its end, its panics caught and how it ended counted. A
    /// plain struct rather than an `async fn`, so the handler's future is stored once in the
    /// task, in the place the connection waited in.
    struct Supervised<H, Fut> {
        #[pin]
        stage: Stage<Fut>,
        span: tracing::Span,
        guard: AbortGuard<H>,
    }

    impl<H, Fut> PinnedDrop for Supervised<H, Fut> {
        /// A handler cancelled before its end (at the end of a shutdown's grace, or with its
        /// worker): its future is dropped here, a panic of its `Drop` caught and counted. The
        /// guard, dropped after, counts it as aborted.
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if matches!(this.stage.as_ref().get_ref(), Stage::Ended) {
                return;
            }
            if let Err(panic) =
                std::panic::catch_unwind(AssertUnwindSafe(|| this.stage.set(Stage::Ended)))
            {
                this.guard.stats().panics.fetch_add(1, Relaxed);
                let span = &*this.span;
                let logged = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    tracing::warn!(target: "synack::conn", parent: span, panic = %panic_message(&*panic),
                        "handler's future panicked when cancelled; connection closed, worker continues");
                }));
                forget_panic(panic);
                if let Err(p) = logged {
                    forget_panic(p);
                }
            }
        }
    }
}

/// Starts the handler on `conn`: records the dispatch, writes the probe header, calls the
/// handler inside the span, its panic (or one of a tracing layer) caught.
fn start<H, Fut>(
    mut conn: Connection,
    ctx: &Ctx<H>,
    span: &tracing::Span,
) -> std::thread::Result<Fut>
where
    H: Fn(Connection) -> Fut,
{
    std::panic::catch_unwind(AssertUnwindSafe(move || {
        let stats = &ctx.shared.workers[ctx.index].stats;
        let dispatched_at = Instant::now();
        let accepted_at = conn.info().accepted_at;
        conn.set_dispatched_at(dispatched_at);
        let waited = dispatched_at.saturating_duration_since(accepted_at);
        stats.record_dispatch(waited);
        #[cfg(feature = "metrics")]
        if let Some(h) = &ctx.dispatch_hist {
            h.record(waited.as_secs_f64());
        }
        tracing::debug!(target: "synack::conn", parent: span, "connection dispatched");
        if let Some(clock) = ctx.shared.probe {
            let header = ProbeHeader {
                accept_ns: clock.ns(accepted_at),
                dispatch_ns: clock.ns(dispatched_at),
            };
            // 24 bytes into a fresh socket's empty send buffer: written at once.
            if let Err(e) = conn.write_now(&header.encode()) {
                tracing::debug!(target: "synack::conn", parent: span, error = %e, "cannot write the probe header");
            }
        }
        span.in_scope(|| (ctx.handler)(conn))
    }))
}

impl<H, Fut> Future for Supervised<H, Fut>
where
    H: Fn(Connection) -> Fut,
    Fut: Future,
    Fut::Output: HandlerOutput,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let outcome = loop {
            match this.stage.as_mut().project() {
                StageProj::Waiting { conn } => {
                    let Some(conn) = conn.take() else {
                        break Err(Box::new("connection lost before its handler started") as _);
                    };
                    match start(conn, &this.guard.ctx, this.span) {
                        Ok(fut) => this.stage.set(Stage::Running { fut }),
                        Err(panic) => break Err(panic),
                    }
                }
                StageProj::Running { fut } => {
                    let span = &*this.span;
                    match std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let _entered = span.enter();
                        fut.poll(cx)
                    })) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(out)) => break Ok(out),
                        Err(panic) => break Err(panic),
                    }
                }
                StageProj::Ended => return Poll::Ready(()),
            }
        };
        // The handler's future goes first, with the connection if the handler still held it,
        // so that a handler counted as done has closed its connection and freed its slot. Its
        // `Drop` is the handler's code: a panic there is caught too.
        let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| this.stage.set(Stage::Ended)));
        let panicked = outcome.is_err() || dropped.is_err();
        this.guard.done = true;
        let span = &*this.span;
        let stats = this.guard.stats();
        // What is left runs the handler's code as well (its error's `Display`, its output's
        // `Drop`) and the tracing layers: caught, so that nothing of it can end the worker.
        let reported = std::panic::catch_unwind(AssertUnwindSafe(|| {
            match outcome {
                Ok(out) => {
                    if let Some(e) = out.error() {
                        stats.handler_errors.fetch_add(1, Relaxed);
                        tracing::debug!(target: "synack::conn", parent: span, error = %e, "handler returned an error");
                    }
                }
                Err(panic) => {
                    tracing::warn!(target: "synack::conn", parent: span, panic = %panic_message(&*panic),
                        "handler panicked; connection closed, worker continues");
                }
            }
            if let Err(panic) = dropped {
                tracing::warn!(target: "synack::conn", parent: span, panic = %panic_message(&*panic),
                    "handler's future panicked when dropped; connection closed, worker continues");
            }
            tracing::debug!(target: "synack::conn", parent: span, "connection done");
        }));
        if panicked || reported.is_err() {
            stats.panics.fetch_add(1, Relaxed);
        }
        stats.completed.fetch_add(1, Relaxed);
        if let Err(panic) = reported {
            forget_panic(panic);
        }
        Poll::Ready(())
    }
}
