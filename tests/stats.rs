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
