//! The servers compared, child side: each runs in its own process (the harness re-executes
//! itself with `--server KIND [--cpu N]`), prints `READY addr`, then answers `report` on stdin
//! with its CPU time, dispatch latency and resident set until any other line ends it.
//!
//! Each serves the same greeting: on accept, write [`PAYLOAD`] and close (the `-hold` variants
//! keep the connection until the client closes it, for the memory phase). "floor-fin" is the
//! floor sending its FIN in the segment of its data, as synack's `fin_with_data` does.

use std::io::Write;
use std::net::SocketAddr;

/// What every server writes to each connection before closing it.
pub const PAYLOAD: &[u8] = b"8 bytes\n";

/// The servers compared, in table order; actix-server only when built with `--features actix`.
pub const KINDS: &[&str] = &[
    "floor",
    "floor-fin",
    "synack",
    "synack-nofin",
    "synack-acceptor",
    "synack-normal",
    "synack-batch",
    "synack-inworker",
    "tokio",
    #[cfg(feature = "actix")]
    "actix",
];

/// Every server's listen backlog: the same for all, so that none drops SYNs another would
/// have queued (mio's and std's own default is 128, tokio's 1024).
pub const BACKLOG: i32 = 4096;

/// Whether `kind` names a child server: one of [`KINDS`], optionally with `-hold`.
pub fn is_kind(kind: &str) -> bool {
    KINDS.contains(&kind.strip_suffix("-hold").unwrap_or(kind))
}

/// The child process: starts server `kind` (pinned to `cpu` when given) and serves the
/// parent's `report` requests on stdin until any other line or end of input.
pub fn child(kind: &str, cpu: Option<usize>) {
    if let Some(c) = cpu {
        let _ = synack_sys::pin_to_cpu(c);
    }
    if let Ok((_, hard)) = synack_sys::nofile_limit() {
        let _ = synack_sys::set_nofile_limit(hard, hard);
    }
    let mut out = std::io::stdout();
    // "-hold" variants keep each connection open until the client closes it (for memory).
    let (kind, hold) = match kind.strip_suffix("-hold") {
        Some(k) => (k, true),
        None => (kind, false),
    };
    // "synack-acceptor": every accept on the acceptor thread (idle_worker_accepts(false), the
    // default before round 3). "synack-normal": that, with the acceptor under the normal
    // policy too (acceptor_sched_batch(false), the default before round 2). "synack-batch":
    // the default with the workers under SCHED_BATCH too. "synack-inworker": the same server
    // accepting on its worker (no acceptor thread). "synack-nofin": the default with every
    // write sent at once (fin_with_data(false)), the FIN in a segment of its own as the floor's.
    let (kind, batch, acceptor_batch, in_worker, help, fin) = match kind {
        "synack-nofin" => ("synack", false, true, false, true, false),
        "synack-acceptor" => ("synack", false, true, false, false, true),
        "synack-normal" => ("synack", false, false, false, false, true),
        "synack-batch" => ("synack", true, true, false, true, true),
        "synack-inworker" => ("synack", false, true, true, false, true),
        k => (k, false, true, false, true, true),
    };
    let stats: Box<dyn Fn() -> String> = match kind {
        "floor" | "floor-fin" => {
            let addr = floor_server(kind == "floor-fin");
            writeln!(out, "READY {addr}").unwrap();
            Box::new(|| "-".into())
        }
        "synack" => {
            let server = synack::Server::builder()
                .bind("127.0.0.1:0")
                .unwrap()
                .backlog(BACKLOG as u32)
                .workers(1)
                .acceptors(1)
                .max_connections(100_000)
                .sched_batch(batch)
                .acceptor_sched_batch(acceptor_batch)
                .accept_in_workers(in_worker)
                .idle_worker_accepts(help)
                .fin_with_data(fin)
                .serve(move |mut c: synack::Connection| async move {
                    tokio::io::AsyncWriteExt::write_all(&mut c, PAYLOAD).await?;
                    if hold {
                        let mut b = [0u8; 64];
                        while tokio::io::AsyncReadExt::read(&mut c, &mut b).await? != 0 {}
                    }
                    Ok::<_, std::io::Error>(())
                })
                .unwrap();
            writeln!(out, "READY {}", server.local_addr()).unwrap();
            Box::new(move || {
                let s = server.stats();
                // The share of the accepts its idle worker made itself, in permille, where
                // the worker accepts for the acceptor thread.
                let own = match help && s.accepted > 0 {
                    true => (s.worker_accepted * 1000 / s.accepted).to_string(),
                    false => "-".into(),
                };
                format!(
                    "{}/{}/{own}",
                    s.dispatch_latency_us.value_at_quantile(0.5),
                    s.dispatch_latency_us.value_at_quantile(0.99)
                )
            })
        }
        "tokio" => {
            let addr = tokio_server(hold);
            writeln!(out, "READY {addr}").unwrap();
            Box::new(|| "-".into())
        }
        #[cfg(feature = "actix")]
        "actix" => {
            let addr = actix_server();
            writeln!(out, "READY {addr}").unwrap();
            Box::new(|| "-".into())
        }
        other => panic!("unknown server {other}"),
    };
    out.flush().unwrap();
    let base_rss = synack_sys::resident_bytes().unwrap_or(0);
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        if line == "report" {
            let cpu = synack_sys::process_cpu_time().unwrap();
            writeln!(
                out,
                "REPORT {} {} {} {}",
                cpu.as_nanos(),
                stats(),
                synack_sys::resident_bytes().unwrap_or(0),
                base_rss
            )
            .unwrap();
            out.flush().unwrap();
        } else {
            break;
        }
    }
}

/// The floor: one thread, mio (epoll) readiness, accept4, write, close. With `fin`: the write
/// with `MSG_MORE`, then shutdown and close, so that the data and the FIN share a segment.
pub fn floor_server(fin: bool) -> SocketAddr {
    use mio::net::TcpListener;
    use mio::{Events, Interest, Poll, Token};
    let std_listener = listener(BACKLOG);
    std_listener.set_nonblocking(true).unwrap();
    let mut listener = TcpListener::from_std(std_listener);
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut listener, Token(0), Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(64);
        loop {
            let _ = poll.poll(&mut events, None);
            loop {
                match listener.accept() {
                    Ok((s, _)) if fin => {
                        let _ = synack_sys::send_more(&s, PAYLOAD);
                        let _ = s.shutdown(std::net::Shutdown::Write);
                    }
                    Ok((mut s, _)) => {
                        let _ = std::io::Write::write(&mut s, PAYLOAD);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
    });
    addr
}

/// A listening socket on 127.0.0.1 with `backlog`, for the baselines.
fn listener(backlog: i32) -> std::net::TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(backlog).unwrap();
    s.into()
}

/// A plain tokio accept loop on a current-thread runtime, a task per connection.
pub fn tokio_server(hold: bool) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let std_listener = listener(BACKLOG);
            std_listener.set_nonblocking(true).unwrap();
            let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                if let Ok((mut s, _)) = l.accept().await {
                    tokio::spawn(async move {
                        let _ = tokio::io::AsyncWriteExt::write_all(&mut s, PAYLOAD).await;
                        if hold {
                            let mut b = [0u8; 64];
                            while let Ok(n) = tokio::io::AsyncReadExt::read(&mut s, &mut b).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        }
                    });
                }
            }
        });
    });
    rx.recv().unwrap()
}

/// actix-server 2 with one worker: a service per connection writing the payload.
#[cfg(feature = "actix")]
pub fn actix_server() -> SocketAddr {
    let listener = listener(BACKLOG);
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            actix_server::Server::build()
                .listen("greeting", listener, || {
                    actix_service::fn_service(|mut s: actix_rt::net::TcpStream| async move {
                        tokio::io::AsyncWriteExt::write_all(&mut s, PAYLOAD).await
                    })
                })
                .unwrap()
                .workers(1)
                .run()
                .await
                .unwrap();
        });
    });
    addr
}
