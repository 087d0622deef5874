//! HTTP on synack: a hyper service and an axum router, driven by hyper's own client over real
//! loopback connections: responses, keep-alive reuse, graceful shutdown of in-flight requests.
#![cfg(all(feature = "hyper", feature = "axum"))]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use synack::Server;

/// Polls `cond` until it holds; fails the test (naming `what`) if it does not within 30 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn client(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (StatusCode, String) {
    sender.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", "synack.test")
        .body(Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// `/` answers at once; `/slow` flags that it started, then waits 300 ms.
fn hyper_server(started: Arc<AtomicBool>) -> Server {
    Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(move |conn| {
            let started = started.clone();
            synack::http::serve(
                conn,
                service_fn(move |req: Request<Incoming>| {
                    let started = started.clone();
                    async move {
                        if req.uri().path() == "/slow" {
                            started.store(true, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            return Ok::<_, Infallible>(Response::new("slow done".to_string()));
                        }
                        Ok(Response::new("hello".to_string()))
                    }
                }),
            )
        })
        .unwrap()
}

#[tokio::test]
async fn a_hyper_service_answers_and_keeps_connections_alive() {
    let server = hyper_server(Arc::default());
    let mut c = client(server.local_addr()).await;
    for _ in 0..3 {
        assert_eq!(get(&mut c, "/").await, (StatusCode::OK, "hello".into()));
    }
    // Three requests, one connection.
    assert_eq!(server.stats().accepted, 1);
    // The first response was held for a FIN and pushed as the connection lived on; after that
    // the connection is not held again (`fin_with_data`).
    assert_eq!(server.stats().held_pushed, 1);
    drop(c);
    let report = server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.aborted, 0, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
}

#[tokio::test]
async fn an_axum_router_is_served_through_synack() {
    let router = axum::Router::new()
        .route("/", axum::routing::get(|| async { "axum here" }))
        .route(
            "/echo/{word}",
            axum::routing::get(
                |axum::extract::Path(w): axum::extract::Path<String>| async move { w },
            ),
        );
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(move |conn| synack::http::serve_router(conn, router.clone()))
        .unwrap();
    let mut c = client(server.local_addr()).await;
    assert_eq!(get(&mut c, "/").await, (StatusCode::OK, "axum here".into()));
    assert_eq!(
        get(&mut c, "/echo/synack").await,
        (StatusCode::OK, "synack".into())
    );
    assert_eq!(get(&mut c, "/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.stats().accepted, 1);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let started = Arc::new(AtomicBool::new(false));
    let server = hyper_server(started.clone());
    let mut c = client(server.local_addr()).await;
    let request = tokio::spawn(async move { get(&mut c, "/slow").await });
    wait_until("the slow request to start", || {
        started.load(Ordering::SeqCst)
    })
    .await;
    let report = server.shutdown(Duration::from_secs(10)).await;
    assert_eq!(request.await.unwrap(), (StatusCode::OK, "slow done".into()));
    // The one connection this test made was open, and finished in the grace period.
    assert_eq!(report.open_at_start, 1, "{report:?}");
    assert_eq!(report.drained, 0, "{report:?}");
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(report.aborted, 0, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
}

#[test]
fn a_request_waiting_in_the_queue_at_shutdown_is_answered() {
    use std::io::{Read, Write};
    let server = hyper_server(Arc::default());
    server.pause();
    let mut c = common::connect(server.local_addr());
    common::wait_for("the connection in the accept queue", || {
        server.stats().listeners[0].queue_len == Some(1)
    });
    c.write_all(b"GET / HTTP/1.1\r\nhost: synack.test\r\nconnection: close\r\n\r\n")
        .unwrap();
    // Once the server's kernel has acknowledged it, the request waits in the queued
    // connection's receive buffer.
    common::wait_for("the request acknowledged", || {
        synack_sys::tcp_info(&c).unwrap().unwrap().unacked == 0
    });
    let report = server.shutdown_blocking(Duration::from_secs(10));
    let mut response = String::new();
    c.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\nhello"), "{response}");
    assert_eq!(report.drained, 1, "{report:?}");
    assert_eq!(report.open_at_start, 0, "{report:?}");
    assert_eq!(report.aborted, 0, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
}

/// `Connection: close` through hyper: hyper writes the response, flushes and shuts down within
/// one poll, so the FIN rides in the response's last segment (`fin_with_data`), though hyper
/// registered the socket with the reactor before it answered (it reads until the socket would
/// block). The requests wait in the queue first, so that all arrive alike.
#[test]
fn a_response_with_connection_close_carries_the_fin() {
    use std::io::{Read, Write};
    const N: usize = 20;
    let server = hyper_server(Arc::default());
    server.pause();
    let mut clients: Vec<_> = (0..N)
        .map(|_| common::connect(server.local_addr()))
        .collect();
    for c in &mut clients {
        c.write_all(b"GET / HTTP/1.1\r\nhost: synack.test\r\nconnection: close\r\n\r\n")
            .unwrap();
    }
    common::wait_for("every request acknowledged", || {
        clients
            .iter()
            .all(|c| synack_sys::tcp_info(c).unwrap().unwrap().unacked == 0)
    });
    server.resume();
    for c in &mut clients {
        let mut response = String::new();
        c.read_to_string(&mut response).unwrap();
        assert!(response.ends_with("\r\n\r\nhello"), "{response}");
    }
    common::wait_for("every handler done", || {
        server.stats().completed == N as u64
    });
    let s = server.stats();
    assert_eq!((s.fin_with_data, s.held_pushed), (N as u64, 0));
}
