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
