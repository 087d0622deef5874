//! Linux: inet_diag over NETLINK_SOCK_DIAG.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use super::{ListenerSample, ListeningSocket};

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
            self.dump(family, |id, inode, rq, wq, drops, v6only| {
                let matches = id.source_port == target.port()
                    && serves(id.source_address, v6only, target.ip());
                if matches {
                    out.sockets += 1;
                    out.len += rq;
                    out.backlog += wq;
                    if let Some(d) = drops {
                        out.drops = Some(out.drops.unwrap_or(0) + u64::from(d));
                        out.socket_drops.push((inode, u64::from(d)));
                    }
                }
            })?;
        }
        Ok(out)
    }

    /// Every TCP listening socket of this network namespace, IPv4 and IPv6.
    pub fn listeners(&mut self) -> io::Result<Vec<ListeningSocket>> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.dump_full(family, |id, uid, inode, rq, wq, drops, v6only| {
                out.push(ListeningSocket {
                    local: SocketAddr::new(id.source_address, id.source_port),
                    inode,
                    uid,
                    len: rq,
                    backlog: wq,
                    drops: drops.map(u64::from),
                    v6only,
                });
            })?;
        }
        Ok(out)
    }

    fn dump(
        &mut self,
        family: u8,
        mut each: impl FnMut(&SocketId, u32, u32, u32, Option<u32>, bool),
    ) -> io::Result<()> {
        self.dump_full(family, |id, _uid, inode, rq, wq, drops, v6only| {
            each(id, inode, rq, wq, drops, v6only)
        })
    }

    #[allow(clippy::type_complexity)]
    fn dump_full(
        &mut self,
        family: u8,
        mut each: impl FnMut(&SocketId, u32, u32, u32, u32, Option<u32>, bool),
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
                            r.header.uid,
                            r.header.inode,
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
