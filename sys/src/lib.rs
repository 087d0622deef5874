//! # synack-sys: the OS layer of synack and synack-load
//!
//! Everything the two ask of the kernel that `socket2` and `mio` do not cover: `TCP_INFO`,
//! `/proc` counters and sysctls, socket options, errno classes, resource limits, clocks, and
//! (feature `diag`) inet_diag. This crate is the only one of the workspace with
//! `cfg(target_os = ...)` and `unsafe`, each block explained. Linux is implemented in
//! `linux.rs`; other Unixes get the portable fallbacks in `other.rs`, which report "unknown"
//! (`None`, or `Unsupported`) rather than guess.
//!
//! ```
//! // The kernel's cap on listen backlogs here, if it says.
//! let cap: Option<u32> = synack_sys::somaxconn();
//! # let _ = cap;
//! ```

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

mod unix;

pub mod cpu;
#[cfg(feature = "diag")]
pub mod diag;
pub mod errno;
pub mod host;
pub mod inherit;
pub mod process;
pub mod timer;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(not(target_os = "linux"))]
mod other;
#[cfg(not(target_os = "linux"))]
use other as imp;

/// The state of a listening socket's accept queue, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// Connections that finished the handshake and wait for `accept()` (`ss -lnt` Recv-Q).
    pub len: u32,
    /// The effective backlog: the queue's capacity after the kernel's cap (`ss -lnt` Send-Q).
    pub max: u32,
}

/// The fields of `TCP_INFO` that synack reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// The TCP state (`TCP_ESTABLISHED` = 1, `TCP_LISTEN` = 10, ...).
    pub state: u8,
    /// On a listener, the accept-queue length; on a connection, unacknowledged segments.
    pub unacked: u32,
    /// On a listener, the effective backlog; on a connection, SACKed segments.
    pub sacked: u32,
    /// Retransmissions over the connection's life, SYN retransmissions included.
    pub total_retrans: u32,
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// Milliseconds since the last data segment was received (`tcpi_last_data_recv`; jiffies,
    /// so as coarse as the kernel's tick).
    pub last_data_recv_ms: u32,
    /// Milliseconds since the last ACK was received (`tcpi_last_ack_recv`): on a connection
    /// that received nothing else yet, since its SYN-ACK, i.e. since it was established.
    pub last_ack_recv_ms: u32,
    /// Segments sent and received over the connection's life, retransmissions and pure ACKs
    /// included (`tcpi_segs_out`, `tcpi_segs_in`); `None` before Linux 4.2.
    pub segs_out: Option<u32>,
    /// See [`segs_out`](Self::segs_out).
    pub segs_in: Option<u32>,
}

/// `tcpi_state` of an established connection.
pub const TCP_ESTABLISHED: u8 = 1;
/// `tcpi_state` of a connection whose SYN is not answered yet.
pub const TCP_SYN_SENT: u8 = 2;

/// One thread of this process and the CPU time it has used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCpu {
    /// The kernel's thread id.
    pub tid: u32,
    /// The thread's name (Linux keeps the first 15 bytes).
    pub name: String,
    /// User plus system time (Linux: nanoseconds, from `schedstat`).
    pub cpu: std::time::Duration,
    /// User time, in the kernel's clock ticks (`stat`: a tick's worth is charged to whichever
    /// of user or system the thread was in at the tick, so over a second or more this splits
    /// `cpu`; it is not exact).
    pub user: std::time::Duration,
    /// System time, in clock ticks (as `user`): the kernel's work on the thread's behalf,
    /// its syscalls and the network stack run in them.
    pub system: std::time::Duration,
}

/// The CPU time of every thread of this process (Linux: `/proc/self/task/*/schedstat`, in
/// nanoseconds, or `stat`'s clock ticks where there is no schedstat); `Ok(None)` where the OS
/// does not publish it.
pub fn thread_cpu_times() -> io::Result<Option<Vec<ThreadCpu>>> {
    imp::thread_cpu_times()
}

/// The context switches of every thread of process `pid` so far, voluntary and involuntary
/// (Linux: `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of each
/// `/proc/PID/task/*/status`); `Ok(None)` where the OS does not publish them. A thread that
/// exited takes its count with it.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let n = synack_sys::context_switches(std::process::id())?;
/// assert!(n.is_some());
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// Reading `/proc` (`NotFound` when there is no such process).
pub fn context_switches(pid: u32) -> io::Result<Option<u64>> {
    imp::context_switches(pid)
}

/// The IP addresses of this host's interfaces (`getifaddrs`), in this network namespace.
///
/// # Errors
///
/// What `getifaddrs` says.
pub fn local_addresses() -> io::Result<Vec<std::net::IpAddr>> {
    unix::local_addresses()
}

/// Whether `ip` is an address of this host: a loopback address, or one of its interfaces'.
/// Multicast, broadcast and unspecified addresses are not.
///
/// ```
/// assert!(synack_sys::is_local_address("127.0.0.1".parse().unwrap()));
/// assert!(!synack_sys::is_local_address("224.0.0.1".parse().unwrap()));
/// ```
pub fn is_local_address(ip: std::net::IpAddr) -> bool {
    ip.is_loopback() || local_addresses().is_ok_and(|a| is_local_among(ip, &a))
}

/// [`is_local_address`] against addresses already read with [`local_addresses`], for checking
/// many at once.
///
/// ```
/// let here = synack_sys::local_addresses().unwrap_or_default();
/// assert!(synack_sys::is_local_among("127.0.0.2".parse().unwrap(), &here));
/// ```
pub fn is_local_among(ip: std::net::IpAddr, locals: &[std::net::IpAddr]) -> bool {
    ip.is_loopback() || (!ip.is_multicast() && !ip.is_unspecified() && locals.contains(&ip))
}

/// The CPU time the calling thread has used (Linux: `/proc/thread-self/schedstat`, or `stat`'s
/// clock ticks); `Ok(None)` where the OS does not publish it.
pub fn current_thread_cpu() -> io::Result<Option<std::time::Duration>> {
    imp::current_thread_cpu()
}

/// How long the calling thread has waited, runnable, for a CPU (Linux: the second field of
/// `/proc/thread-self/schedstat`, the run queue's delay); `Ok(None)` where the OS does not
/// publish it. A thread that was late though idle, and waited long here, was kept off its CPU
/// by others.
///
/// ```
/// # #[cfg(target_os = "linux")]
/// assert!(synack_sys::current_thread_run_delay()?.is_some());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `/proc/thread-self/schedstat` cannot be read (a kernel without schedstat).
pub fn current_thread_run_delay() -> io::Result<Option<std::time::Duration>> {
    imp::current_thread_run_delay()
}

/// Reads the accept queue of a listening socket (Linux: `TCP_INFO`).
///
/// Returns `Ok(None)` where the operating system does not report it.
pub fn listen_queue(sock: &impl AsFd) -> io::Result<Option<ListenQueue>> {
    Ok(imp::tcp_info(sock.as_fd())?.map(|i| ListenQueue {
        len: i.unacked,
        max: i.sacked,
    }))
}

/// Reads `TCP_INFO` from a TCP socket. `Ok(None)` where the operating system lacks it.
pub fn tcp_info(sock: &impl AsFd) -> io::Result<Option<TcpInfo>> {
    imp::tcp_info(sock.as_fd())
}

/// The kernel's cap on listen backlogs (`net.core.somaxconn` on Linux, read for the current
/// network namespace), or `None` where unknown.
pub fn somaxconn() -> Option<u32> {
    imp::somaxconn()
}

/// Sets `TCP_DEFER_ACCEPT` (seconds): the kernel completes `accept` only when data arrives.
pub fn set_defer_accept(sock: &impl AsFd, secs: u32) -> io::Result<()> {
    imp::set_defer_accept(sock.as_fd(), secs)
}

/// Reads `TCP_DEFER_ACCEPT` back (seconds, as the kernel rounded it).
pub fn defer_accept(sock: &impl AsFd) -> io::Result<u32> {
    imp::defer_accept(sock.as_fd())
}

/// Sets the `TCP_FASTOPEN` queue length on a listener.
pub fn set_fastopen(sock: &impl AsFd, qlen: u32) -> io::Result<()> {
    imp::set_fastopen(sock.as_fd(), qlen)
}

/// Reads the `TCP_FASTOPEN` queue length back.
pub fn fastopen(sock: &impl AsFd) -> io::Result<u32> {
    imp::fastopen(sock.as_fd())
}

/// Accepts one connection, non-blocking and close-on-exec, in one system call where the OS
/// allows (`accept4` on Linux).
///
/// # Errors
///
/// What `accept` says: `WouldBlock` when the queue is empty, `EMFILE`/`ENFILE` when
/// descriptors run out (see [`errno`]).
pub fn accept(sock: &socket2::Socket) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let (conn, addr) = imp::accept(sock)?;
    let addr = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP peer"))?;
    Ok((conn.into(), addr))
}

/// Whether accepted sockets inherit `TCP_NODELAY`, keepalive and buffer sizes from the
/// listener, so that setting them once on the listener is enough (true on Linux).
pub const ACCEPTED_INHERITS_OPTIONS: bool = imp::ACCEPTED_INHERITS_OPTIONS;

/// Registers a listening socket with the current tokio runtime's reactor, for readability.
///
/// # Errors
///
/// The reactor's, if it cannot register the descriptor; outside a runtime, this panics as
/// tokio's `AsyncFd` does.
#[cfg(feature = "tokio")]
pub fn register_listener(
    sock: std::sync::Arc<socket2::Socket>,
) -> io::Result<tokio::io::unix::AsyncFd<std::sync::Arc<socket2::Socket>>> {
    unix::register_listener(sock)
}

/// Adds `fd` to the epoll instance `epfd` for readability, edge-triggered and
/// `EPOLLEXCLUSIVE`, with `data` as the event's data (a `mio::Token`'s value, for a
/// `mio::Poll`).
///
/// Of the exclusive registrations of one socket, the kernel wakes one per event, the first
/// (in the order they were added) whose instance has a thread waiting in `epoll_wait`; when
/// none waits, each instance keeps the event for its next wait. Non-exclusive registrations
/// are always woken.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// use std::os::fd::AsRawFd;
/// // SAFETY: epoll_create1 takes a flag and returns a new descriptor (or -1).
/// let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
/// assert!(epfd >= 0);
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// synack_sys::epoll_add_exclusive(epfd, listener.as_raw_fd(), 7)?;
/// synack_sys::epoll_delete(epfd, listener.as_raw_fd())?;
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `epoll_ctl`'s: `EINVAL` on a kernel before 4.5, `EEXIST` when `fd` is there already;
/// `Unsupported` off Linux.
pub fn epoll_add_exclusive(
    epfd: std::os::fd::RawFd,
    fd: std::os::fd::RawFd,
    data: u64,
) -> io::Result<()> {
    imp::epoll_add_exclusive(epfd, fd, data)
}

/// Removes `fd` from the epoll instance `epfd`.
///
/// # Errors
///
/// `epoll_ctl`'s (`ENOENT` when it is not there); `Unsupported` off Linux.
pub fn epoll_delete(epfd: std::os::fd::RawFd, fd: std::os::fd::RawFd) -> io::Result<()> {
    imp::epoll_delete(epfd, fd)
}

/// Turns the one non-exclusive epoll registration of `fd` in this process (one a library such
/// as tokio made, whose epoll descriptor is not at hand) into an `EPOLLEXCLUSIVE` one, with
/// the same data and the same events (less those `EPOLLEXCLUSIVE` cannot carry, such as
/// `EPOLLRDHUP`, which a listening socket never reports). The registration is found in
/// `/proc/self/fdinfo`; it is removed and added again, so it moves behind the exclusive
/// registrations made before it (see [`epoll_add_exclusive`]).
///
/// Call it before anything else waits on the instance: between the removal and the new
/// addition an event is not delivered (the addition reports a socket that is ready then).
///
/// ```
/// use std::os::fd::AsRawFd;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// // Not watched by any epoll instance: nothing to turn exclusive.
/// assert!(synack_sys::make_registration_exclusive(listener.as_raw_fd()).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `NotFound` when no epoll instance of this process holds a plain registration of `fd` (or
/// `/proc` is not mounted), an error when several do, `epoll_ctl`'s (`EINVAL` before Linux
/// 4.5, where the old registration is put back); `Unsupported` off Linux.
pub fn make_registration_exclusive(fd: std::os::fd::RawFd) -> io::Result<()> {
    imp::make_registration_exclusive(fd)
}

/// The process's open-file limit: `(soft, hard)`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    unix::nofile_limit()
}

/// Sets the process's open-file limit (`RLIMIT_NOFILE`).
pub fn set_nofile_limit(soft: u64, hard: u64) -> io::Result<()> {
    unix::set_nofile_limit(soft, hard)
}

/// The kernel's TCP counters for this network namespace (host-wide, not per socket), from
/// `/proc/net/netstat` and `/proc/net/snmp`, keyed `"TcpExt.ListenOverflows"`,
/// `"Tcp.ActiveOpens"`, ... `Ok(None)` where the OS does not publish them.
pub fn tcp_counters() -> io::Result<Option<BTreeMap<String, u64>>> {
    imp::tcp_counters()
}

/// Reads a numeric sysctl (`"net.core.somaxconn"`) for this network namespace; `None` when
/// the OS or the name is unknown, or the value is not one number.
pub fn sysctl(name: &str) -> Option<i64> {
    sysctl_text(name)?.parse().ok()
}

/// Reads a sysctl as text (`"net.ipv4.ip_local_port_range"` gives `"32768 60999"`), its
/// whitespace folded to single spaces; `None` when the OS or the name is unknown.
pub fn sysctl_text(name: &str) -> Option<String> {
    imp::sysctl_text(name)
}

/// Writes a sysctl (`"net.ipv4.tcp_migrate_req"`, `"1"`) for this network namespace (Linux,
/// `/proc/sys`): root, or `CAP_NET_ADMIN` over the namespace, is needed.
///
/// ```no_run
/// synack_sys::set_sysctl("net.ipv4.tcp_migrate_req", "1")?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `PermissionDenied` without the right, `NotFound` for a name this kernel lacks,
/// `Unsupported` off Linux.
pub fn set_sysctl(name: &str, value: &str) -> io::Result<()> {
    imp::set_sysctl(name, value)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux): a `bind()` to an address with port 0 before
/// `connect()` then picks the port at connect time, per destination, so many source addresses
/// do not each exhaust the ephemeral range.
pub fn set_bind_address_no_port(sock: &impl AsFd) -> io::Result<()> {
    imp::set_bind_address_no_port(sock.as_fd())
}

/// A new TCP socket for `domain`, non-blocking and close-on-exec (one system call on Linux).
pub fn tcp_socket(domain: socket2::Domain) -> io::Result<socket2::Socket> {
    imp::tcp_socket(domain)
}

/// Ends a TCP connection and leaves the socket ready to connect again (Linux:
/// `connect(AF_UNSPEC)`, i.e. `tcp_disconnect`). The peer gets an RST, as from a close with
/// `SO_LINGER` 0; the local port is released (unless it was bound explicitly) and the next
/// `connect` picks a new one; the socket keeps its descriptor, its options and its epoll
/// registration. The pending error the disconnect leaves (`ECONNRESET`) is cleared, so the
/// next connection does not report it. Unsupported elsewhere: close the socket instead.
pub fn disconnect(sock: &impl AsFd) -> io::Result<()> {
    imp::disconnect(sock.as_fd())
}

/// Sends `buf` on a connected TCP socket, telling the kernel more follows (`MSG_MORE` on
/// Linux): what does not fill a whole segment stays queued until a later send without it,
/// [`push`], or the FIN. A close or `shutdown(Write)` then sends the data and the FIN in one
/// segment, where a plain send and a close take two (and the peer's acknowledgement of each).
/// Elsewhere a plain send. Never raises `SIGPIPE` (`MSG_NOSIGNAL`).
///
/// ```
/// use std::io::Read;
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
/// let (server, _) = listener.accept()?;
/// assert_eq!(synack_sys::send_more(&server, b"hello\n")?, 6);
/// drop(server); // the FIN goes with "hello\n"
/// let mut got = String::new();
/// client.read_to_string(&mut got)?;
/// assert_eq!(got, "hello\n");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// What `send` says (`WouldBlock` on a full non-blocking socket, `EPIPE`, `ECONNRESET`).
pub fn send_more(sock: &impl AsFd, buf: &[u8]) -> io::Result<usize> {
    imp::send_more(sock.as_fd(), buf)
}

/// [`send_more`] for several buffers, in one `sendmsg`.
///
/// # Errors
///
/// What `sendmsg` says.
pub fn send_vectored_more(sock: &impl AsFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    imp::send_vectored_more(sock.as_fd(), bufs)
}

/// Sends now what [`send_more`] left queued (Linux: clearing `TCP_CORK`, which pushes the
/// pending frames whether or not the cork was set; nothing stays changed). A no-op elsewhere.
///
/// # Errors
///
/// What `setsockopt` says (`EBADF`, `ENOTSOCK` for a descriptor that is not a TCP socket).
pub fn push(sock: &impl AsFd) -> io::Result<()> {
    imp::push(sock.as_fd())
}

/// Whether [`disconnect`] is supported here (Linux).
pub const CAN_DISCONNECT: bool = imp::CAN_DISCONNECT;

/// Whether a [`disconnect`]ed socket starts its next connection with clean counters: Linux
/// clears `tcpi_total_retrans` and the other per-connection statistics in `tcp_disconnect`
/// only since 5.6, so on older kernels a reused socket's SYN-retransmission count would carry
/// its earlier connections'. False where unknown.
pub fn disconnect_resets_counters() -> bool {
    // Read once: callers ask per connection.
    static RESETS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RESETS.get_or_init(|| imp::kernel_release().is_some_and(|v| v >= (5, 6)))
}

/// CPU time (user + system) the whole process has used, from `getrusage(RUSAGE_SELF)`.
pub fn process_cpu_time() -> io::Result<std::time::Duration> {
    unix::process_cpu_time()
}

/// Pins the calling thread to one CPU (Linux `sched_setaffinity`); threads it starts later
/// inherit the mask. Unsupported elsewhere.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    imp::pin_to_cpu(cpu)
}

/// Puts the calling thread under `SCHED_BATCH` (Linux): the scheduler stops letting wakeups
/// preempt it, which trades a little wakeup latency for fewer context switches.
pub fn set_sched_batch() -> io::Result<()> {
    imp::set_sched_batch()
}

/// Puts the calling thread under `SCHED_IDLE` (Linux): it runs only when nothing else wants
/// the CPU, and any wakeup preempts it. Benchmarks use it to keep a virtual CPU from halting
/// without taking time from the threads they measure.
///
/// ```no_run
/// std::thread::spawn(|| {
///     synack_sys::set_sched_idle().unwrap();
///     // ... only runs on a CPU nothing else wants ...
/// });
/// ```
pub fn set_sched_idle() -> io::Result<()> {
    imp::set_sched_idle()
}

/// The resident set size of this process, bytes (Linux `/proc/self/statm`); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    imp::resident_bytes()
}

/// Whether this process runs as root (effective uid 0): what it may read of other users'
/// processes and of the kernel's log.
pub fn is_root() -> bool {
    unix::is_root()
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock that every process on the host shares.
pub fn monotonic_ns() -> u64 {
    unix::monotonic_ns()
}

/// The kernel's clock tick (`_SC_CLK_TCK`), in which `/proc` counts CPU time.
pub(crate) fn clock_tick() -> u64 {
    imp::clock_tick_hz()
}
