//! Where CPU time goes on this host: the host's CPUs (`/proc/stat`), a process's threads
//! (`/proc/PID/task/*`), which CPUs a process may run on and where its threads last ran, and
//! the calling thread's timer slack ([`set_timer_slack`]). Reading only, but for that. A
//! thread is pinned with [`crate::pin_to_cpu`].

use std::io;
use std::time::Duration;

/// A list of CPUs, as Linux writes it (`0-3,6`), parsed.
///
/// ```
/// let cpus = synack_sys::cpu::parse_list("0-2,5").unwrap();
/// assert_eq!(cpus, vec![0, 1, 2, 5]);
/// assert_eq!(synack_sys::cpu::format_list(&cpus), "0-2,5");
/// assert!(synack_sys::cpu::parse_list("2-1").is_err());
/// ```
///
/// # Errors
///
/// A part that is not a number or a range `a-b` with `a <= b`, or an empty list; the message
/// names the part.
pub fn parse_list(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let bad = || format!("{part:?} is not a CPU number or a range such as 0-3");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: usize = a.parse().map_err(|_| bad())?;
        let b: usize = b.parse().map_err(|_| bad())?;
        if a > b || b >= MAX_CPUS {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("an empty CPU list".into());
    }
    Ok(out)
}

/// Writes a CPU list as Linux does (`0-3,6`).
pub fn format_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// The most CPUs a list may name (the size of Linux's `cpu_set_t`).
pub const MAX_CPUS: usize = 1024;

/// The host's CPU time so far, summed over its CPUs (`/proc/stat`'s `cpu` line), in clock
/// ticks turned into time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostCpu {
    /// CPUs online (`cpuN` lines).
    pub cpus: usize,
    /// Time spent busy: user, nice, system, irq, softirq, steal.
    pub busy: Duration,
    /// Time spent idle or waiting for I/O.
    pub idle: Duration,
}

impl HostCpu {
    /// The share of the host's CPU time that was idle between `self` (earlier) and `later`,
    /// 0 to 1; `None` when no time passed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use synack_sys::cpu::HostCpu;
    ///
    /// let s = |busy, idle| HostCpu { cpus: 2, busy: Duration::from_millis(busy), idle: Duration::from_millis(idle) };
    /// assert_eq!(s(0, 0).idle_share(&s(1500, 500)), Some(0.25));
    /// ```
    pub fn idle_share(&self, later: &HostCpu) -> Option<f64> {
        let busy = later.busy.saturating_sub(self.busy).as_secs_f64();
        let idle = later.idle.saturating_sub(self.idle).as_secs_f64();
        (busy + idle > 0.0).then(|| idle / (busy + idle))
    }
}

/// Reads the host's CPU time (Linux `/proc/stat`; `Ok(None)` elsewhere).
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let now = synack_sys::cpu::host_cpu()?.unwrap();
/// assert!(now.cpus >= 1);
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `/proc/stat` cannot be read.
pub fn host_cpu() -> io::Result<Option<HostCpu>> {
    if !cfg!(target_os = "linux") {
        return Ok(None);
    }
    let text = std::fs::read_to_string("/proc/stat")?;
    Ok(parse_proc_stat(&text, crate::clock_tick()))
}

fn parse_proc_stat(text: &str, tick: u64) -> Option<HostCpu> {
    let mut out = HostCpu::default();
    let mut seen = false;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal (guest is inside user).
                let at = |i: usize| v.get(i).copied().unwrap_or(0);
                let t = |n: u64| Duration::from_nanos(n.saturating_mul(1_000_000_000) / tick);
                out.busy = t(at(0) + at(1) + at(2) + at(5) + at(6) + at(7));
                out.idle = t(at(3) + at(4));
                seen = true;
            }
            Some(c) if c.starts_with("cpu") => out.cpus += 1,
            _ => {}
        }
    }
    seen.then_some(out)
}

/// One thread of a process and the CPU time it has used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCpu {
    /// The thread id.
    pub tid: u32,
    /// User plus system time (`schedstat`'s nanoseconds, or `stat`'s ticks).
    pub cpu: Duration,
    /// The CPU it last ran on (`stat`'s `processor`).
    pub last_cpu: Option<usize>,
}

/// The threads of process `pid` and their CPU time (Linux; `Ok(None)` elsewhere). A thread
/// that ends meanwhile is left out.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let me = synack_sys::cpu::process_tasks(std::process::id())?.unwrap();
/// assert!(!me.is_empty());
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `/proc/PID/task` cannot be listed (`NotFound`: no such process).
pub fn process_tasks(pid: u32) -> io::Result<Option<Vec<TaskCpu>>> {
    crate::imp::process_tasks(pid)
}

/// The CPUs process `pid` may run on (`Cpus_allowed_list` of `/proc/PID/status`; Linux).
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let mine = synack_sys::cpu::allowed_cpus(std::process::id())?.unwrap();
/// assert!(!mine.is_empty());
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `/proc/PID/status` cannot be read.
pub fn allowed_cpus(pid: u32) -> io::Result<Option<Vec<usize>>> {
    if !cfg!(target_os = "linux") {
        return Ok(None);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|l| parse_list(l.trim()).ok()))
}

/// Sets the calling thread's timer slack (Linux `PR_SET_TIMERSLACK`): how much later than
/// asked the kernel may end its sleeps (50 us by default), to batch wakeups. A pacing thread
/// sets it to 1 ns. `Unsupported` elsewhere.
///
/// # Errors
///
/// What `prctl` says.
pub fn set_timer_slack(slack: Duration) -> io::Result<()> {
    crate::imp::set_timer_slack(slack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_format_and_bad_parts_are_named() {
        assert_eq!(parse_list("3").unwrap(), vec![3]);
        assert_eq!(parse_list("1,0-1, 4").unwrap(), vec![0, 1, 4]);
        assert_eq!(format_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(format_list(&[1, 3]), "1,3");
        let e = parse_list("0,x").unwrap_err();
        assert!(e.contains("\"x\""), "{e}");
        assert!(parse_list("").is_err());
        assert!(parse_list("5000").is_err());
    }

    #[test]
    fn proc_stat_sums_busy_and_idle() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        let s = parse_proc_stat(text, 100).unwrap();
        assert_eq!(s.cpus, 2);
        assert_eq!(s.busy, Duration::from_millis(1500));
        assert_eq!(s.idle, Duration::from_millis(8500));
    }
}
