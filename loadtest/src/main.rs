//! `synack-load`: see `synack-load --help`.
//!
//! Exit status: 0 when the run completed (whatever the server did), 2 for bad usage, 1 when the
//! generator itself failed.

#![forbid(unsafe_code)]

use clap::Parser;
use synack_load::cli::Cli;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = synack_load::commands::run(cli.command) {
        eprintln!("synack-load: {e}");
        std::process::exit(e.exit_code());
    }
}
