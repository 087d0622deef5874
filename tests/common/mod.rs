//! Helpers shared by the integration tests: real sockets on loopback, bounded waits.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Polls `cond` until it holds; fails the test (naming `what`) if it does not within 30 s.
/// This bounds the test, it does not measure anything.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Says that the calling test is skipped, and why, so that a passing run shows it: the line
/// goes straight to the stderr handle, which libtest does not capture (it captures only what
/// the `print!`/`eprint!` macros write).
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Whether the tests run in CI (`CI=true`), which runs them as root: a test that needs root or
/// network namespaces must not skip there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// For a test that cannot run here for want of root or network namespaces: fails under CI
/// (`CI=true`), which must provide them, and skips visibly ([`skipped`]) elsewhere.
pub fn skip_unless_ci(test: &str, why: &str) {
    if in_ci() {
        panic!(
            "{test} needs root and network namespaces, and CI (CI=true) must provide them: {why}"
        );
    }
    skipped(test, why);
}

/// Connects with a 10 s read timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read from server");
    buf
}

/// Connects and reads until the server closes.
pub fn fetch(addr: SocketAddr) -> String {
    let mut s = connect(addr);
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read greeting");
    out
}

/// A handler that writes `hi` and then holds the connection until the client closes it.
pub async fn hi_and_hold(mut conn: synack::Connection) -> std::io::Result<()> {
    conn.write_all(b"hi").await?;
    let mut buf = [0u8; 64];
    while conn.read(&mut buf).await? != 0 {}
    Ok(())
}

/// A handler that writes `hi` and closes.
pub async fn hi(mut conn: synack::Connection) -> std::io::Result<()> {
    conn.write_all(b"hi").await?;
    conn.shutdown().await
}

/// Sends one byte (used to release a held connection politely).
pub fn poke(s: &mut TcpStream) {
    let _ = s.write_all(b"x");
}

/// A writer that keeps what the library logs, for a tracing subscriber in tests.
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
