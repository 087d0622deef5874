//! The FIN with the handler's last write (`ServerBuilder::fin_with_data`), on real sockets:
//! the segments the client's kernel counted (TCP_INFO), the bytes it got, and the server's
//! counts of FINs that rode and of pushes.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use common::{connect, read_n, wait_for};
use synack::{Connection, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The segments the client received on a connection it has read to its end: the SYN-ACK, then
/// the data and the FIN, in one segment or two.
fn segments_in(client: &std::net::TcpStream) -> u32 {
    let info = synack_sys::tcp_info(client)
        .unwrap()
        .expect("TCP_INFO on Linux");
    info.segs_in.expect("tcpi_segs_in (Linux 4.2)")
}

/// A server with one worker and the default settings, running `handler`.
fn one_worker<F>(handler: impl Fn(Connection) -> F + Send + Sync + 'static) -> Server
where
    F: Future<Output = std::io::Result<()>> + 'static,
{
    Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(handler)
        .unwrap()
}

fn greeting_server(fin_with_data: bool, in_workers: bool) -> Server {
    Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .accept_in_workers(in_workers)
        .fin_with_data(fin_with_data)
        .serve(|mut c: Connection| async move { c.write_all(b"hello\n").await })
        .unwrap()
}

fn greetings_share_a_segment_with_their_fin(in_workers: bool) {
    const N: u64 = 20;
    for on in [true, false] {
        let server = greeting_server(on, in_workers);
        for _ in 0..N {
            let mut c = connect(server.local_addr());
            let mut got = String::new();
            c.read_to_string(&mut got).unwrap();
            assert_eq!(got, "hello\n");
            // SYN-ACK + data with FIN, or SYN-ACK + data + FIN.
            assert_eq!(
                segments_in(&c),
                if on { 2 } else { 3 },
                "fin_with_data {on}"
            );
        }
        wait_for("every handler done", || server.stats().completed == N);
        let s = server.stats();
        assert_eq!(s.fin_with_data, if on { N } else { 0 });
        assert_eq!(s.held_pushed, 0);
    }
}

#[test]
fn greetings_share_a_segment_with_their_fin_on_the_acceptor_thread_default() {
    greetings_share_a_segment_with_their_fin(false);
}

#[test]
fn greetings_share_a_segment_with_their_fin_accepting_in_workers() {
    greetings_share_a_segment_with_their_fin(true);
}

/// A handler that writes and then waits for something else: its bytes must leave when its poll
/// ends, not when the connection closes (the client would wait for them forever).
#[test]
fn held_writes_leave_when_the_handler_waits_for_something_else() {
    let go = Arc::new(tokio::sync::Notify::new());
    let go2 = go.clone();
    let server = one_worker(move |mut c: Connection| {
        let go = go2.clone();
        async move {
            c.write_all(b"hello\n").await?;
            go.notified().await;
            c.write_all(b"bye\n").await
        }
    });
    let mut c = connect(server.local_addr());
    // Within the client's 10 s read timeout, or the push never came.
    assert_eq!(read_n(&mut c, 6), b"hello\n");
    go.notify_one();
    let mut rest = String::new();
    c.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "bye\n");
    wait_for("the handler done", || server.stats().completed == 1);
    let s = server.stats();
    // "hello" was held and pushed; after that push the worker does not hold "bye" (it holds
    // again only where FINs ride at least once per three pushes, or for a probe).
    assert_eq!((s.held_pushed, s.fin_with_data), (1, 0));
}

/// A handler that answers without reading what the client sent: a close with unread input
/// sends an RST, which would drop an answer still queued. The shutdown before it sends the
/// answer (and the FIN) first.
#[test]
fn an_answer_held_for_the_fin_survives_unread_input() {
    let go = Arc::new(tokio::sync::Notify::new());
    let go2 = go.clone();
    let server = one_worker(move |mut c: Connection| {
        let go = go2.clone();
        async move {
            go.notified().await;
            // Until the request is in the receive queue (bounded), without reading it.
            let sock = c.sock_ref().expect("an open socket");
            let mut seen = false;
            for _ in 0..100_000 {
                match sock.peek(&mut [MaybeUninit::uninit(); 1]) {
                    Ok(n) if n > 0 => {
                        seen = true;
                        break;
                    }
                    _ => tokio::task::yield_now().await,
                }
            }
            assert!(seen, "the request never arrived");
            c.write_all(b"answer\n").await
        }
    });
    let mut c = connect(server.local_addr());
    c.write_all(b"a request the handler never reads\n").unwrap();
    go.notify_one();
    assert_eq!(read_n(&mut c, 7), b"answer\n");
    // Then the end: the FIN, or the RST the close sent for the unread request.
    let mut rest = Vec::new();
    match c.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    wait_for("the handler done", || server.stats().completed == 1);
    let s = server.stats();
    assert_eq!(s.handler_panics, 0);
    assert_eq!(s.fin_with_data, 1);
}

/// Each worker learns whether holding pays: where connections live on past the poll that wrote
/// (every held write costs a push), it stops holding but for one connection in 32; where they
/// close again, those probes bring it back.
#[test]
fn a_worker_stops_holding_where_connections_live_on_and_starts_again_where_they_close() {
    let live = Arc::new(AtomicBool::new(true));
    let live2 = live.clone();
    let server = one_worker(move |mut c: Connection| {
        let live = live2.load(Relaxed);
        async move {
            c.write_all(b"hello\n").await?;
            if live {
                // Until the client closes.
                let mut b = [0u8; 16];
                while c.read(&mut b).await? != 0 {}
            }
            Ok::<_, std::io::Error>(())
        }
    });
    let one = |n: u64| {
        for _ in 0..n {
            let mut c = connect(server.local_addr());
            assert_eq!(read_n(&mut c, 6), b"hello\n");
        }
    };
    one(100);
    wait_for("100 handlers done", || server.stats().completed == 100);
    let s = server.stats();
    // The first push, then one probe in 32: 1 + 99 / 32.
    assert_eq!((s.held_pushed, s.fin_with_data), (4, 0));

    live.store(false, Relaxed);
    one(200);
    wait_for("300 handlers done", || server.stats().completed == 300);
    let s = server.stats();
    // Two probes whose FINs rode (score -4 + 3 + 3) and the worker holds again: all but
    // about 64 of the 200 rode.
    assert_eq!(s.held_pushed, 4);
    assert!(s.fin_with_data >= 130, "{} rode", s.fin_with_data);
}

/// A connection moved to another thread during the poll that wrote it keeps its bytes in
/// order: the other thread's write sends what was held first.
#[test]
fn a_connection_moved_to_another_thread_mid_poll_keeps_its_bytes_in_order() {
    let server = one_worker(|mut c: Connection| async move {
        c.write_all(b"first\n").await?;
        // Still within the poll that wrote "first".
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move { c.write_all(b"second\n").await })
        })
        .join()
        .expect("the other thread")
    });
    let mut c = connect(server.local_addr());
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got, "first\nsecond\n");
    wait_for("the handler done", || server.stats().completed == 1);
    let s = server.stats();
    assert_eq!((s.handler_panics, s.handler_errors), (0, 0));
}

/// A flush within the poll does not send the held bytes on their own (a flush hands user-space
/// buffers to the kernel, and there are none): a handler that writes, flushes and closes still
/// sends its FIN with the data.
#[test]
fn a_flush_before_the_close_leaves_the_fin_with_the_data() {
    const N: u64 = 10;
    let server = one_worker(|mut c: Connection| async move {
        c.write_all(b"hello\n").await?;
        c.flush().await
    });
    for _ in 0..N {
        let mut c = connect(server.local_addr());
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n");
        assert_eq!(segments_in(&c), 2);
    }
    wait_for("every handler done", || server.stats().completed == N);
    let s = server.stats();
    assert_eq!((s.fin_with_data, s.held_pushed), (N, 0));
}

/// A request/response handler: reads one request, answers it with its bytes, closes.
async fn echo_once(mut c: Connection) -> std::io::Result<()> {
    let mut req = [0u8; 64];
    let n = c.read(&mut req).await?;
    c.write_all(&req[..n]).await
}

/// `n` clients each send a ping and read the answer to its end; every answer carried the FIN.
fn pings_answered_with_the_fin(server: &Server, n: u64) {
    for _ in 0..n {
        let mut c = connect(server.local_addr());
        c.write_all(b"ping\n").unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ping\n");
    }
    wait_for("every handler done", || server.stats().completed == n);
    let s = server.stats();
    assert_eq!((s.fin_with_data, s.held_pushed), (n, 0));
}

/// A request/response handler: without `defer_accept` its first read usually finds nothing yet
/// and registers the socket, whose writes then go through the reactor (not held). With
/// `defer_accept` the request is there when the handler starts: it reads it, answers, closes,
/// and the FIN rides with the answer.
#[test]
fn with_defer_accept_an_answer_after_a_request_carries_the_fin() {
    const N: u64 = 10;
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .defer_accept(std::time::Duration::from_secs(5))
        .serve(echo_once)
        .unwrap();
    pings_answered_with_the_fin(&server, N);
}

/// A request/response handler without `defer_accept`: its first read may find the request or
/// not (then the socket is registered and the read waits for it); either way its answer is held
/// and the FIN rides with it.
#[test]
fn an_answer_after_a_request_carries_the_fin_registered_or_not() {
    const N: u64 = 20;
    let server = one_worker(echo_once);
    pings_answered_with_the_fin(&server, N);
}

/// A registered connection moved to another thread during the poll that wrote it: it stays
/// shared with the worker's cork until that poll ends, and is read and written through it,
/// its bytes in order.
#[test]
fn a_registered_connection_moved_mid_poll_keeps_its_bytes_in_order() {
    let server = one_worker(|mut c: Connection| async move {
        c.tokio_stream()?; // registered from the start
        c.write_all(b"first\n").await?;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                c.write_all(b"second\n").await?;
                c.shutdown().await
            })
        })
        .join()
        .expect("the other thread")
    });
    let mut c = connect(server.local_addr());
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got, "first\nsecond\n");
    wait_for("the handler done", || server.stats().completed == 1);
    let s = server.stats();
    assert_eq!((s.handler_panics, s.handler_errors), (0, 0));
}
