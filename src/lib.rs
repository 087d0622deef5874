//! # synack: a Tomcat-style acceptor core for TCP servers
//!
//! synack owns the path a connection takes from the kernel to your handler:
//!
//! 1. **Kernel queues.** A listener built with socket2 with an explicit `listen(2)` backlog;
//!    the backlog the kernel really grants (capped by `net.core.somaxconn`) is read back (see
//!    [`ListenerInfo`]).
//! 2. **Acceptor.** Dedicated threads on `mio` take connections off the accept queue, never
//!    spinning on errors (see [`FdExhaustionPolicy`]), or each worker accepts for itself
//!    ([`ServerBuilder::accept_in_workers`]).
//! 3. **Connection limit.** Tomcat's `maxConnections`: at the limit the acceptor stops and new
//!    clients wait in the kernel backlog (see [`OverloadPolicy`]).
//! 4. **Dispatch and workers.** Each connection goes to the least-loaded worker, a thread with
//!    a tokio current-thread runtime, which runs your handler on a [`Connection`] (see
//!    [`HandlerOutput`]).
//! 5. **Handle.** [`Server`] pauses, resumes, reports [`Stats`], and shuts down gracefully.
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio::io::AsyncWriteExt;
//!
//! # fn main() -> Result<(), synack::Error> {
//! let server = synack::Server::builder()
//!     .bind("127.0.0.1:8080")?
//!     .backlog(1024)
//!     .max_connections(10_000)
//!     .workers(4)
//!     .serve(|mut conn: synack::Connection| async move {
//!         conn.write_all(b"hello\n").await
//!     })?;
//! println!("effective backlog: {:?}", server.listeners()[0].effective_backlog);
//! let report = server.run_until_signal(Duration::from_secs(5))?;
//! println!("{report:?}");
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
// The OS layer, with every `unsafe` block, is its own crate: synack-sys.
#![deny(unsafe_code)]

// Private modules, bottom-up along a connection's path; the public API is the `pub use` list
// below, one path per public type (`http`, `metrics` and `probe` are public as modules: their
// items are named through them).
use synack_sys as sys;

mod error;
mod periodic;
pub mod probe;
mod stats;
mod threads;
mod throttle;

mod inherit;
mod limit;
mod listener;
mod sampler;

mod shared;

pub mod tls;

mod connection;
mod dispatch;
#[cfg(feature = "metrics")]
pub mod metrics;
mod observe;

mod acceptor;
mod worker;

mod notify;
mod server;
mod start;

mod handoff;

mod builder;

#[cfg(feature = "config")]
mod config;
#[cfg(feature = "hyper")]
pub mod http;

pub use acceptor::FdExhaustionPolicy;
pub use builder::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES,
    IN_WORKER_ACCEPT_BATCH, MAX_THREADS, ServerBuilder,
};
#[cfg(feature = "config")]
pub use config::{BackoffConfig, KeepaliveConfig, ServerConfig, TlsConfig};
pub use connection::{Closing, ConnInfo, Connection};
pub use error::Error;
pub use handoff::{Handoff, HandoffError, HandoffFailed, HandoffReport, HandoffTrigger, RunEnd};
/// The histogram type of [`Stats::dispatch_latency_us`] and [`Stats::accept_batch`]
/// (re-exported from `hdrhistogram`, nothing else of it).
#[doc(no_inline)]
pub use hdrhistogram::Histogram;
pub use inherit::{Inheritance, SurplusMembers};
pub use limit::OverloadPolicy;
pub use listener::{Keepalive, ListenerInfo, ListenerOrigin, MAX_BACKLOG};
pub use sampler::QueueSample;
pub use server::{Server, ShutdownReport, shutdown_signal};
pub use stats::{AcceptErrorKind, AcceptErrors, ListenerStats, Stats, TlsFailures, TlsStats};
pub use tls::TlsInfo;
pub use worker::HandlerOutput;

/// Internals the micro-benchmarks (`benches/hot_path.rs`) measure in isolation. Not part of
/// the API: no stability, no docs.
#[doc(hidden)]
pub mod __bench {
    pub use crate::limit::Limit;
    pub use crate::stats::{AcceptorStats, WorkerStats};

    /// Merges per-thread recorders into a snapshot, as [`Server::stats`](crate::Server::stats)
    /// does.
    pub fn merge(
        acceptors: &[&AcceptorStats],
        workers: &[&WorkerStats],
        open_per_worker: Vec<u64>,
    ) -> crate::Stats {
        crate::Stats::merge(acceptors, workers, open_per_worker)
    }
}
