//! Child processes that can be stopped whole: a command started in its own process group,
//! which dies with this process (Linux `PR_SET_PDEATHSIG`), and signals sent to its group.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// A signal to stop a process group with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `SIGTERM`: stop, cleaning up.
    Term,
    /// `SIGKILL`: stop now.
    Kill,
}

/// Starts `cmd` as the leader of a new process group (its pid is the group's id), so that
/// [`signal_group`] reaches everything it starts. On Linux it is also killed if this process
/// dies first (`PR_SET_PDEATHSIG`), so a crash here leaves no server behind.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let mut cmd = std::process::Command::new("sleep");
/// cmd.arg("30");
/// let mut child = synack_sys::process::spawn_group(&mut cmd)?;
/// synack_sys::process::signal_group(child.id(), synack_sys::process::Stop::Kill)?;
/// assert!(!child.wait()?.success());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// The spawn's own error (no such program, no permission).
pub fn spawn_group(cmd: &mut Command) -> io::Result<Child> {
    spawn_group_on(cmd, None)
}

/// [`spawn_group`], the child (and all it starts) restricted to `cpus` when given (Linux
/// `sched_setaffinity` before exec).
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let mut cmd = std::process::Command::new("sh");
/// cmd.args(["-c", "grep Cpus_allowed_list /proc/self/status"]).stdout(std::process::Stdio::piped());
/// let child = synack_sys::process::spawn_group_on(&mut cmd, Some(&[0]))?;
/// let out = String::from_utf8(child.wait_with_output()?.stdout).unwrap();
/// assert!(out.trim_end().ends_with("\t0"), "{out}");
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// A CPU past [`crate::cpu::MAX_CPUS`], or the spawn's own error (the child's
/// `sched_setaffinity` error among them: `EINVAL` for CPUs none of which may be used).
pub fn spawn_group_on(cmd: &mut Command, cpus: Option<&[usize]>) -> io::Result<Child> {
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    if let Some(cpus) = cpus {
        let set = crate::linux::cpu_set(cpus)?;
        // SAFETY: the closure runs in the child between fork and exec; sched_setaffinity is
        // a system call on a set built (and copied into the closure) before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    if cpus.is_some() {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "CPU sets"));
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: prctl and getppid are system calls, and
        // nothing is allocated or locked.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl: then no signal will come.
                if libc::getppid() == 1 {
                    return Err(io::Error::other(
                        "the parent exited before the child started",
                    ));
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

/// Sends `stop` to every process of the group `pgid` (see [`spawn_group`]). A group that is
/// gone already is not an error.
///
/// # Errors
///
/// `kill(2)`'s error but `ESRCH`: `EPERM` for a group not ours, `EINVAL` for a group id of 0
/// or one that does not fit.
pub fn signal_group(pgid: u32, stop: Stop) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let sig = match stop {
        Stop::Term => libc::SIGTERM,
        Stop::Kill => libc::SIGKILL,
    };
    // SAFETY: kill(2) takes plain integers; a negative pid addresses the process group, and
    // pgid > 0 was checked so that -pgid is neither 0 (our own group) nor -1 (every process).
    let r = unsafe { libc::kill(-pgid, sig) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Whether any process of the group `pgid` is still alive. A zombie is not: it has exited
/// and waits only to be reaped (which an init that does not reap, as in some containers,
/// never does). Linux reads `/proc/*/stat`; elsewhere, signal 0 (zombies count).
pub fn group_alive(pgid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        if let Some(alive) = linux_group_alive(pgid) {
            return alive;
        }
    }
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 0 {
        return false;
    }
    // SAFETY: as in `signal_group`; signal 0 sends nothing, it only checks the group exists.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// `/proc/*/stat`: a process of the group in any state but zombie (`Z`) or dead (`X`).
/// `None` when `/proc` cannot be read.
#[cfg(target_os = "linux")]
fn linux_group_alive(pgid: u32) -> Option<bool> {
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (Some(state), Some(_ppid), Some(pgrp)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if pgrp.parse::<u32>().ok() == Some(pgid) && state != "Z" && state != "X" {
            return Some(true);
        }
    }
    Some(false)
}
