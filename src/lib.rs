//! # synack: a Tomcat-style acceptor core for TCP servers
//!
//! synack owns the path a connection takes from the kernel to your handler:
//!
//! 1. **Kernel queues.** A [`listener`] built with socket2 with an explicit `listen(2)` backlog;
//!    the backlog the kernel really grants (capped by `net.core.somaxconn`) is read back.
//! 2. **Acceptor.** Dedicated threads on `mio` take connections off the accept queue, never
//!    spinning on errors (see [`acceptor`]).
//! 3. **Connection limit.** Tomcat's `maxConnections`: at the limit the acceptor stops and new
//!    clients wait in the kernel backlog (see [`limit`]).
//! 4. **Dispatch and workers.** Each connection goes to the least-loaded worker, a thread with
//!    a tokio current-thread runtime, which runs your handler (see [`worker`]).
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

pub mod acceptor;
mod builder;
#[cfg(feature = "config")]
pub mod config;
mod connection;
mod dispatch;
mod error;
#[cfg(feature = "hyper")]
pub mod http;
pub mod limit;
pub mod listener;
#[cfg(feature = "metrics")]
pub mod metrics;
mod observe;
mod periodic;
pub mod probe;
mod sampler;
mod server;
mod shared;
mod start;
pub mod stats;
// The OS layer, private: `crate::sys::...` inside synack, nothing of it in synack's API.
use synack_sys as sys;
mod threads;
mod throttle;
pub mod worker;

pub use acceptor::FdExhaustionPolicy;
pub use builder::{DEFAULT_MAX_CONNECTIONS, IN_WORKER_ACCEPT_BATCH, MAX_THREADS, ServerBuilder};
#[cfg(feature = "config")]
pub use config::ServerConfig;
pub use connection::{Closing, ConnInfo, Connection};
pub use error::Error;
pub use hdrhistogram;
pub use limit::OverloadPolicy;
pub use listener::{Keepalive, ListenerInfo};
pub use sampler::QueueSample;
pub use server::{Server, ShutdownReport, shutdown_signal};
pub use stats::{AcceptErrorKind, AcceptErrors, ListenerStats, Stats};
pub use worker::HandlerOutput;
