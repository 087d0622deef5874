//! `synack-load diagnose`: the production view of every TCP listener on this host, without
//! sending a packet. Samples every listener through inet_diag (what `ss -lnt` reads), the
//! kernel's TCP counters each second, the sysctls that decide what a full queue does, and (as
//! root) the kernel's log; finds the processes that own the listeners through `/proc`; then
//! [`crate::report::diagnose`] turns it into findings. It only reads: no socket option is
//! changed, no connection made.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use synack_sys::diag::{Diag, ListeningSocket};
use synack_sys::host::{Kmsg, socket_owners};

use crate::error::LoadError;
use crate::report::diagnose::{
    CounterSecond, DiagnoseReport, KernelLine, ListenerReport, Member, Process, SCHEMA, SYSCTLS,
    findings,
};
use crate::watch::QueuePoint;

/// Which listeners to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every listener on this port, whatever its address.
    Port(u16),
    /// The listeners bound to this address and port.
    Addr(SocketAddr),
}

impl Target {
    fn takes(&self, s: &ListeningSocket) -> bool {
        match *self {
            Target::Port(p) => s.local.port() == p,
            Target::Addr(a) => s.local == a,
        }
    }
}

/// What `diagnose` is asked to do.
///
/// ```no_run
/// use std::time::Duration;
/// use synack_load::diagnose::{DiagnoseSpec, Target, run};
///
/// let spec = DiagnoseSpec {
///     targets: vec![Target::Port(8080)],
///     duration: Some(Duration::from_secs(5)),
///     interval: Duration::from_millis(10),
/// };
/// let report = run(&spec, None, |_| {})?;
/// for f in &report.findings {
///     println!("{}: {}", f.severity, f.text);
/// }
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnoseSpec {
    /// The listeners to watch; empty: every one.
    pub targets: Vec<Target>,
    /// How long; `None`: until interrupted.
    pub duration: Option<Duration>,
    /// The sampling interval of the queues.
    pub interval: Duration,
}

/// The most queue readings kept per listener for its series (past it, readings are merged
/// two by two, keeping the deeper).
const SERIES_MAX: usize = 20_000;

/// How often a reading is full (every listener, with its `sk_drops`, the dearest part of a
/// dump for the kernel): at least this long apart (every interval when it is longer), and
/// the last. In between, only the hot listeners are read (see [`hot_listeners`]). An idle
/// listener's readings are this far apart; its drops are counted exactly all the same
/// (`sk_drops` only grows), and one with anything in its queue is read every interval from
/// the next full reading on.
const FULL_EVERY: Duration = Duration::from_millis(500);

/// Every this many full readings, both families are read, whatever the last one found (a
/// family with no listener is otherwise left out: the kernel walks every listener once per
/// family).
const FAMILIES_EVERY: u64 = 2;

/// Depth histogram buckets: a queue length at most each bound (the last: any more).
pub const DEPTH_BOUNDS: [u32; 12] = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, u32::MAX];

/// One listener group being watched (the sockets on one address: several with SO_REUSEPORT).
#[derive(Debug, Default)]
struct Watched {
    addr: Option<SocketAddr>,
    /// Its sockets, by inode (one, or a few with SO_REUSEPORT).
    members: Vec<(u32, MemberState)>,
    samples: u64,
    full: u64,
    nonempty: u64,
    peak: u32,
    backlog: u32,
    depth: [u64; DEPTH_BOUNDS.len()],
    /// The queue where it changed: a reading is kept when its length differs from the last
    /// one kept (with the reading before it, so the chart keeps its steps).
    series: Vec<QueuePoint>,
    last: Option<QueuePoint>,
    /// Seconds (since the start) in which it was seen full.
    full_seconds: HashSet<u64>,
    uid: u32,
    /// This reading's sums over the group.
    now_len: u32,
    now_backlog: u32,
    now_full: bool,
    seen: bool,
}

#[derive(Debug, Default)]
struct MemberState {
    backlog: u32,
    first_drops: Option<u64>,
    last_drops: Option<u64>,
    /// sk_drops at the start of the current second.
    second_start_drops: Option<u64>,
    /// Drops per second since the start.
    drops_by_second: BTreeMap<u64, u64>,
}

impl Watched {
    /// Adds one socket's reading to this round's sums.
    fn add(&mut self, s: &ListeningSocket, second: u64) {
        self.seen = true;
        self.now_len += s.len;
        self.now_backlog += s.backlog;
        self.now_full |= s.len > s.backlog;
        self.uid = s.uid;
        let m = match self.members.iter().position(|(i, _)| *i == s.inode) {
            Some(k) => &mut self.members[k].1,
            None => {
                self.members.push((s.inode, MemberState::default()));
                &mut self.members.last_mut().expect("just pushed").1
            }
        };
        m.backlog = s.backlog;
        if let Some(d) = s.drops {
            m.first_drops.get_or_insert(d);
            let start = *m.second_start_drops.get_or_insert(d);
            if d > start {
                m.drops_by_second.insert(second, d - start);
            }
            m.last_drops = Some(d);
        }
    }

    /// Closes this round: its sums become a reading.
    fn sample(&mut self, t_ms: f64, second: u64) {
        if !std::mem::take(&mut self.seen) {
            return;
        }
        let (len, backlog, full) = (
            std::mem::take(&mut self.now_len),
            std::mem::take(&mut self.now_backlog),
            std::mem::take(&mut self.now_full),
        );
        self.samples += 1;
        self.full += u64::from(full);
        self.nonempty += u64::from(len > 0);
        self.peak = self.peak.max(len);
        self.backlog = backlog;
        let b = DEPTH_BOUNDS.iter().position(|&b| len <= b).unwrap_or(0);
        self.depth[b] += 1;
        if full {
            self.full_seconds.insert(second);
        }
        let point = QueuePoint { t_ms, len, backlog };
        let changed = self
            .series
            .last()
            .is_none_or(|p| p.len != len || p.backlog != backlog);
        if changed {
            if let Some(prev) = self.last.filter(|p| self.series.last() != Some(p)) {
                self.series.push(prev);
            }
            if self.series.len() >= SERIES_MAX {
                // Halve the resolution, keeping each pair's deeper reading.
                self.series = self
                    .series
                    .chunks(2)
                    .map(|c| *c.iter().max_by_key(|p| p.len).unwrap_or(&c[0]))
                    .collect();
            }
            self.series.push(point);
        }
        self.last = Some(point);
    }

    fn new_second(&mut self) {
        for (_, m) in &mut self.members {
            m.second_start_drops = m.last_drops;
        }
    }

    fn drops(&self) -> Option<u64> {
        let mut any = false;
        let mut sum = 0;
        for (_, m) in &self.members {
            if let (Some(a), Some(b)) = (m.first_drops, m.last_drops) {
                any = true;
                sum += b.saturating_sub(a);
            }
        }
        any.then_some(sum)
    }

    fn drops_in(&self, second: u64) -> u64 {
        self.members
            .iter()
            .filter_map(|(_, m)| m.drops_by_second.get(&second))
            .sum()
    }
}

/// Checks the targets against what listens now: a port or address nothing listens on is bad
/// input, as is an address that is not this host's.
fn check_targets(targets: &[Target], now: &[ListeningSocket]) -> Result<(), LoadError> {
    for t in targets {
        if let Target::Addr(a) = t
            && !a.ip().is_unspecified()
            && !crate::watch::is_local(a.ip())
        {
            return Err(LoadError::Usage(format!(
                "{a}: not an address of this host; diagnose reads this host's listeners (give a port, or one of its addresses)"
            )));
        }
        if !now.iter().any(|s| t.takes(s)) {
            return Err(LoadError::Usage(match t {
                Target::Port(p) => format!(
                    "port {p}: nothing listens on it here (TCP, this network namespace); `synack-load diagnose` with no argument lists every listener"
                ),
                Target::Addr(a) => format!(
                    "{a}: nothing listens there (TCP, this network namespace); `synack-load diagnose` with no argument lists every listener"
                ),
            }));
        }
    }
    Ok(())
}

/// A listener stays hot this long after it last had anything.
const HOT_FOR: Duration = Duration::from_secs(1);

/// The listeners to read at every interval until the next full reading: those with anything
/// in their queue, full, or dropping at this full reading, or within [`HOT_FOR`] (`hot_for`
/// readings) before it. `None` (read every listener every time) when a hot one is a group of several
/// sockets, which an exact lookup cannot tell apart.
fn hot_listeners(
    now: &[ListeningSocket],
    watched: &[Watched],
    index: &std::collections::HashMap<SocketAddr, usize>,
    until: &mut std::collections::HashMap<SocketAddr, u64>,
    round: u64,
    hot_for: u64,
) -> Option<Vec<SocketAddr>> {
    for s in now {
        let w = index.get(&s.local).map(|&k| &watched[k]);
        let dropping = w.is_some_and(|w| {
            w.members
                .iter()
                .any(|(i, m)| *i == s.inode && m.last_drops != m.first_drops)
        });
        if s.len > 0 || dropping {
            until.insert(s.local, round + hot_for);
        }
    }
    until.retain(|_, u| *u >= round);
    let hot: Vec<SocketAddr> = until.keys().copied().collect();
    let grouped = hot
        .iter()
        .any(|a| index.get(a).is_some_and(|&k| watched[k].members.len() > 1));
    (!grouped).then_some(hot)
}

/// Whether any of `sockets` is IPv4, and any IPv6.
fn families(sockets: &[ListeningSocket]) -> (bool, bool) {
    (
        sockets.iter().any(|s| s.local.is_ipv4()),
        sockets.iter().any(|s| s.local.is_ipv6()),
    )
}

/// Parses `PORT` or `ADDR:PORT` (`[::1]:80`).
///
/// ```
/// use synack_load::diagnose::{Target, parse_target};
///
/// assert_eq!(parse_target("8080"), Ok(Target::Port(8080)));
/// assert!(matches!(parse_target("127.0.0.1:80"), Ok(Target::Addr(_))));
/// assert!(parse_target("eighty").is_err());
/// ```
///
/// # Errors
///
/// A line naming the value and what is accepted.
pub fn parse_target(s: &str) -> Result<Target, String> {
    if let Ok(p) = s.trim().parse::<u16>() {
        if p == 0 {
            return Err("port 0: give the port a server listens on".into());
        }
        return Ok(Target::Port(p));
    }
    s.trim().parse::<SocketAddr>().map(Target::Addr).map_err(|_| {
        format!("{s:?}: expected a port (8080) or an address with its port (127.0.0.1:8080, [::1]:8080)")
    })
}

/// Samples until the duration passes or `stop` is set; `tick` gets the listeners as sampled
/// (for the exporter) each interval.
///
/// # Errors
///
/// [`LoadError::Usage`] for targets nothing listens on; [`LoadError::Run`] when inet_diag or
/// `/proc` cannot be read.
pub fn run(
    spec: &DiagnoseSpec,
    stop: Option<Arc<AtomicBool>>,
    mut tick: impl FnMut(&[ListeningSocket]),
) -> Result<DiagnoseReport, LoadError> {
    let mut diag =
        Diag::new().map_err(|e| LoadError::Run(format!("inet_diag (NETLINK_SOCK_DIAG): {e}")))?;
    // A full reading (every listener, with sk_drops) every FULL_EVERY; in between,
    // only the families that have listeners, without sk_drops: the kernel walks every
    // listener once per family asked.
    // With targets, the kernel itself keeps to their ports (a filter program), so the other
    // listeners of a busy host cost it little.
    let mut ports: Vec<u16> = spec
        .targets
        .iter()
        .map(|t| match t {
            Target::Port(p) => *p,
            Target::Addr(a) => a.port(),
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let read = |diag: &mut Diag, full: bool, v4: bool, v6: bool| {
        if ports.is_empty() {
            diag.listeners_of(v4, v6, full)
        } else {
            diag.listeners_on(&ports, v4, v6, full)
        }
        .map_err(|e| LoadError::Run(format!("inet_diag: {e}")))
    };
    let first = read(&mut diag, true, true, true)?;
    check_targets(&spec.targets, &first)?;
    let wanted =
        |s: &ListeningSocket| spec.targets.is_empty() || spec.targets.iter().any(|t| t.takes(s));
    let mut kmsg = Kmsg::open().ok();
    let kernel_log_readable = kmsg.is_some();
    let sysctls: BTreeMap<String, String> = SYSCTLS
        .iter()
        .filter_map(|n| Some((n.to_string(), synack_sys::sysctl_text(n)?)))
        .collect();
    let t0 = Instant::now();
    let started_at = std::time::SystemTime::now();
    let mut counters_prev = synack_sys::tcp_counters().ok().flatten();
    let mut per_second: Vec<CounterSecond> = Vec::new();
    let mut kernel_log: Vec<KernelLine> = Vec::new();
    let mut watched: Vec<Watched> = Vec::new();
    let mut index: std::collections::HashMap<SocketAddr, usize> = std::collections::HashMap::new();
    let mut inodes: HashSet<u32> = HashSet::new();
    let mut second = 0u64;
    let mut next = t0;
    let mut current = first;
    let mut round = 0u64;
    let mut touched: Vec<usize> = Vec::new();
    // Readings per full one, and full ones per reading of both families (once a second or so).
    let full_every = (FULL_EVERY.as_nanos() / spec.interval.as_nanos().max(1)).max(1) as u64;
    let hot_for = (HOT_FOR.as_nanos() / spec.interval.as_nanos().max(1)).max(1) as u64;
    let (mut has_v4, mut has_v6) = families(&current);
    // The listeners read at every interval: those that had anything in their queue or
    // dropped at a recent full reading. `None`: every listener, every time (a reuseport group
    // is hot, whose sockets an exact lookup cannot tell apart).
    let mut hot: Option<Vec<SocketAddr>> = None;
    let mut hot_until: std::collections::HashMap<SocketAddr, u64> =
        std::collections::HashMap::new();
    loop {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(t0);
        let t_ms = elapsed.as_secs_f64() * 1e3;
        let this_second = elapsed.as_secs();
        if this_second > second {
            // A second ended: the counters' change over it, the kernel's log lines.
            let counters = synack_sys::tcp_counters().ok().flatten();
            if let (Some(a), Some(b)) = (&counters_prev, &counters) {
                per_second.push(CounterSecond::between(second, a, b));
            }
            counters_prev = counters;
            if let Some(k) = kmsg.as_mut() {
                kernel_log.extend(KernelLine::syn_flood(second, k.read_new()));
            }
            for w in &mut watched {
                w.new_second();
            }
            second = this_second;
        }
        for s in current.iter().filter(|s| wanted(s)) {
            let k = *index.entry(s.local).or_insert_with(|| {
                watched.push(Watched {
                    addr: Some(s.local),
                    ..Watched::default()
                });
                watched.len() - 1
            });
            inodes.insert(s.inode);
            if !watched[k].seen {
                touched.push(k);
            }
            watched[k].add(s, second);
        }
        // Only the listeners this reading holds (between full readings, the hot ones).
        for k in touched.drain(..) {
            watched[k].sample(t_ms, second);
        }
        tick(&current);
        let done = spec.duration.is_some_and(|d| elapsed >= d)
            || stop.as_ref().is_some_and(|s| s.load(Relaxed));
        if done {
            break;
        }
        next += spec.interval;
        let wait = next.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            // Behind: sample now, and keep the schedule from here.
            next = Instant::now();
        } else {
            std::thread::sleep(wait);
        }
        round += 1;
        let last = spec
            .duration
            .is_some_and(|d| next.saturating_duration_since(t0) >= d);
        let full = round.is_multiple_of(full_every) || last;
        let both = round.is_multiple_of(full_every * FAMILIES_EVERY) || last;
        current = if full || hot.is_none() {
            if both {
                read(&mut diag, full, true, true)?
            } else {
                read(&mut diag, full, has_v4, has_v6)?
            }
        } else {
            // Between full readings, only the listeners that had something: each by an
            // exact lookup, which costs the kernel nothing like a walk of every listener.
            let mut v = Vec::new();
            for addr in hot.iter().flatten() {
                if let Some(s) = diag
                    .listener_at(*addr, false)
                    .map_err(|e| LoadError::Run(format!("inet_diag: {e}")))?
                {
                    v.push(s);
                }
            }
            v
        };
        if full && both {
            // The families that have listeners, as of this reading of both.
            (has_v4, has_v6) = families(&current);
        }
        if full {
            hot = hot_listeners(&current, &watched, &index, &mut hot_until, round, hot_for);
        }
        // (A reading between full ones holds only the hot listeners: the others' readings
        // are the full ones, every FULL_EVERY.)
    }
    let elapsed = t0.elapsed();
    // The last part second.
    let counters = synack_sys::tcp_counters().ok().flatten();
    if let (Some(a), Some(b)) = (&counters_prev, &counters) {
        per_second.push(CounterSecond::between(second, a, b));
    }
    if let Some(k) = kmsg.as_mut() {
        kernel_log.extend(KernelLine::syn_flood(second, k.read_new()));
    }
    let owners = socket_owners(&inodes).map_err(|e| LoadError::Run(format!("/proc: {e}")))?;
    let root = synack_sys::is_root();
    watched.sort_by_key(|w| w.addr);
    let listeners: Vec<ListenerReport> = watched
        .iter()
        .map(|w| {
            let addr = w.addr.expect("set when watched");
            let mut processes: Vec<Process> = w
                .members
                .iter()
                .flat_map(|(i, _)| owners.by_inode.get(i).cloned().unwrap_or_default())
                .map(|o| Process {
                    pid: o.pid,
                    command: o.command,
                })
                .collect();
            processes.sort_by_key(|p| p.pid);
            processes.dedup();
            let seconds_with_drops: Vec<(u64, u64)> = (0..=second)
                .map(|s| (s, w.drops_in(s)))
                .filter(|(_, d)| *d > 0)
                .collect();
            ListenerReport {
                address: addr.to_string(),
                sockets: w.members.len(),
                members: w
                    .members
                    .iter()
                    .map(|(inode, m)| Member {
                        inode: *inode,
                        backlog: m.backlog,
                        drops: m
                            .first_drops
                            .zip(m.last_drops)
                            .map(|(a, b)| b.saturating_sub(a)),
                    })
                    .collect(),
                effective_backlog: w.backlog,
                samples: w.samples,
                peak_queue: w.peak,
                full_fraction: if w.samples > 0 {
                    w.full as f64 / w.samples as f64
                } else {
                    0.0
                },
                nonempty_fraction: if w.samples > 0 {
                    w.nonempty as f64 / w.samples as f64
                } else {
                    0.0
                },
                depth_histogram: DEPTH_BOUNDS
                    .iter()
                    .zip(w.depth)
                    .filter(|(_, n)| *n > 0)
                    .map(|(b, n)| (*b, n))
                    .collect(),
                drops: w.drops(),
                drops_by_second: seconds_with_drops,
                full_seconds: {
                    let mut v: Vec<u64> = w.full_seconds.iter().copied().collect();
                    v.sort_unstable();
                    v
                },
                uid: w.uid,
                processes,
                series: if w.peak > 0 {
                    w.series.clone()
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    let mut report = DiagnoseReport {
        schema: SCHEMA.into(),
        started_at_unix_s: started_at
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64()),
        duration_s: elapsed.as_secs_f64(),
        interval_ms: spec.interval.as_secs_f64() * 1e3,
        targets: spec
            .targets
            .iter()
            .map(|t| match t {
                Target::Port(p) => p.to_string(),
                Target::Addr(a) => a.to_string(),
            })
            .collect(),
        listeners,
        counters: per_second,
        sysctls,
        kernel_log,
        kernel_log_readable,
        owners_visible: owners.unreadable == 0,
        root,
        attributions: Vec::new(),
        findings: Vec::new(),
    };
    report.attribute();
    report.findings = findings(&report);
    Ok(report)
}
