//! The commands: each takes its parsed flags, runs the pipeline (plan -> engine -> report)
//! and writes the outputs asked for. They orchestrate only; failures come back as one
//! [`LoadError`], which `main` turns into one line and an exit status.

mod diagnose;
mod flood;
mod merge;
mod sweep;
mod tune;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{Command, TargetArgs};
use crate::embedded;
use crate::error::LoadError;

/// Runs one command.
pub fn run(command: Command) -> Result<(), LoadError> {
    match command {
        Command::Flood(args) => flood::command(&args),
        Command::Sweep(args) => sweep::command(&args),
        Command::Tune(args) => tune::command(&args),
        Command::Diagnose(args) => diagnose::command(&args),
        Command::Merge(args) => merge::command(&args),
    }
}

/// Starts the embedded server the target flags ask for, if any; returns it and the address
/// to flood.
fn target(t: &TargetArgs, probe: bool) -> Result<(Option<synack::Server>, String), LoadError> {
    if let Some(flag) = t.stray_server_flag() {
        return Err(LoadError::Usage(format!(
            "{flag} configures the embedded server: use it with --embedded, or drop it"
        )));
    }
    if !t.embedded {
        return Ok((None, t.addr.clone().unwrap_or_default()));
    }
    let s = embedded::start(
        t.server_backlog.unwrap_or(embedded::DEFAULT_BACKLOG),
        t.server_workers.unwrap_or(embedded::DEFAULT_WORKERS),
        t.server_max_connections
            .unwrap_or(synack::DEFAULT_MAX_CONNECTIONS),
        t.server_accept_in_workers,
        probe,
    )?;
    let addr = s.local_addr().to_string();
    Ok((Some(s), addr))
}

/// The descriptors an embedded server may hold while a flood runs: one per connection it may
/// keep open, and a few of its own.
fn embedded_fds(server: Option<&synack::Server>) -> u64 {
    server.map_or(0, |s| s.stats().max_connections as u64 + 32)
}

/// The outputs a command was asked for besides its table, written the same way by every
/// command: `--json FILE` and `--report DIR` (a page the command renders).
struct Outputs<'a> {
    json: Option<&'a PathBuf>,
    report: Option<&'a PathBuf>,
}

impl Outputs<'_> {
    fn write<T: Serialize>(
        &self,
        value: &T,
        page: impl FnOnce(&Path) -> std::io::Result<PathBuf>,
    ) -> Result<(), LoadError> {
        if let Some(path) = self.json {
            let text = serde_json::to_string_pretty(value)
                .map_err(|e| LoadError::io(path.display().to_string(), e.into()))?;
            std::fs::write(path, text + "\n")
                .map_err(|e| LoadError::io(path.display().to_string(), e))?;
        }
        if let Some(dir) = self.report {
            let written = page(dir)
                .map_err(|e| LoadError::io(format!("the report in {}", dir.display()), e))?;
            println!("\nreport: {}", written.display());
        }
        Ok(())
    }
}
