//! `synack-load sweep`: one bounded open-loop step per rate, the verdicts, the saturation
//! point.

use super::{Outputs, embedded_fds, target};
use crate::cli::SweepArgs;
use crate::error::LoadError;
use crate::plan::Load;
use crate::report::fmt_rate as rate;
use crate::report::sweep::{SweepReport, render, write_html};
use crate::sweep::Steps;

/// The rates a sweep's flags ask for: rising, each above the last.
fn rates(args: &SweepArgs) -> Result<Vec<f64>, LoadError> {
    if !args.rates.is_empty() {
        if let Some(w) = args.rates.windows(2).find(|w| w[1] <= w[0]) {
            return Err(LoadError::Usage(format!(
                "--rates: {} then {}: give the rates rising, each above the last (the saturation point is the first step that saturates)",
                w[0], w[1]
            )));
        }
        return Ok(args.rates.clone());
    }
    match (args.from, args.to) {
        (Some(a), Some(b)) => {
            if b < a {
                return Err(LoadError::Usage(format!(
                    "--from {a} --to {b}: the sweep must not go down"
                )));
            }
            let n = args.steps;
            if n == 0 {
                return Err(LoadError::Usage("--steps 0: give at least 1 step".into()));
            }
            if n == 1 {
                return Ok(vec![a]);
            }
            Ok((0..n)
                .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
                .collect())
        }
        _ => Err(LoadError::Usage(
            "give the rates: --rates 1k,2k,5k or --from 1k --to 10k --steps 5".into(),
        )),
    }
}

pub(super) fn command(args: &SweepArgs) -> Result<(), LoadError> {
    let rates = rates(args)?;
    let (server, addr) = target(&args.target, args.conn.probe)?;
    let base = args
        .conn
        .plan_builder(
            &addr,
            Load::Open {
                from: rates[0],
                to: rates[0],
                burst: args.burst,
            },
            args.step_duration,
        )?
        .other_fds(embedded_fds(server.as_ref()))
        .build()?;
    let runner = Steps {
        base: &base,
        burst: args.burst,
        duration: args.step_duration,
        watch: args.conn.watch(),
        p99_limit: args.p99_limit,
        retries: args.retries,
    };
    let mut steps = Vec::new();
    for (i, &r) in rates.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(args.settle);
        }
        if !args.quiet {
            eprintln!("step {}/{}: {}", i + 1, rates.len(), rate(r));
        }
        let (st, _) = runner.run(r, |st, tries| {
            if !st.verdict.judged_server() && tries < args.retries && !args.quiet {
                eprintln!(
                    "  the generator did not deliver it ({}): again, {} of --retries {}",
                    st.reasons.join("; "),
                    tries + 1,
                    args.retries
                );
            }
        })?;
        steps.push(st);
    }
    let rep = SweepReport::new(&base.target_text, args.step_duration, args.p99_limit, steps);
    print!("{}", render(&rep));
    if let Some(s) = server {
        print!("\n{}", crate::embedded::summary(&s));
    }
    Outputs {
        json: args.json.as_ref(),
        report: args.report.as_ref(),
    }
    .write(&rep, |dir| write_html(dir, &rep))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn sweep(args: &[&str]) -> SweepArgs {
        let mut argv = vec!["synack-load", "sweep", "127.0.0.1:9"];
        argv.extend_from_slice(args);
        match Cli::parse_from(argv).command {
            Command::Sweep(a) => *a,
            _ => unreachable!("a sweep was parsed"),
        }
    }

    #[test]
    fn rates_rise_or_are_refused() {
        assert_eq!(
            rates(&sweep(&["--rates", "1k,2k"])).unwrap(),
            vec![1000.0, 2000.0]
        );
        assert_eq!(
            rates(&sweep(&["--from", "1k", "--to", "3k", "--steps", "3"])).unwrap(),
            vec![1000.0, 2000.0, 3000.0]
        );
        for bad in [
            vec!["--rates", "2k,1k"],
            vec!["--rates", "1k,1k"],
            vec!["--from", "1k", "--to", "2k", "--steps", "0"],
            vec!["--from", "2k", "--to", "1k"],
            vec![],
        ] {
            let e = rates(&sweep(&bad)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }
}
