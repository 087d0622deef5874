//! synack-load: a connect-flood load generator that measures the TCP handshake honestly.
//!
//! The binary's commands are thin wrappers over [`flood::flood`] and the report module, so the
//! same engine can be embedded (the tuning and benchmark harnesses use it).

// Every `unsafe` block of the workspace lives in synack-sys.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod diagnose;
pub mod embedded;
pub mod engine;
pub mod error;
pub mod exchange;
pub mod exporter;
pub mod flood;
pub mod hostview;
pub mod judge;
pub mod outcome;
pub mod pacer;
pub mod plan;
pub mod record;
pub mod report;
pub mod sweep;
pub mod tls;
pub mod tune;
pub mod watch;
