//! The host view of a run: where the CPU went while it ran. The generator's threads (their
//! own schedstat), the target server's process when it runs on this host (found by its
//! listener, as `diagnose` finds owners: inet_diag, then `/proc/*/fd`), and the host's CPUs
//! (`/proc/stat`, host-wide). The judge reads it to name the limit of a run: the generator,
//! the server, or the host.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use synack_sys::cpu::{self, HostCpu};

/// The server's side of a [`HostView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    /// The processes holding the target's listener.
    pub pids: Vec<u32>,
    /// The first one's command.
    pub command: String,
    /// True when the server runs inside the generator's own process (the embedded server):
    /// its threads are this process's but the generator's.
    pub in_generator_process: bool,
    /// Its threads over the run.
    pub threads: usize,
    /// CPU it used over the run, in cores (1.0 = one CPU all the time).
    pub cores: f64,
    /// The busiest of its threads, as a share of one core.
    pub busiest_thread: f64,
    /// The CPUs it may run on (`Cpus_allowed_list`).
    pub allowed: Option<String>,
    /// How many CPUs that is.
    pub allowed_count: Option<usize>,
    /// The CPUs its threads were last seen on (sampled at the end of the run).
    pub ran_on: String,
}

/// Where the CPU went over a run.
///
/// ```
/// use synack_load::hostview::HostView;
///
/// let v = HostView { cpus: 2, host_idle: Some(0.02), generator_cores: 0.97,
///     generator_busiest: 0.97, generator_cpus: Some("1".into()), server: None };
/// assert!(v.host_busy() && v.generator_at_limit());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    /// CPUs online on the host.
    pub cpus: usize,
    /// The share of the host's CPU time that was idle over the run (host-wide, every process
    /// counts).
    pub host_idle: Option<f64>,
    /// The generator threads' CPU over the run, in cores.
    pub generator_cores: f64,
    /// The busiest generator thread, as a share of one core.
    pub generator_busiest: f64,
    /// The CPUs the generator may run on (`--cpus`, or every one allowed).
    pub generator_cpus: Option<String>,
    /// The target server's process, when it is on this host and could be found.
    pub server: Option<ServerView>,
}

/// A thread at this share of a core or more is at its CPU limit.
pub const AT_LIMIT: f64 = 0.9;
/// The host counts as busy when less than this share of its CPU time was idle.
pub const HOST_BUSY_IDLE: f64 = 0.1;

impl HostView {
    /// Every CPU of the host was busy (idle under [`HOST_BUSY_IDLE`]).
    pub fn host_busy(&self) -> bool {
        self.host_idle.is_some_and(|i| i < HOST_BUSY_IDLE)
    }

    /// A generator thread was at its CPU limit.
    pub fn generator_at_limit(&self) -> bool {
        self.generator_busiest >= AT_LIMIT
    }

    /// The server's threads were at their CPU limit: one of them at a full core (an acceptor,
    /// an event loop), or all it may use busy.
    pub fn server_at_limit(&self) -> bool {
        self.server.as_ref().is_some_and(|s| {
            let room = s
                .allowed_count
                .unwrap_or(self.cpus)
                .min(s.threads.max(1))
                .max(1);
            s.busiest_thread >= AT_LIMIT || s.cores >= AT_LIMIT * room as f64
        })
    }

    /// One line: who used what.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "generator {:.0}% of a core (busiest thread {:.0}%{})",
            self.generator_cores * 100.0,
            self.generator_busiest * 100.0,
            self.generator_cpus
                .as_ref()
                .map_or_else(String::new, |c| format!(", CPUs {c}"))
        )];
        if let Some(s) = &self.server {
            parts.push(format!(
                "server {} (pid {}) {:.0}% of a core over {} threads (busiest {:.0}%), may run on CPUs {}, last ran on {}",
                s.command,
                s.pids.first().copied().unwrap_or(0),
                s.cores * 100.0,
                s.threads,
                s.busiest_thread * 100.0,
                s.allowed.as_deref().unwrap_or("?"),
                s.ran_on
            ));
        }
        if let Some(i) = self.host_idle {
            parts.push(format!(
                "host {:.0}% idle of {} CPUs (/proc/stat, host-wide)",
                i * 100.0,
                self.cpus
            ));
        }
        parts.join("; ")
    }
}

/// Readings taken at a run's start, finished into a [`HostView`] at its end.
#[derive(Debug)]
pub struct HostSampler {
    at: Instant,
    host: Option<HostCpu>,
    server: Vec<u32>,
    command: String,
    tasks: BTreeMap<(u32, u32), Duration>,
    generator_cpus: Option<String>,
}

/// Threads of the generator itself (left out of an embedded server's count).
fn is_generator_thread(pid: u32, tid: u32) -> bool {
    if pid != std::process::id() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .is_ok_and(|c| c.starts_with("synack-load"))
        || tid == pid
}

/// The processes holding the listener that takes connections to `target` on this host.
pub fn listener_owners(target: SocketAddr) -> Vec<(u32, String)> {
    let Ok(mut diag) = synack_sys::diag::Diag::new() else {
        return Vec::new();
    };
    let Ok(Some(l)) = diag.listener_at(target, false) else {
        return Vec::new();
    };
    let inodes: HashSet<u32> = [l.inode].into_iter().collect();
    synack_sys::host::socket_owners(&inodes)
        .map(|o| {
            o.by_inode
                .get(&l.inode)
                .map(|v| v.iter().map(|o| (o.pid, o.command.clone())).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

impl HostSampler {
    /// Starts the readings. The server's processes are those holding `target`'s listener,
    /// when it is on this host (a server `tune --server-cmd` started, the embedded one, any
    /// other): found as `diagnose` finds owners.
    pub fn start(target: SocketAddr) -> Self {
        let owners = if synack_sys::is_local_address(target.ip()) {
            listener_owners(target)
        } else {
            Vec::new()
        };
        let command = owners.first().map(|o| o.1.clone()).unwrap_or_default();
        let server = owners.into_iter().map(|o| o.0).collect();
        let mut s = HostSampler {
            at: Instant::now(),
            host: cpu::host_cpu().ok().flatten(),
            server,
            command,
            tasks: BTreeMap::new(),
            generator_cpus: cpu::allowed_cpus(std::process::id())
                .ok()
                .flatten()
                .map(|c| cpu::format_list(&c)),
        };
        s.tasks = s.read_tasks().0;
        s
    }

    /// The generator may run on these CPUs (`--cpus`).
    pub fn generator_cpus(&mut self, cpus: &[usize]) {
        self.generator_cpus = Some(cpu::format_list(cpus));
    }

    fn read_tasks(&self) -> (BTreeMap<(u32, u32), Duration>, BTreeSet<usize>) {
        let mut out = BTreeMap::new();
        let mut ran_on = BTreeSet::new();
        for &pid in &self.server {
            for t in cpu::process_tasks(pid).ok().flatten().unwrap_or_default() {
                if is_generator_thread(pid, t.tid) {
                    continue;
                }
                ran_on.extend(t.last_cpu);
                out.insert((pid, t.tid), t.cpu);
            }
        }
        (out, ran_on)
    }

    /// The view over the run, with the generator threads' CPU times as the engine read them.
    pub fn finish(self, generator_thread_cpu: &[Duration]) -> HostView {
        let span = self.at.elapsed().as_secs_f64().max(1e-3);
        let host_now = cpu::host_cpu().ok().flatten();
        let host_idle = self.host.zip(host_now).and_then(|(a, b)| a.idle_share(&b));
        let cpus = host_now
            .map(|h| h.cpus)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1);
        let gen_total: f64 = generator_thread_cpu.iter().map(Duration::as_secs_f64).sum();
        let gen_busiest = generator_thread_cpu
            .iter()
            .map(Duration::as_secs_f64)
            .fold(0.0, f64::max);
        let server = (!self.server.is_empty()).then(|| {
            let (now, ran_on) = self.read_tasks();
            let used: Vec<f64> = now
                .iter()
                .map(|(k, c)| {
                    c.saturating_sub(self.tasks.get(k).copied().unwrap_or_default())
                        .as_secs_f64()
                })
                .collect();
            let allowed = self
                .server
                .first()
                .and_then(|&p| cpu::allowed_cpus(p).ok().flatten());
            ServerView {
                pids: self.server.clone(),
                command: self.command.clone(),
                in_generator_process: self.server.contains(&std::process::id()),
                threads: used.len(),
                cores: used.iter().sum::<f64>() / span,
                busiest_thread: used.iter().copied().fold(0.0, f64::max) / span,
                allowed_count: allowed.as_ref().map(Vec::len),
                allowed: allowed.map(|a| cpu::format_list(&a)),
                ran_on: cpu::format_list(&ran_on.into_iter().collect::<Vec<_>>()),
            }
        });
        HostView {
            cpus,
            host_idle,
            generator_cores: gen_total / span,
            generator_busiest: gen_busiest / span,
            generator_cpus: self.generator_cpus,
            server,
        }
    }
}
