//! synack-load against real servers on loopback: what each connection does once connected: send,
//! read, hold.
//! No timed assertions: counts and classes only.

mod common;
use common::{bin, flood, wait_for};

#[test]
fn hold_keeps_connections_open_for_the_server() {
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|mut c: synack::Connection| async move {
            let mut b = [0u8; 16];
            while tokio::io::AsyncReadExt::read(&mut c, &mut b).await? != 0 {}
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let addr = server.local_addr().to_string();
    let child = bin()
        .args([
            "flood",
            &addr,
            "--quiet",
            "--connections",
            "10",
            "--concurrency",
            "10",
            "--hold",
            "3s",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| server.stats().open == 10);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    wait_for(|| server.stats().open == 0);
}

#[test]
fn send_then_read_round_trips_through_an_echo_server() {
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|conn: synack::Connection| async move {
            let (mut rd, mut wr) = tokio::io::split(conn);
            tokio::io::copy(&mut rd, &mut wr).await
        })
        .unwrap();
    let (_, rep) = flood(
        &server.local_addr().to_string(),
        &[
            "--connections",
            "30",
            "--send",
            "100",
            "--read",
            "100",
            "--close",
            "fin",
        ],
        "echo",
    );
    assert_eq!(rep.outcomes["ok"], 30, "{rep:#?}");
    assert_eq!(rep.latency_us["first_byte"].count, 30);
}
