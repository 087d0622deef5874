//! The command line, in clap derive: the flags users pass after `cargo bench -p synack-compare
//! --`, the hidden child mode the harness re-executes itself with, and the one-line usage
//! errors (exit 2).

use std::str::FromStr;

use clap::Parser;
use clap::error::ErrorKind;

use crate::servers::{KINDS, is_kind};

/// synack against the floor, tokio (and actix-server with `--features actix`), and synack-load
/// against other generators; every figure a median over interleaved runs.
#[derive(Parser, Debug)]
#[command(name = "compare", bin_name = "cargo bench -p synack-compare --")]
pub struct Args {
    /// Also measure resident memory per idle held connection (synack and tokio, 15,000 held).
    #[arg(long, conflicts_with_all = ["generators", "open_loop"])]
    pub memory: bool,

    /// Rounds of each measurement (each figure is the median over them), at least 1.
    #[arg(long, value_name = "N", default_value = "3", allow_negative_numbers = true, value_parser = at_least_one::<usize>)]
    pub runs: usize,

    /// Seconds of each closed-loop flood, at least 1.
    #[arg(long, value_name = "N", default_value = "3", allow_negative_numbers = true, value_parser = at_least_one::<u64>)]
    pub seconds: u64,

    /// Only these servers, comma-separated (the floor always runs: the ratios are to it), and
    /// only the server table (with `--memory`, the memory phase too).
    #[arg(
        long,
        value_name = "A,B",
        value_delimiter = ',',
        value_parser = known_server,
        conflicts_with_all = ["generators", "open_loop"]
    )]
    pub only: Option<Vec<String>>,

    /// Only the generator comparison (synack-load against a bare connect loop and tcpkali).
    #[arg(long, conflicts_with = "open_loop")]
    pub generators: bool,

    /// Only the open-loop section (the generator past its own capacity).
    #[arg(long)]
    pub open_loop: bool,

    /// Child mode: serve as server KIND (the harness runs itself so).
    #[arg(long, value_name = "KIND", hide = true, value_parser = child_server)]
    pub server: Option<String>,

    /// Child mode: pin the server to CPU N.
    #[arg(long, value_name = "N", hide = true, requires = "server")]
    pub cpu: Option<usize>,

    /// Passed by `cargo bench` to every benchmark binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What a parsed command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Serve as one of the compared servers (the parent's child process).
    Child {
        /// The server kind, maybe with `-hold`.
        kind: &'a str,
        /// The CPU to pin it to.
        cpu: Option<usize>,
    },
    /// Only the generator comparison.
    Generators,
    /// Only the open-loop section.
    OpenLoop,
    /// The server table over `kinds`, then (unless `--only`) the generators and the open loop,
    /// then memory.
    Everything {
        /// The servers in table order, the floor first.
        kinds: Vec<&'static str>,
        /// Whether the memory phase runs.
        memory: bool,
        /// Whether the generator comparison and the open loop run (not with `--only`).
        generators: bool,
    },
}

impl Args {
    /// Parses the process's arguments; on bad input prints one line and exits with 2.
    pub fn parse_or_exit() -> Self {
        match Self::try_parse() {
            Ok(args) => args,
            Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
                e.exit()
            }
            Err(e) => {
                eprintln!("compare: {}", one_line(&e));
                std::process::exit(2);
            }
        }
    }

    /// What to run.
    pub fn mode(&self) -> Mode<'_> {
        if let Some(kind) = &self.server {
            Mode::Child {
                kind,
                cpu: self.cpu,
            }
        } else if self.open_loop {
            Mode::OpenLoop
        } else if self.generators {
            Mode::Generators
        } else {
            Mode::Everything {
                kinds: self.kinds(),
                memory: self.memory,
                generators: self.only.is_none(),
            }
        }
    }

    /// The servers of the table, in table order: all, or the floor and those of `--only`.
    pub fn kinds(&self) -> Vec<&'static str> {
        KINDS
            .iter()
            .copied()
            .filter(|k| match &self.only {
                Some(want) => *k == "floor" || want.iter().any(|w| w == k),
                None => true,
            })
            .collect()
    }
}

/// A usage error as one line: clap's first, without its `error: ` prefix, pointing to `--help`
/// where that line does not already say what is accepted.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match e.kind() {
        ErrorKind::ValueValidation => first.to_string(),
        _ => format!("{first} (see --help)"),
    }
}

fn at_least_one<T: FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err("expected a whole number, at least 1".into()),
    }
}

fn known_server(s: &str) -> Result<String, String> {
    if KINDS.contains(&s) {
        return Ok(s.to_string());
    }
    let known = KINDS.join(", ");
    if s == "actix" {
        return Err(format!(
            "actix-server is compared only when built with --features actix; known: {known}"
        ));
    }
    Err(format!("unknown server; known: {known}"))
}

fn child_server(s: &str) -> Result<String, String> {
    if is_kind(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown server; known: {} (each also with -hold)",
            KINDS.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::try_parse_from(std::iter::once("compare").chain(args.iter().copied()))
            .map_err(|e| one_line(&e))
    }

    #[test]
    fn the_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_run_everything_three_times_for_three_seconds() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.runs, a.seconds), (3, 3));
        assert_eq!(
            a.mode(),
            Mode::Everything {
                kinds: KINDS.to_vec(),
                memory: false,
                generators: true
            }
        );
    }

    #[test]
    fn cargo_bench_flag_is_tolerated() {
        let a = parse(&["--bench", "--memory", "--runs", "9"]).unwrap();
        assert_eq!(a.runs, 9);
        assert!(matches!(a.mode(), Mode::Everything { memory: true, .. }));
    }

    #[test]
    fn zero_runs_or_seconds_are_refused_in_one_line() {
        for flag in ["--runs", "--seconds"] {
            for bad in ["0", "-1", "x", "1.5"] {
                let e = parse(&[flag, bad]).unwrap_err();
                assert_eq!(
                    e,
                    format!(
                        "invalid value '{bad}' for '{flag} <N>': expected a whole number, at least 1"
                    )
                );
            }
        }
    }

    #[test]
    fn only_keeps_table_order_and_always_the_floor() {
        let a = parse(&["--only", "synack-inworker,synack"]).unwrap();
        assert_eq!(a.kinds(), ["floor", "synack", "synack-inworker"]);
        let a = parse(&["--only", "floor"]).unwrap();
        assert_eq!(a.kinds(), ["floor"]);
    }

    #[test]
    fn only_names_the_unknown_server_and_the_known_ones() {
        let e = parse(&["--only", "synack,nginx"]).unwrap_err();
        assert!(
            e.starts_with(
                "invalid value 'nginx' for '--only <A,B>': unknown server; known: floor, floor-fin, synack,"
            ),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[cfg(not(feature = "actix"))]
    #[test]
    fn actix_without_the_feature_says_which_feature() {
        let e = parse(&["--only", "actix"]).unwrap_err();
        assert!(e.contains("--features actix"), "{e}");
    }

    #[test]
    fn sections_alone() {
        assert_eq!(
            parse(&["--generators", "--runs", "9"]).unwrap().mode(),
            Mode::Generators
        );
        assert_eq!(parse(&["--open-loop"]).unwrap().mode(), Mode::OpenLoop);
        for both in [
            &["--generators", "--open-loop"][..],
            &["--open-loop", "--memory"],
            &["--generators", "--only", "synack"],
        ] {
            let e = parse(both).unwrap_err();
            assert!(e.contains("cannot be used with"), "{e}");
        }
    }

    #[test]
    fn child_mode() {
        let a = parse(&["--server", "synack-hold", "--cpu", "0"]).unwrap();
        assert_eq!(
            a.mode(),
            Mode::Child {
                kind: "synack-hold",
                cpu: Some(0)
            }
        );
        assert!(parse(&["--server", "nginx"]).is_err());
        assert!(parse(&["--cpu", "0"]).is_err());
    }

    #[test]
    fn unknown_flags_point_to_help() {
        let e = parse(&["--runz", "3"]).unwrap_err();
        assert!(e.starts_with("unexpected argument '--runz'"), "{e}");
        assert!(e.ends_with("(see --help)"), "{e}");
    }
}
