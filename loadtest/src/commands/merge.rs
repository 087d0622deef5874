//! `synack-load merge`: interval logs in, combined percentiles out.

use std::io;

use crate::cli::MergeArgs;
use crate::error::LoadError;
use crate::report::{Percentiles, hlog};

pub(super) fn command(args: &MergeArgs) -> Result<(), LoadError> {
    let merged = hlog::merge(&args.files).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => LoadError::Usage(format!("merge: {e}")),
        _ => LoadError::io("merge", e),
    })?;
    if merged.is_empty() {
        println!("no intervals in {} logs", args.files.len());
    }
    for (tag, m) in &merged {
        let p = Percentiles::of(&m.histogram);
        println!(
            "{}: merged {} intervals from {} logs: {} values (us): p50 {} p90 {} p99 {} p99.9 {} max {}",
            if tag.is_empty() { "untagged" } else { tag },
            m.intervals,
            args.files.len(),
            p.count,
            p.p50,
            p.p90,
            p.p99,
            p.p999,
            p.max
        );
    }
    Ok(())
}
