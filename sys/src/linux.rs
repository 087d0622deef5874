//! Linux: `TCP_INFO`, `/proc/sys`, and the socket options socket2 lacks.

use std::collections::BTreeMap;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use socket2::{SockAddr, Socket};

use super::TcpInfo;

pub(super) const CAN_DISCONNECT: bool = true;

pub(super) const ACCEPTED_INHERITS_OPTIONS: bool = true;

pub(super) fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<Option<TcpInfo>> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a zeroed buffer of `len` bytes that outlives the call, and the kernel
    // writes at most `len` bytes into it; `fd` is a valid descriptor borrowed for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the buffer was zero-initialised, and all-zero is a valid `tcp_info` (plain
    // integers); the kernel filled a prefix of it, `len` bytes.
    let info = unsafe { info.assume_init() };
    // Linux 4.2 and later fill these; the kernel copies as much as it has.
    let has_segs = len as usize >= std::mem::offset_of!(libc::tcp_info, tcpi_segs_in) + 4;
    Ok(Some(TcpInfo {
        segs_out: has_segs.then_some(info.tcpi_segs_out),
        segs_in: has_segs.then_some(info.tcpi_segs_in),
        state: info.tcpi_state,
        unacked: info.tcpi_unacked,
        sacked: info.tcpi_sacked,
        total_retrans: info.tcpi_total_retrans,
        rtt_us: info.tcpi_rtt,
        last_data_recv_ms: info.tcpi_last_data_recv,
        last_ack_recv_ms: info.tcpi_last_ack_recv,
    }))
}

/// The running kernel's `(major, minor)`, from `/proc/sys/kernel/osrelease` ("6.1.0-18-amd64").
pub(super) fn kernel_release() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = text.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn clock_tick() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if tick > 0 { tick as u64 } else { 100 }
}

fn ticks(n: u64, tick: u64) -> std::time::Duration {
    std::time::Duration::from_nanos(n.saturating_mul(1_000_000_000) / tick)
}

/// The first field of `/proc/.../schedstat`: the time the scheduler ran the task, in
/// nanoseconds (`stat`'s utime and stime are sampled at the clock tick, 10 ms here). `None`
/// where the kernel has no schedstat (built without `CONFIG_SCHED_INFO`).
fn schedstat(path: &std::path::Path) -> Option<std::time::Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(std::time::Duration::from_nanos(ns))
}

pub(super) fn current_thread_cpu() -> io::Result<Option<std::time::Duration>> {
    if let Some(cpu) = schedstat(std::path::Path::new("/proc/thread-self/schedstat")) {
        return Ok(Some(cpu));
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    Ok(parse_task_stat(&stat).map(|t| ticks(t.user + t.system, clock_tick())))
}

pub(super) fn current_thread_run_delay() -> io::Result<Option<std::time::Duration>> {
    // schedstat: run time, then the time spent runnable on a run queue, waiting for a CPU.
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .map(std::time::Duration::from_nanos))
}

pub(super) fn context_switches(pid: u32) -> io::Result<Option<u64>> {
    let mut n = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that exits between the listing and the read is left out.
        let Ok(status) = std::fs::read_to_string(entry?.path().join("status")) else {
            continue;
        };
        n += status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(Some(n))
}

/// One thread as `/proc/.../task/TID` tells it.
struct Task {
    tid: u32,
    stat: TaskStat,
    /// schedstat's nanoseconds, or stat's ticks where there is no schedstat.
    cpu: std::time::Duration,
}

/// The threads under `/proc/{of}/task` (`self`, or a pid).
fn tasks(of: &str) -> io::Result<Vec<Task>> {
    let tick = clock_tick();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{of}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may end between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(stat) = parse_task_stat(&stat) {
            let cpu = schedstat(&entry.path().join("schedstat"))
                .unwrap_or(ticks(stat.user + stat.system, tick));
            out.push(Task { tid, stat, cpu });
        }
    }
    Ok(out)
}

pub(super) fn thread_cpu_times() -> io::Result<Option<Vec<super::ThreadCpu>>> {
    let tick = clock_tick();
    Ok(Some(
        tasks("self")?
            .into_iter()
            .map(|t| super::ThreadCpu {
                tid: t.tid,
                cpu: t.cpu,
                user: ticks(t.stat.user, tick),
                system: ticks(t.stat.system, tick),
                name: t.stat.name,
            })
            .collect(),
    ))
}

pub(super) fn process_tasks(pid: u32) -> io::Result<Option<Vec<crate::cpu::TaskCpu>>> {
    Ok(Some(
        tasks(&pid.to_string())?
            .into_iter()
            .map(|t| crate::cpu::TaskCpu {
                tid: t.tid,
                cpu: t.cpu,
                last_cpu: t.stat.last_cpu,
            })
            .collect(),
    ))
}

/// What `/proc/.../stat` says of a thread.
#[derive(Debug, PartialEq, Eq)]
struct TaskStat {
    name: String,
    /// utime and stime, in clock ticks.
    user: u64,
    system: u64,
    /// The CPU it last ran on (`processor`, field 39), where the line goes that far.
    last_cpu: Option<usize>,
}

/// `pid (comm) state ... utime stime ... processor ...`. The name may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_task_stat(stat: &str) -> Option<TaskStat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // After the name, field n is at n - 3: state (3) ... utime (14), stime (15), processor (39).
    let f: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    Some(TaskStat {
        name,
        user: f.get(11)?.parse().ok()?,
        system: f.get(12)?.parse().ok()?,
        last_cpu: f.get(36).and_then(|p| p.parse().ok()),
    })
}

pub(super) fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: u32,
) -> io::Result<()> {
    let value = libc::c_int::try_from(value)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "value exceeds a C int"))?;
    // SAFETY: `value` is a live c_int and we pass its exact size; `fd` is borrowed for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a live c_int and `len` its size; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.max(0) as u32)
}

pub(super) fn set_defer_accept(fd: BorrowedFd<'_>, secs: u32) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, secs)
}

pub(super) fn defer_accept(fd: BorrowedFd<'_>) -> io::Result<u32> {
    get_int(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT)
}

pub(super) fn set_fastopen(fd: BorrowedFd<'_>, qlen: u32) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN, qlen)
}

pub(super) fn fastopen(fd: BorrowedFd<'_>) -> io::Result<u32> {
    get_int(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN)
}

pub(super) fn accept(sock: &Socket) -> io::Result<(Socket, SockAddr)> {
    sock.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
}

pub(super) fn tcp_counters() -> io::Result<Option<BTreeMap<String, u64>>> {
    let mut out = BTreeMap::new();
    for path in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = std::fs::read_to_string(path)?;
        parse_proc_counters(&text, &mut out);
    }
    Ok(Some(out))
}

/// Parses the `Prefix: name name ...` / `Prefix: value value ...` line pairs of
/// `/proc/net/snmp` and `/proc/net/netstat`.
fn parse_proc_counters(text: &str, out: &mut BTreeMap<String, u64>) {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((prefix, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            // Tcp MaxConn is -1 ("dynamic"); counters are unsigned.
            if let Ok(v) = v.parse::<u64>() {
                out.insert(format!("{prefix}.{n}"), v);
            }
        }
    }
}

pub(super) fn sysctl_text(name: &str) -> Option<String> {
    if name.contains("..") || name.contains('/') {
        return None;
    }
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

pub(super) fn set_sysctl(name: &str, value: &str) -> io::Result<()> {
    if name.contains("..") || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a sysctl name: {name}"),
        ));
    }
    std::fs::write(format!("/proc/sys/{}", name.replace('.', "/")), value)
}

pub(super) fn set_bind_address_no_port(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)
}

pub(super) fn tcp_socket(domain: socket2::Domain) -> io::Result<Socket> {
    Socket::new(
        domain,
        socket2::Type::STREAM.nonblocking(),
        Some(socket2::Protocol::TCP),
    )
}

pub(super) fn disconnect(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: all-zero is a valid `sockaddr` (plain integers); with `sa_family` AF_UNSPEC it
    // is the address `connect(2)` documents for dissolving an association.
    let mut unspec: libc::sockaddr = unsafe { std::mem::zeroed() };
    unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: `unspec` is a valid sockaddr of the size passed, alive for the call; `fd` is a
    // valid descriptor borrowed for the call.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &unspec,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // tcp_disconnect leaves ECONNRESET in sk_err: read it away (SO_ERROR clears it).
    socket2::SockRef::from(&fd).take_error()?;
    Ok(())
}

pub(super) fn send_more(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(&fd).send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL)
}

pub(super) fn send_vectored_more(
    fd: BorrowedFd<'_>,
    bufs: &[io::IoSlice<'_>],
) -> io::Result<usize> {
    socket2::SockRef::from(&fd).send_vectored_with_flags(bufs, libc::MSG_MORE | libc::MSG_NOSIGNAL)
}

pub(super) fn push(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket2::SockRef::from(&fd).set_tcp_cork(false)
}

/// A `cpu_set_t` holding `cpus`.
pub(crate) fn cpu_set(cpus: &[usize]) -> io::Result<libc::cpu_set_t> {
    // SAFETY: all-zero is a valid, empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {cpu} is past the most a CPU set holds"),
            ));
        }
        // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET stays inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    Ok(set)
}

pub(super) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let set = cpu_set(&[cpu])?;
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn set_sched_batch() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param read by the call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn set_sched_idle() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param read by the call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stat_line_gives_times_and_the_last_cpu() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 1 0 100 1000 10 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let t = super::parse_task_stat(stat).unwrap();
        assert_eq!((t.user, t.system, t.last_cpu), (7, 3, Some(1)));
    }

    #[test]
    fn parses_a_task_stat_line() {
        let line = "4242 (synack-load-0) R 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1 0 99 0 0";
        let got = |l| super::parse_task_stat(l).map(|t| (t.name, t.user, t.system));
        assert_eq!(got(line), Some(("synack-load-0".to_string(), 250, 31)));
        // A name with a space and a parenthesis.
        let odd = "7 (a b) c) S 1 2 3 4 5 6 7 8 9 10 3 4 0 0";
        assert_eq!(got(odd), Some(("a b) c".to_string(), 3, 4)));
        let me = std::thread::current();
        let all = super::thread_cpu_times().unwrap().unwrap();
        assert!(!all.is_empty(), "{me:?}: no threads listed");
        assert!(super::current_thread_cpu().unwrap().is_some());
        assert!(super::kernel_release().is_some_and(|(major, _)| major >= 2));
    }

    #[test]
    fn parses_proc_counter_pairs() {
        let text =
            "Tcp: RtoAlgorithm MaxConn ActiveOpens\nTcp: 1 -1 42\nUdp: InDatagrams\nUdp: 7\n";
        let mut out = std::collections::BTreeMap::new();
        super::parse_proc_counters(text, &mut out);
        assert_eq!(out.get("Tcp.ActiveOpens"), Some(&42));
        assert_eq!(out.get("Udp.InDatagrams"), Some(&7));
        assert_eq!(out.get("Tcp.MaxConn"), None);
    }

    /// A disconnected socket resets its peer, reports no stale error, and connects again from
    /// a new local port, twice over.
    #[test]
    fn a_disconnected_socket_resets_its_peer_and_connects_again() {
        use std::io::Read;
        use std::net::{SocketAddr, TcpListener};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let mut ports = Vec::new();
        for _ in 0..2 {
            sock.connect(&addr.into()).unwrap();
            let (mut server_side, peer) = listener.accept().unwrap();
            assert_eq!(sock.local_addr().unwrap().as_socket(), Some(peer));
            ports.push(peer.port());
            crate::disconnect(&sock).unwrap();
            assert!(
                sock.take_error().unwrap().is_none(),
                "a stale error was left"
            );
            let mut buf = [0u8; 1];
            let e = server_side.read(&mut buf).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
        assert_ne!(ports[0], ports[1], "the local port was not released");
    }
}

/// The flags `EPOLLEXCLUSIVE` may be combined with (the kernel refuses any other).
const EXCLUSIVE_OK: u32 = (libc::EPOLLIN
    | libc::EPOLLOUT
    | libc::EPOLLERR
    | libc::EPOLLHUP
    | libc::EPOLLWAKEUP
    | libc::EPOLLET) as u32;

fn epoll_ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a valid epoll_event that outlives the call; the kernel checks both
    // descriptors and only reads `ev` (DEL ignores it).
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn epoll_add_exclusive(epfd: RawFd, fd: RawFd, data: u64) -> io::Result<()> {
    let events = (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32;
    epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, events, data)
}

pub(super) fn epoll_delete(epfd: RawFd, fd: RawFd) -> io::Result<()> {
    epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0)
}

/// One registration an epoll instance of this process holds, from `/proc/self/fdinfo`.
struct Registration {
    epfd: RawFd,
    events: u32,
    data: u64,
}

/// Every registration of `fd` in this process's epoll instances (`tfd:` lines of each
/// `anon_inode:[eventpoll]` descriptor's fdinfo).
fn registrations_of(fd: RawFd) -> io::Result<Vec<Registration>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(epfd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // A descriptor closed since the listing (the directory's own, say) is skipped.
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.as_os_str() == "anon_inode:[eventpoll]" => {}
            _ => continue,
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{epfd}")) else {
            continue;
        };
        out.extend(
            parse_epoll_fdinfo(&info, fd).map(|(events, data)| Registration { epfd, events, data }),
        );
    }
    Ok(out)
}

/// The events mask and data of `fd`'s line in an epoll descriptor's fdinfo, as the kernel
/// prints it: `tfd: %8d events: %8x data: %16llx  pos:...`.
fn parse_epoll_fdinfo(info: &str, fd: RawFd) -> Option<(u32, u64)> {
    info.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "tfd:").then_some(())?;
        (words.next()?.parse::<RawFd>().ok()? == fd).then_some(())?;
        (words.next()? == "events:").then_some(())?;
        let events = u32::from_str_radix(words.next()?, 16).ok()?;
        (words.next()? == "data:").then_some(())?;
        let data = u64::from_str_radix(words.next()?, 16).ok()?;
        Some((events, data))
    })
}

pub(super) fn make_registration_exclusive(fd: RawFd) -> io::Result<()> {
    let exclusive = libc::EPOLLEXCLUSIVE as u32;
    let plain = |all: Vec<Registration>| -> Vec<Registration> {
        all.into_iter()
            .filter(|r| r.events & exclusive == 0)
            .collect()
    };
    let found = plain(registrations_of(fd)?);
    let several = |n: usize| {
        io::Error::other(format!(
            "{n} epoll instances of this process watch descriptor {fd}: which one is meant is unknown"
        ))
    };
    let Some(r) = found.first() else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no epoll instance of this process watches descriptor {fd} (or /proc is not mounted)"
            ),
        ));
    };
    // One instance may be open under several descriptors (mio duplicates its epoll descriptor
    // for its registry): each lists the same registration.
    if found
        .iter()
        .any(|o| (o.events, o.data) != (r.events, r.data))
    {
        return Err(several(found.len()));
    }
    epoll_delete(r.epfd, fd)?;
    if found.len() > 1 {
        let left = plain(registrations_of(fd)?);
        if !left.is_empty() {
            epoll_ctl(r.epfd, libc::EPOLL_CTL_ADD, fd, r.events, r.data)?;
            return Err(several(left.len() + 1));
        }
    }
    let events = (r.events & EXCLUSIVE_OK) | exclusive;
    if let Err(e) = epoll_ctl(r.epfd, libc::EPOLL_CTL_ADD, fd, events, r.data) {
        // Put back as it was, so its owner still hears of the descriptor.
        epoll_ctl(r.epfd, libc::EPOLL_CTL_ADD, fd, r.events, r.data)?;
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod epoll_tests {
    use super::*;

    #[test]
    fn fdinfo_lines_are_read_for_the_descriptor_asked() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n\
            tfd:        3 events: 80002019 data:                3  pos:0 ino:298fb29 sdev:9\n\
            tfd:       12 events:       19 data:     7f00deadbeef  pos:0 ino:298fb30 sdev:9\n";
        assert_eq!(parse_epoll_fdinfo(info, 3), Some((0x8000_2019, 3)));
        assert_eq!(parse_epoll_fdinfo(info, 12), Some((0x19, 0x7f00_dead_beef)));
        assert_eq!(parse_epoll_fdinfo(info, 1), None);
    }

    #[test]
    fn a_plain_registration_becomes_exclusive_with_its_data() {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor (or -1).
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epfd >= 0);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        epoll_ctl(epfd, libc::EPOLL_CTL_ADD, l.as_raw_fd(), plain, 0xabc).unwrap();
        // The instance open twice, as mio's registry keeps it: one registration all the same.
        // SAFETY: `epfd` is a descriptor of ours; dup returns a new one (or -1).
        let dup = unsafe { libc::dup(epfd) };
        assert!(dup >= 0);
        make_registration_exclusive(l.as_raw_fd()).unwrap();
        let r = registrations_of(l.as_raw_fd()).unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.data == 0xabc));
        assert_eq!(r[0].data, 0xabc);
        // The kernel always adds EPOLLERR and EPOLLHUP.
        let want = (libc::EPOLLIN
            | libc::EPOLLERR
            | libc::EPOLLHUP
            | libc::EPOLLET
            | libc::EPOLLEXCLUSIVE) as u32;
        assert!(r.iter().all(|r| r.events == want));
        // Already exclusive: nothing left to turn.
        assert!(make_registration_exclusive(l.as_raw_fd()).is_err());
        // SAFETY: both descriptors are ours, each closed once.
        unsafe {
            libc::close(dup);
            libc::close(epfd);
        }
    }
}

pub(super) fn clock_tick_hz() -> u64 {
    clock_tick()
}

pub(super) fn set_timer_slack(slack: std::time::Duration) -> io::Result<()> {
    let ns = (slack.as_nanos() as libc::c_ulong).max(1);
    // SAFETY: PR_SET_TIMERSLACK takes its value as an integer argument; nothing is borrowed.
    if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn timerfd_create() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: timerfd_create takes two integers and returns a new descriptor or -1.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by timerfd_create and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

pub(super) fn timerfd_set_abs(fd: &std::os::fd::OwnedFd, ns: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        },
    };
    // SAFETY: `fd` is a timerfd owned by the caller; `spec` is a valid itimerspec read by the
    // call; the old value is not asked for (null).
    let r = unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn timerfd_read(fd: &std::os::fd::OwnedFd) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut count = 0u64;
    // SAFETY: `count` is 8 writable bytes, what a timerfd read fills; `fd` is a timerfd.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&raw mut count).cast::<libc::c_void>(),
            size_of::<u64>(),
        )
    };
    if n == size_of::<u64>() as isize {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}
