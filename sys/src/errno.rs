//! Classes of errno values, where the constants differ between systems.

/// Whether an `accept` errno is a network or protocol error of the connection being accepted
/// (`accept(2)`: "Linux passes already-pending network errors on the new socket as an error
/// code from accept()"): skip that connection and go on.
///
/// ```
/// assert!(synack_sys::errno::is_pending_network_error(libc::EHOSTUNREACH));
/// assert!(!synack_sys::errno::is_pending_network_error(libc::EMFILE));
/// ```
pub fn is_pending_network_error(errno: i32) -> bool {
    match errno {
        libc::EPROTO
        | libc::ENETDOWN
        | libc::ENOPROTOOPT
        | libc::EHOSTDOWN
        | libc::EHOSTUNREACH
        | libc::EOPNOTSUPP
        | libc::ENETUNREACH => true,
        #[cfg(target_os = "linux")]
        libc::ENONET => true,
        _ => false,
    }
}
