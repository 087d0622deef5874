//! `synack-load diagnose`: watch, then print and write what was seen; with `--serve`, export
//! it to Prometheus until stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::Outputs;
use crate::cli::DiagnoseArgs;
use crate::diagnose::{DiagnoseSpec, run};
use crate::error::LoadError;
use crate::exporter::Exporter;
use crate::report::diagnose::{render, write_html};

pub(super) fn command(args: &DiagnoseArgs) -> Result<(), LoadError> {
    let forever = args.until_interrupted || args.serve.is_some();
    let spec = DiagnoseSpec {
        targets: args.targets.clone(),
        duration: (!forever).then_some(args.duration),
        interval: args.interval,
    };
    let stop = Arc::new(AtomicBool::new(false));
    if forever {
        let flag = stop.clone();
        ctrlc::set_handler(move || flag.store(true, Relaxed))
            .map_err(|e| LoadError::Run(format!("cannot install the interrupt handler ({e})")))?;
        eprintln!("synack-load diagnose: watching; Ctrl-C (or SIGTERM) ends it and reports");
    }
    let mut exporter = match args.serve {
        Some(addr) => Some(Exporter::install(addr)?),
        None => None,
    };
    let rep = run(&spec, Some(stop), |sockets| {
        if let Some(x) = exporter.as_mut() {
            x.update(sockets);
        }
    })?;
    print!("{}", render(&rep));
    Outputs {
        json: args.json.as_ref(),
        report: args.report.as_ref(),
    }
    .write(&rep, |dir| write_html(dir, &rep))
}
