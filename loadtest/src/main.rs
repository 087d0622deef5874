//! `synack-load`: see `synack-load --help`.
//!
//! Exit status: 0 when the run completed (whatever the server did), 2 for bad usage, 1 when the
//! generator itself failed.

use clap::Parser;
use synack_load::cli::{Cli, Command};
use synack_load::embedded;
use synack_load::flood::{self, Output};
use synack_load::report::{hlog, table};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Flood(args) => {
            let server = if args.embedded {
                match embedded::start(
                    args.server_backlog,
                    args.server_workers,
                    args.server_max_connections,
                    args.probe,
                ) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        eprintln!("synack-load: embedded server: {e}");
                        std::process::exit(if matches!(e, synack::Error::InvalidConfig { .. }) {
                            2
                        } else {
                            1
                        });
                    }
                }
            } else {
                None
            };
            let addr = match &server {
                Some(s) => s.local_addr().to_string(),
                None => args.addr.clone().unwrap_or_default(),
            };
            match args.plan_for(&addr) {
                Err(e) => {
                    eprintln!("synack-load: {e}");
                    2
                }
                Ok(plan) => {
                    let out = Output {
                        json: args.json.clone(),
                        hlog: args.hlog.clone(),
                        live: !args.quiet,
                        watch: args.watch_listener.then_some(args.watch_interval),
                    };
                    match flood::flood(&plan, &out) {
                        Ok(rep) => {
                            print!("{}", table::render(&rep));
                            if let Some(s) = server {
                                print!("\n{}", embedded::summary(&s));
                                s.shutdown_blocking(std::time::Duration::from_secs(1));
                            }
                            0
                        }
                        Err(e) => {
                            eprintln!("synack-load: {e}");
                            // Input that cannot work (a target not on this host to watch, a
                            // path that does not exist) is a usage error.
                            match e.kind() {
                                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::NotFound => {
                                    2
                                }
                                _ => 1,
                            }
                        }
                    }
                }
            }
        }
        Command::Merge(args) => match hlog::merge(&args.files) {
            Ok((h, n)) => {
                let p = synack_load::report::Percentiles::of(&h);
                println!(
                    "merged {n} intervals from {} logs: {} values (us): p50 {} p90 {} p99 {} p99.9 {} max {}",
                    args.files.len(),
                    p.count,
                    p.p50,
                    p.p90,
                    p.p99,
                    p.p999,
                    p.max
                );
                0
            }
            Err(e) => {
                eprintln!("synack-load merge: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
