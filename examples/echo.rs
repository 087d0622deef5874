//! Echoes back whatever each client sends, until it closes.
//!
//! ```text
//! cargo run --example echo -- --addr 127.0.0.1:7879
//! ```

mod common;

use clap::Parser;

/// A synack echo server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    server: common::ServerFlags,
}

fn main() {
    let cli = Cli::parse();
    common::init_tracing();
    if let Err(e) = run(cli) {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), synack::Error> {
    let server = cli
        .server
        .builder()?
        .serve(|conn: synack::Connection| async move {
            let (mut rd, mut wr) = tokio::io::split(conn);
            tokio::io::copy(&mut rd, &mut wr).await
        })?;
    common::print_listeners("echo", &server);
    common::run(server, &cli.server)
}
