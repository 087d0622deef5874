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
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use super::{MAX_SAMPLES, QueuePoint, QueueWatch, is_local};

/// Whether a listener bound to `listen` takes connections to `target`.
fn serves(listen: IpAddr, target: IpAddr) -> bool {
    if listen == target || listen.is_unspecified() {
        return true;
    }
    matches!((listen, target), (IpAddr::V6(l), IpAddr::V4(t)) if l.to_ipv4_mapped() == Some(t))
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
    /// (bound to its address or to the wildcard): `(sockets, len, backlog)`.
    pub fn listener_queue(&mut self, target: SocketAddr) -> io::Result<(usize, u32, u32)> {
        let families: &[u8] = if target.is_ipv4() {
            // A dual-stack [::] listener also takes IPv4 connections.
            &[AF_INET, AF_INET6]
        } else {
            &[AF_INET6]
        };
        let (mut n, mut len, mut backlog) = (0, 0, 0);
        for &family in families {
            self.dump(family, |id, rq, wq| {
                let matches =
                    id.source_port == target.port() && serves(id.source_address, target.ip());
                if matches {
                    n += 1;
                    len += rq;
                    backlog += wq;
                }
            })?;
        }
        Ok((n, len, backlog))
    }

    fn dump(&mut self, family: u8, mut each: impl FnMut(&SocketId, u32, u32)) -> io::Result<()> {
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
                extensions: ExtensionFlags::empty(),
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
                        each(
                            &r.header.socket_id,
                            r.header.recv_queue,
                            r.header.send_queue,
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
        let (n, _, _) = diag.listener_queue(target)?;
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
                };
                let mut next = start;
                while !stop2.load(Relaxed) {
                    let (n, len, backlog) = diag.listener_queue(target)?;
                    if n > 0 {
                        w.sockets = n;
                        w.effective_backlog = backlog;
                        w.peak = w.peak.max(len);
                        w.samples += 1;
                        if len >= backlog {
                            w.full_samples += 1;
                        }
                        if w.series.len() < MAX_SAMPLES {
                            w.series.push(QueuePoint {
                                t_ms: start.elapsed().as_secs_f64() * 1e3,
                                len,
                                backlog,
                            });
                        }
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
