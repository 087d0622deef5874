//! A worker whose loop dies (here: a tracing layer that panics as a connection's span is
//! made, outside any handler's catch) is marked dead; no connection is sent to it any more, and
//! when it accepted for itself on a `reuse_port` socket of its own, that socket is shut down so
//! the kernel stops queueing connections nobody accepts. Its own test binary: it installs a
//! global subscriber.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use common::{connect, wait_for};
use synack::Server;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

/// When set, the next connection span made on worker 1 panics (once).
static ARMED: AtomicBool = AtomicBool::new(false);
/// The tests share the subscriber and ARMED: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct PanicOnWorker1;

impl<S: Subscriber> Layer<S> for PanicOnWorker1 {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "conn"
            && std::thread::current().name() == Some("synack-worker-1")
            && ARMED.swap(false, SeqCst)
        {
            panic!("a tracing layer panicked on worker 1");
        }
    }
}

fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Every event formatted (into a sink), so that a field's `Display` runs.
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::sink);
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry()
                .with(PanicOnWorker1)
                .with(fmt),
        )
        .unwrap();
    });
}

/// Connects and reads to the end; `None` when the connection ended in an error.
fn try_fetch(addr: SocketAddr) -> Option<String> {
    let mut s = connect(addr);
    let mut out = String::new();
    s.read_to_string(&mut out).ok().map(|_| out)
}

/// Serves connections until worker 1 has died on one (at most `tries`).
fn kill_worker_1(server: &Server, tries: usize) {
    ARMED.store(true, SeqCst);
    for _ in 0..tries {
        match try_fetch(server.local_addr()).as_deref() {
            Some("hi") => {}
            // Worker 1 died on this one: closed unserved.
            _ => break,
        }
    }
    assert!(
        !ARMED.load(SeqCst),
        "no connection reached worker 1 in {tries} tries"
    );
    wait_for("worker 1 marked dead", || {
        server.stats().workers_alive == [true, false]
    });
}

fn balance(s: &synack::Stats) -> i128 {
    s.accepted as i128 - (s.completed + s.aborted + s.lost + s.open) as i128
}

/// An error whose `Display` panics: the worker formats it for its debug event.
#[derive(Debug)]
struct BadDisplay;

impl std::fmt::Display for BadDisplay {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("a handler error's Display panicked");
    }
}

#[test]
fn a_handler_error_whose_display_panics_is_counted_and_the_worker_lives_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    install();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|mut conn: synack::Connection| async move {
            tokio::io::AsyncWriteExt::write_all(&mut conn, b"hi")
                .await
                .map_err(|_| BadDisplay)?;
            if conn.info().id == 0 {
                return Err(BadDisplay);
            }
            Ok(())
        })
        .unwrap();
    for _ in 0..3 {
        assert_eq!(try_fetch(server.local_addr()).as_deref(), Some("hi"));
    }
    wait_for("three handlers done", || server.stats().completed == 3);
    let s = server.stats();
    assert_eq!((s.handler_errors, s.handler_panics), (1, 1), "{s:?}");
    assert_eq!((s.accepted, s.open, s.aborted), (3, 0, 0), "{s:?}");
    assert_eq!(s.workers_alive, vec![true], "{s:?}");
}

/// Fetches `n` greetings, each served, and waits (bounded) until every handler is done and the
/// books balance; the stats then.
fn served_and_settled(server: &Server, n: usize) -> synack::Stats {
    for _ in 0..n {
        assert_eq!(try_fetch(server.local_addr()).as_deref(), Some("hi"));
    }
    wait_for("every handler done", || {
        let s = server.stats();
        s.open == 0 && balance(&s) == 0
    });
    server.stats()
}

/// Shuts the server down: nothing aborted, nothing unaccounted.
fn shuts_down_clean(server: Server) {
    let report = server.shutdown_blocking(std::time::Duration::from_secs(5));
    assert_eq!(report.aborted, 0, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
}

#[test]
fn a_dead_worker_gets_no_more_connections_from_the_acceptor() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    install();
    // Every accept on the acceptor thread: an idle worker 0 would keep these one-at-a-time
    // connections itself (no worker has fewer open), and worker 1 would get none.
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(2)
        .idle_worker_accepts(false)
        .serve(common::hi)
        .unwrap();
    kill_worker_1(&server, 50);
    // Least-loaded dispatch would favour the dead worker (its open count is 0): every
    // connection now goes to worker 0, and each is served.
    let s = served_and_settled(&server, 20);
    // The connection worker 1 died on was cancelled; nothing was lost.
    assert_eq!((s.aborted, s.lost), (1, 0), "{s:?}");
    assert_eq!(s.workers_alive, vec![true, false], "{s:?}");
    assert_eq!(s.acceptors_alive, vec![true], "{s:?}");
    shuts_down_clean(server);
}

#[test]
fn a_dead_in_worker_acceptor_gives_its_reuse_port_socket_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    install();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(2)
        .reuse_port(true)
        .accept_in_workers(true)
        .serve(common::hi)
        .unwrap();
    // The kernel spreads connections over the two sockets by hash.
    kill_worker_1(&server, 200);
    wait_for("acceptor 1 marked dead", || {
        server.stats().acceptors_alive == [true, false]
    });
    // Worker 1's socket is shut down, so the kernel sends every connection to worker 0's;
    // left listening, about half of these would wait in a queue nobody accepts from.
    let s = served_and_settled(&server, 40);
    assert_eq!((s.aborted, s.lost), (1, 0), "{s:?}");
    shuts_down_clean(server);
}
