//! The Linux side of the watch: inet_diag over NETLINK_SOCK_DIAG.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use super::{MAX_SAMPLES, QueuePoint, QueueWatch, is_local};

/// Whether a listener bound to `listen` (IPv6-only or not) takes connections to `target`.
fn serves(listen: IpAddr, v6only: bool, target: IpAddr) -> bool {
    if listen == target {
        return true;
    }
    match (listen, target) {
        (IpAddr::V6(l), IpAddr::V4(t)) if !v6only => {
            l.is_unspecified() || l.to_ipv4_mapped() == Some(t)
        }
        (IpAddr::V6(_), IpAddr::V4(_)) => false,
        _ => listen.is_unspecified(),
    }
}

/// One listening socket as inet_diag shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenerSample {
    /// Listening sockets matched.
    pub sockets: usize,
    /// Connections waiting in their accept queues, summed.
    pub len: u32,
    /// Their effective backlogs, summed.
    pub backlog: u32,
    /// Their `sk_drops`, summed: every SYN or final ACK a listener dropped (a full accept
    /// queue among them; the kernel's `tcp_listendrop`), this listener's own count, where the
    /// kernel reports it.
    pub drops: Option<u64>,
}

/// A netlink socket that reads LISTEN sockets.
pub struct Diag {
    sock: netlink_sys::Socket,
    buf: Vec<u8>,
}

impl Diag {
    /// Opens the netlink socket.
    pub fn new() -> io::Result<Self> {
        let mut sock = netlink_sys::Socket::new(NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Diag {
            sock,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The queue of the TCP listeners on `target`'s port that accept connections to `target`
    /// (bound to its address or to the wildcard; a dual-stack `[::]` one unless IPv6-only).
    pub fn listener_queue(&mut self, target: SocketAddr) -> io::Result<ListenerSample> {
        let families: &[u8] = if target.is_ipv4() {
            // A dual-stack [::] listener also takes IPv4 connections.
            &[AF_INET, AF_INET6]
        } else {
            &[AF_INET6]
        };
        let mut out = ListenerSample::default();
        for &family in families {
            self.dump(family, |id, rq, wq, drops, v6only| {
                let matches = id.source_port == target.port()
                    && serves(id.source_address, v6only, target.ip());
                if matches {
                    out.sockets += 1;
                    out.len += rq;
                    out.backlog += wq;
                    if let Some(d) = drops {
                        out.drops = Some(out.drops.unwrap_or(0) + u64::from(d));
                    }
                }
            })?;
        }
        Ok(out)
    }

    fn dump(
        &mut self,
        family: u8,
        mut each: impl FnMut(&SocketId, u32, u32, Option<u32>, bool),
    ) -> io::Result<()> {
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        let mut packet = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::SKMEMINFO,
                states: StateFlags::LISTEN,
                socket_id,
            })
            .into(),
        );
        packet.finalize();
        let mut req = vec![0; packet.buffer_len()];
        packet.serialize(&mut req);
        self.sock.send(&req, 0)?;
        loop {
            let size = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&self.buf[offset..size])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let step = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let drops = r.nlas.iter().find_map(|n| match n {
                            Nla::MemInfo(m) => Some(m.drops),
                            _ => None,
                        });
                        let v6only = r.nlas.iter().any(|n| matches!(n, Nla::SkV6Only(true)));
                        each(
                            &r.header.socket_id,
                            r.header.recv_queue,
                            r.header.send_queue,
                            drops,
                            v6only,
                        );
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(io::Error::other(format!("inet_diag: {e:?}")));
                    }
                    _ => {}
                }
                if step == 0 {
                    return Ok(());
                }
                offset += step;
            }
        }
    }
}

/// A running watch.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<QueueWatch>>,
}

impl Watcher {
    /// Checks the target is on this host and has a listener, then samples it every `interval`.
    pub fn start(target: SocketAddr, interval: Duration) -> io::Result<Self> {
        if !is_local(target.ip()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--watch-listener: {} is not an address of this host; a listener's queue can only be read on its own host",
                    target.ip()
                ),
            ));
        }
        let mut diag = Diag::new()?;
        let first = diag.listener_queue(target)?;
        let n = first.sockets;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("--watch-listener: no TCP listener on {target} in this network namespace"),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("synack-load-watch".into())
            .spawn(move || {
                let start = Instant::now();
                let mut w = QueueWatch {
                    sockets: n,
                    effective_backlog: 0,
                    peak: 0,
                    samples: 0,
                    full_samples: 0,
                    interval_ms: interval.as_secs_f64() * 1e3,
                    series: Vec::new(),
                    drops: None,
                };
                let mut next = start;
                let mut last_drops = first.drops;
                let mut stopping = false;
                loop {
                    // One last sample after the stop, so drops up to the end are counted.
                    if stop2.load(Relaxed) {
                        stopping = true;
                    }
                    let ListenerSample {
                        sockets: n,
                        len,
                        backlog,
                        drops,
                    } = diag.listener_queue(target)?;
                    if n > 0 {
                        w.sockets = n;
                        w.effective_backlog = backlog;
                        w.peak = w.peak.max(len);
                        w.samples += 1;
                        // Linux drops at `len > backlog` (sk_acceptq_is_full): a queue holds
                        // backlog + 1 before it is full.
                        if len > backlog {
                            w.full_samples += 1;
                        }
                        // Per step, so a socket that comes or goes does not count its total.
                        if let (Some(a), Some(b)) = (last_drops, drops) {
                            w.drops = Some(w.drops.unwrap_or(0) + b.saturating_sub(a));
                        }
                        if w.drops.is_none() && drops.is_some() && last_drops.is_none() {
                            w.drops = Some(0);
                        }
                        last_drops = drops;
                        if w.series.len() < MAX_SAMPLES {
                            w.series.push(QueuePoint {
                                t_ms: start.elapsed().as_secs_f64() * 1e3,
                                len,
                                backlog,
                            });
                        }
                    }
                    if stopping {
                        break;
                    }
                    next += interval;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                Ok(w)
            })?;
        Ok(Watcher { stop, thread })
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(self) -> io::Result<QueueWatch> {
        self.stop.store(true, Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the listener watch thread panicked"))?
    }
}
