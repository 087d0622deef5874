//! Listeners inherited from the process before this one: a synack [handoff](crate::Handoff)
//! (described in `SYNACK_HANDOFF` and `SYNACK_HANDOFF_LISTENERS`) or systemd socket activation
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, as systemd, `systemfd` and the `listenfd`
//! crate use them). Read once per process, by the first server started; the descriptors are
//! taken through [`synack_sys::inherit::take`], so no two owners can close one.
//!
//! The handoff description, written by [`describe`] and read by [`from_env`]:
//!
//! ```text
//! SYNACK_HANDOFF=1 ppid=4242 generation=3 ready=9 requested_ns=123456789
//! SYNACK_HANDOFF_LISTENERS=3 127.0.0.1:0 127.0.0.1:7878 1024 0 reuse_port;4 ...
//! ```
//!
//! One record per listening socket, in the old process's index order: the descriptor, the
//! address asked for (port 0 included), the bound address, the requested backlog, the
//! `SO_REUSEPORT` member index (`-` for none) and the options (`reuse_port` or `-`).

use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use socket2::Socket;

use crate::error::Error;
use crate::sys;

/// The handoff description's variable.
pub(crate) const HANDOFF_ENV: &str = "SYNACK_HANDOFF";
/// The handoff's listener records.
pub(crate) const LISTENERS_ENV: &str = "SYNACK_HANDOFF_LISTENERS";
/// The first descriptor a handoff (and systemd) passes.
pub(crate) const FIRST_FD: RawFd = 3;

/// What a new process does with inherited `SO_REUSEPORT` members it has no acceptor for (it
/// inherited N members of an address but runs fewer accept loops). Closing a member resets
/// what waits in its queue unless `net.ipv4.tcp_migrate_req` (Linux 5.14, per network
/// namespace) is on, in which case the kernel moves it to a member kept.
/// # Examples
///
/// ```
/// # fn main() -> Result<(), synack::Error> {
/// let builder = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .surplus_members(synack::SurplusMembers::Migrate);
/// assert!(builder.check().is_ok());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum SurplusMembers {
    /// Keep them and accept from them too (spread over the acceptors): nothing is stranded.
    #[default]
    Accept,
    /// Close them when `tcp_migrate_req` is on, turning it on in this network namespace where
    /// permitted (root); where it is off and cannot be set, keep them as with `Accept`, and
    /// say so.
    Migrate,
    /// Close them whatever `tcp_migrate_req` says: without it, what waits in their queues when
    /// the old process lets go of them too is reset (the old process's
    /// [`HandoffReport::reset_at_close`](crate::HandoffReport::reset_at_close) counts it).
    Close,
}

/// Where an inherited listener came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Handoff,
    Systemd,
}

/// One listening socket inherited across `exec`.
#[derive(Debug)]
pub(crate) struct InheritedListener {
    pub sock: Socket,
    pub source: Source,
    /// The address the old process asked for (port 0 included), when known.
    pub asked: Option<SocketAddr>,
    /// The bound address.
    pub addr: SocketAddr,
    /// Its position among the old process's listeners (the handoff's record order).
    pub position: usize,
    /// The `SO_REUSEPORT` member index in the old process, if it was one.
    pub member: Option<usize>,
    /// The socket-activation name (`LISTEN_FDNAMES`), if any.
    pub name: Option<String>,
    /// The backlog the old process asked for (a handoff's), to say when this one differs.
    pub backlog: Option<u32>,
}

/// What a handoff's new process owes the old one.
#[derive(Debug)]
pub(crate) struct HandoffChild {
    /// The old process.
    pub from_pid: u32,
    /// How many handoffs led to this process.
    pub generation: u64,
    /// The pipe to report readiness on.
    pub ready: OwnedFd,
    /// When the old process was asked to hand off (`CLOCK_MONOTONIC`, ns).
    pub requested_ns: u64,
}

/// Everything this process inherited.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    pub listeners: Vec<InheritedListener>,
    pub handoff: Option<HandoffChild>,
}

/// Whether the environment has been read (it is read once per process).
static READ: Mutex<bool> = Mutex::new(false);

/// Reads what this process inherited, once: later calls get nothing. A description that does
/// not parse, or one meant for another process (`LISTEN_PID`, `ppid`), is logged and ignored,
/// so the server binds as usual.
pub(crate) fn from_env() -> Inherited {
    let mut read = READ.lock().unwrap_or_else(|p| p.into_inner());
    if *read {
        return Inherited::default();
    }
    *read = true;
    let mut out = Inherited::default();
    if let Ok(desc) = std::env::var(HANDOFF_ENV) {
        let records = std::env::var(LISTENERS_ENV).unwrap_or_default();
        match parse_handoff(&desc, &records, sys::inherit::parent_pid()) {
            Ok(Some((child, recs))) => {
                out.listeners = take_records(recs);
                out.handoff = Some(child);
            }
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(target: "synack::handoff", %why, "ignoring {HANDOFF_ENV}: binding as usual");
            }
        }
    }
    if out.handoff.is_none()
        && let Ok(n) = std::env::var("LISTEN_FDS")
    {
        let pid = std::env::var("LISTEN_PID").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        match parse_activation(&n, pid.as_deref(), names.as_deref(), std::process::id()) {
            Ok(list) => out.listeners = take_activation(list),
            Err(why) => {
                tracing::warn!(target: "synack::listener", %why, "ignoring LISTEN_FDS: binding as usual")
            }
        }
    }
    out
}

/// A listener record of a handoff description, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub fd: RawFd,
    pub asked: SocketAddr,
    pub addr: SocketAddr,
    pub backlog: u32,
    pub member: Option<usize>,
    pub reuse_port: bool,
}

/// The handoff description for a new process: the two variables' values. `listeners` are
/// `(asked, bound, requested backlog, member, reuse_port)` in index order, passed at
/// descriptors 3, 4, ...; the ready pipe's write end follows them.
pub(crate) fn describe(
    ppid: u32,
    generation: u64,
    requested_ns: u64,
    listeners: &[(SocketAddr, SocketAddr, u32, Option<usize>, bool)],
) -> (String, String, RawFd) {
    let ready = FIRST_FD + listeners.len() as RawFd;
    let desc =
        format!("1 ppid={ppid} generation={generation} ready={ready} requested_ns={requested_ns}");
    let records = listeners
        .iter()
        .enumerate()
        .map(|(i, (asked, addr, backlog, member, reuse_port))| {
            let member = member.map_or_else(|| "-".to_string(), |m| m.to_string());
            let opts = if *reuse_port { "reuse_port" } else { "-" };
            format!(
                "{} {asked} {addr} {backlog} {member} {opts}",
                FIRST_FD + i as RawFd
            )
        })
        .collect::<Vec<_>>()
        .join(";");
    (desc, records, ready)
}

/// Parses a handoff description: `None` when it is meant for another process (its `ppid` is
/// not this process's parent: a grandchild that inherited the environment).
pub(crate) fn parse_handoff(
    desc: &str,
    records: &str,
    my_ppid: u32,
) -> Result<Option<(HandoffChild, Vec<Record>)>, String> {
    let mut words = desc.split_whitespace();
    if words.next() != Some("1") {
        return Err(format!("{desc:?}: not a version 1 description"));
    }
    let (mut ppid, mut generation, mut ready, mut requested_ns) = (None, None, None, None);
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("{w:?}: not key=value"))?;
        let bad = |e: std::num::ParseIntError| format!("{k}={v:?}: {e}");
        match k {
            "ppid" => ppid = Some(v.parse::<u32>().map_err(bad)?),
            "generation" => generation = Some(v.parse::<u64>().map_err(bad)?),
            "ready" => ready = Some(v.parse::<RawFd>().map_err(bad)?),
            "requested_ns" => requested_ns = Some(v.parse::<u64>().map_err(bad)?),
            _ => {} // a later minor addition: ignored
        }
    }
    let ppid = ppid.ok_or("no ppid")?;
    if ppid != my_ppid {
        tracing::debug!(target: "synack::handoff", ppid, my_ppid, "a handoff description for another process: ignored");
        return Ok(None);
    }
    let ready_fd = ready.ok_or("no ready descriptor")?;
    let mut recs = Vec::new();
    for r in records.split(';').filter(|r| !r.trim().is_empty()) {
        recs.push(parse_record(r)?);
    }
    let ready =
        sys::inherit::take(ready_fd).map_err(|e| format!("ready descriptor {ready_fd}: {e}"))?;
    Ok(Some((
        HandoffChild {
            from_pid: ppid,
            generation: generation.unwrap_or(1),
            ready,
            requested_ns: requested_ns.unwrap_or(0),
        },
        recs,
    )))
}

fn parse_record(r: &str) -> Result<Record, String> {
    let f: Vec<&str> = r.split_whitespace().collect();
    let [fd, asked, addr, backlog, member, opts] = f[..] else {
        return Err(format!("listener record {r:?}: 6 fields expected"));
    };
    let bad = |what: &str| format!("listener record {r:?}: bad {what}");
    Ok(Record {
        fd: fd.parse().map_err(|_| bad("descriptor"))?,
        asked: asked.parse().map_err(|_| bad("asked address"))?,
        addr: addr.parse().map_err(|_| bad("address"))?,
        backlog: backlog.parse().map_err(|_| bad("backlog"))?,
        member: match member {
            "-" => None,
            m => Some(m.parse().map_err(|_| bad("member"))?),
        },
        reuse_port: opts.split(',').any(|o| o == "reuse_port"),
    })
}

/// Takes each record's descriptor; one that cannot be taken or is not a bound stream socket
/// is logged and left out (its address is then bound as usual).
fn take_records(recs: Vec<Record>) -> Vec<InheritedListener> {
    let mut out = Vec::new();
    for (position, r) in recs.into_iter().enumerate() {
        match sys::inherit::take(r.fd).map(Socket::from) {
            Ok(sock) => out.push(InheritedListener {
                sock,
                source: Source::Handoff,
                asked: Some(r.asked),
                addr: r.addr,
                position,
                member: r.member,
                name: None,
                backlog: Some(r.backlog),
            }),
            Err(e) => {
                tracing::warn!(target: "synack::handoff", fd = r.fd, addr = %r.addr, error = %e, "cannot take an inherited listener")
            }
        }
    }
    out
}

/// Parses socket activation's variables: the descriptors 3 .. 3+n with their names. A
/// `LISTEN_PID` naming another process means the variables are not for this one (nothing is
/// taken); one left out is accepted (as `systemfd` and the `listenfd` crate do).
pub(crate) fn parse_activation(
    n: &str,
    pid: Option<&str>,
    names: Option<&str>,
    my_pid: u32,
) -> Result<Vec<(RawFd, Option<String>)>, String> {
    if let Some(pid) = pid {
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| format!("LISTEN_PID={pid:?}: not a process id"))?;
        if pid != my_pid {
            tracing::debug!(target: "synack::listener", listen_pid = pid, "LISTEN_FDS is for another process: ignored");
            return Ok(Vec::new());
        }
    }
    let n: RawFd = n
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=4096).contains(n))
        .ok_or_else(|| format!("LISTEN_FDS={n:?}: not a count from 0 to 4096"))?;
    let names: Vec<Option<String>> = match names {
        Some(s) if !s.is_empty() => s
            .split(':')
            .map(|x| (!x.is_empty()).then(|| x.to_string()))
            .collect(),
        _ => Vec::new(),
    };
    Ok((0..n)
        .map(|i| (FIRST_FD + i, names.get(i as usize).cloned().flatten()))
        .collect())
}

fn take_activation(list: Vec<(RawFd, Option<String>)>) -> Vec<InheritedListener> {
    let mut out = Vec::new();
    for (position, (fd, name)) in list.into_iter().enumerate() {
        let sock = match sys::inherit::take(fd) {
            Ok(fd) => Socket::from(fd),
            Err(e) => {
                tracing::warn!(target: "synack::listener", fd, error = %e, "cannot take a socket-activation descriptor");
                continue;
            }
        };
        let addr = sock.local_addr().ok().and_then(|a| a.as_socket());
        let stream = sock.r#type().ok() == Some(socket2::Type::STREAM);
        match addr {
            Some(addr) if stream => out.push(InheritedListener {
                sock,
                source: Source::Systemd,
                asked: None,
                addr,
                position,
                member: None,
                name,
                backlog: None,
            }),
            _ => {
                // Not ours to serve (a UNIX or datagram socket): kept open, untouched, so
                // that whoever else in this process wants it is not robbed.
                tracing::info!(target: "synack::listener", fd, name = ?name, "socket-activation descriptor is not a TCP stream socket: left alone");
                std::mem::forget(sock);
            }
        }
    }
    out
}

impl Inherited {
    /// Takes the inherited listeners meant for `asked` (a bind address): with port 0, those
    /// asked with the same address and port 0 in the old process; otherwise those bound to
    /// it. Several are the members of one `SO_REUSEPORT` group, in member order.
    pub(crate) fn take_for(&mut self, asked: SocketAddr) -> Vec<InheritedListener> {
        let matches = |l: &InheritedListener| {
            if asked.port() == 0 {
                l.asked == Some(asked)
            } else {
                l.addr == asked || l.asked == Some(asked)
            }
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.listeners.len() {
            if matches(&self.listeners[i]) {
                out.push(self.listeners.remove(i));
            } else {
                i += 1;
            }
        }
        out.sort_by_key(|l| (l.member, l.position));
        out
    }
}

/// What a process started by a handoff inherited: [`Server::inheritance`](crate::Server::inheritance).
/// # Examples
///
/// ```
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// match server.inheritance() {
///     Some(i) => println!("handoff {} from pid {}", i.generation, i.from_pid),
///     None => println!("a fresh start"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inheritance {
    /// The old process.
    pub from_pid: u32,
    /// How many handoffs led to this process (1 for the first).
    pub generation: u64,
    /// From the old process's request to this process's `ready`, on the host's monotonic
    /// clock (`None` when not known).
    pub requested_to_ready: Option<Duration>,
    /// Inherited sockets this process did not keep.
    pub let_go: usize,
}

/// The new process's side: tells the old one it serves, with the inherited sockets (by the
/// old process's index) it let go.
pub(crate) fn report_ready(h: HandoffChild, let_go: &[usize]) -> Inheritance {
    let list = let_go
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let line = format!("ready pid={} let_go={list}\n", std::process::id());
    if let Err(e) = sys::inherit::write_all(&h.ready, line.as_bytes()) {
        tracing::error!(target: "synack::handoff", error = %e, from_pid = h.from_pid,
            "cannot tell the old process this one is ready (it may have given up): serving anyway");
    }
    let now = sys::monotonic_ns();
    let requested_to_ready = (h.requested_ns > 0 && now >= h.requested_ns)
        .then(|| Duration::from_nanos(now - h.requested_ns));
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!("synack_handoff_generation").set(h.generation as f64);
        if let Some(d) = requested_to_ready {
            metrics::gauge!("synack_handoff_ready_seconds").set(d.as_secs_f64());
        }
    }
    tracing::info!(target: "synack::handoff", from_pid = h.from_pid, generation = h.generation,
        requested_to_ready_ms = ?requested_to_ready.map(|d| d.as_secs_f64() * 1e3),
        let_go = let_go.len(), "serving the inherited listeners; told the old process");
    Inheritance {
        from_pid: h.from_pid,
        generation: h.generation,
        requested_to_ready,
        let_go: let_go.len(),
    }
}

/// The new process's side when it cannot start: tells the old one why (it keeps serving).
pub(crate) fn report_failure(h: HandoffChild, e: &Error) {
    let line = format!("failed: {}\n", e.to_string().replace('\n', " "));
    let _ = sys::inherit::write_all(&h.ready, line.as_bytes());
    tracing::error!(target: "synack::handoff", from_pid = h.from_pid, error = %e,
        "cannot start on the inherited listeners; the old process keeps serving");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_reads_back() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let (desc, recs, ready) = describe(
            77,
            2,
            5,
            &[(a, b, 1024, Some(0), true), (a, b, 1024, Some(1), true)],
        );
        assert_eq!(ready, 5);
        assert!(desc.contains("ppid=77"));
        let parsed: Vec<Record> = recs.split(';').map(|r| parse_record(r).unwrap()).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].fd, 4);
        assert_eq!(parsed[1].member, Some(1));
        assert_eq!(parsed[0].asked, a);
        assert!(parsed[0].reuse_port);
        // Meant for a process whose parent is another: ignored, nothing taken.
        assert!(parse_handoff(&desc, &recs, 78).unwrap().is_none());
        assert!(parse_handoff("2 ppid=1", "", 1).is_err());
        assert!(parse_record("3 127.0.0.1:0 nonsense 1 - -").is_err());
    }

    #[test]
    fn activation_variables() {
        let l = parse_activation("2", None, Some("http:admin"), 10).unwrap();
        assert_eq!(l, vec![(3, Some("http".into())), (4, Some("admin".into()))]);
        assert!(
            parse_activation("2", Some("11"), None, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            parse_activation("1", Some("10"), None, 10).unwrap(),
            vec![(3, None)]
        );
        assert!(parse_activation("x", None, None, 10).is_err());
        assert!(parse_activation("1", Some("pid"), None, 10).is_err());
    }
}
