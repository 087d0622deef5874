//! The acceptor: pause and resume, the per-wakeup accept bound.

mod common;

use common::{connect, fetch, hi, read_n, wait_for};
use synack::Server;

#[test]
fn paused_server_leaves_clients_in_the_queue_until_resumed() {
    pause_and_resume(false);
}

#[test]
fn paused_server_leaves_clients_in_the_queue_until_resumed_accepting_in_workers() {
    pause_and_resume(true);
}

fn pause_and_resume(in_workers: bool) {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .accept_in_workers(in_workers)
        .workers(1)
        .serve(hi)
        .unwrap();
    assert_eq!(fetch(server.local_addr()), "hi");
    server.pause();
    assert!(server.is_paused());
    let mut c = connect(server.local_addr());
    wait_for("the connection in the accept queue", || {
        server.stats().listeners[0].queue_len == Some(1)
    });
    assert_eq!(server.stats().accepted, 1);
    assert!(server.stats().paused);
    server.resume();
    assert_eq!(read_n(&mut c, 2), b"hi");
    assert_eq!(server.stats().accepted, 2);
}

#[test]
fn accepts_at_most_a_batch_per_wakeup() {
    batch_bound(false);
}

#[test]
fn accepts_at_most_a_batch_per_wakeup_accepting_in_workers() {
    batch_bound(true);
}

fn batch_bound(in_workers: bool) {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .bind("127.0.0.1:0")
        .unwrap()
        .accept_in_workers(in_workers)
        .accept_batch(4)
        .workers(1)
        .serve(hi)
        .unwrap();
    server.pause();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 2);
    let mut clients: Vec<_> = (0..40).map(|i| connect(addrs[i % 2])).collect();
    wait_for("40 connections queued", || {
        server
            .stats()
            .listeners
            .iter()
            .map(|l| l.queue_len.unwrap())
            .sum::<u32>()
            == 40
    });
    server.resume();
    for c in &mut clients {
        assert_eq!(read_n(c, 2), b"hi");
    }
    // A batch is recorded when it ends, which the last greetings can overtake.
    // 40 connections, at most 4 per wakeup: at least 10 rounds.
    wait_for("ten batches recorded", || {
        server.stats().accept_batch.len() >= 10
    });
    let s = server.stats();
    assert_eq!(s.accepted, 40);
    assert!(
        s.accept_batch.max() <= 4,
        "batch max {}",
        s.accept_batch.max()
    );
}

/// Each connection's acceptor and worker, as its handler sees them.
async fn whose(mut conn: synack::Connection) -> std::io::Result<()> {
    let i = conn.info().clone();
    let line = format!("{} {}", i.acceptor, i.worker);
    tokio::io::AsyncWriteExt::write_all(&mut conn, line.as_bytes()).await?;
    // Held until the client closes, so the next connection is not served by a free worker
    // that merely happened to win.
    let mut buf = [0u8; 16];
    while tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await? != 0 {}
    Ok(())
}

#[test]
fn accepting_in_workers_makes_every_worker_an_acceptor_of_its_own_connections() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::Duration;
    // Both workers watch the one socket, and which wins a connection is the kernel's choice.
    // To see both accept, the first connection's handler holds its worker's thread until
    // another connection reaches a handler: only the other worker can have accepted that one.
    let first = Arc::new(AtomicBool::new(true));
    let (tx, rx) = mpsc::channel::<()>();
    let (tx, rx) = (Mutex::new(tx), Arc::new(Mutex::new(rx)));
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(2)
        .accept_in_workers(true)
        .serve(move |conn: synack::Connection| {
            if first.swap(false, Ordering::SeqCst) {
                // Bounded: if nothing comes the test fails below (one worker seen).
                let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            } else {
                let _ = tx.lock().unwrap().send(());
            }
            whose(conn)
        })
        .unwrap();
    let addr = server.local_addr();
    let mut seen = std::collections::BTreeSet::new();
    let mut clients = Vec::new();
    // The first two connect before either is read: the second is accepted while the first
    // one's worker is held.
    let mut pending: Vec<_> = (0..2).map(|_| connect(addr)).collect();
    for _ in 0..40 {
        let mut c = if pending.is_empty() {
            connect(addr)
        } else {
            pending.remove(0)
        };
        let mut buf = [0u8; 3];
        std::io::Read::read_exact(&mut c, &mut buf).unwrap();
        let s = String::from_utf8(buf.to_vec()).unwrap();
        let (a, w) = s.split_once(' ').unwrap();
        assert_eq!(a, w, "a connection crossed from acceptor {a} to worker {w}");
        seen.insert(w.to_string());
        clients.push(c);
    }
    assert_eq!(
        seen,
        ["0", "1"].map(String::from).into(),
        "workers that accepted"
    );
    let s = server.stats();
    assert_eq!(s.accepted, 40);
    assert_eq!(s.open, 40);
    drop(clients);
    wait_for("every connection closed", || server.stats().open == 0);
}

#[test]
fn accepting_in_workers_with_reuse_port_gives_each_worker_a_socket() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(2)
        .reuse_port(true)
        .accept_in_workers(true)
        .serve(whose)
        .unwrap();
    let ls = server.listeners();
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[0].local_addr, ls[1].local_addr);
    assert_eq!(ls[0].acceptor, Some(0));
    assert_eq!(ls[1].acceptor, Some(1));
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = connect(server.local_addr());
        assert!(matches!(&read_n(&mut c, 3)[..], b"0 0" | b"1 1"));
        clients.push(c);
    }
    assert_eq!(server.stats().accepted, 20);
}

#[test]
fn accepting_in_workers_takes_one_acceptor_setting() {
    let e = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .acceptors(2)
        .accept_in_workers(true)
        .serve(hi)
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("acceptors") && msg.contains('2'), "{msg}");
}

/// Accepting in a worker, each connection's handler starts before the next `accept()` of the
/// batch: the first handler of a batch of 4 finds the other 3 still in the kernel queue, the
/// last finds none. (Dispatch latency then holds no other connection's accept or handler.)
#[test]
fn accepting_in_workers_each_handler_starts_before_the_next_accept() {
    use std::os::fd::OwnedFd;
    use std::sync::{Arc, Mutex, OnceLock};
    let listener: Arc<OnceLock<OwnedFd>> = Arc::new(OnceLock::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (fd, queued) = (listener.clone(), seen.clone());
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .accept_in_workers(true)
        .accept_batch(4)
        .workers(1)
        .serve(move |conn: synack::Connection| {
            let q = synack_sys::listen_queue(fd.get().unwrap())
                .unwrap()
                .unwrap();
            queued.lock().unwrap().push(q.len);
            hi(conn)
        })
        .unwrap();
    listener
        .set(server.listener_fd(0).unwrap().try_clone_to_owned().unwrap())
        .unwrap();
    server.pause();
    let mut clients: Vec<_> = (0..4).map(|_| connect(server.local_addr())).collect();
    wait_for("four connections queued", || {
        server.stats().listeners[0].queue_len == Some(4)
    });
    server.resume();
    for c in &mut clients {
        assert_eq!(read_n(c, 2), b"hi");
    }
    assert_eq!(*seen.lock().unwrap(), vec![3, 2, 1, 0]);
}

#[test]
fn pause_called_from_a_handler_returns_accepting_in_workers() {
    pause_from_a_handler(true);
}

#[test]
fn pause_called_from_a_handler_returns_with_an_acceptor_thread() {
    pause_from_a_handler(false);
}

/// The first handler pauses its own server through a handle shared into it; it must return
/// (accepting in the workers, waiting for its own worker's answer would deadlock it), and the
/// pause must hold: the next client waits in the queue until `resume`.
fn pause_from_a_handler(in_workers: bool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock, Weak};
    let handle: Arc<OnceLock<Weak<Server>>> = Arc::default();
    let first = Arc::new(AtomicBool::new(true));
    let (h, f) = (handle.clone(), first.clone());
    let server = Arc::new(
        Server::builder()
            .bind("127.0.0.1:0")
            .unwrap()
            .workers(2)
            .accept_in_workers(in_workers)
            .serve(move |mut conn: synack::Connection| {
                // Only the first handler takes the handle, and lets it go at once: the last
                // handle dropped on a worker would stop the server from its own thread.
                let server = f
                    .swap(false, Ordering::SeqCst)
                    .then(|| h.get().and_then(Weak::upgrade))
                    .flatten();
                async move {
                    if let Some(s) = server {
                        s.pause();
                        drop(s);
                        return tokio::io::AsyncWriteExt::write_all(&mut conn, b"paused").await;
                    }
                    hi(conn).await
                }
            })
            .unwrap(),
    );
    handle.set(Arc::downgrade(&server)).unwrap();
    let addr = server.local_addr();
    let mut c = connect(addr);
    assert_eq!(read_n(&mut c, 6), b"paused");
    assert!(server.is_paused());
    let mut waiting = connect(addr);
    wait_for("the next connection in the accept queue", || {
        server.stats().listeners[0].queue_len == Some(1)
    });
    assert_eq!(server.stats().accepted, 1);
    server.resume();
    assert_eq!(read_n(&mut waiting, 2), b"hi");
    assert_eq!(server.stats().accepted, 2);
}

/// Connects `n` times, one after another with a pause between them (so the worker is parked
/// each time), and reads each greeting.
fn fetch_spaced(addr: std::net::SocketAddr, n: usize) {
    for _ in 0..n {
        assert_eq!(fetch(addr), "hi");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn an_idle_worker_accepts_for_its_acceptor_thread() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(hi)
        .unwrap();
    fetch_spaced(server.local_addr(), 20);
    let s = server.stats();
    assert_eq!(s.accepted, 20);
    // The kernel wakes the parked worker, not the acceptor thread: the worker accepts itself.
    // (Loosely bounded: a connection arriving while the worker is still busy with the one
    // before goes to the acceptor thread, as it should.)
    assert!(
        s.worker_accepted >= 10,
        "the idle worker accepted {} of 20",
        s.worker_accepted
    );
    assert!(s.dispatch_latency_us.len() == 20);
}

#[test]
fn with_idle_worker_accepts_off_the_acceptor_thread_accepts_everything() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .idle_worker_accepts(false)
        .serve(hi)
        .unwrap();
    fetch_spaced(server.local_addr(), 5);
    let s = server.stats();
    assert_eq!((s.accepted, s.worker_accepted), (5, 0));
}

/// A handler's future, boxed so that the handler can be named.
type Answer = std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>>>>;

/// The handler [`blocking_once`] makes.
type BlockingOnce = Box<dyn Fn(synack::Connection) -> Answer + Send + Sync>;

/// A handler for the takeover tests: on the worker named `blocks_on` (any worker if `None`),
/// the first connection writes its worker's index, then blocks its worker's thread until
/// released (as a handler that blocks would); every other connection writes its worker's
/// index and closes.
fn blocking_once(blocks_on: Option<usize>) -> (std::sync::mpsc::Sender<()>, BlockingOnce) {
    use tokio::io::AsyncWriteExt;
    let (release, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let handler = Box::new(move |mut conn: synack::Connection| {
        let worker = conn.info().worker;
        let block = if blocks_on.is_none_or(|w| w == worker) {
            rx.lock().unwrap().take()
        } else {
            None
        };
        Box::pin(async move {
            conn.write_all(&[b'0' + worker as u8]).await?;
            if let Some(rx) = block {
                // Bounded: the test releases it long before.
                let _ = rx.recv_timeout(std::time::Duration::from_secs(30));
            }
            conn.shutdown().await
        }) as Answer
    });
    (release, handler)
}

#[test]
fn with_its_only_worker_busy_the_acceptor_thread_still_empties_the_queue() {
    // The worker is stuck in a handler, not waiting in its reactor, so the kernel wakes the
    // acceptor thread for the next connections: they are accepted (taken off the kernel's
    // queue, their slots counted) and wait for the worker in its channel, as Tomcat's
    // acceptor leaves them for its pool.
    let (release, handler) = blocking_once(None);
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(handler)
        .unwrap();
    let addr = server.local_addr();
    let mut first = connect(addr);
    assert_eq!(read_n(&mut first, 1), b"0");
    let mut others: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    wait_for(
        "the acceptor thread to accept while the worker is blocked",
        || server.stats().accepted == 4,
    );
    let s = server.stats();
    assert!(s.worker_accepted <= 1, "{s:?}");
    assert_eq!(s.listeners[0].queue_len, Some(0));
    release.send(()).unwrap();
    for c in &mut others {
        assert_eq!(read_n(c, 1), b"0");
    }
}

#[test]
fn with_the_helping_worker_busy_the_acceptor_thread_hands_connections_to_another() {
    // Worker 0 accepts for the acceptor thread while idle. Blocked in a handler, it is not
    // waiting, so the kernel wakes the acceptor thread, which sends each new connection to the
    // least-loaded worker: worker 1 serves them while worker 0 is stuck.
    let (release, handler) = blocking_once(Some(0));
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(2)
        .serve(handler)
        .unwrap();
    let addr = server.local_addr();
    // Until a connection lands on worker 0 (whose first one then blocks it).
    let mut blocked = None;
    for _ in 0..50 {
        let mut c = connect(addr);
        if read_n(&mut c, 1) == b"0" {
            blocked = Some(c);
            break;
        }
        let _ = std::io::Read::read_to_end(&mut c, &mut Vec::new());
    }
    let _blocked = blocked.expect("no connection of 50 went to worker 0");
    for i in 0..5 {
        let mut c = connect(addr);
        assert_eq!(
            read_n(&mut c, 1),
            b"1",
            "connection {i} with worker 0 blocked"
        );
        let _ = std::io::Read::read_to_end(&mut c, &mut Vec::new());
    }
    release.send(()).unwrap();
}
