//! Statistics: counts, histograms and the kernel's view agree with what happened.

mod common;

use common::{fetch, hi, wait_for};
use synack::{AcceptErrorKind, Server};

#[test]
fn stats_count_every_connection() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .backlog(64)
        .workers(2)
        .serve(hi)
        .unwrap();
    for _ in 0..50 {
        assert_eq!(fetch(server.local_addr()), "hi");
    }
    wait_for("50 handlers done", || server.stats().completed == 50);
    let s = server.stats();
    assert_eq!(s.accepted, 50);
    assert_eq!(s.open, 0);
    assert_eq!(s.open_per_worker.len(), 2);
    assert_eq!(s.rejected + s.shed + s.drained + s.aborted, 0);
    assert_eq!(s.handler_panics + s.handler_errors, 0);
    assert_eq!(s.dispatch_latency_us.len(), 50);
    assert!(!s.accept_batch.is_empty());
    assert_eq!(s.accept_errors.total(), 0);
    assert_eq!(s.accept_errors.iter().count(), AcceptErrorKind::ALL.len());
    assert_eq!(s.max_connections, synack::DEFAULT_MAX_CONNECTIONS);
    assert_eq!(s.listeners.len(), 1);
    assert_eq!(s.listeners[0].queue_len, Some(0));
    assert_eq!(s.listeners[0].effective_backlog, Some(64));
}

#[test]
fn accept_errors_are_classified_from_errno() {
    assert_eq!(
        AcceptErrorKind::from_errno(libc::EMFILE),
        AcceptErrorKind::ProcessFdLimit
    );
    assert_eq!(
        AcceptErrorKind::from_errno(libc::ECONNABORTED),
        AcceptErrorKind::ConnectionAborted
    );
    assert!(AcceptErrorKind::from_errno(libc::ENOBUFS).is_resource_exhaustion());
    assert!(!AcceptErrorKind::from_errno(libc::EPROTO).is_resource_exhaustion());
    assert_eq!(
        AcceptErrorKind::from_errno(libc::EBADF),
        AcceptErrorKind::Other
    );
}

#[test]
fn the_probe_header_carries_accept_and_dispatch_times() {
    use std::io::Read;
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .probe(true)
        .workers(1)
        .serve(hi)
        .unwrap();
    let before = synack_sys::monotonic_ns();
    let mut c = common::connect(server.local_addr());
    let mut header = [0u8; synack::probe::LEN];
    c.read_exact(&mut header).unwrap();
    let after = synack_sys::monotonic_ns();
    let h = synack::probe::ProbeHeader::decode(&header).expect("a synack probe header");
    assert!(before <= h.accept_ns, "{before} {h:?}");
    assert!(h.accept_ns <= h.dispatch_ns, "{h:?}");
    assert!(h.dispatch_ns <= after, "{h:?} {after}");
    // Then the handler's own bytes.
    assert_eq!(common::read_n(&mut c, 2), b"hi");
}

#[test]
fn queue_sampling_sees_the_queue_of_a_paused_server() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .backlog(8)
        .queue_sampling(std::time::Duration::from_millis(1))
        .workers(1)
        .serve(hi)
        .unwrap();
    server.pause();
    let _clients: Vec<_> = (0..3)
        .map(|_| common::connect(server.local_addr()))
        .collect();
    wait_for("the sampler to see 3 queued", || {
        server.stats().listeners[0].peak_queue_len == Some(3)
    });
    let samples = server.queue_samples(0);
    assert!(samples.iter().any(|s| s.len == 3 && s.max == 8));
    assert!(samples.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(server.stats().listeners[0].queue_samples >= 1);
    let bad = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .queue_sampling(std::time::Duration::from_micros(10))
        .serve(hi)
        .unwrap_err();
    assert!(bad.to_string().contains("queue_sampling"), "{bad}");
}
