//! TLS on the generator's connections: rustls clients, one configuration per resumption mode,
//! built once per run from `--tls`, `--sni`, `--cacert` or `--insecure`, `--alpn`,
//! `--tls-resumption` and the version flags.
//!
//! Resumption is what the generator offers; whether a handshake was resumed is what the server
//! did, read from rustls after each handshake (`handshake_kind`), and reported as such.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::Resumption as RustlsResumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::error::LoadError;

/// What the generator offers for session resumption.
/// # Examples
///
/// ```
/// use synack_load::tls::Resumption;
///
/// assert_eq!("off".parse::<Resumption>().unwrap(), Resumption::Off);
/// assert_eq!("0.25".parse::<Resumption>().unwrap(), Resumption::Ratio(0.25));
/// assert!("1.5".parse::<Resumption>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resumption {
    /// Every handshake full: no session is kept, no ticket offered.
    Off,
    /// Resume whenever a ticket or session is at hand (sessions shared by the run's threads).
    On,
    /// That share of attempts offers resumption (evenly spread); the rest do full handshakes.
    Ratio(f64),
}

impl std::str::FromStr for Resumption {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Resumption::Off),
            "on" => Ok(Resumption::On),
            r => match r.parse::<f64>() {
                Ok(x) if (0.0..=1.0).contains(&x) => Ok(Resumption::Ratio(x)),
                _ => Err(format!(
                    "--tls-resumption {r:?}: off, on, or a share of attempts from 0 to 1 (0.25)"
                )),
            },
        }
    }
}

/// The TLS protocol versions offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versions {
    /// TLS 1.3 and 1.2 (rustls's default).
    #[default]
    Both,
    /// TLS 1.3 only.
    Tls13,
    /// TLS 1.2 only.
    Tls12,
}

/// The TLS settings of a run, as asked.
/// # Examples
///
/// ```
/// use synack_load::tls::{Resumption, TlsOptions};
///
/// let o = TlsOptions { insecure: true, resumption: Resumption::Off, ..TlsOptions::default() };
/// let tls = o.build("localhost")?;
/// assert!(!tls.offers_resumption(0));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    /// The server name sent (SNI) and checked; default: the target's host.
    pub sni: Option<String>,
    /// Trust the certificates in this PEM file (instead of the web's roots).
    pub cacert: Option<PathBuf>,
    /// Accept any certificate (for a test server with a self-signed one). The handshake is
    /// still a real one.
    pub insecure: bool,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<String>,
    /// What is offered for resumption.
    pub resumption: Resumption,
    /// The versions offered.
    pub versions: Versions,
    /// The key-exchange groups offered, in order (`x25519`, `p256`, `x25519mlkem768`); empty:
    /// rustls's default (X25519MLKEM768 first).
    pub kx: Vec<String>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            sni: None,
            cacert: None,
            insecure: false,
            alpn: Vec::new(),
            resumption: Resumption::Off,
            versions: Versions::Both,
            kx: Vec::new(),
        }
    }
}

/// A run's TLS clients, ready: the configuration each attempt uses, and the name it sends.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    /// Full handshakes only (no resumption).
    full: Arc<ClientConfig>,
    /// Resumption offered (a session store shared by the run's threads).
    resumable: Option<Arc<ClientConfig>>,
    ratio: f64,
    /// The server name.
    pub name: ServerName<'static>,
    /// What was asked, for the report.
    pub options: TlsOptions,
}

impl TlsOptions {
    /// The clients for a target whose host is `host` (a name or an IP address).
    /// # Errors
    ///
    /// [`LoadError::Usage`] for a name that is not a valid server name, or a `--cacert` file
    /// that cannot be read or holds no certificate.
    pub fn build(&self, host: &str) -> Result<TlsPlan, LoadError> {
        let name_text = self.sni.clone().unwrap_or_else(|| host.to_string());
        let name = ServerName::try_from(name_text.clone()).map_err(|_| {
            LoadError::Usage(format!(
                "--sni {name_text:?}: not a DNS name or an IP address"
            ))
        })?;
        let make = |resume: bool| -> Result<Arc<ClientConfig>, LoadError> {
            let versions: &[&'static rustls::SupportedProtocolVersion] = match self.versions {
                Versions::Both => rustls::DEFAULT_VERSIONS,
                Versions::Tls13 => &[&rustls::version::TLS13],
                Versions::Tls12 => &[&rustls::version::TLS12],
            };
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            if !self.kx.is_empty() {
                use rustls::crypto::aws_lc_rs::kx_group;
                let mut groups = Vec::new();
                for k in &self.kx {
                    groups.push(match k.as_str() {
                        "x25519" => kx_group::X25519,
                        "p256" => kx_group::SECP256R1,
                        "p384" => kx_group::SECP384R1,
                        "x25519mlkem768" => kx_group::X25519MLKEM768,
                        other => {
                            return Err(LoadError::Usage(format!(
                                "--tls-kx {other:?}: x25519, p256, p384 or x25519mlkem768 are accepted"
                            )));
                        }
                    });
                }
                provider.kx_groups = groups;
            }
            let builder = ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(versions)
                .map_err(|e| LoadError::Usage(format!("--tls versions: {e}")))?;
            let mut cfg = if self.insecure {
                let provider = rustls::crypto::CryptoProvider::get_default()
                    .cloned()
                    .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth()
            } else {
                builder
                    .with_root_certificates(self.roots()?)
                    .with_no_client_auth()
            };
            cfg.alpn_protocols = self.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
            cfg.resumption = if resume {
                RustlsResumption::in_memory_sessions(4096)
            } else {
                RustlsResumption::disabled()
            };
            Ok(Arc::new(cfg))
        };
        let (resumable, ratio) = match self.resumption {
            Resumption::Off => (None, 0.0),
            Resumption::On => (Some(make(true)?), 1.0),
            Resumption::Ratio(r) => (Some(make(true)?), r),
        };
        Ok(TlsPlan {
            full: make(false)?,
            resumable,
            ratio,
            name,
            options: self.clone(),
        })
    }

    fn roots(&self) -> Result<rustls::RootCertStore, LoadError> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match &self.cacert {
            Some(path) => {
                let bad = |why: String| {
                    LoadError::Usage(format!(
                        "--cacert {}: {why} (a PEM file of CA certificates is accepted)",
                        path.display()
                    ))
                };
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                if certs.is_empty() {
                    return Err(bad("no CERTIFICATE in it".into()));
                }
                for c in certs {
                    roots.add(c).map_err(|e| bad(e.to_string()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(roots)
    }
}

impl TlsPlan {
    /// Whether attempt `k` (of a thread's sequence) offers resumption.
    pub fn offers_resumption(&self, k: u64) -> bool {
        match &self.resumable {
            None => false,
            Some(_) if self.ratio >= 1.0 => true,
            // Evenly spread: attempt k offers it when the running share steps up.
            Some(_) => ((k + 1) as f64 * self.ratio).floor() > (k as f64 * self.ratio).floor(),
        }
    }

    /// A new client connection for attempt `k`, and whether it offers resumption.
    /// # Errors
    ///
    /// rustls's, should it refuse the configuration (it does not for the ones built here).
    pub fn connect(&self, k: u64) -> Result<(rustls::ClientConnection, bool), rustls::Error> {
        let (cfg, offers) = match &self.resumable {
            Some(r) if self.offers_resumption(k) => (r.clone(), true),
            _ => (self.full.clone(), false),
        };
        Ok((
            rustls::ClientConnection::new(cfg, self.name.clone())?,
            offers,
        ))
    }
}

/// `--insecure`: any certificate is accepted; the handshake's signatures are still checked,
/// so it costs what a real one does.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The kind of a failed handshake, for the tally: the alert the server sent, or what rustls
/// refused.
pub(crate) fn failure_kind(e: &rustls::Error) -> String {
    match e {
        rustls::Error::AlertReceived(a) => format!("alert received: {a:?}"),
        rustls::Error::InvalidCertificate(c) => format!("certificate refused: {c:?}"),
        rustls::Error::NoApplicationProtocol => "no common ALPN protocol".to_string(),
        rustls::Error::PeerIncompatible(p) => format!("incompatible: {p:?}"),
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_spread_evenly() {
        let o = TlsOptions {
            insecure: true,
            resumption: Resumption::Ratio(0.25),
            ..TlsOptions::default()
        };
        let p = o.build("127.0.0.1").unwrap();
        let offered = (0..1000).filter(|&k| p.offers_resumption(k)).count();
        assert_eq!(offered, 250);
        assert!(!p.offers_resumption(0) && p.offers_resumption(3));
    }
}
