//! What `diagnose` reports: every listener watched (its backlog, its queue over the run, its
//! own drops, its processes), the kernel's counters per second, classified, with the drops
//! attributed to a listener where the evidence allows, the sysctls, the kernel's log lines
//! about SYN floods, and findings in plain words. Built without I/O; as a table, JSON (schema
//! [`SCHEMA`]) and an HTML page.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::charts;
use super::html::Page;
use crate::watch::QueuePoint;

/// The diagnose JSON schema identifier.
pub const SCHEMA: &str = "synack-load/diagnose/1";

/// The sysctls that decide what a full queue does, reported as read.
pub const SYSCTLS: [&str; 8] = [
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_synack_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
    "net.ipv4.tcp_migrate_req",
];

/// A process that holds a listener.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Process {
    /// Its pid.
    pub pid: u32,
    /// Its command (`/proc/PID/comm`).
    pub command: String,
}

/// One socket of a listener group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its inode.
    pub inode: u32,
    /// Its effective backlog.
    pub backlog: u32,
    /// SYNs and final ACKs it dropped over the run (its `sk_drops`), where the kernel says.
    pub drops: Option<u64>,
}

/// One listener: the sockets bound to one address (several with SO_REUSEPORT, a group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerReport {
    /// The address, `0.0.0.0:80` or `[::]:80` for the wildcard.
    pub address: String,
    /// Sockets in the group.
    pub sockets: usize,
    /// Each socket.
    pub members: Vec<Member>,
    /// The effective backlog (what the kernel granted, `ss` Send-Q), summed over the group.
    pub effective_backlog: u32,
    /// Readings taken.
    pub samples: u64,
    /// The deepest accept queue read (summed over the group).
    pub peak_queue: u32,
    /// Readings with a socket's queue full: `len > backlog`, as Linux decides.
    pub full_fraction: f64,
    /// Readings with anything waiting.
    pub nonempty_fraction: f64,
    /// `[bound, readings]`: readings with the queue at most `bound` long (and above the
    /// bound before; the last bound 4294967295 is any more), empty buckets left out.
    pub depth_histogram: Vec<(u32, u64)>,
    /// SYNs and final ACKs the group dropped over the run (`sk_drops`: exact, this
    /// listener's own), where the kernel reports it.
    pub drops: Option<u64>,
    /// `[second, drops]` for the seconds it dropped in.
    pub drops_by_second: Vec<(u64, u64)>,
    /// The seconds it was read full in.
    pub full_seconds: Vec<u64>,
    /// The user id owning it.
    pub uid: u32,
    /// The processes holding it (empty when they cannot be seen: see `owners_visible`).
    pub processes: Vec<Process>,
    /// Its queue over the run, for a listener that ever had one (else empty).
    pub series: Vec<QueuePoint>,
}

/// The kernel's counters over one second, classified. Host-wide: every socket of this
/// network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSecond {
    /// Seconds since the start.
    pub second: u64,
    /// Accept queue full: `TcpExt.ListenOverflows`.
    pub accept_queue_overflows: u64,
    /// Other listen drops: `TcpExt.ListenDrops` less the overflows.
    pub other_listen_drops: u64,
    /// SYN queue full: `TcpExt.TCPReqQFullDrop` (dropped) and `TCPReqQFullDoCookies`
    /// (answered with a cookie instead).
    pub syn_queue_full_drops: u64,
    /// See `syn_queue_full_drops`.
    pub syn_queue_full_cookies: u64,
    /// `TcpExt.SyncookiesSent`.
    pub cookies_sent: u64,
    /// `TcpExt.SyncookiesRecv`.
    pub cookies_recv: u64,
    /// `TcpExt.SyncookiesFailed`.
    pub cookies_failed: u64,
}

impl CounterSecond {
    /// The change between two readings of the counters.
    pub fn between(second: u64, a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> Self {
        let d = |k: &str| {
            b.get(k)
                .copied()
                .unwrap_or(0)
                .saturating_sub(a.get(k).copied().unwrap_or(0))
        };
        let overflows = d("TcpExt.ListenOverflows");
        CounterSecond {
            second,
            accept_queue_overflows: overflows,
            other_listen_drops: d("TcpExt.ListenDrops").saturating_sub(overflows),
            syn_queue_full_drops: d("TcpExt.TCPReqQFullDrop"),
            syn_queue_full_cookies: d("TcpExt.TCPReqQFullDoCookies"),
            cookies_sent: d("TcpExt.SyncookiesSent"),
            cookies_recv: d("TcpExt.SyncookiesRecv"),
            cookies_failed: d("TcpExt.SyncookiesFailed"),
        }
    }

    fn any(&self) -> bool {
        self.accept_queue_overflows
            + self.other_listen_drops
            + self.syn_queue_full_drops
            + self.syn_queue_full_cookies
            + self.cookies_sent
            > 0
    }
}

/// A kernel log line about a SYN flood, attached to its port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLine {
    /// The second it was read in.
    pub second: u64,
    /// The port it names.
    pub port: Option<u16>,
    /// The line.
    pub text: String,
}

impl KernelLine {
    /// The lines about SYN floods (`TCP: request_sock_TCP: Possible SYN flooding on port
    /// 8080. Sending cookies.`), with their port.
    ///
    /// ```
    /// use synack_load::report::diagnose::KernelLine;
    ///
    /// let l = KernelLine::syn_flood(3, vec![
    ///     "TCP: request_sock_TCP: Possible SYN flooding on port 127.0.0.1:8080. Sending cookies.".into(),
    ///     "eth0: link up".into(),
    ///     "TCP: request_sock_TCP: Possible SYN flooding on port 9090. Dropping request.".into(),
    /// ]);
    /// assert_eq!((l.len(), l[0].port, l[1].port), (2, Some(8080), Some(9090)));
    /// ```
    pub fn syn_flood(second: u64, lines: Vec<String>) -> Vec<KernelLine> {
        lines
            .into_iter()
            .filter(|l| l.contains("SYN flooding on port"))
            .map(|text| {
                // "on port 8080." or "on port 127.0.0.1:8080." or "on port [::]:8080."
                let port = text
                    .split("on port ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(|w| w.trim_end_matches('.'))
                    .and_then(|w| w.rsplit(':').next())
                    .and_then(|p| p.parse().ok());
                KernelLine { second, port, text }
            })
            .collect()
    }
}

/// Host-wide drops in one second laid at a listener's door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// The second.
    pub second: u64,
    /// The listener.
    pub listener: String,
    /// Listen drops counted host-wide that second.
    pub drops: u64,
    /// "exact": its own `sk_drops` rose by as many; "inferred": it was the only listener
    /// read full (or dropping) that second, so the host's drops are likely its.
    pub how: String,
}

/// One finding, in plain words, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The listener it is about; `None` for the host.
    pub listener: Option<String>,
    /// "problem", "warning" or "info".
    pub severity: String,
    /// The finding and its evidence.
    pub text: String,
}

/// Everything a diagnose run saw. Serialised as its `--json` (schema [`SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagnoseReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// When it began to watch, Unix seconds (absent in reports of versions before it was kept).
    #[serde(default)]
    pub started_at_unix_s: Option<f64>,
    /// How long it watched, seconds.
    pub duration_s: f64,
    /// The sampling interval, milliseconds.
    pub interval_ms: f64,
    /// The ports and addresses asked for (empty: every listener).
    pub targets: Vec<String>,
    /// The listeners watched.
    pub listeners: Vec<ListenerReport>,
    /// The kernel's counters, per second (host-wide).
    pub counters: Vec<CounterSecond>,
    /// [`SYSCTLS`] as read.
    pub sysctls: BTreeMap<String, String>,
    /// The kernel's log lines about SYN floods during the run.
    pub kernel_log: Vec<KernelLine>,
    /// Whether the kernel's log could be read (`/dev/kmsg`: root).
    pub kernel_log_readable: bool,
    /// Whether every process's descriptors could be read, so that every listener's owners
    /// are known (root).
    pub owners_visible: bool,
    /// Whether it ran as root.
    pub root: bool,
    /// Host-wide drops attributed to listeners, per second.
    pub attributions: Vec<Attribution>,
    /// What it found.
    pub findings: Vec<Finding>,
}

impl DiagnoseReport {
    /// Attributes each second's host-wide listen drops: to the listener whose own `sk_drops`
    /// rose by as many ("exact"), else to the only listener read full or dropping that second
    /// ("inferred"); otherwise to none.
    pub fn attribute(&mut self) {
        let mut out = Vec::new();
        for c in &self.counters {
            let host = c.accept_queue_overflows + c.other_listen_drops;
            if host == 0 {
                continue;
            }
            let dropping: Vec<(&ListenerReport, u64)> = self
                .listeners
                .iter()
                .filter_map(|l| {
                    l.drops_by_second
                        .iter()
                        .find(|(s, _)| *s == c.second)
                        .map(|(_, d)| (l, *d))
                })
                .collect();
            let full: Vec<&ListenerReport> = self
                .listeners
                .iter()
                .filter(|l| l.full_seconds.contains(&c.second))
                .collect();
            if let [(l, d)] = dropping[..]
                && d == host
            {
                out.push(Attribution {
                    second: c.second,
                    listener: l.address.clone(),
                    drops: host,
                    how: "exact".into(),
                });
            } else if dropping.len() == 1 || (dropping.is_empty() && full.len() == 1) {
                let l = dropping
                    .first()
                    .map_or(full.first().copied(), |(l, _)| Some(*l));
                if let Some(l) = l {
                    out.push(Attribution {
                        second: c.second,
                        listener: l.address.clone(),
                        drops: host,
                        how: "inferred".into(),
                    });
                }
            }
        }
        self.attributions = out;
    }

    fn sysctl(&self, name: &str) -> Option<u64> {
        self.sysctls.get(name).and_then(|v| v.parse().ok())
    }
}

/// The backlog the observed drops call for: the backlog plus the most the listener dropped
/// in one second (arrivals that found no room), with 25% headroom, to a power of two. An
/// estimate: what did not fit was not seen.
///
/// ```
/// use synack_load::report::diagnose::backlog_for;
///
/// // A backlog of 5 that dropped at most 60 in a second: (5 + 1 + 60) / 0.75 = 88 -> 128.
/// assert_eq!(backlog_for(5, 60), 128);
/// ```
pub fn backlog_for(backlog: u32, worst_second_drops: u64) -> u32 {
    let needed = (u64::from(backlog) + 1 + worst_second_drops) as f64 / 0.75;
    ((needed.ceil() as u64).min(1 << 31) as u32).next_power_of_two()
}

/// What the run shows, per listener and for the host, each with its evidence.
pub fn findings(r: &DiagnoseReport) -> Vec<Finding> {
    let mut out = Vec::new();
    let somaxconn = r.sysctl("net.core.somaxconn");
    let host_overflows: u64 = r.counters.iter().map(|c| c.accept_queue_overflows).sum();
    for l in &r.listeners {
        let who = if l.processes.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = l
                .processes
                .iter()
                .map(|p| format!("{} (pid {})", p.command, p.pid))
                .collect();
            format!(" ({})", names.join(", "))
        };
        let finding = |severity: &str, text: String| Finding {
            listener: Some(l.address.clone()),
            severity: severity.into(),
            text,
        };
        let drops = l.drops.unwrap_or(0);
        if drops > 0 || l.full_fraction > 0.0 {
            let worst = l.drops_by_second.iter().map(|(_, d)| *d).max().unwrap_or(0);
            let want = backlog_for(l.effective_backlog, worst);
            out.push(finding(
                "problem",
                format!(
                    "{}{who}: the accept queue was full in {:.1}% of {} readings (peak {} of backlog {}) and the listener dropped {} SYNs/ACKs (its own sk_drops, exact), at most {} in one second: the backlog is too small for these bursts, or the process accepts too slowly. \
                     A backlog of about {want} would have held the worst second (backlog + its drops, with 25% headroom; an estimate: what did not fit was not seen).{}",
                    l.address,
                    l.full_fraction * 100.0,
                    l.samples,
                    l.peak_queue,
                    l.effective_backlog,
                    drops,
                    worst,
                    match somaxconn {
                        Some(s) if u64::from(want) > s => format!(
                            " It is above net.core.somaxconn = {s}, which caps every backlog: raise that too."
                        ),
                        _ => String::new(),
                    }
                ),
            ));
        } else if l.peak_queue > 0 && l.peak_queue * 2 > l.effective_backlog {
            out.push(finding(
                "warning",
                format!(
                    "{}{who}: the accept queue reached {} of its backlog {} (no drops): little room is left for a burst.",
                    l.address, l.peak_queue, l.effective_backlog
                ),
            ));
        }
        if let Some(s) = somaxconn
            && u64::from(l.effective_backlog) == s * l.sockets as u64
        {
            out.push(finding(
                "warning",
                format!(
                    "{}{who}: its backlog ({}) equals net.core.somaxconn = {s}{}: the backlog the process asked for was probably clamped to it (what it asked cannot be known from outside the process; a synack server reports it).",
                    l.address,
                    l.effective_backlog,
                    if l.sockets > 1 {
                        format!(" per socket ({} sockets)", l.sockets)
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        let lines: Vec<&KernelLine> = r
            .kernel_log
            .iter()
            .filter(|k| {
                k.port.is_some_and(|p| {
                    l.address
                        .rsplit(':')
                        .next()
                        .and_then(|x| x.parse::<u16>().ok())
                        == Some(p)
                })
            })
            .collect();
        if let Some(k) = lines.first() {
            out.push(finding(
                "problem",
                format!(
                    "the kernel logged {} SYN-flood line{} for its port: {:?}",
                    lines.len(),
                    if lines.len() == 1 { "" } else { "s" },
                    k.text
                ),
            ));
        }
    }
    let sum = |f: fn(&CounterSecond) -> u64| r.counters.iter().map(f).sum::<u64>();
    let cookies = sum(|c| c.cookies_sent);
    let qfull = sum(|c| c.syn_queue_full_drops) + sum(|c| c.syn_queue_full_cookies);
    let other = sum(|c| c.other_listen_drops);
    let own: u64 = r.listeners.iter().filter_map(|l| l.drops).sum();
    let host = |severity: &str, text: String| Finding {
        listener: None,
        severity: severity.into(),
        text,
    };
    if cookies > 0 {
        out.push(host(
            "warning",
            format!(
                "the host sent {cookies} SYN cookies (TcpExt.SyncookiesSent, host-wide): a listener's SYN queue overflowed (it is bounded by the listener's backlog and by tcp_max_syn_backlog = {}), and those connections were made without it (no TCP options such as window scaling from their SYNs).",
                r.sysctls
                    .get("net.ipv4.tcp_max_syn_backlog")
                    .map_or("?", String::as_str)
            ),
        ));
    }
    if qfull > 0 {
        out.push(host(
            "problem",
            format!(
                "a SYN queue was full {qfull} times (TcpExt.TCPReqQFullDrop + TCPReqQFullDoCookies, host-wide): half-open connections ran out of room. A listener's SYN queue is bounded by its backlog as well as by tcp_max_syn_backlog, so a small backlog fills both queues."
            ),
        ));
    }
    if other > 0 {
        out.push(host(
            "warning",
            format!(
                "{other} listen drops were not accept-queue overflows (TcpExt.ListenDrops less ListenOverflows, host-wide): drops for other reasons, such as memory or a SYN queue full."
            ),
        ));
    }
    if host_overflows > own && !r.targets.is_empty() {
        out.push(host(
            "info",
            format!(
                "the host counted {host_overflows} accept-queue overflows, {own} of them by the listeners watched: the others were elsewhere on this host."
            ),
        ));
    }
    if !r.owners_visible {
        out.push(host(
            "info",
            "some processes' descriptors could not be read (not root): their listeners show no owner.".into(),
        ));
    }
    if out.is_empty() {
        out.push(host(
            "info",
            format!(
                "no listener was read full and none dropped over {:.1} s ({} readings each): every accept queue watched kept up.",
                r.duration_s,
                r.listeners.iter().map(|l| l.samples).max().unwrap_or(0)
            ),
        ));
    }
    out
}

/// The table: one line per listener, like `ss -lnt` with history, then the findings.
pub fn render(r: &DiagnoseReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "synack-load diagnose: {} listener{} over {:.1} s, read every {:.0} ms (inet_diag; nothing sent){}",
        r.listeners.len(),
        if r.listeners.len() == 1 { "" } else { "s" },
        r.duration_s,
        r.interval_ms,
        if r.root {
            ""
        } else {
            "; not root: other users' processes and the kernel log are not visible"
        }
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  {:<28} {:>7} {:>6} {:>6} {:>7} {:>8} {:>9}  processes",
        "address", "backlog", "now", "peak", "full %", "drops", "sockets"
    );
    for l in &r.listeners {
        let now = l.series.last().map_or(0, |p| p.len);
        let procs: Vec<String> = l
            .processes
            .iter()
            .map(|p| format!("{}/{}", p.command, p.pid))
            .collect();
        let _ = writeln!(
            s,
            "  {:<28} {:>7} {:>6} {:>6} {:>7.1} {:>8} {:>9}  {}",
            l.address,
            l.effective_backlog,
            now,
            l.peak_queue,
            l.full_fraction * 100.0,
            l.drops.map_or_else(|| "?".into(), |d| d.to_string()),
            l.sockets,
            if procs.is_empty() {
                format!("? (uid {})", l.uid)
            } else {
                procs.join(" ")
            }
        );
    }
    let totals = r
        .counters
        .iter()
        .fold(CounterSecond::default(), |mut t, c| {
            t.accept_queue_overflows += c.accept_queue_overflows;
            t.other_listen_drops += c.other_listen_drops;
            t.syn_queue_full_drops += c.syn_queue_full_drops;
            t.syn_queue_full_cookies += c.syn_queue_full_cookies;
            t.cookies_sent += c.cookies_sent;
            t.cookies_recv += c.cookies_recv;
            t.cookies_failed += c.cookies_failed;
            t
        });
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  kernel counters over the run (host-wide): accept queue overflows {}, other listen drops {}, SYN queue full {} dropped + {} cookies, cookies sent {} recv {} failed {}; {} of {} seconds with any",
        totals.accept_queue_overflows,
        totals.other_listen_drops,
        totals.syn_queue_full_drops,
        totals.syn_queue_full_cookies,
        totals.cookies_sent,
        totals.cookies_recv,
        totals.cookies_failed,
        r.counters.iter().filter(|c| c.any()).count(),
        r.counters.len()
    );
    for a in &r.attributions {
        let _ = writeln!(
            s,
            "    second {}: {} listen drops -> {} ({})",
            a.second, a.drops, a.listener, a.how
        );
    }
    let sys: Vec<String> = r
        .sysctls
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={v}",
                k.trim_start_matches("net.ipv4.")
                    .trim_start_matches("net.core.")
            )
        })
        .collect();
    let _ = writeln!(s, "  sysctls: {}", sys.join(" "));
    if !r.kernel_log_readable {
        let _ = writeln!(s, "  kernel log: not readable (/dev/kmsg needs root)");
    }
    let _ = writeln!(s);
    for f in &r.findings {
        let _ = writeln!(s, "  {}: {}", f.severity, f.text);
    }
    s
}

/// `diagnose --report DIR`: the table, and each listener's queue over time against its
/// backlog (the listeners that ever had a queue).
pub fn write_html(dir: &Path, r: &DiagnoseReport) -> std::io::Result<std::path::PathBuf> {
    let title = "synack-load diagnose".to_string();
    let mut page = Page::new(&title);
    page.pre(&render(r));
    for l in r.listeners.iter().filter(|l| !l.series.is_empty()) {
        page.h2(&l.address);
        page.svg(&charts::queue_over_time(
            &format!("{}: accept queue against its backlog", l.address),
            &l.series,
        )?);
    }
    page.write(dir, &title)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(addr: &str, backlog: u32, drops: &[(u64, u64)], full: &[u64]) -> ListenerReport {
        ListenerReport {
            address: addr.into(),
            sockets: 1,
            members: Vec::new(),
            effective_backlog: backlog,
            samples: 100,
            peak_queue: if full.is_empty() { 0 } else { backlog + 1 },
            full_fraction: full.len() as f64 / 100.0,
            nonempty_fraction: 0.0,
            depth_histogram: Vec::new(),
            drops: Some(drops.iter().map(|(_, d)| d).sum()),
            drops_by_second: drops.to_vec(),
            full_seconds: full.to_vec(),
            uid: 0,
            processes: vec![Process {
                pid: 42,
                command: "server".into(),
            }],
            series: Vec::new(),
        }
    }

    fn report(listeners: Vec<ListenerReport>, counters: Vec<CounterSecond>) -> DiagnoseReport {
        DiagnoseReport {
            schema: SCHEMA.into(),
            started_at_unix_s: None,
            duration_s: 3.0,
            interval_ms: 10.0,
            targets: Vec::new(),
            listeners,
            counters,
            sysctls: BTreeMap::from([("net.core.somaxconn".to_string(), "4096".to_string())]),
            kernel_log: Vec::new(),
            kernel_log_readable: true,
            owners_visible: true,
            root: true,
            attributions: Vec::new(),
            findings: Vec::new(),
        }
    }

    fn overflows(second: u64, n: u64) -> CounterSecond {
        CounterSecond {
            second,
            accept_queue_overflows: n,
            ..CounterSecond::default()
        }
    }

    #[test]
    fn drops_go_to_the_listener_whose_own_count_rose_or_to_the_only_one_full() {
        let a = listener("127.0.0.1:80", 5, &[(1, 30)], &[1]);
        let b = listener("127.0.0.1:81", 5, &[], &[2]);
        let c = listener("127.0.0.1:82", 5, &[], &[]);
        let mut r = report(
            vec![a, b, c],
            vec![overflows(0, 0), overflows(1, 30), overflows(2, 7)],
        );
        r.attribute();
        assert_eq!(r.attributions.len(), 2, "{:?}", r.attributions);
        assert_eq!(
            (
                r.attributions[0].listener.as_str(),
                r.attributions[0].how.as_str()
            ),
            ("127.0.0.1:80", "exact")
        );
        assert_eq!(
            (
                r.attributions[1].listener.as_str(),
                r.attributions[1].how.as_str()
            ),
            ("127.0.0.1:81", "inferred")
        );
        // Two listeners full in one second: no attribution.
        let mut r = report(
            vec![
                listener("127.0.0.1:80", 5, &[], &[1]),
                listener("127.0.0.1:81", 5, &[], &[1]),
            ],
            vec![overflows(1, 9)],
        );
        r.attribute();
        assert!(r.attributions.is_empty());
    }

    #[test]
    fn an_overflowing_listener_is_a_problem_with_its_count_and_a_backlog_to_try() {
        let r = report(
            vec![listener("127.0.0.1:80", 5, &[(0, 10), (1, 60)], &[0, 1])],
            vec![overflows(0, 10), overflows(1, 60)],
        );
        let f = findings(&r);
        assert_eq!(f[0].severity, "problem");
        assert!(f[0].text.contains("dropped 70 SYNs/ACKs"), "{}", f[0].text);
        assert!(f[0].text.contains("server (pid 42)"), "{}", f[0].text);
        assert!(
            f[0].text.contains("A backlog of about 128"),
            "{}",
            f[0].text
        );
    }

    #[test]
    fn a_backlog_equal_to_somaxconn_is_called_probably_clamped() {
        let mut r = report(vec![listener("127.0.0.1:80", 64, &[], &[])], Vec::new());
        r.sysctls.insert("net.core.somaxconn".into(), "64".into());
        let f = findings(&r);
        assert!(
            f.iter().any(|f| f.text.contains("probably clamped")),
            "{f:?}"
        );
        // A quiet host says so.
        let r = report(vec![listener("127.0.0.1:80", 128, &[], &[])], Vec::new());
        let f = findings(&r);
        assert_eq!(f.len(), 1);
        assert!(f[0].text.contains("kept up"), "{f:?}");
    }

    #[test]
    fn counters_are_classified() {
        let a = BTreeMap::from([
            ("TcpExt.ListenOverflows".to_string(), 10),
            ("TcpExt.ListenDrops".to_string(), 12),
        ]);
        let b = BTreeMap::from([
            ("TcpExt.ListenOverflows".to_string(), 15),
            ("TcpExt.ListenDrops".to_string(), 20),
            ("TcpExt.SyncookiesSent".to_string(), 3),
        ]);
        let c = CounterSecond::between(4, &a, &b);
        assert_eq!(
            (
                c.accept_queue_overflows,
                c.other_listen_drops,
                c.cookies_sent
            ),
            (5, 3, 3)
        );
    }
}
