//! Starting a server from validated [`Settings`]: open the listeners, build the shared state,
//! spawn the workers, spawn the acceptors, start the observers. Each step is one function;
//! nothing here checks a value (the builder did) or derives one (the settings hold them all).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

use mio::Poll;
use socket2::Socket;
use tokio::sync::Notify;

use crate::acceptor::{
    self, AcceptConfig, AcceptCore, AcceptTask, AcceptorDone, AcceptorHandle, Control,
};
use crate::connection::Connection;
use crate::error::Error;
use crate::limit::Limit;
use crate::listener::{self, ListenOptions, Listener};
use crate::observe::{ObserveSettings, Observers};
use crate::probe::MonoClock;
use crate::sampler::QueueGauge;
use crate::server::Server;
use crate::shared::{AcceptorShared, Shared, Wake, WorkerShared};
use crate::worker::{self, HandlerOutput, WorkerSetup};

/// Where a listener comes from.
#[derive(Debug)]
pub(crate) enum Bind {
    /// A socket synack creates and binds.
    Addr(SocketAddr),
    /// A socket bound elsewhere.
    Adopt(Socket),
}

/// Every setting of a server, checked and resolved by
/// [`ServerBuilder`](crate::ServerBuilder): start-up derives nothing.
#[derive(Debug)]
pub(crate) struct Settings {
    pub opts: ListenOptions,
    pub max_connections: usize,
    pub workers: usize,
    /// Acceptor threads, or, accepting in the workers, one per worker.
    pub acceptors: usize,
    pub accept_in_workers: bool,
    /// The accept loop's settings, its batch resolved for the mode.
    pub accept: AcceptConfig,
    pub probe: bool,
    pub sched_batch: bool,
    pub observe: ObserveSettings,
}

/// How the acceptors are woken: each thread by its own poll, each task by a notify.
enum Drivers {
    Threads(Vec<Poll>),
    Tasks(Vec<Arc<Notify>>),
}

/// An acceptor ready to run, and the server's end of its orders.
type AcceptorParts = (AcceptCore, Sender<Control>, Receiver<Control>);

/// Starts a server on `binds` (at least one): every accepted connection is passed to
/// `handler` on a worker.
pub(crate) fn start<H, Fut>(binds: Vec<Bind>, s: Settings, handler: H) -> Result<Server, Error>
where
    H: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let listeners = open_listeners(binds, &s)?;
    let (shared, drivers) = build_shared(&s)?;
    let gauges: Arc<[QueueGauge]> = listeners.iter().map(|_| QueueGauge::default()).collect();
    let mut server = Server {
        shared: shared.clone(),
        listeners: listeners.iter().map(|l| l.info.clone()).collect(),
        sockets: listeners.iter().map(|l| l.sock.clone()).collect(),
        acceptors: Vec::new(),
        workers: Vec::new(),
        paused: AtomicBool::new(false),
        gauges: gauges.clone(),
        observers: Observers::default(),
    };
    server.observers = Observers::start(&s.observe, &shared, &listeners, &gauges)?;
    let parts = acceptor_parts(&s, &listeners, &shared);
    match drivers {
        Drivers::Tasks(notifies) => {
            let tasks = parts.into_iter().zip(notifies).map(Some);
            spawn_workers(&s, &shared, handler, tasks, &mut server)?;
        }
        Drivers::Threads(polls) => {
            let none = std::iter::repeat_with(|| None);
            spawn_workers(&s, &shared, handler, none, &mut server)?;
            spawn_acceptor_threads(&s, &shared, polls, parts, &mut server)?;
        }
    }
    tracing::info!(target: "synack::server", listeners = server.listeners.len(),
        acceptors = s.acceptors, accept_in_workers = s.accept_in_workers, workers = s.workers, max_connections = s.max_connections,
        "server started");
    Ok(server)
}

/// Opens every listener; with `reuse_port`, one socket per address for each acceptor.
fn open_listeners(binds: Vec<Bind>, s: &Settings) -> Result<Vec<Listener>, Error> {
    let split = s.opts.reuse_port && s.acceptors > 1;
    let mut out = Vec::new();
    for bind in binds {
        match bind {
            Bind::Addr(addr) if split => {
                let mut addr = addr;
                for k in 0..s.acceptors {
                    let l = listener::open(addr, &s.opts, out.len(), Some(k))?;
                    addr = l.info.local_addr;
                    out.push(l);
                }
            }
            Bind::Addr(addr) => out.push(listener::open(addr, &s.opts, out.len(), None)?),
            Bind::Adopt(sock) => out.push(listener::adopt(sock, &s.opts, out.len())?),
        }
    }
    Ok(out)
}

/// The state every thread shares, with each acceptor's way of being woken.
fn build_shared(s: &Settings) -> Result<(Arc<Shared>, Drivers), Error> {
    let mut acceptors = Vec::with_capacity(s.acceptors);
    let drivers = if s.accept_in_workers {
        let notifies: Vec<_> = (0..s.acceptors).map(|_| Arc::new(Notify::new())).collect();
        acceptors.extend(
            notifies
                .iter()
                .map(|n| AcceptorShared::new(Wake::Task(n.clone()))),
        );
        Drivers::Tasks(notifies)
    } else {
        let mut polls = Vec::with_capacity(s.acceptors);
        for k in 0..s.acceptors {
            let (poll, waker) = acceptor::thread::new_poll(k)?;
            polls.push(poll);
            acceptors.push(AcceptorShared::new(Wake::Poll(waker)));
        }
        Drivers::Threads(polls)
    };
    let shared = Arc::new(Shared {
        limit: Limit::new(s.max_connections),
        workers: (0..s.workers).map(|_| WorkerShared::new()).collect(),
        acceptors: acceptors.into_boxed_slice(),
        shutting_down: AtomicBool::new(false),
        idle: (Mutex::new(()), Condvar::new()),
        probe: s.probe.then(MonoClock::new),
        closing: tokio::sync::watch::Sender::new(false),
    });
    Ok((shared, drivers))
}

/// Each acceptor's core over its listeners, and the channel of its orders.
fn acceptor_parts(
    s: &Settings,
    listeners: &[Listener],
    shared: &Arc<Shared>,
) -> Vec<AcceptorParts> {
    (0..s.acceptors)
        .map(|k| {
            let mine = listeners
                .iter()
                .filter(|l| l.info.acceptor.is_none_or(|a| a == k))
                .map(|l| {
                    let own = l.info.acceptor.is_some();
                    (l.info.index, l.sock.clone(), l.info.local_addr, own)
                })
                .collect();
            let core = AcceptCore::new(k, mine, shared.clone(), s.accept.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            (core, tx, rx)
        })
        .collect()
}

/// Starts the workers, worker `i` with the `i`th of `tasks` as its own acceptor (if any).
fn spawn_workers<H, Fut>(
    s: &Settings,
    shared: &Arc<Shared>,
    handler: H,
    mut tasks: impl Iterator<Item = Option<(AcceptorParts, Arc<Notify>)>>,
    server: &mut Server,
) -> Result<(), Error>
where
    H: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let handler = Arc::new(handler);
    let setup = WorkerSetup {
        opts: Arc::new(s.opts.clone()),
        sched_batch: s.sched_batch,
        observe: s.observe,
    };
    for i in 0..s.workers {
        let accept = tasks
            .next()
            .flatten()
            .map(|((core, ctrl_tx, ctrl), notify)| {
                let (done, done_rx) = std::sync::mpsc::channel();
                server.acceptors.push(AcceptorHandle {
                    ctrl: ctrl_tx,
                    done: Some(AcceptorDone::Task(Mutex::new(done_rx))),
                });
                AcceptTask {
                    notify,
                    core,
                    ctrl,
                    done,
                }
            });
        let w = worker::spawn(i, shared.clone(), handler.clone(), &setup, accept)?;
        server.workers.push(w);
    }
    Ok(())
}

/// Starts the dedicated acceptor threads, each on its poll, dispatching to the workers.
fn spawn_acceptor_threads(
    s: &Settings,
    shared: &Arc<Shared>,
    polls: Vec<Poll>,
    parts: Vec<AcceptorParts>,
    server: &mut Server,
) -> Result<(), Error> {
    let senders: Vec<_> = server.workers.iter().map(|w| w.tx.clone()).collect();
    for (poll, (core, ctrl_tx, ctrl)) in polls.into_iter().zip(parts) {
        let thread = acceptor::thread::spawn(
            core,
            poll,
            senders.clone(),
            ctrl,
            shared.clone(),
            s.sched_batch,
        )?;
        server.acceptors.push(AcceptorHandle {
            ctrl: ctrl_tx,
            done: Some(AcceptorDone::Thread(thread)),
        });
    }
    Ok(())
}
