//! A flood's plan: the target, the load model, the bounds, what each connection does.

use std::net::ToSocketAddrs;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::error::LoadError;
use crate::exchange::{Answer, Exchange, HttpRequest, Payload};
use crate::pacer::{Due, Pacer};

/// How attempts are started.
///
/// ```
/// use std::time::Duration;
/// use synack_load::plan::{Load, PlanBuilder};
///
/// let plan = |load| PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(10)).build();
/// // From 0 to 200 a second over 10 s: 1000 attempts, a mean of 100 a second.
/// let ramp = plan(Load::Open { from: 0.0, to: 200.0, burst: 0 })?;
/// assert_eq!((ramp.planned(), ramp.offered_rate()), (Some(1000), Some(100.0)));
/// // A closed loop has no schedule: attempts start as others end.
/// let closed = plan(Load::Closed { concurrency: 8 })?;
/// assert_eq!((closed.planned(), closed.scheduled(0)), (None, None));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Open loop: attempts start on a fixed schedule, `from` per second rising linearly to
    /// `to` per second over the duration (`from == to` for a constant rate). Latency is also
    /// measured from each attempt's scheduled start (no coordinated omission).
    Open {
        /// Rate at the start, attempts per second.
        from: f64,
        /// Rate at the end, attempts per second.
        to: f64,
        /// Extra attempts started all at once at the start of every second (constant rate only).
        burst: u64,
    },
    /// Closed loop: keep this many attempts in flight.
    Closed {
        /// Attempts in flight.
        concurrency: usize,
    },
}

/// How a connection is closed.
///
/// ```
/// use std::time::Duration;
/// use synack_load::plan::{CloseMode, Load, PlanBuilder};
///
/// let load = Load::Closed { concurrency: 8 };
/// let builder = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(1));
/// assert_eq!(builder.clone().build()?.close, CloseMode::Rst); // the default
/// // A FIN leaves TIME_WAIT on the generator and always takes a new socket.
/// let fin = builder.close(CloseMode::Fin).build()?;
/// assert!(!fin.uses_socket_reuse());
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseMode {
    /// `SO_LINGER` 0: an RST, no `TIME_WAIT` on the generator.
    Rst,
    /// An orderly FIN.
    Fin,
}

/// Everything a flood needs to run, built by [`PlanBuilder::build`].
///
/// ```
/// use std::time::Duration;
/// use synack_load::plan::{Load, PlanBuilder};
///
/// let load = Load::Open { from: 100.0, to: 100.0, burst: 0 };
/// let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(10))
///     .read(Some(18))
///     .build()?;
/// assert_eq!((plan.target.port(), plan.target_text.as_str()), (7878, "127.0.0.1:7878"));
/// assert_eq!(plan.scheduled(50), Some(Duration::from_millis(500)));
/// // The longest an attempt can last: the connect timeout (3 s), then the read timeout (2 s).
/// assert_eq!(plan.attempt_budget(), Duration::from_secs(5));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Plan {
    /// The address as the user wrote it.
    pub target_text: String,
    /// The resolved address.
    pub target: SocketAddr,
    /// Open or closed loop.
    pub load: Load,
    /// Stop starting attempts after this long.
    pub duration: Duration,
    /// Stop after this many attempts.
    pub connections: Option<u64>,
    /// What to write once connected.
    pub payload: Payload,
    /// How to read the answer.
    pub answer: Answer,
    /// The bytes the answer must start with (`--expect`); otherwise the attempt is a
    /// `bad_response`.
    pub expect: Option<Arc<[u8]>>,
    /// How long the send, and then the answer, may each take: an answer with no first byte
    /// by then is unserved.
    pub read_timeout: Duration,
    /// Keep each connection open this long before closing it.
    pub hold: Option<Duration>,
    /// RST or FIN.
    pub close: CloseMode,
    /// With [`CloseMode::Rst`]: end each connection with [`synack_sys::disconnect`] and
    /// keep its socket for a later attempt (no socket(), close() and epoll registration per
    /// connection) where the OS allows it. FIN closes always use a new socket.
    pub reuse_sockets: bool,
    /// Generator threads, each its own event loop.
    pub threads: usize,
    /// Source addresses to spread connections over (empty: the kernel picks).
    pub sources: Vec<IpAddr>,
    /// An attempt not established after this long is a timeout.
    pub connect_timeout: Duration,
    /// Read the synack probe header first and split each connection at the server's accept.
    pub probe: bool,
    /// The most attempts in flight at once, over all threads (each holds a descriptor): past
    /// it, the generator waits for attempts to end before it starts more. Derived from the
    /// open-file limit unless `--max-in-flight` sets it (see [`fd_budget`]).
    pub max_in_flight: usize,
    /// Open loop: a start-lag p99 above this means the generator did not keep the schedule.
    pub lag_limit: Duration,
    /// TLS on every connection (`--tls`): the clients, built once.
    pub tls: Option<Arc<crate::tls::TlsPlan>>,
    /// This generator's part of a run shared by several (`--agents`, `--agent-index`).
    pub agent: Agent,
    /// When the run starts, on the wall clock (`--start-at`); `None`: at once.
    pub start_at: Option<std::time::SystemTime>,
    /// The CPUs the generator threads run on (`--cpus`): thread `i` on the `i`-th, round
    /// the list; `None`: wherever the scheduler puts them.
    pub cpus: Option<Vec<usize>>,
}

/// The CPUs this process may run on (empty where the OS does not say).
pub fn allowed_cpus() -> Vec<usize> {
    synack_sys::cpu::allowed_cpus(std::process::id())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Checks a CPU list given with `flag` against the CPUs this process may run on (`allowed`;
/// empty: not known, nothing checked).
///
/// ```
/// use synack_load::plan::check_cpus;
///
/// assert!(check_cpus("--cpus", &[1], &[0, 1]).is_ok());
/// let e = check_cpus("--cpus", &[7], &[0, 1]).unwrap_err().to_string();
/// assert!(e.contains("--cpus: CPU 7 is not one this process may run on (allowed: 0-1)"), "{e}");
/// ```
///
/// # Errors
///
/// [`LoadError::Usage`] naming the flag, the CPU and the CPUs allowed.
pub fn check_cpus(flag: &str, cpus: &[usize], allowed: &[usize]) -> Result<(), LoadError> {
    match cpus
        .iter()
        .find(|c| !allowed.is_empty() && !allowed.contains(c))
    {
        Some(bad) => Err(LoadError::Usage(format!(
            "{flag}: CPU {bad} is not one this process may run on (allowed: {})",
            synack_sys::cpu::format_list(allowed)
        ))),
        None => Ok(()),
    }
}

/// One agent's part of a run that several generators share: agent `index` of `count` takes
/// attempt `i` of the single-host schedule when `i % count == index`, so the union of every
/// agent's schedule is exactly the single-host one (bursts and `--connections` included; a
/// remainder goes to the lowest indices), and the closed loop's concurrency splits the same
/// way.
///
/// ```
/// use synack_load::plan::Agent;
///
/// let a = Agent { count: 4, index: 1 };
/// assert_eq!(a.share(10), 3); // 10 = 3 + 3 + 2 + 2
/// assert_eq!(Agent { count: 4, index: 3 }.share(10), 2);
/// assert!(a.takes(5) && !a.takes(6));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agent {
    /// How many agents share the run.
    pub count: u64,
    /// This one (0-based).
    pub index: u64,
}

impl Default for Agent {
    fn default() -> Self {
        Agent { count: 1, index: 0 }
    }
}

impl Agent {
    /// This agent's part of `n` things split evenly, the remainder to the lowest indices.
    pub fn share(&self, n: u64) -> u64 {
        n / self.count + u64::from(self.index < n % self.count)
    }

    /// Whether attempt `i` of the single-host schedule is this agent's.
    pub fn takes(&self, i: u64) -> bool {
        i % self.count == self.index
    }
}

/// Descriptors kept back from the open-file limit for everything but attempts: stdio, each
/// thread's epoll, the netlink watch, `/proc` reads, a report file.
pub const FD_RESERVE: u64 = 64;

/// Raises the soft open-file limit to the hard one, once per process; returns a note when it
/// changed. Later calls give the same note without raising again, so whoever reports a run
/// can say so, whoever raised first.
pub fn raise_nofile_limit() -> Option<String> {
    static RAISED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    RAISED
        .get_or_init(|| {
            let (soft, hard) = synack_sys::nofile_limit().ok()?;
            if soft >= hard {
                return None;
            }
            synack_sys::set_nofile_limit(hard, hard).ok()?;
            Some(format!("raised the open-file limit from {soft} to {hard}"))
        })
        .clone()
}

/// How many attempts the open-file limit lets a run hold at once: the limit once raised (see
/// [`raise_nofile_limit`]; where raising fails, the soft one stands) less [`FD_RESERVE`], two
/// per thread, and `other` descriptors the process needs meanwhile (an embedded server's
/// connections). `None` when the limit is unknown.
pub fn fd_budget(threads: usize, other: u64) -> Option<u64> {
    let _ = raise_nofile_limit();
    let (soft, _) = synack_sys::nofile_limit().ok()?;
    Some(soft.saturating_sub(FD_RESERVE + 2 * threads as u64 + other))
}

/// How many connections to one destination the local ports allow at once, per source
/// address (`net.ipv4.ip_local_port_range`, which covers IPv6 too); `None` when unknown.
pub fn port_budget() -> Option<u64> {
    let range = synack_sys::sysctl_text("net.ipv4.ip_local_port_range")?;
    let mut it = range.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

impl Plan {
    /// Whether the engine reuses sockets: asked for, RST closes, and the OS can disconnect
    /// with the connection's counters cleared (so `TCP_INFO` retransmissions stay per
    /// connection: Linux 5.6 and later).
    pub fn uses_socket_reuse(&self) -> bool {
        self.reuse_sockets
            && self.close == CloseMode::Rst
            && synack_sys::CAN_DISCONNECT
            && synack_sys::disconnect_resets_counters()
    }

    /// When attempt `i` (0-based, over all threads) is scheduled, as an offset from the start;
    /// `None` when it falls past the duration or the connection bound. Open loop only.
    pub fn scheduled(&self, i: u64) -> Option<Duration> {
        self.due(i).map(|d| d.at)
    }

    /// The open loop's pacer; `None` for a closed loop.
    pub fn pacer(&self) -> Option<Pacer> {
        match self.load {
            Load::Open { from, to, burst } => Some(Pacer::new(from, to, burst, self.duration)),
            Load::Closed { .. } => None,
        }
    }

    /// Attempt `i`'s place in the schedule (when, and whether in a burst), within
    /// `--connections`; `None` past the end.
    pub fn due(&self, i: u64) -> Option<Due> {
        if self.connections.is_some_and(|n| i >= n) {
            return None;
        }
        self.pacer()?.due(i)
    }

    /// Whether attempt `i` is one of a second's burst (open loop with `burst`).
    pub fn is_burst(&self, i: u64) -> bool {
        self.due(i).is_some_and(|d| d.burst)
    }

    /// How many attempts the schedule holds before `t` from the start (open loop; all of
    /// them for `t` at or past the duration).
    pub fn scheduled_before(&self, t: Duration) -> u64 {
        if !matches!(self.load, Load::Open { .. }) {
            return 0;
        }
        // The schedule is monotonic: the first index scheduled at or past `t` (or past the end).
        let at_or_past = |i: u64| self.scheduled(i).is_none_or(|s| s >= t);
        let mut hi = 1u64;
        while !at_or_past(hi) {
            hi *= 2;
        }
        let mut lo = 0u64;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at_or_past(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// How many attempts the whole schedule holds (open loop), `--connections` included.
    pub fn planned(&self) -> Option<u64> {
        self.planned_total().map(|n| self.agent.share(n))
    }

    /// The attempts of the whole run's schedule (every agent's), open loop.
    pub fn planned_total(&self) -> Option<u64> {
        matches!(self.load, Load::Open { .. }).then(|| self.scheduled_before(Duration::MAX))
    }

    /// The run's id: the same for every agent of one run (derived from the flags they share
    /// and the start time: target, load, duration, connections, agent count, start, what each
    /// connection sends and reads, TLS), so reports of different runs are not merged.
    pub fn run_id(&self) -> String {
        let start = self
            .start_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let text = format!(
            "{}|{:?}|{:?}|{:?}|{}|{start}|{}|{:?}|{:?}|{}",
            self.target_text,
            self.load,
            self.duration,
            self.connections,
            self.agent.count,
            self.payload.len(),
            self.answer,
            self.expect,
            self.tls.is_some()
        );
        // FNV-1a, 64 bits: stable across builds and hosts.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// The first attempt index of generator thread `thread`, and the stride between its
    /// attempts: the threads of this agent take its attempts in turn.
    pub fn thread_indices(&self, thread: usize) -> (u64, u64) {
        (
            self.agent.index + self.agent.count * thread as u64,
            self.agent.count * self.threads as u64,
        )
    }

    /// The mean offered rate over the run (open loop): the attempts the schedule holds over
    /// the duration, so bursts count as often as they really come.
    pub fn offered_rate(&self) -> Option<f64> {
        let d = self.duration.as_secs_f64();
        self.planned()
            .map(|n| if d > 0.0 { n as f64 / d } else { 0.0 })
    }

    /// Whether each connection reads from the server: an answer, `--expect`'s bytes, or the
    /// probe header.
    pub fn reads(&self) -> bool {
        self.answer != Answer::Ignored || self.expect.is_some() || self.probe
    }

    /// Whether sockets are watched for reading: to read, or for a TLS handshake.
    pub fn watches_reads(&self) -> bool {
        self.reads() || self.tls.is_some()
    }

    /// The longest an attempt can last once started: the bound on the run's tail.
    pub fn attempt_budget(&self) -> Duration {
        let mut b = self.connect_timeout;
        if !self.payload.is_empty() {
            b += self.read_timeout;
        }
        if self.reads() {
            b += self.read_timeout;
        }
        b + self.hold.unwrap_or_default()
    }
}

/// The one way to a [`Plan`]: the target, the load and the duration, then what each
/// connection does; [`PlanBuilder::build`] resolves the target and checks it all together
/// against this host (its descriptors, ports and addresses).
///
/// ```no_run
/// use std::time::Duration;
/// use synack_load::plan::{Load, PlanBuilder};
///
/// let plan = PlanBuilder::new("127.0.0.1:8080", Load::Closed { concurrency: 64 }, Duration::from_secs(3))
///     .read(Some(18))
///     .threads(Some(1))
///     .build()?;
/// assert_eq!(plan.threads, 1);
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PlanBuilder {
    target_text: String,
    load: Load,
    duration: Duration,
    connections: Option<u64>,
    /// What each connection says and hears (payload, answer, HTTP, expect, read timeout).
    exchange: Exchange,
    hold: Option<Duration>,
    close: CloseMode,
    reuse_sockets: bool,
    threads: Option<usize>,
    sources: Vec<IpAddr>,
    connect_timeout: Duration,
    probe: bool,
    max_in_flight: Option<u64>,
    lag_limit: Duration,
    other_fds: u64,
    tls: Option<crate::tls::TlsOptions>,
    agent: Agent,
    start_at: Option<std::time::SystemTime>,
    cpus: Option<Vec<usize>>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, v: $ty) -> Self {
                self.$name = v;
                self
            }
        )*
    };
}

impl PlanBuilder {
    /// A plan for `target` (host:port), with the defaults of the command line: nothing sent
    /// or read, RST closes with sockets reused, one thread per core, the kernel's source
    /// address, a 3 s connect timeout, a 2 s read timeout, a 1 ms lag limit.
    pub fn new(target: &str, load: Load, duration: Duration) -> Self {
        PlanBuilder {
            target_text: target.to_string(),
            load,
            duration,
            connections: None,
            exchange: Exchange::default(),
            hold: None,
            close: CloseMode::Rst,
            reuse_sockets: true,
            threads: None,
            sources: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            probe: false,
            max_in_flight: None,
            lag_limit: Duration::from_millis(1),
            other_fds: 0,
            tls: None,
            agent: Agent::default(),
            start_at: None,
            cpus: None,
        }
    }

    setters! {
        /// Stop after this many attempts.
        connections: Option<u64>,
        /// What each connection says and hears, all at once.
        exchange: Exchange,
        /// Keep each connection open this long.
        hold: Option<Duration>,
        /// RST or FIN.
        close: CloseMode,
        /// Reuse sockets after an RST where the OS allows.
        reuse_sockets: bool,
        /// Generator threads (`None`: one per core).
        threads: Option<usize>,
        /// Source addresses to spread connections over.
        sources: Vec<IpAddr>,
        /// An attempt not established after this long is a timeout.
        connect_timeout: Duration,
        /// Read the synack probe header first.
        probe: bool,
        /// The in-flight bound (`None`: what the descriptors and ports allow).
        max_in_flight: Option<u64>,
        /// A start-lag p99 above this means the schedule was not kept.
        lag_limit: Duration,
        /// Descriptors the process needs besides the attempts meanwhile (an embedded server's).
        other_fds: u64,
        /// TLS on every connection, as asked (`None`: plain TCP).
        tls: Option<crate::tls::TlsOptions>,
        /// This generator's part of a run several share.
        agent: Agent,
        /// When the run starts, on the wall clock.
        start_at: Option<std::time::SystemTime>,
        /// The CPUs the generator threads run on (checked against those this process may use).
        cpus: Option<Vec<usize>>,
    }

    /// What to write once connected (not with [`PlanBuilder::http`]).
    pub fn payload(mut self, v: Payload) -> Self {
        self.exchange.payload = v;
        self
    }

    /// How to read the answer (not with [`PlanBuilder::http`]).
    pub fn answer(mut self, v: Answer) -> Self {
        self.exchange.answer = v;
        self
    }

    /// One HTTP/1.1 request per connection, its response read to its end (`Host` is the
    /// target as given).
    pub fn http(mut self, v: Option<HttpRequest>) -> Self {
        self.exchange.http = v;
        self
    }

    /// The bytes every answer must start with; at least that many are read.
    pub fn expect(mut self, v: Option<Vec<u8>>) -> Self {
        self.exchange.expect = v;
        self
    }

    /// How long to wait for the first byte (and for a send).
    pub fn read_timeout(mut self, v: Duration) -> Self {
        self.exchange.read_timeout = v;
        self
    }

    /// `n` filler bytes to send once connected (`--send N`).
    pub fn send(self, n: usize) -> Self {
        self.payload(Payload::Filler(n))
    }

    /// Read `n` bytes, or until the server closes, once connected (`--read N`); `None`: no
    /// answer read.
    pub fn read(self, n: Option<usize>) -> Self {
        self.answer(n.map_or(Answer::Ignored, Answer::Bytes))
    }

    /// Resolves the target and checks the plan against this host.
    ///
    /// # Errors
    ///
    /// [`LoadError::Usage`], naming the flag and the value: an address that does not resolve
    /// or has port 0, source addresses of the other family or not on this host, more threads,
    /// concurrency or in-flight attempts than the descriptor limit and the local ports allow.
    pub fn build(self) -> Result<Plan, LoadError> {
        let addr = self.target_text.as_str();
        let target = resolve(addr)?;
        let x = self.exchange;
        let (payload, answer) = match &x.http {
            Some(_) if !x.payload.is_empty() => {
                return Err(LoadError::Usage(
                    "--http writes its own request: not with --send, --send-text or --send-file"
                        .into(),
                ));
            }
            Some(_) if x.answer != Answer::Ignored => {
                return Err(LoadError::Usage(
                    "--http reads the response to its end: not with --read".into(),
                ));
            }
            Some(r) => (
                Payload::Bytes(r.to_bytes(addr).into()),
                Answer::Http {
                    head_request: r.is_head(),
                },
            ),
            None => (x.payload.clone(), x.answer),
        };
        if x.expect.as_ref().is_some_and(|e| e.is_empty()) {
            return Err(LoadError::Usage(
                "--expect \"\": give the bytes the answer must start with".into(),
            ));
        }
        let threads = match self.threads {
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if threads > 1024 {
            return Err(LoadError::Usage(format!(
                "--threads {threads}: at most 1024 generator threads"
            )));
        }
        // The agent first: the slices below depend on it.
        if self.agent.count == 0 || self.agent.index >= self.agent.count {
            return Err(LoadError::Usage(format!(
                "--agent-index {} of --agents {}: the index runs from 0 to the agent count less one",
                self.agent.index, self.agent.count
            )));
        }
        // Each agent its slice of the source addresses.
        let sources: Vec<IpAddr> = if self.agent.count > 1 && !self.sources.is_empty() {
            let mine: Vec<IpAddr> = self
                .sources
                .iter()
                .enumerate()
                .filter(|(j, _)| self.agent.takes(*j as u64))
                .map(|(_, a)| *a)
                .collect();
            if mine.is_empty() {
                return Err(LoadError::Usage(format!(
                    "--source: {} addresses for {} agents leave agent {} none; give at least one per agent",
                    self.sources.len(),
                    self.agent.count,
                    self.agent.index
                )));
            }
            mine
        } else {
            self.sources
        };

        if let Some(bad) = sources.iter().find(|s| s.is_ipv4() != target.is_ipv4()) {
            return Err(LoadError::Usage(format!(
                "--source {bad}: the source addresses must be of the target's family ({target})"
            )));
        }
        // The host's addresses, read once for every source (a range may hold thousands).
        let locals = synack_sys::local_addresses().unwrap_or_default();
        if let Some(bad) = sources
            .iter()
            .find(|s| !synack_sys::is_local_among(**s, &locals))
        {
            return Err(LoadError::Usage(format!(
                "--source {bad}: not an address of this host; give addresses this host has (such as 127.0.0.2-127.0.0.9)"
            )));
        }
        let fds = fd_budget(threads, self.other_fds);
        // Each source address (or the one the kernel picks) has the ephemeral range of ports
        // towards one destination.
        let ports = port_budget().map(|p| p * sources.len().max(1) as u64);
        let budget = match (fds, ports) {
            (Some(f), Some(p)) => Some(f.min(p)),
            (f, p) => f.or(p),
        };
        let limit_text = || {
            let (_, hard) = synack_sys::nofile_limit().unwrap_or((0, 0));
            format!(
                "the open-file limit (hard {hard}) and the local ports ({} per source) leave room for {} attempts in flight",
                port_budget().unwrap_or(0),
                budget.unwrap_or(0)
            )
        };
        let max_in_flight = match (self.max_in_flight, budget) {
            (Some(m), Some(b)) if m > b => {
                return Err(LoadError::Usage(format!(
                    "--max-in-flight {m}: {}; give at most that, raise the hard limit (ulimit -Hn), or add --source addresses",
                    limit_text()
                )));
            }
            (Some(m), _) => m as usize,
            (None, Some(0)) => {
                return Err(LoadError::Usage(format!(
                    "{}: raise the hard limit (ulimit -Hn)",
                    limit_text()
                )));
            }
            (None, Some(b)) => b as usize,
            (None, None) => 1 << 20,
        };
        if threads > max_in_flight {
            return Err(LoadError::Usage(format!(
                "--threads {threads}: more threads than the {max_in_flight} attempts allowed in flight; give at most {max_in_flight}"
            )));
        }
        if let Load::Closed { concurrency } = self.load
            && concurrency > max_in_flight
        {
            return Err(LoadError::Usage(format!(
                "--concurrency {concurrency}: more than the {max_in_flight} attempts allowed in flight ({}); lower it, raise the hard limit (ulimit -Hn), or add --source addresses",
                if self.max_in_flight.is_some() {
                    "--max-in-flight".to_string()
                } else {
                    limit_text()
                }
            )));
        }
        if let Some(at) = self.start_at
            && at <= std::time::SystemTime::now()
        {
            let ago = std::time::SystemTime::now()
                .duration_since(at)
                .unwrap_or_default();
            return Err(LoadError::Usage(format!(
                "--start-at: that time is already past ({:.1} s ago); give a time to come (RFC 3339 or Unix seconds)",
                ago.as_secs_f64()
            )));
        }
        let tls = match &self.tls {
            Some(o) => {
                let reads = answer != Answer::Ignored || x.expect.is_some() || self.probe;
                if o.resumption != crate::tls::Resumption::Off && !reads {
                    return Err(LoadError::Usage(
                        "--tls-resumption on or a ratio needs the answer read (--read, --expect or --http): \
                         the server's session tickets come after the handshake"
                            .into(),
                    ));
                }
                Some(Arc::new(o.build(host_of(&self.target_text))?))
            }
            None => None,
        };
        if let Some(cpus) = &self.cpus {
            check_cpus("--cpus", cpus, &allowed_cpus())?;
        }
        Ok(Plan {
            tls,
            cpus: self.cpus,
            agent: self.agent,
            start_at: self.start_at,
            max_in_flight,
            lag_limit: self.lag_limit,
            target_text: self.target_text,
            target,
            load: self.load,
            duration: self.duration,
            connections: self.connections,
            payload,
            answer,
            expect: x.expect.map(Into::into),
            read_timeout: x.read_timeout,
            hold: self.hold,
            close: self.close,
            reuse_sockets: self.reuse_sockets,
            threads,
            sources,
            connect_timeout: self.connect_timeout,
            probe: self.probe,
        })
    }
}

/// The host part of `host:port` (`[::1]:443` gives `::1`).
fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Resolves `host:port` to the first address; port 0 and unresolvable names are refused.
pub fn resolve(addr: &str) -> Result<SocketAddr, LoadError> {
    let mut addrs = addr.to_socket_addrs().map_err(|e| {
        LoadError::Usage(format!(
            "ADDR {addr:?}: cannot resolve ({e}); expected host:port such as 127.0.0.1:7878 or [::1]:7878"
        ))
    })?;
    let a = addrs
        .next()
        .ok_or_else(|| LoadError::Usage(format!("ADDR {addr:?}: resolves to no address")))?;
    if a.port() == 0 {
        return Err(LoadError::Usage(format!(
            "ADDR {addr:?}: port 0 cannot be connected to; give the server's port"
        )));
    }
    Ok(a)
}

#[cfg(test)]
impl Plan {
    /// A plan for unit tests, without the host checks of [`PlanBuilder::build`]: one thread,
    /// nothing sent or read, RST closes, a 3 s connect and a 1 s read timeout, 10 s long, at
    /// most 1000 in flight.
    pub(crate) fn for_tests(target: SocketAddr, load: Load) -> Plan {
        Plan {
            target_text: target.to_string(),
            target,
            load,
            duration: Duration::from_secs(10),
            connections: None,
            payload: Payload::Filler(0),
            answer: Answer::Ignored,
            expect: None,
            read_timeout: Duration::from_secs(1),
            hold: None,
            close: CloseMode::Rst,
            reuse_sockets: true,
            threads: 1,
            sources: vec![],
            connect_timeout: Duration::from_secs(3),
            probe: false,
            max_in_flight: 1000,
            lag_limit: Duration::from_millis(1),
            tls: None,
            agent: Agent::default(),
            start_at: None,
            cpus: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_goes_to_exactly_one_agent_and_thread() {
        for (agents, threads) in [(1u64, 1usize), (3, 2), (4, 3), (16, 1)] {
            let mut seen = vec![0u32; 1000];
            for index in 0..agents {
                let mut p = Plan::for_tests(
                    "127.0.0.1:1".parse().unwrap(),
                    Load::Closed { concurrency: 1 },
                );
                p.agent = Agent {
                    count: agents,
                    index,
                };
                p.threads = threads;
                for t in 0..threads {
                    let (first, stride) = p.thread_indices(t);
                    let mut i = first;
                    while i < 1000 {
                        seen[i as usize] += 1;
                        i += stride;
                    }
                }
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "{agents} agents x {threads} threads"
            );
            let shares: u64 = (0..agents)
                .map(|index| {
                    Agent {
                        count: agents,
                        index,
                    }
                    .share(1001)
                })
                .sum();
            assert_eq!(shares, 1001);
        }
    }

    fn plan(load: Load) -> Plan {
        Plan::for_tests("127.0.0.1:1".parse().unwrap(), load)
    }

    #[test]
    fn constant_rate_schedule() {
        let p = plan(Load::Open {
            from: 100.0,
            to: 100.0,
            burst: 0,
        });
        assert_eq!(p.scheduled(0), Some(Duration::ZERO));
        assert_eq!(p.scheduled(50), Some(Duration::from_millis(500)));
        assert_eq!(p.scheduled(999).map(|d| d.as_millis()), Some(9990));
        assert_eq!(p.scheduled(1000), None);
    }

    #[test]
    fn ramp_schedule_covers_the_mean_rate() {
        let p = plan(Load::Open {
            from: 0.0,
            to: 200.0,
            burst: 0,
        });
        // 0 -> 200/s over 10 s: 1000 attempts in all, half of them in the last 2.93 s.
        assert!(p.scheduled(999).is_some());
        assert_eq!(p.scheduled(1000), None);
        let mid = p.scheduled(500).unwrap().as_secs_f64();
        assert!((mid - 7.07).abs() < 0.01, "{mid}");
    }

    #[test]
    fn bursts_start_together_each_second() {
        let p = plan(Load::Open {
            from: 10.0,
            to: 10.0,
            burst: 5,
        });
        for i in 0..5 {
            assert_eq!(p.scheduled(i), Some(Duration::ZERO));
        }
        assert_eq!(p.scheduled(6), Some(Duration::from_millis(100)));
        for i in 15..20 {
            assert_eq!(p.scheduled(i), Some(Duration::from_secs(1)));
        }
        assert_eq!(p.scheduled(150), None);
        assert_eq!(p.offered_rate(), Some(15.0));
        assert!(p.is_burst(0) && p.is_burst(4) && !p.is_burst(5) && p.is_burst(15));
    }

    #[test]
    fn bursts_over_a_part_second_count_in_the_offered_rate() {
        // tune's default step: 1.5 s with bursts: two bursts (at 0 s and 1 s), not 1.5.
        let mut p = plan(Load::Open {
            from: 1000.0,
            to: 1000.0,
            burst: 200,
        });
        p.duration = Duration::from_millis(1500);
        assert_eq!(p.planned(), Some(1500 + 400));
        let r = p.offered_rate().unwrap();
        assert!((r - 1900.0 / 1.5).abs() < 1e-9, "{r}");
    }

    #[test]
    fn fractional_rates_with_bursts_are_kept() {
        // 0.4/s steady plus 2 each second over 10 s: 20 burst attempts and 4 steady ones.
        let p = plan(Load::Open {
            from: 0.4,
            to: 0.4,
            burst: 2,
        });
        assert_eq!(p.planned(), Some(24));
        let times: Vec<f64> = (0..24)
            .map(|i| p.scheduled(i).unwrap().as_secs_f64())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        let steady: Vec<f64> = (0..24)
            .filter(|&i| !p.is_burst(i))
            .map(|i| p.scheduled(i).unwrap().as_secs_f64())
            .collect();
        assert_eq!(steady, vec![0.0, 2.5, 5.0, 7.5]);
        // 1.5/s: no rounding to 2.
        let q = plan(Load::Open {
            from: 1.5,
            to: 1.5,
            burst: 1,
        });
        assert_eq!(q.planned(), Some(10 + 15));
    }

    #[test]
    fn scheduled_before_counts_the_prefix() {
        let p = plan(Load::Open {
            from: 100.0,
            to: 100.0,
            burst: 0,
        });
        assert_eq!(p.scheduled_before(Duration::ZERO), 0);
        assert_eq!(p.scheduled_before(Duration::from_millis(5)), 1);
        assert_eq!(p.scheduled_before(Duration::from_secs(1)), 100);
        assert_eq!(p.planned(), Some(1000));
    }

    #[test]
    fn the_budget_covers_every_phase() {
        let mut p = plan(Load::Closed { concurrency: 1 });
        p.payload = Payload::Filler(10);
        p.answer = Answer::Bytes(1);
        p.hold = Some(Duration::from_secs(5));
        assert_eq!(p.attempt_budget(), Duration::from_secs(3 + 1 + 1 + 5));
    }

    #[test]
    fn connection_bound() {
        let mut p = plan(Load::Open {
            from: 100.0,
            to: 100.0,
            burst: 0,
        });
        p.connections = Some(3);
        assert!(p.scheduled(2).is_some());
        assert_eq!(p.scheduled(3), None);
    }
}
