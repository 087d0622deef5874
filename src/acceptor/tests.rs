//! The accept core on its own: a fake dispatch that keeps what it is given, real listeners on
//! 127.0.0.1, and the turns driven by hand. No duration is asserted; every wait is bounded.

use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::core::{AcceptCore, Next};
use super::entry::Entry;
use super::{AcceptConfig, Control, FdExhaustionPolicy};
use crate::dispatch::{Accepted, Dispatch};
use crate::limit::{Limit, OverloadPolicy};
use crate::listener::{self, ListenOptions, Listener};
use crate::shared::{AcceptorShared, Shared, Wake, WorkerShared};
use crate::stats::AcceptorStats;

/// Keeps every connection it is given (so their slots stay taken until dropped).
#[derive(Default)]
struct Keep {
    got: Vec<Accepted>,
}

impl Dispatch for Keep {
    fn pick(&mut self, _shared: &Shared) -> usize {
        0
    }

    fn deliver(&mut self, _shared: &Shared, _worker: usize, acc: Accepted) {
        self.got.push(acc);
    }
}

fn config() -> AcceptConfig {
    AcceptConfig {
        batch: 64,
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        overload: OverloadPolicy::Queue,
        fd_exhaustion: FdExhaustionPolicy::Backoff,
    }
}

fn shared(max_connections: usize) -> Arc<Shared> {
    let notify = Arc::new(tokio::sync::Notify::new());
    Arc::new(Shared {
        handshakes: None,
        limit: Limit::new(max_connections),
        workers: vec![WorkerShared::new()].into_boxed_slice(),
        acceptors: vec![AcceptorShared::new(Wake::Task(notify))].into_boxed_slice(),
        shutting_down: AtomicBool::new(false),
        idle: (Mutex::new(()), Condvar::new()),
        probe: None,
        closing: tokio::sync::watch::Sender::new(false),
    })
}

fn listen() -> Listener {
    listener::open(
        "127.0.0.1:0".parse().unwrap(),
        &ListenOptions::default(),
        0,
        None,
    )
    .unwrap()
}

struct Rig {
    core: AcceptCore,
    shared: Arc<Shared>,
    ctrl: Sender<Control>,
    rx: Receiver<Control>,
    listener: Listener,
    dispatch: Keep,
}

fn rig(max_connections: usize) -> Rig {
    let listener = listen();
    let shared = shared(max_connections);
    let l = (0, listener.sock.clone(), listener.info.local_addr, false);
    let core = AcceptCore::new(0, vec![l], shared.clone(), config());
    let (ctrl, rx) = channel();
    Rig {
        core,
        shared,
        ctrl,
        rx,
        listener,
        dispatch: Keep::default(),
    }
}

impl Rig {
    /// One turn as a driver runs it, every listener's (de)registration succeeding.
    fn turn(&mut self) -> Next {
        if let Some(exit) = self.core.begin_turn(&self.rx) {
            return Next::Exit(exit);
        }
        self.core.sync_watch(|_, _, _| Ok(()));
        self.core.finish_turn(&mut self.dispatch)
    }

    /// Connects `n` clients and waits (bounded) until the kernel queues them all.
    fn connect(&self, n: usize) -> Vec<TcpStream> {
        let clients: Vec<_> = (0..n)
            .map(|_| TcpStream::connect(self.listener.info.local_addr).unwrap())
            .collect();
        self.wait_queued(n as u32);
        clients
    }

    fn wait_queued(&self, n: u32) {
        for _ in 0..500 {
            match crate::sys::listen_queue(&*self.listener.sock) {
                Ok(Some(q)) if q.len >= n => return,
                Ok(None) | Err(_) => return, // unknown here: the turns below wait instead
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        panic!("{n} connections never reached the accept queue");
    }

    /// Turns until `got` connections were dispatched (bounded).
    fn turn_until(&mut self, got: usize) {
        for _ in 0..500 {
            if let Next::Exit(_) = self.turn() {
                break;
            }
            if self.dispatch.got.len() >= got {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(self.dispatch.got.len(), got, "connections dispatched");
    }

    fn stats(&self) -> &AcceptorStats {
        &self.shared.acceptors[0].stats
    }
}

#[test]
fn parks_at_the_limit_and_unparks_when_a_slot_is_freed() {
    let mut r = rig(1);
    let _clients = r.connect(2);
    r.turn_until(1);
    // The second connection found no slot: the acceptor parks, it waits in the kernel.
    assert!(matches!(r.turn(), Next::Wait(None)));
    assert!(r.core.at_limit);
    assert!(!r.core.active());
    assert!(r.shared.acceptors[0].parked.load(SeqCst));
    assert_eq!(r.stats().limit_reached.load(Relaxed), 1);
    assert_eq!(r.dispatch.got.len(), 1);
    assert_eq!(r.shared.workers[0].open.load(Relaxed), 1);

    // The connection ends: its slot's release unparks the acceptor and lowers the open count.
    drop(r.dispatch.got.pop());
    assert!(!r.shared.acceptors[0].parked.load(SeqCst));
    assert_eq!(r.shared.workers[0].open.load(Relaxed), 0);
    r.turn_until(1);
    assert_eq!(r.stats().accepted.load(Relaxed), 2);
    // The one slot is taken again: the burst stopped at the limit once more.
    assert!(r.core.at_limit);
    assert_eq!(r.stats().limit_reached.load(Relaxed), 2);
}

#[test]
fn backoff_doubles_up_to_the_maximum_and_resets_after_an_accept() {
    let l = listen();
    let mut e = Entry {
        index: 0,
        fd: std::os::fd::AsRawFd::as_raw_fd(&*l.sock),
        sock: l.sock.clone(),
        addr: l.info.local_addr,
        specific: None,
        own: false,
        registered: true,
        ready: true,
        backoff_until: None,
        backoff: Duration::from_millis(5),
    };
    let cfg = config();
    let mut b = Backoff::new(&cfg);
    let stats = AcceptorStats::new();
    let emfile = || io::Error::from_raw_os_error(libc::EMFILE);

    // A per-connection error: counted, skipped, no back-off.
    let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
    assert!(b.accept_error(&mut e, &stats, aborted));
    assert!(e.backoff_until.is_none());
    assert!(e.acceptable());

    // Resource exhaustion: the listener rests for the back-off, which doubles each time.
    let mut seen = Vec::new();
    for _ in 0..4 {
        assert!(!b.accept_error(&mut e, &stats, emfile()), "the burst stops");
        assert!(e.backoff_until.is_some());
        assert!(!e.acceptable());
        seen.push(e.backoff);
        e.backoff_until = None;
    }
    let ms = Duration::from_millis;
    assert_eq!(
        seen,
        [ms(10), ms(20), ms(20), ms(20)],
        "next back-off after each error"
    );
    assert_eq!(stats.errors.iter().map(|c| c.load(Relaxed)).sum::<u64>(), 5);

    b.reset(&mut e);
    assert_eq!(e.backoff, cfg.backoff_min);
}

#[test]
fn a_draining_stop_takes_what_waits_then_exits() {
    let mut r = rig(16);
    let _clients = r.connect(3);
    r.ctrl
        .send(Control::Stop {
            drain: true,
            deadline: Instant::now() + Duration::from_secs(30),
        })
        .unwrap();
    let mut exited = false;
    for _ in 0..500 {
        if let Next::Exit(_) = r.turn() {
            exited = true;
            break;
        }
    }
    assert!(exited, "the acceptor exits once its listeners are empty");
    assert_eq!(r.dispatch.got.len(), 3);
    assert_eq!(r.stats().drained.load(Relaxed), 3);
}

#[test]
fn a_stop_without_drain_exits_at_once() {
    let mut r = rig(16);
    let _clients = r.connect(1);
    r.ctrl
        .send(Control::Stop {
            drain: false,
            deadline: Instant::now(),
        })
        .unwrap();
    assert!(matches!(r.turn(), Next::Exit(_)));
    assert!(r.dispatch.got.is_empty());
}

#[test]
fn pause_stops_accepting_and_resume_accepts_what_waited() {
    let mut r = rig(16);
    let (ack, acked) = channel();
    r.ctrl.send(Control::Pause(ack)).unwrap();
    assert!(matches!(r.turn(), Next::Wait(None)));
    acked
        .try_recv()
        .expect("the pause is acknowledged within the turn");
    assert!(!r.core.active());
    assert!(
        r.core.entries.iter().all(|e| !e.registered),
        "paused, the listeners are not watched"
    );

    let _clients = r.connect(2);
    for _ in 0..5 {
        r.turn();
    }
    assert!(r.dispatch.got.is_empty(), "nothing accepted while paused");

    r.ctrl.send(Control::Resume).unwrap();
    r.turn_until(2);
    assert!(r.core.active());
}

#[test]
fn a_pause_ordered_mid_burst_stops_the_burst_before_the_next_accept() {
    let mut r = rig(16);
    let _clients = r.connect(2);
    r.shared.acceptors[0].pause_ordered.store(true, SeqCst);
    for _ in 0..5 {
        r.turn();
    }
    assert!(r.dispatch.got.is_empty());
    r.shared.acceptors[0].pause_ordered.store(false, SeqCst);
    r.turn_until(2);
}
