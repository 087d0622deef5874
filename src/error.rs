//! The errors synack returns: one typed enum, each variant naming the value at fault.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong while configuring or starting a [`Server`](crate::Server).
///
/// Every variant names the value that was refused (the address, the backlog, the option) and,
/// where the operating system refused it, carries the underlying [`io::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
/// # Examples
///
/// ```
/// let err = synack::Server::builder().backlog(0).check().unwrap_err();
/// match err {
///     synack::Error::InvalidConfig { name, .. } => assert_eq!(name, "backlog"),
///     other => panic!("unexpected: {other}"),
/// }
/// ```
pub enum Error {
    /// A listen address could not be resolved.
    #[error("cannot resolve listen address {addr}: {source}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// What the resolver said.
        #[source]
        source: io::Error,
    },
    /// A listen address resolved to nothing.
    #[error("listen address {addr} resolved to no socket address")]
    NoAddress {
        /// The address as given.
        addr: String,
    },
    /// A configuration value is out of range.
    #[error("invalid {name} {value}: {expected}")]
    InvalidConfig {
        /// The setting, as the builder method names it (for example `backlog`).
        name: &'static str,
        /// The value that was refused.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// `serve` was called without any `bind` or `adopt`.
    #[error("no listener: call bind() or adopt() before serve()")]
    NoListener,
    /// The socket could not be created.
    #[error("cannot create a socket for {addr}: {source}")]
    Socket {
        /// The address the socket was for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A socket option could not be set.
    #[error("cannot set {option} on the listener for {addr}: {source}")]
    SocketOption {
        /// The address of the listener.
        addr: SocketAddr,
        /// The option, as the OS names it (for example `SO_REUSEPORT`).
        option: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `bind(2)` failed.
    #[error("cannot bind {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// A sentence on the cause (address in use, permission denied, ...).
        reason: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `listen(2)` failed.
    #[error("cannot listen on {addr} with backlog {backlog}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The backlog asked for.
        backlog: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An adopted listener is not usable.
    #[error("cannot adopt listener: {reason}")]
    Adopt {
        /// What is wrong with it.
        reason: String,
        /// The OS error, if one was involved.
        #[source]
        source: Option<io::Error>,
    },
    /// A thread or runtime could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        /// Which thread or runtime.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An option is not available on this operating system.
    #[error("{option} is not supported on this operating system")]
    Unsupported {
        /// The option (for example `TCP_DEFER_ACCEPT`).
        option: &'static str,
    },
    /// A configuration file is not valid.
    #[error("{file}: {}{reason}", if key.is_empty() { String::new() } else { format!("key `{key}`: ") })]
    Config {
        /// The file (or `<string>`).
        file: String,
        /// The key's path (`keepalive.idle`); empty when the file does not parse at all.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A TLS certificate or key file could not be used.
    #[error("TLS {file}: {reason}")]
    Tls {
        /// The file.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signal(#[source] io::Error),
}

impl Error {
    pub(crate) fn invalid(
        name: &'static str,
        value: impl ToString,
        expected: impl ToString,
    ) -> Self {
        Error::InvalidConfig {
            name,
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    pub(crate) fn bind(addr: SocketAddr, source: io::Error) -> Self {
        let reason = match source.kind() {
            io::ErrorKind::AddrInUse => "address already in use (another socket is bound to it; \
                 enable reuse_port on every socket that shares it)"
                .to_string(),
            io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".to_string()
            }
            io::ErrorKind::AddrNotAvailable => {
                "address not available (no local interface has this address)".to_string()
            }
            _ => source.to_string(),
        };
        Error::Bind {
            addr,
            reason,
            source,
        }
    }
}
