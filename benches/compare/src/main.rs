//! The `compare` bench target: parse the command line, then run what it asks for (see the
//! crate docs of `synack_compare` for the command lines).

use synack_compare::cli::{Args, Mode};
use synack_compare::{generators, harness, open_loop, servers};

fn main() {
    let args = Args::parse_or_exit();
    let (seconds, runs) = (args.seconds, args.runs);
    match args.mode() {
        Mode::Child { kind, cpu } => servers::child(kind, cpu),
        Mode::OpenLoop => open_loop::open_loop(harness::setup(), seconds, runs),
        Mode::Generators => generators::generators(harness::setup(), seconds, runs),
        Mode::Everything {
            kinds,
            memory,
            generators,
        } => {
            let cpus = harness::setup();
            harness::table(&kinds, cpus, seconds, runs);
            if generators {
                generators::generators(cpus, seconds, runs);
                open_loop::open_loop(cpus, seconds, runs);
            }
            if memory {
                harness::memory(cpus);
            }
        }
    }
}
