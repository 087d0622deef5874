//! Linux: inet_diag over NETLINK_SOCK_DIAG. The requests are written and the replies read
//! in place, by the kernel's layouts (no message is decoded into owned parts): with a
//! thousand listeners read every few milliseconds, the decoding was most of the cost.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use super::{ListenerSample, ListeningSocket};

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;

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
        // A dual-stack [::] listener also takes IPv4 connections.
        let sockets = self.listeners_of(target.is_ipv4(), true, true)?;
        let mut out = ListenerSample::default();
        for s in sockets.iter().filter(|s| {
            s.local.port() == target.port() && serves(s.local.ip(), s.v6only, target.ip())
        }) {
            out.sockets += 1;
            out.len += s.len;
            out.backlog += s.backlog;
            if let Some(d) = s.drops {
                out.drops = Some(out.drops.unwrap_or(0) + d);
                out.socket_drops.push((s.inode, d));
            }
        }
        Ok(out)
    }

    /// Every TCP listening socket of this network namespace, IPv4 and IPv6; with `meminfo`,
    /// each one's `sk_drops` too (the kernel's dearest part of the dump).
    pub fn listeners(&mut self, meminfo: bool) -> io::Result<Vec<ListeningSocket>> {
        self.listeners_of(true, true, meminfo)
    }

    /// As [`Diag::listeners`], for IPv4 and/or IPv6 only (each family is a walk of every
    /// listener by the kernel).
    pub fn listeners_of(
        &mut self,
        v4: bool,
        v6: bool,
        meminfo: bool,
    ) -> io::Result<Vec<ListeningSocket>> {
        self.dump(v4, v6, meminfo, &[])
    }

    /// As [`Diag::listeners_of`], for the listeners on `ports` only (at most 1024): the kernel
    /// runs a filter of our own (`INET_DIAG_REQ_BYTECODE`) on each listener and fills in only
    /// those on the ports, so the other listeners of a busy host cost it little.
    pub fn listeners_on(
        &mut self,
        ports: &[u16],
        v4: bool,
        v6: bool,
        meminfo: bool,
    ) -> io::Result<Vec<ListeningSocket>> {
        let Some(filter) = port_filter(ports) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "inet_diag: a port filter takes 1 to 1024 ports",
            ));
        };
        self.dump(v4, v6, meminfo, &filter)
    }

    /// One dump per family asked, its replies read in place.
    fn dump(
        &mut self,
        v4: bool,
        v6: bool,
        meminfo: bool,
        filter: &[u8],
    ) -> io::Result<Vec<ListeningSocket>> {
        let mut out = Vec::new();
        let families = [(AF_INET, v4), (AF_INET6, v6)];
        for family in families.iter().filter(|(_, on)| *on).map(|(f, _)| *f) {
            self.sock.send(&raw_request(family, meminfo, filter), 0)?;
            loop {
                let size = self.sock.recv(&mut &mut self.buf[..], 0)?;
                if parse_listeners(&self.buf[..size], &mut out)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The listener that takes connections to `local` (an exact lookup, not a dump: the
    /// kernel finds it in its listening hash as it would for a SYN), `None` when there is
    /// none. With SO_REUSEPORT it is one of the group's sockets.
    pub fn listener_at(
        &mut self,
        local: SocketAddr,
        meminfo: bool,
    ) -> io::Result<Option<ListeningSocket>> {
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut req = raw_request(family, meminfo, &[]);
        // Not a dump: one socket, by its address (inet_diag_sockid: sport, then src).
        req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        let id = NLMSG_HDRLEN + 8;
        req[id..id + 2].copy_from_slice(&local.port().to_be_bytes());
        match local.ip() {
            IpAddr::V4(a) => req[id + 4..id + 8].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => req[id + 4..id + 20].copy_from_slice(&a.octets()),
        }
        // No cookie to check (INET_DIAG_NOCOOKIE).
        req[id + 40..id + 48].fill(0xff);
        self.sock.send(&req, 0)?;
        let size = self.sock.recv(&mut &mut self.buf[..], 0)?;
        let mut out = Vec::new();
        match parse_listeners(&self.buf[..size], &mut out) {
            Ok(_) => Ok(out.pop().filter(|s| s.local.port() == local.port())),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// The kernel's layouts (linux/netlink.h, linux/inet_diag.h, linux/sock_diag.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_msg`.
const DIAG_MSG_LEN: usize = 72;
const INET_DIAG_SKMEMINFO: u16 = 7;
const INET_DIAG_SKV6ONLY: u16 = 11;
/// `SK_MEMINFO_DROPS`: the index of `sk_drops` in the `INET_DIAG_SKMEMINFO` array.
const SK_MEMINFO_DROPS: usize = 8;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("inet_diag: {what}"))
}

/// Reads one `recv` of a dump's replies into `out`; true once the dump is done.
fn parse_listeners(buf: &[u8], out: &mut Vec<ListeningSocket>) -> io::Result<bool> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, off).ok_or_else(|| bad("short header"))? as usize;
        let ty = u16_at(buf, off + 4).ok_or_else(|| bad("short header"))?;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(bad("a message longer than its buffer"));
        }
        let body = &buf[off + NLMSG_HDRLEN..off + len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).map_or(0, |e| e as i32);
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY => out.push(parse_msg(body)?),
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Ok(false)
}

/// One `inet_diag_msg` and its attributes.
fn parse_msg(m: &[u8]) -> io::Result<ListeningSocket> {
    if m.len() < DIAG_MSG_LEN {
        return Err(bad("a short inet_diag_msg"));
    }
    let port = u16::from_be_bytes([m[4], m[5]]);
    let ip = match m[0] {
        AF_INET => IpAddr::from(<[u8; 4]>::try_from(&m[8..12]).map_err(|_| bad("address"))?),
        AF_INET6 => IpAddr::from(<[u8; 16]>::try_from(&m[8..24]).map_err(|_| bad("address"))?),
        f => return Err(bad(&format!("family {f}"))),
    };
    let field = |at| u32_at(m, at).ok_or_else(|| bad("a short inet_diag_msg"));
    let mut s = ListeningSocket {
        local: SocketAddr::new(ip, port),
        len: field(56)?,
        backlog: field(60)?,
        uid: field(64)?,
        inode: field(68)?,
        drops: None,
        v6only: false,
    };
    let mut at = DIAG_MSG_LEN;
    while at + 4 <= m.len() {
        let (Some(alen), Some(aty)) = (u16_at(m, at), u16_at(m, at + 2)) else {
            break;
        };
        let alen = alen as usize;
        if alen < 4 || at + alen > m.len() {
            break;
        }
        let data = &m[at + 4..at + alen];
        match aty {
            INET_DIAG_SKMEMINFO => s.drops = u32_at(data, SK_MEMINFO_DROPS * 4).map(u64::from),
            INET_DIAG_SKV6ONLY => s.v6only = data.first().is_some_and(|&v| v != 0),
            _ => {}
        }
        at += (alen + 3) & !3;
    }
    Ok(s)
}

const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_S_EQ: u8 = 11;
/// The most ports a filter takes (its jumps are 16-bit).
pub(super) const MAX_FILTER_PORTS: usize = 1024;
const TCP_LISTEN: u32 = 10;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

/// A filter program (`struct inet_diag_bc_op`s) that takes a socket whose local port is one
/// of `ports`, written as `ss` writes an "or": each test goes on (taken, through a jump to the
/// end) on a match and skips to the next test otherwise; the last test's "no" jumps past the
/// end (not taken). The kernel audits that every jump lands on the chain of "yes" jumps.
/// `None` for no port, or more than [`MAX_FILTER_PORTS`].
fn port_filter(ports: &[u16]) -> Option<Vec<u8>> {
    if ports.is_empty() || ports.len() > MAX_FILTER_PORTS {
        return None;
    }
    let n = ports.len();
    let mut bc = Vec::with_capacity(12 * n);
    for (i, &p) in ports.iter().enumerate() {
        // S_EQ: yes = on (8: to what follows), no = skip it and the jump after (12).
        bc.push(INET_DIAG_BC_S_EQ);
        bc.push(8);
        bc.extend_from_slice(&12u16.to_ne_bytes());
        // The operand: the port, in the next op's `no`.
        bc.extend_from_slice(&[0, 0]);
        bc.extend_from_slice(&p.to_ne_bytes());
        if i + 1 < n {
            // A match jumps over the rest to the end.
            let rest = 8 * (n - 1 - i) + 4 * (n - 2 - i);
            bc.push(INET_DIAG_BC_JMP);
            bc.push(4);
            bc.extend_from_slice(&((rest + 4) as u16).to_ne_bytes());
        }
    }
    Some(bc)
}

/// A dump request for the LISTEN sockets of `family`: `nlmsghdr`, `inet_diag_req_v2`, then
/// the filter program (if any) as an `INET_DIAG_REQ_BYTECODE` attribute.
fn raw_request(family: u8, meminfo: bool, filter: &[u8]) -> Vec<u8> {
    let attr_len = if filter.is_empty() {
        0
    } else {
        4 + filter.len()
    };
    let total = NLMSG_HDRLEN + 56 + ((attr_len + 3) & !3);
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&(total as u32).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&[0; 8]); // seq, pid
    b.push(family);
    b.push(IPPROTO_TCP);
    b.push(if meminfo {
        1 << (INET_DIAG_SKMEMINFO - 1)
    } else {
        0
    });
    b.push(0);
    b.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    b.extend_from_slice(&[0; 48]); // inet_diag_sockid: any
    if !filter.is_empty() {
        b.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        b.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        b.extend_from_slice(filter);
    }
    b.resize(total, 0);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_filter_takes_only_its_ports() {
        let ls: Vec<std::net::TcpListener> = (0..4)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
        let mut d = Diag::new().unwrap();
        let all = d.listeners(false).unwrap();
        assert!(
            ports
                .iter()
                .all(|p| all.iter().any(|s| s.local.port() == *p))
        );
        for want in [&ports[..1], &ports[1..3]] {
            let got = d.listeners_on(want, true, true, true).unwrap();
            let mut seen: Vec<u16> = got.iter().map(|s| s.local.port()).collect();
            seen.sort_unstable();
            let mut want = want.to_vec();
            want.sort_unstable();
            assert_eq!(seen, want);
            assert!(got.iter().all(|s| s.drops.is_some()), "meminfo asked");
        }
        assert!(d.listeners_on(&[], true, true, false).is_err());
    }

    #[test]
    fn a_listener_is_found_by_its_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut d = Diag::new().unwrap();
        let s = d.listener_at(addr, true).unwrap().expect("found");
        assert_eq!(s.local, addr);
        assert!(s.drops.is_some());
        let wild = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let w = wild.local_addr().unwrap();
        assert_eq!(d.listener_at(w, false).unwrap().map(|s| s.local), Some(w));
        drop(l);
        assert_eq!(d.listener_at(addr, false).unwrap(), None);
    }
}
