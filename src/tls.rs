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

/// The kind of a failed handshake, from its error (a rustls error inside an I/O error, or the
/// socket's own).
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
///
/// The config prefers TLS 1.3's `TLS_AES_128_GCM_SHA256` over the client's first choice
/// (rustls' own clients ask for `TLS_AES_256_GCM_SHA384` first), and in TLS 1.2 the
/// AES-128-GCM-SHA256 suites. Their key schedule hashes with SHA-256, which CPUs with SHA
/// extensions run in hardware, where SHA-384 runs in software on every x86 CPU. On an AMD EPYC
/// that made rustls' in-memory server handshake cost 0.72x the CPU. Browsers ask for it first
/// anyway. The other suites stay, in rustls' order, for clients without it. A client that
/// asks for ChaCha20-Poly1305 first (a device without AES instructions) gets AES-128-GCM too:
/// build your own config to leave the choice to the client. A config of your own (see [`ServerBuilder::tls`](crate::ServerBuilder::tls))
/// keeps whatever it says.
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
    config_for(chain, key, alpn).map_err(|e| bad(cert, e.to_string()))
}

/// A rustls server config for a certificate chain and its key already in memory, with the
/// choices of [`server_config`]: `TLS_AES_128_GCM_SHA256` preferred, `alpn` offered.
/// # Errors
///
/// rustls' own, when the key does not fit the certificate or is of a kind it does not take.
///
/// # Examples
///
/// ```
/// use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
///
/// let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
/// let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
/// let config = synack::tls::config_for(vec![c.cert.der().clone()], key, &[b"http/1.1"]).unwrap();
/// assert!(config.ignore_client_order);
/// ```
#[cfg(feature = "tls")]
pub fn config_for(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, rustls::Error> {
    // The process's default provider if one was installed, else rustls' own default.
    let mut provider = match rustls::crypto::CryptoProvider::get_default() {
        Some(p) => (**p).clone(),
        None => rustls::crypto::aws_lc_rs::default_provider(),
    };
    // A stable sort: AES-128-GCM with SHA-256 first (TLS 1.3's, then TLS 1.2's), the others
    // in their order.
    provider.cipher_suites.sort_by_key(|s| {
        use rustls::CipherSuite as C;
        !matches!(
            s.suite(),
            C::TLS13_AES_128_GCM_SHA256
                | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.ignore_client_order = true;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(feature = "tls")]
pub(crate) use stream::TlsStream;

#[cfg(feature = "tls")]
mod stream {
    use std::io::{self, Read as _, Write as _};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, ready};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;

    /// A rustls server session over a registered socket: what a TLS [`Connection`](crate::Connection)
    /// reads and writes through.
    ///
    /// What the session has to send goes out with the next thing that is sent, or before a read
    /// waits: TLS 1.3's session tickets, queued as the handshake ends, leave with the handler's
    /// first answer in one `writev` (one segment fewer per connection than flushing them at the
    /// handshake's end), and TLS 1.2's last flight leaves before the handler waits for a request.
    #[derive(Debug)]
    pub(crate) struct TlsStream {
        tcp: TcpStream,
        session: rustls::ServerConnection,
        /// `close_notify` is queued: the session writes nothing more.
        closing: bool,
        /// A write to the socket failed (the peer reset it, most often): what the session
        /// still holds is not tried again when the stream is dropped.
        broken: bool,
    }

    /// Non-blocking reads and writes on a tokio socket, for rustls' `read_tls` and `write_tls`
    /// (`WouldBlock` when the socket is not ready; tokio clears its readiness then).
    struct TryIo<'a>(&'a TcpStream);

    impl io::Read for TryIo<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.try_read(buf)
        }
    }

    impl io::Write for TryIo<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.try_write(buf)
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            self.0.try_write_vectored(bufs)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A rustls error as an I/O error (what [`failure_kind`](super::failure_kind) reads back).
    fn tls_error(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    /// Sends what the session has queued; `Pending` until the socket took it all.
    fn poll_send(
        tcp: &TcpStream,
        session: &mut rustls::ServerConnection,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while session.wants_write() {
            match session.write_tls(&mut TryIo(tcp)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(tcp.poll_write_ready(cx))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends what the session has queued and the socket takes at once, without waiting for
    /// the rest (it stays queued).
    fn send_now(tcp: &TcpStream, session: &mut rustls::ServerConnection) -> io::Result<()> {
        while session.wants_write() {
            match session.write_tls(&mut TryIo(tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads TLS records off the socket into the session and processes them: the bytes read
    /// (0 at the peer's end of stream). A protocol error queues the session's alert, which
    /// is sent if the socket takes it at once.
    fn poll_receive(
        tcp: &TcpStream,
        session: &mut rustls::ServerConnection,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let n = loop {
            match session.read_tls(&mut TryIo(tcp)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(tcp.poll_read_ready(cx))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        if let Err(e) = session.process_new_packets() {
            let _ = send_now(tcp, session);
            return Poll::Ready(Err(tls_error(e)));
        }
        Poll::Ready(Ok(n))
    }

    impl TlsStream {
        /// Runs the server side of a handshake on `tcp`. What the session queues as the
        /// handshake ends (TLS 1.3's tickets) is left for the first write.
        pub(crate) async fn accept(
            tcp: TcpStream,
            config: Arc<rustls::ServerConfig>,
        ) -> io::Result<TlsStream> {
            let mut session = rustls::ServerConnection::new(config).map_err(tls_error)?;
            std::future::poll_fn(|cx| {
                while session.is_handshaking() {
                    let flight = session.wants_write();
                    ready!(poll_send(&tcp, &mut session, cx))?;
                    if flight {
                        // The client answers a flight only once it has it: reading now would
                        // find nothing (a `recvfrom` for `EAGAIN`), so wait for its answer's
                        // readiness. Readiness the reactor has not delivered yet stays; bytes
                        // the last read left (only past rustls' read size) come with the
                        // answer, which every flight of a handshake has.
                        let _ = tcp.try_io(tokio::io::Interest::READABLE, || {
                            Err::<(), _>(io::ErrorKind::WouldBlock.into())
                        });
                    }
                    if ready!(poll_receive(&tcp, &mut session, cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection during the TLS handshake",
                        )));
                    }
                }
                Poll::Ready(Ok(()))
            })
            .await?;
            Ok(TlsStream {
                tcp,
                session,
                closing: false,
                broken: false,
            })
        }

        /// Puts plaintext into the session with `put` and sends what the socket takes: what
        /// `put` took, once it took any (or there was nothing to take); `Pending` only while
        /// the session is full and the socket takes nothing.
        fn poll_put(
            &mut self,
            cx: &mut Context<'_>,
            empty: bool,
            mut put: impl FnMut(&mut rustls::Writer<'_>) -> io::Result<usize>,
        ) -> Poll<io::Result<usize>> {
            if self.closing {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            loop {
                let n = put(&mut self.session.writer())?;
                match self.poll_send(cx) {
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    // Taken as plaintext: on its way, even if the socket is full now.
                    _ if n > 0 || empty => return Poll::Ready(Ok(n)),
                    Poll::Pending => return Poll::Pending,
                    // The session was full and is sent now: try again.
                    Poll::Ready(Ok(())) => {}
                }
            }
        }

        /// [`poll_send`] on this stream, a failure remembered.
        fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let sent = poll_send(&self.tcp, &mut self.session, cx);
            if let Poll::Ready(Err(_)) = sent {
                self.broken = true;
            }
            sent
        }

        /// The socket and the session.
        pub(crate) fn get_ref(&self) -> (&TcpStream, &rustls::ServerConnection) {
            (&self.tcp, &self.session)
        }

        /// Queues `buf` as plaintext and sends what the socket takes at once (the rest goes
        /// with the next write or flush).
        pub(crate) fn write_now(&mut self, buf: &[u8]) -> io::Result<()> {
            self.session.writer().write_all(buf)?;
            let sent = send_now(&self.tcp, &mut self.session);
            self.broken |= sent.is_err();
            sent
        }
    }

    impl AsyncRead for TlsStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            loop {
                match this.session.reader().read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                // Nothing to read yet: what is queued to send goes first (a peer may be
                // waiting for it), without waiting for the socket to take it.
                if this.session.wants_write()
                    && let Poll::Ready(Err(e)) = this.poll_send(cx)
                {
                    return Poll::Ready(Err(e));
                }
                if ready!(poll_receive(&this.tcp, &mut this.session, cx))? == 0 {
                    // The end of the stream: the reader says whether it was clean.
                    match this.session.reader().read(buf.initialize_unfilled()) {
                        Ok(n) => buf.advance(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    impl AsyncWrite for TlsStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut()
                .poll_put(cx, buf.is_empty(), |w| w.write(buf))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let empty = bufs.iter().all(|b| b.is_empty());
            self.get_mut()
                .poll_put(cx, empty, |w| w.write_vectored(bufs))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.session.writer().flush()?;
            this.poll_send(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if !this.closing {
                this.session.send_close_notify();
                this.closing = true;
            }
            ready!(this.poll_send(cx))?;
            Pin::new(&mut this.tcp).poll_shutdown(cx)
        }
    }

    impl Drop for TlsStream {
        /// What is still queued (a handler that neither wrote nor read after the handshake
        /// leaves the tickets there) is sent if the socket takes it at once.
        fn drop(&mut self) {
            if !self.broken {
                let _ = send_now(&self.tcp, &mut self.session);
            }
        }
    }
}
