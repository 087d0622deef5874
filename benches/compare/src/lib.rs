//! synack-compare, the comparison harness (not published): the synack greeting server, a plain
//! tokio accept loop, actix-server 2 (with `--features actix`) and the floor (one thread,
//! epoll + accept4 + write + close, through mio), each in a child process pinned to CPU 0,
//! flooded one at a time by synack-load's engine pinned to CPU 1 with identical settings; then
//! one-thread generators side by side (a bare connect loop, synack-load, tcpkali), and the
//! generator past its own capacity.
//!
//! ```text
//! cargo bench -p synack-compare                               # the table (about a minute)
//! cargo bench -p synack-compare -- --memory                   # also RSS per held connection
//! cargo bench -p synack-compare -- --only synack-inworker --runs 5
//! cargo bench -p synack-compare -- --generators --runs 9      # generators only
//! cargo bench -p synack-compare -- --open-loop --runs 5       # past capacity only
//! cargo bench -p synack-compare --features actix              # actix-server too
//! TCPKALI=/path/to/tcpkali cargo bench -p synack-compare -- --generators
//! ```
//!
//! Each connection: connect, the server writes 8 bytes and closes, the client reads them and
//! closes with RST. Server CPU is the child's `getrusage` user + system time over the flood.
//!
//! The parts, each importing only those above it: [`servers`] (the child side), [`harness`]
//! (the child process, the plan, the server table, memory), [`generators`], [`open_loop`];
//! [`cli`] is the command line, and `main.rs` (the bench target) dispatches.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
pub mod generators;
pub mod harness;
pub mod open_loop;
pub mod servers;
