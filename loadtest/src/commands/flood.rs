//! `synack-load flood`: one run, its table, and the outputs asked for.

use std::time::Duration;

use super::{Outputs, embedded_fds, target};
use crate::cli::FloodArgs;
use crate::embedded;
use crate::error::LoadError;
use crate::flood::{Output, flood};
use crate::report::{html, table};

pub(super) fn command(args: &FloodArgs) -> Result<(), LoadError> {
    let (server, addr) = target(&args.target, args.conn.probe)?;
    let plan = args
        .conn
        .plan_builder(&addr, args.load(), args.duration)?
        .connections(args.connections)
        .other_fds(embedded_fds(server.as_ref()))
        .agent(args.agent()?)
        .start_at(args.start_at)
        .build()?;
    let out = Output {
        hlog: args.hlog.clone(),
        live: !args.quiet,
        watch: args.conn.watch(),
    };
    let rep = flood(&plan, &out)?;
    print!("{}", table::render(&rep));
    let unaccounted = server.map_or(0, |s| {
        print!("\n{}", embedded::summary(&s));
        let r = s.shutdown_blocking(Duration::from_secs(1));
        println!(
            "  shutdown: open {} at the start, {} completed, {} aborted, {} lost, {} left in the kernel queue, unaccounted {}",
            r.open_at_start, r.completed, r.aborted, r.lost, r.left_in_queue, r.unaccounted
        );
        r.unaccounted
    });
    Outputs {
        json: args.json.as_ref(),
        report: args.report.as_ref(),
    }
    .write(&rep, |dir| html::write_flood(dir, &rep))?;
    if unaccounted != 0 {
        return Err(LoadError::Run(format!(
            "the embedded server lost track of {unaccounted} connections"
        )));
    }
    Ok(())
}
