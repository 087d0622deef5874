//! Writes a short greeting on every connection, then closes it: the target synack-load floods.
//!
//! ```text
//! cargo run --release --example greeting -- --addr 127.0.0.1:7878 --backlog 1024
//! ```
//!
//! With `--handoff`, `kill -HUP <pid>` restarts it without losing a connection: it re-executes
//! itself, hands the new process its listening sockets, and winds down once that one serves.

mod common;

use clap::Parser;
use tokio::io::AsyncWriteExt;

/// A synack server that greets every connection and closes it.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    server: common::ServerFlags,
    /// The greeting written on every connection; `{pid}` in it becomes this process's id (to
    /// see which process of a handoff served a connection).
    #[arg(long, default_value = "hello from synack\n")]
    greeting: String,
    /// Wait this many microseconds before greeting (a simulated service time that holds the
    /// connection's slot, as `synack-load tune` does).
    #[arg(long, default_value_t = 0)]
    service_us: u64,
    /// Write the probe header first (for `synack-load flood --probe`). Left out, the config
    /// file's `probe` applies. Never on a public listener: it tells every client the host's
    /// uptime.
    #[arg(long)]
    probe: bool,
}

fn main() {
    let cli = Cli::parse();
    common::init_tracing();
    if let Err(e) = run(cli) {
        eprintln!("greeting: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), synack::Error> {
    let text = cli
        .greeting
        .replace("{pid}", &std::process::id().to_string());
    let greeting: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
    let service = std::time::Duration::from_micros(cli.service_us);
    let mut builder = cli.server.builder()?;
    if cli.probe {
        builder = builder.probe(true);
    }
    let server = builder.serve(move |mut conn: synack::Connection| async move {
        if !service.is_zero() {
            tokio::time::sleep(service).await;
        }
        // Dropping the connection closes it (FIN); the greeting is already in the kernel.
        conn.write_all(greeting).await
    })?;
    common::print_listeners("greeting", &server);
    common::run(server, &cli.server)
}
