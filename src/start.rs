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
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::acceptor::{
    self, AcceptConfig, AcceptCore, AcceptTask, AcceptorDone, AcceptorHandle, Control,
};
use crate::connection::Connection;
use crate::dispatch::WorkerMsg;
use crate::error::Error;
use crate::inherit::{self, Inherited, InheritedListener, Source, SurplusMembers};
use crate::limit::Limit;
use crate::listener::{self, ListenOptions, Listener, ListenerOrigin};
use crate::notify;
use crate::observe::{ObserveSettings, Observers};
use crate::probe::MonoClock;
use crate::sampler::QueueGauge;
use crate::server::Server;
use crate::shared::{AcceptorShared, Shared, Wake, WorkerShared};
use crate::sys;
use crate::worker::{self, HandlerOutput, WorkerAccept, WorkerSetup};

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
    /// With acceptor threads: worker `k` accepts for acceptor `k` while idle, at most
    /// `help_batch` per listener at a time.
    pub idle_worker_accepts: bool,
    pub help_batch: usize,
    /// The accept loop's settings, its batch resolved for the mode.
    pub accept: AcceptConfig,
    pub probe: bool,
    /// `SCHED_BATCH` for the workers.
    pub sched_batch: bool,
    /// The FIN with the handler's last write.
    pub fin_with_data: bool,
    /// `SCHED_BATCH` for the acceptor threads.
    pub acceptor_sched_batch: bool,
    pub observe: ObserveSettings,
    /// Whether inherited listeners (a handoff, socket activation) are adopted.
    pub inherit: bool,
    pub surplus: SurplusMembers,
    /// With TLS: the handshakes in progress the whole server allows (per worker times the
    /// workers).
    pub handshake_cap: Option<usize>,
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsSettings>,
}

/// How the acceptors are woken: each thread by its own poll, each task by a notify.
enum Drivers {
    Threads(Vec<Poll>),
    Tasks(Vec<Arc<Notify>>),
}

/// An acceptor ready to run (its core, or the core shared with its helping worker), and the
/// server's end of its orders.
type AcceptorParts<C = AcceptCore> = (C, Sender<Control>, Receiver<Control>);

/// A worker's channel, both ends.
type Channel = (UnboundedSender<WorkerMsg>, UnboundedReceiver<WorkerMsg>);

/// Starts a server on `binds` (at least one): every accepted connection is passed to
/// `handler` on a worker.
pub(crate) fn start<H, Fut>(binds: Vec<Bind>, s: Settings, handler: H) -> Result<Server, Error>
where
    H: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let mut inherited = if s.inherit {
        inherit::from_env()
    } else {
        Inherited::default()
    };
    let started = open_listeners(binds, &s, &mut inherited);
    let handoff = inherited.handoff.take();
    let started = started.and_then(|(listeners, let_go)| {
        if listeners.is_empty() {
            return Err(Error::NoListener);
        }
        start_on(listeners, &s, handler).map(|server| (server, let_go))
    });
    match (started, handoff) {
        (Ok((mut server, let_go)), Some(h)) => {
            // Ready means accepting: the old process stops as soon as it hears it.
            server.wait_watching(std::time::Duration::from_secs(5));
            server.inheritance = Some(inherit::report_ready(h, &let_go));
            Ok(server)
        }
        (Err(e), Some(h)) => {
            inherit::report_failure(h, &e);
            Err(e)
        }
        (Ok((server, _)), None) => {
            notify::ready(&server.local_addrs());
            Ok(server)
        }
        (Err(e), None) => Err(e),
    }
}

/// Starts a server on its opened listeners.
fn start_on<H, Fut>(listeners: Vec<Listener>, s: &Settings, handler: H) -> Result<Server, Error>
where
    H: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let (shared, drivers) = build_shared(s)?;
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
        inheritance: None,
        trigger: Arc::default(),
    };
    server.observers = Observers::start(&s.observe, &shared, &listeners, &gauges)?;
    let parts = acceptor_parts(s, &listeners, &shared);
    let channels: Vec<Channel> = (0..s.workers).map(|_| unbounded_channel()).collect();
    let senders: Vec<_> = channels.iter().map(|(tx, _)| tx.clone()).collect();
    match drivers {
        Drivers::Tasks(notifies) => {
            let accepts = parts
                .into_iter()
                .zip(notifies)
                .map(|((core, ctrl_tx, ctrl), notify)| {
                    let (done, done_rx) = std::sync::mpsc::channel();
                    server.acceptors.push(AcceptorHandle {
                        ctrl: ctrl_tx,
                        done: Some(AcceptorDone::Task(Mutex::new(done_rx))),
                    });
                    Some(WorkerAccept::Own(Box::new(AcceptTask {
                        notify,
                        core,
                        ctrl,
                        done,
                    })))
                })
                .collect();
            spawn_workers(s, &shared, handler, accepts, channels, &mut server)?;
        }
        Drivers::Threads(polls) => {
            let parts: Vec<_> = parts
                .into_iter()
                .map(|(core, tx, rx)| (Arc::new(Mutex::new(core)), tx, rx))
                .collect();
            // Worker `k` helps acceptor `k`: registered (in spawn_workers) before the
            // acceptor threads start, as the kernel's order of exclusive watchers needs.
            let accepts = (0..s.workers)
                .map(|w| {
                    let (core, ..) = parts.get(w).filter(|_| s.idle_worker_accepts)?;
                    Some(WorkerAccept::Help {
                        core: core.clone(),
                        batch: s.help_batch,
                        senders: senders.clone(),
                    })
                })
                .collect();
            spawn_workers(s, &shared, handler, accepts, channels, &mut server)?;
            spawn_acceptor_threads(s, &shared, polls, parts, senders, &mut server)?;
        }
    }
    tracing::info!(target: "synack::server", listeners = server.listeners.len(),
        acceptors = s.acceptors, accept_in_workers = s.accept_in_workers, workers = s.workers, max_connections = s.max_connections,
        "server started");
    Ok(server)
}

/// Opens every listener; with `reuse_port`, one socket per address for each acceptor. An
/// address this process inherited a socket for (a handoff, socket activation) adopts it
/// instead of binding: every `SO_REUSEPORT` member of it, in member order, members missing for
/// the acceptors bound beside them, surplus members kept or closed as
/// [`SurplusMembers`] says. Inherited socket-activation sockets no address asked for are
/// served too; inherited handoff sockets no address asked for are let go (the old process
/// counts what their queues held when it lets go of them too).
fn open_listeners(
    binds: Vec<Bind>,
    s: &Settings,
    inherited: &mut Inherited,
) -> Result<(Vec<Listener>, Vec<usize>), Error> {
    let split = s.opts.reuse_port && s.acceptors > 1;
    let from_pid = inherited.handoff.as_ref().map_or(0, |h| h.from_pid);
    let mut out = Vec::new();
    let mut let_go = Vec::new();
    let adopt_one = |out: &mut Vec<Listener>, l: InheritedListener, acceptor: Option<usize>| {
        let origin = match l.source {
            Source::Handoff => ListenerOrigin::Handoff {
                from_pid,
                member: l.member,
            },
            Source::Systemd => ListenerOrigin::SocketActivation { name: l.name },
        };
        if let Some(b) = l.backlog.filter(|b| *b != s.opts.backlog) {
            tracing::info!(target: "synack::handoff", addr = %l.addr, old_backlog = b,
                backlog = s.opts.backlog, "inherited listener: its backlog changes with this process");
        }
        let index = out.len();
        out.push(listener::adopt(l.sock, &s.opts, index, acceptor, origin)?);
        Ok::<(), Error>(())
    };
    let no_binds = binds.is_empty();
    for bind in binds {
        match bind {
            Bind::Addr(addr) => {
                let asked = addr;
                let first = out.len();
                let mut members = inherited.take_for(addr);
                let wanted = if split { s.acceptors } else { 1 };
                if members.len() > wanted {
                    let surplus = members.split_off(wanted);
                    if surplus_closes(s.surplus, addr, surplus.len()) {
                        let_go.extend(surplus.iter().map(|l| l.position));
                        drop(surplus);
                    } else {
                        // Accepted from as well: each by an acceptor in turn (or by every
                        // acceptor, on a shared socket).
                        members.extend(surplus);
                    }
                }
                let mut addr = addr;
                let mut k = 0;
                for l in members {
                    addr = l.addr;
                    adopt_one(&mut out, l, split.then_some(k % s.acceptors))?;
                    k += 1;
                }
                while k < wanted {
                    let l = listener::open(addr, &s.opts, out.len(), split.then_some(k))?;
                    addr = l.info.local_addr;
                    out.push(l);
                    k += 1;
                }
                for l in &mut out[first..] {
                    l.info.requested_addr = asked;
                }
            }
            Bind::Adopt(sock) => {
                let index = out.len();
                out.push(listener::adopt(
                    sock,
                    &s.opts,
                    index,
                    None,
                    ListenerOrigin::Adopted,
                )?);
            }
        }
    }
    for l in std::mem::take(&mut inherited.listeners) {
        if l.source == Source::Systemd || no_binds {
            adopt_one(&mut out, l, None)?;
        } else {
            tracing::warn!(target: "synack::handoff", addr = %l.addr, member = ?l.member,
                "an inherited listener no bind() asks for: let go (what waits in its queue is reset once the old process lets go too)");
            let_go.push(l.position);
        }
    }
    Ok((out, let_go))
}

/// Whether `n` surplus inherited members of `addr` are closed (else they are accepted from).
fn surplus_closes(policy: SurplusMembers, addr: SocketAddr, n: usize) -> bool {
    const MIGRATE: &str = "net.ipv4.tcp_migrate_req";
    match policy {
        SurplusMembers::Accept => false,
        SurplusMembers::Close => {
            tracing::warn!(target: "synack::handoff", %addr, surplus = n,
                migrate_req = ?sys::sysctl(MIGRATE),
                "closing surplus SO_REUSEPORT members: without tcp_migrate_req what waits in their queues is reset");
            true
        }
        SurplusMembers::Migrate => {
            if sys::sysctl(MIGRATE) == Some(1) {
                tracing::info!(target: "synack::handoff", %addr, surplus = n,
                    "closing surplus SO_REUSEPORT members: {MIGRATE} is on, the kernel moves their queues to the members kept");
                return true;
            }
            match sys::set_sysctl(MIGRATE, "1") {
                Ok(()) => {
                    tracing::info!(target: "synack::handoff", %addr, surplus = n,
                        "set {MIGRATE}=1 in this network namespace; closing surplus SO_REUSEPORT members");
                    true
                }
                Err(e) => {
                    tracing::warn!(target: "synack::handoff", %addr, surplus = n, error = %e,
                        "{MIGRATE} is off and cannot be set here: surplus SO_REUSEPORT members are kept and accepted from, so nothing queued on them is lost");
                    false
                }
            }
        }
    }
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
        handshakes: s.handshake_cap.map(Limit::new),
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

/// Starts the workers, worker `i` on the `i`th of `channels`, taking part in accepting as the
/// `i`th of `accepts` says.
fn spawn_workers<H, Fut>(
    s: &Settings,
    shared: &Arc<Shared>,
    handler: H,
    accepts: Vec<Option<WorkerAccept>>,
    channels: Vec<Channel>,
    server: &mut Server,
) -> Result<(), Error>
where
    H: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let handler = Arc::new(handler);
    let setup = WorkerSetup {
        #[cfg(feature = "tls")]
        tls: s.tls.clone(),
        opts: Arc::new(s.opts.clone()),
        sched_batch: s.sched_batch,
        fin_with_data: s.fin_with_data,
        observe: s.observe,
    };
    let accepts = accepts.into_iter().chain(std::iter::repeat_with(|| None));
    for (i, (channel, accept)) in channels.into_iter().zip(accepts).enumerate() {
        let w = worker::spawn(i, shared.clone(), handler.clone(), &setup, accept, channel)?;
        server.workers.push(w);
    }
    Ok(())
}

/// Starts the dedicated acceptor threads, each on its poll, dispatching to the workers.
fn spawn_acceptor_threads(
    s: &Settings,
    shared: &Arc<Shared>,
    polls: Vec<Poll>,
    parts: Vec<AcceptorParts<Arc<Mutex<AcceptCore>>>>,
    senders: Vec<UnboundedSender<WorkerMsg>>,
    server: &mut Server,
) -> Result<(), Error> {
    for (poll, (core, ctrl_tx, ctrl)) in polls.into_iter().zip(parts) {
        let thread = acceptor::thread::spawn(
            core,
            poll,
            senders.clone(),
            ctrl,
            shared.clone(),
            s.acceptor_sched_batch,
            s.help_batch,
        )?;
        server.acceptors.push(AcceptorHandle {
            ctrl: ctrl_tx,
            done: Some(AcceptorDone::Thread(thread)),
        });
    }
    Ok(())
}
