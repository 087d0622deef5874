//! `synack-load tune`: the main job. The runs and the reasoning are `crate::tune`'s; this
//! prints and writes them, and says when no recommendation could stand.

use super::Outputs;
use crate::cli::TuneArgs;
use crate::error::LoadError;
use crate::report::tune::{render, write_html};
use crate::tune::run;

pub(super) fn command(args: &TuneArgs) -> Result<(), LoadError> {
    let quiet = args.quiet;
    let spec = args.spec()?;
    let rep = run(&spec, |line| {
        if !quiet {
            eprintln!("{line}");
        }
    })?;
    print!("{}", render(&rep));
    Outputs {
        json: args.json.as_ref(),
        report: args.report.as_ref(),
    }
    .write(&rep, |dir| write_html(dir, &rep))?;
    if rep.generator_bound {
        // The run could not do what was asked: say so in the status too.
        return Err(LoadError::Run(
            "no recommendation: the generator could not deliver the load it needs (see above)"
                .into(),
        ));
    }
    Ok(())
}
