//! Portable fallbacks for Unixes other than Linux: what cannot be known is reported as `None`
//! or `Unsupported`, never guessed.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::BorrowedFd;

use socket2::{SockAddr, Socket};

use super::TcpInfo;

pub(super) const CAN_DISCONNECT: bool = false;

pub(super) const ACCEPTED_INHERITS_OPTIONS: bool = false;

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("{what} is Linux-only"))
}

pub(super) fn tcp_info(_fd: BorrowedFd<'_>) -> io::Result<Option<TcpInfo>> {
    Ok(None)
}

pub(super) fn kernel_release() -> Option<(u32, u32)> {
    None
}

pub(super) fn current_thread_cpu() -> io::Result<Option<std::time::Duration>> {
    Ok(None)
}

pub(super) fn current_thread_run_delay() -> io::Result<Option<std::time::Duration>> {
    Ok(None)
}

pub(super) fn context_switches(_pid: u32) -> io::Result<Option<u64>> {
    Ok(None)
}

pub(super) fn thread_cpu_times() -> io::Result<Option<Vec<super::ThreadCpu>>> {
    Ok(None)
}

pub(super) fn somaxconn() -> Option<u32> {
    None
}

pub(super) fn set_defer_accept(_fd: BorrowedFd<'_>, _secs: u32) -> io::Result<()> {
    Err(unsupported("TCP_DEFER_ACCEPT"))
}

pub(super) fn defer_accept(_fd: BorrowedFd<'_>) -> io::Result<u32> {
    Err(unsupported("TCP_DEFER_ACCEPT"))
}

pub(super) fn set_fastopen(_fd: BorrowedFd<'_>, _qlen: u32) -> io::Result<()> {
    Err(unsupported("TCP_FASTOPEN on listeners"))
}

pub(super) fn fastopen(_fd: BorrowedFd<'_>) -> io::Result<u32> {
    Err(unsupported("TCP_FASTOPEN on listeners"))
}

pub(super) fn accept(sock: &Socket) -> io::Result<(Socket, SockAddr)> {
    let (conn, addr) = sock.accept()?;
    conn.set_nonblocking(true)?;
    Ok((conn, addr))
}

pub(super) fn tcp_counters() -> io::Result<Option<BTreeMap<String, u64>>> {
    Ok(None)
}

pub(super) fn sysctl_text(_name: &str) -> Option<String> {
    None
}

pub(super) fn set_sysctl(_name: &str, _value: &str) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

pub(super) fn set_bind_address_no_port(_fd: BorrowedFd<'_>) -> io::Result<()> {
    Err(unsupported("IP_BIND_ADDRESS_NO_PORT"))
}

pub(super) fn tcp_socket(domain: socket2::Domain) -> io::Result<Socket> {
    let s = Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

pub(super) fn disconnect(_fd: BorrowedFd<'_>) -> io::Result<()> {
    Err(unsupported("reusing a TCP socket with connect(AF_UNSPEC)"))
}

pub(super) fn send_more(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(&fd).send(buf)
}

pub(super) fn send_vectored_more(
    fd: BorrowedFd<'_>,
    bufs: &[io::IoSlice<'_>],
) -> io::Result<usize> {
    socket2::SockRef::from(&fd).send_vectored(bufs)
}

pub(super) fn push(_fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(())
}

pub(super) fn pin_to_cpu(_cpu: usize) -> io::Result<()> {
    Err(unsupported("pinning threads to CPUs"))
}

pub(super) fn resident_bytes() -> Option<u64> {
    None
}

pub(super) fn set_sched_batch() -> io::Result<()> {
    Err(unsupported("SCHED_BATCH"))
}

pub(super) fn set_sched_idle() -> io::Result<()> {
    Err(unsupported("SCHED_IDLE"))
}

pub(super) fn epoll_add_exclusive(
    _epfd: std::os::fd::RawFd,
    _fd: std::os::fd::RawFd,
    _data: u64,
) -> io::Result<()> {
    Err(unsupported("epoll"))
}

pub(super) fn epoll_delete(_epfd: std::os::fd::RawFd, _fd: std::os::fd::RawFd) -> io::Result<()> {
    Err(unsupported("epoll"))
}

pub(super) fn make_registration_exclusive(_fd: std::os::fd::RawFd) -> io::Result<()> {
    Err(unsupported("EPOLLEXCLUSIVE"))
}

pub(super) fn clock_tick_hz() -> u64 {
    100
}

pub(super) fn process_tasks(_pid: u32) -> io::Result<Option<Vec<crate::cpu::TaskCpu>>> {
    Ok(None)
}

pub(super) fn set_timer_slack(_slack: std::time::Duration) -> io::Result<()> {
    Err(unsupported("timer slack"))
}

pub(super) fn timerfd_create() -> io::Result<std::os::fd::OwnedFd> {
    Err(unsupported("timerfd"))
}

pub(super) fn timerfd_set_abs(_fd: &std::os::fd::OwnedFd, _ns: u64) -> io::Result<()> {
    Err(unsupported("timerfd"))
}

pub(super) fn timerfd_read(_fd: &std::os::fd::OwnedFd) -> io::Result<bool> {
    Err(unsupported("timerfd"))
}
