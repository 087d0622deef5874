//! `synack-load merge`: interval logs in, combined percentiles out.

use std::io;

use crate::cli::MergeArgs;
use crate::error::LoadError;
use crate::report::{Percentiles, hlog};

pub(super) fn command(args: &MergeArgs) -> Result<(), LoadError> {
    if let Some(f) = args.files.iter().find(|f| !f.is_file()) {
        return Err(LoadError::Usage(format!(
            "merge: {}: no such file (give --hlog logs or --json reports)",
            f.display()
        )));
    }
    let json: Vec<bool> = args
        .files
        .iter()
        .map(|f| {
            std::fs::read(f)
                .ok()
                .and_then(|b| b.iter().find(|c| !c.is_ascii_whitespace()).copied())
                == Some(b'{')
        })
        .collect();
    if json.iter().all(|j| *j) {
        return merge_reports(args);
    }
    if let Some(i) = json.iter().position(|j| *j) {
        return Err(LoadError::Usage(format!(
            "merge: {} is a JSON report and the others interval logs: merge one kind at a time",
            args.files[i].display()
        )));
    }
    if args.json.is_some() || args.report.is_some() || args.server.is_some() {
        return Err(LoadError::Usage(
            "merge: --json, --report and --server go with JSON reports, not interval logs".into(),
        ));
    }
    let as_usage = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::InvalidData => {
            LoadError::Usage(format!("merge: {e}"))
        }
        _ => LoadError::io("merge", e),
    };
    // One reading of the logs, for the totals and the second-by-second merge alike.
    let aligned = hlog::merge_aligned(&args.files).map_err(as_usage)?;
    let merged = aligned.totals().map_err(|e| LoadError::io("merge", e))?;
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
    // Whether the intervals line up: agents of one run share a start, and their intervals
    // start at the same whole seconds after it.
    let instants: std::collections::BTreeSet<_> =
        aligned.series.values().flat_map(|by| by.keys()).collect();
    match aligned.start_times.as_slice() {
        [] => {}
        [start] => println!(
            "intervals line up: every log starts at {} (Unix seconds); {} one-second intervals in all",
            unix(*start),
            instants.len()
        ),
        starts => println!(
            "intervals do not line up: the logs start at {} different times ({}), so a second of one is not the same second of another (give every agent the same --start-at)",
            starts.len(),
            starts
                .iter()
                .map(|t| unix(*t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    if let Some(path) = &args.hlog {
        hlog::write_aligned(path, &aligned)
            .map_err(|e| LoadError::io(path.display().to_string(), e))?;
    }
    Ok(())
}

fn unix(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

fn merge_reports(args: &MergeArgs) -> Result<(), LoadError> {
    if args.hlog.is_some() {
        return Err(LoadError::Usage(
            "merge: --hlog goes with interval logs, not JSON reports (merge the agents' --hlog files for it)".into(),
        ));
    }
    let mut m = crate::report::merge::merge_files(&args.files)?;
    if let Some(server) = &args.server {
        crate::report::merge::attach_server(&mut m, server)?;
    }
    print!("{}", crate::report::merge::render(&m));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&m).map_err(|e| LoadError::Run(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| LoadError::io(path.display().to_string(), e))?;
    }
    if let Some(dir) = &args.report {
        crate::report::html::write_flood(dir, &m.total)
            .map_err(|e| LoadError::io(dir.display().to_string(), e))?;
        // The server's host's page beside it: DIR/server/report.html.
        if let Some(server) = &m.server {
            let sub = dir.join("server");
            crate::report::diagnose::write_html(&sub, &server.diagnose)
                .map_err(|e| LoadError::io(sub.display().to_string(), e))?;
        }
    }
    Ok(())
}
