//! Linux: `TCP_INFO`, `/proc/sys`, and the socket options socket2 lacks.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::{SockAddr, Socket};

use super::TcpInfo;

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
    // integers); the kernel filled a prefix of it.
    let info = unsafe { info.assume_init() };
    Ok(Some(TcpInfo {
        state: info.tcpi_state,
        unacked: info.tcpi_unacked,
        sacked: info.tcpi_sacked,
        total_retrans: info.tcpi_total_retrans,
        rtt_us: info.tcpi_rtt,
    }))
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
