//! `synack-load`: see `synack-load --help`.
//!
//! Exit status: 0 when the run completed (whatever the server did), 2 for bad usage, 1 when the
//! generator itself failed.

#![forbid(unsafe_code)]

use clap::Parser;
use synack_load::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Flood(args) => synack_load::flood::command(&args),
        Command::Sweep(args) => synack_load::sweep::command(&args),
        Command::Tune(args) => synack_load::tune::command(&args),
        Command::Merge(args) => synack_load::report::hlog::command(&args),
    };
    std::process::exit(code);
}
