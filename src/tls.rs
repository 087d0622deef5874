//! TLS on synack's connections (feature `tls`, rustls with its default crypto provider).
//!
//! The handshake runs in the worker, as the first part of the connection's own task: never in
//! an acceptor thread, nor in a worker's accept loop ahead of the next `accept()`, so one slow
//! client stalls nobody else. A server-wide cap on handshakes in progress
//! ([`max_handshakes`](crate::ServerBuilder::max_handshakes) per worker) makes the acceptors
//! stop at the cap, as at the connection limit: new connections wait in the kernel queue,
//! where the backlog applies. A handshake that takes longer than
//! [`handshake_timeout`](crate::ServerBuilder::handshake_timeout) is closed and counted.
//! The handler then gets the TLS stream through the same [`Connection`](crate::Connection),
//! with what was negotiated in [`ConnInfo::tls`](crate::ConnInfo::tls); what the handshakes did
//! is counted in [`Stats::tls`](crate::Stats::tls).

use std::time::Duration;

/// What a connection's TLS handshake negotiated: in [`ConnInfo::tls`](crate::ConnInfo::tls).
/// # Examples
///
/// ```
/// let info = synack::TlsInfo {
///     version: "TLSv1.3",
///     alpn: Some(b"h2".to_vec()),
///     sni: Some("example.test".into()),
///     resumed: false,
///     handshake: std::time::Duration::from_micros(350),
/// };
/// assert_eq!(info.alpn_str(), Some("h2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version (`"TLSv1.3"`, `"TLSv1.2"`).
    pub version: &'static str,
    /// The ALPN protocol agreed on (`b"h2"`, `b"http/1.1"`), if any.
    pub alpn: Option<Vec<u8>>,
    /// The server name the client asked for (SNI), if it sent one.
    pub sni: Option<String>,
    /// Whether the session was resumed (a ticket or a session id) rather than a full handshake:
    /// what the server really did, not what the client hoped for.
    pub resumed: bool,
    /// From the handshake's start on the worker to its end.
    pub handshake: Duration,
}

impl TlsInfo {
    /// The ALPN protocol as text, when it is UTF-8.
    pub fn alpn_str(&self) -> Option<&str> {
        self.alpn
            .as_deref()
            .and_then(|a| std::str::from_utf8(a).ok())
    }
}

/// The TLS settings a server runs with.
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    pub config: std::sync::Arc<rustls::ServerConfig>,
    pub timeout: Duration,
}

/// The kind of a failed handshake, from tokio-rustls's error.
#[cfg(feature = "tls")]
pub(crate) fn failure_kind(e: &std::io::Error) -> crate::stats::TlsFailure {
    use crate::stats::TlsFailure as Failure;
    use rustls::{AlertDescription as A, Error as E};
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
        return Failure::Io;
    };
    match inner {
        E::InvalidCertificate(_) | E::NoCertificatesPresented => Failure::Certificate,
        E::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::CertificateRequired,
        ) => Failure::Certificate,
        _ => Failure::Protocol,
    }
}

/// Reads a certificate chain and its private key from PEM files, for a rustls server config.
/// # Errors
///
/// [`Error::Tls`](crate::Error::Tls) naming the file and what is wrong with it.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), synack::Error> {
/// let config = synack::tls::server_config("cert.pem", "key.pem", &[b"h2", b"http/1.1"])?;
/// let builder = synack::Server::builder().bind("127.0.0.1:8443")?.tls(config);
/// # let _ = builder;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tls")]
pub fn server_config(
    cert: impl AsRef<std::path::Path>,
    key: impl AsRef<std::path::Path>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, crate::Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = (cert.as_ref(), key.as_ref());
    let bad = |file: &std::path::Path, reason: String| crate::Error::Tls {
        file: file.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no CERTIFICATE in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(cert, e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
