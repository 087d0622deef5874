//! Configuration from a TOML file: every knob of [`ServerBuilder`], with the same names.
//!
//! Unknown keys and bad values are refused with the key's path and the reason. Keys left out
//! keep the builder's defaults. `examples/synack.toml` lists every key with its default.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::acceptor::FdExhaustionPolicy;
use crate::builder::ServerBuilder;
use crate::error::Error;
use crate::limit::OverloadPolicy;
use crate::listener::Keepalive;

/// TCP keepalive settings, as in [`Keepalive`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let cfg = synack::ServerConfig::from_toml_str(r#"keepalive = { idle = "60s", retries = 3 }"#).unwrap();
/// let k = cfg.keepalive.unwrap();
/// assert_eq!(k.idle, Duration::from_secs(60));
/// assert_eq!(k.retries, Some(3));
/// ```
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    /// Idle time before the first probe ("60s"; whole seconds, at least 1 s).
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// Time between probes; the OS default when left out.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Probes before the connection is dropped; the OS default when left out.
    #[serde(default)]
    pub retries: Option<u32>,
}

/// The accept back-off, as in [`ServerBuilder::accept_backoff`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let cfg = synack::ServerConfig::from_toml_str(r#"accept_backoff = { min = "10ms", max = "2s" }"#).unwrap();
/// assert_eq!(
///     cfg.accept_backoff,
///     Some(synack::BackoffConfig { min: Duration::from_millis(10), max: Duration::from_secs(2) })
/// );
/// ```
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// First back-off ("5ms").
    #[serde(with = "humantime_serde")]
    pub min: Duration,
    /// Longest back-off ("1s").
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

/// TLS from PEM files, as in [`ServerBuilder::tls`](crate::ServerBuilder) with
/// [`tls::server_config`](crate::tls) (feature `tls`; without it, a `[tls]` table is refused).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
/// # Examples
///
/// ```
/// // The files are read when the configuration is checked: one that is not there is named.
/// let err = synack::ServerConfig::from_toml_str(r#"
///     tls = { cert = "/nonexistent/cert.pem", key = "/nonexistent/key.pem", alpn = ["h2", "http/1.1"] }
///     max_handshakes = 128
///     handshake_timeout = "2s"
/// "#).unwrap_err();
/// assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
/// ```
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM).
    pub cert: std::path::PathBuf,
    /// Its private key (PEM).
    pub key: std::path::PathBuf,
    /// ALPN protocols offered, in order (default none).
    #[serde(default)]
    pub alpn: Vec<String>,
}

/// A server's configuration: each field is the [`ServerBuilder`] method of the same name;
/// `None` keeps the builder's default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
/// # Examples
///
/// ```
/// let cfg = synack::ServerConfig::from_toml_str(r#"
///     bind = ["127.0.0.1:0"]
///     backlog = 512
///     max_connections = 1000
///     overload_policy = "reject"
///     keepalive = { idle = "60s" }
/// "#).unwrap();
/// let builder = cfg.builder().unwrap();
/// # let _ = builder;
/// ```
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Listen addresses (`"127.0.0.1:8080"`, `"[::1]:8080"`).
    pub bind: Vec<String>,
    /// The listen(2) backlog (default 1024).
    pub backlog: Option<u32>,
    /// Tomcat's maxConnections (default 8192).
    pub max_connections: Option<usize>,
    /// Worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Acceptor threads (default 1).
    pub acceptors: Option<usize>,
    /// SO_REUSEADDR (default true).
    pub reuse_address: Option<bool>,
    /// SO_REUSEPORT (default false).
    pub reuse_port: Option<bool>,
    /// IPV6_V6ONLY on IPv6 listeners (default: the system's).
    pub only_v6: Option<bool>,
    /// TCP_NODELAY on accepted connections (default true).
    pub nodelay: Option<bool>,
    /// TCP_DEFER_ACCEPT ("5s"; whole seconds, at least 1 s; default off).
    #[serde(with = "humantime_serde")]
    pub defer_accept: Option<Duration>,
    /// TCP_FASTOPEN queue length (default off).
    pub fastopen: Option<u32>,
    /// SO_RCVBUF of accepted connections, bytes.
    pub recv_buffer_size: Option<usize>,
    /// SO_SNDBUF of accepted connections, bytes.
    pub send_buffer_size: Option<usize>,
    /// TCP keepalive (default off).
    pub keepalive: Option<KeepaliveConfig>,
    /// "queue" (default) or "reject".
    pub overload_policy: Option<OverloadPolicy>,
    /// "backoff" (default) or "shed".
    pub fd_exhaustion_policy: Option<FdExhaustionPolicy>,
    /// Accepts per listener per wakeup (default 64).
    pub accept_batch: Option<usize>,
    /// Back-off after resource-exhaustion accept errors (default 5ms..1s).
    pub accept_backoff: Option<BackoffConfig>,
    /// Write the probe header (default false; never on a public listener: it discloses the
    /// host's uptime to every client).
    pub probe: Option<bool>,
    /// Run the worker threads under SCHED_BATCH (default false).
    pub sched_batch: Option<bool>,
    /// Run the acceptor threads under SCHED_BATCH (default true).
    pub acceptor_sched_batch: Option<bool>,
    /// Accept on the workers' runtimes instead of on acceptor threads (default false).
    pub accept_in_workers: Option<bool>,
    /// With acceptor threads, an idle worker accepts for its acceptor (default true).
    pub idle_worker_accepts: Option<bool>,
    /// The FIN in the segment of the handler's last write, when it closes within the poll that
    /// wrote (default true).
    pub fin_with_data: Option<bool>,
    /// Accept-queue sampling interval ("10ms"; default off).
    #[serde(with = "humantime_serde")]
    pub queue_sampling: Option<Duration>,
    /// Adopt inherited listeners (a handoff, systemd socket activation; default true).
    pub inherit: Option<bool>,
    /// TLS from PEM files (feature `tls`).
    pub tls: Option<TlsConfig>,
    /// TLS handshakes in progress per worker (default 256).
    pub max_handshakes: Option<usize>,
    /// How long a TLS handshake may take ("3s", the default).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,
    /// Inherited SO_REUSEPORT members beyond the acceptors: "accept" (default), "migrate" or
    /// "close" (see [`SurplusMembers`](crate::SurplusMembers)).
    pub surplus_members: Option<crate::SurplusMembers>,
}

impl ServerConfig {
    /// Parses TOML text.
    /// # Errors
    ///
    /// [`Error::Config`] naming the key and the reason: bad TOML, an unknown key, a value of the
    /// wrong type or out of range, a `bind` address that does not resolve.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = synack::ServerConfig::from_toml_str("backlog = 0").unwrap_err();
    /// assert!(err.to_string().contains("backlog"));
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self, Error> {
        Self::parse(text, "<string>")
    }

    /// Reads and parses a TOML file.
    /// # Errors
    ///
    /// [`Error::Config`] when the file cannot be read (its OS error in the reason) and as
    /// [`from_toml_str`](Self::from_toml_str).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> Result<(), synack::Error> {
    /// let server = synack::ServerConfig::from_file("synack.toml")?
    ///     .builder()?
    ///     .serve(|_conn: synack::Connection| async {})?;
    /// # drop(server);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: path.display().to_string(),
            key: String::new(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, file: &str) -> Result<Self, Error> {
        let de = toml::Deserializer::parse(text).map_err(|e| Error::Config {
            file: file.into(),
            key: String::new(),
            reason: e.to_string().trim().to_string(),
        })?;
        let cfg: ServerConfig =
            serde_path_to_error::deserialize(de).map_err(|e| Error::Config {
                file: file.into(),
                key: e.path().to_string(),
                reason: e.inner().to_string().trim().to_string(),
            })?;
        // Check the values now, naming the key, rather than at serve().
        cfg.builder().and_then(|b| b.check()).map_err(|e| match e {
            Error::InvalidConfig {
                name,
                value,
                expected,
            } => Error::Config {
                file: file.into(),
                key: name.into(),
                reason: format!("{value} is not valid: {expected}"),
            },
            Error::Resolve { addr, source } => Error::Config {
                file: file.into(),
                key: "bind".into(),
                reason: format!("cannot resolve {addr}: {source}"),
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// A builder with these settings (and the defaults for the rest).
    /// # Errors
    ///
    /// As [`ServerBuilder::bind`], for an address in `bind` that does not resolve.
    pub fn builder(&self) -> Result<ServerBuilder, Error> {
        self.apply(ServerBuilder::new())
    }

    /// Applies these settings on top of a builder.
    /// # Errors
    ///
    /// As [`ServerBuilder::bind`], for an address in `bind` that does not resolve.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), synack::Error> {
    /// let cfg = synack::ServerConfig::from_toml_str("max_connections = 100")?;
    /// // The file's settings on top of the program's own.
    /// let builder = cfg.apply(synack::Server::builder().bind("127.0.0.1:0")?.workers(1))?;
    /// assert!(builder.check().is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn apply(&self, mut b: ServerBuilder) -> Result<ServerBuilder, Error> {
        for a in &self.bind {
            b = b.bind(a.as_str())?;
        }
        macro_rules! set {
            ($($field:ident),*) => {
                $(if let Some(v) = self.$field.clone() {
                    b = b.$field(v);
                })*
            };
        }
        set!(
            backlog,
            max_connections,
            workers,
            acceptors,
            reuse_address,
            reuse_port,
            only_v6,
            nodelay,
            defer_accept,
            fastopen,
            recv_buffer_size,
            send_buffer_size,
            overload_policy,
            fd_exhaustion_policy,
            accept_batch,
            probe,
            queue_sampling,
            sched_batch,
            acceptor_sched_batch,
            accept_in_workers,
            idle_worker_accepts,
            fin_with_data,
            inherit,
            surplus_members,
            max_handshakes,
            handshake_timeout
        );
        if let Some(t) = &self.tls {
            #[cfg(feature = "tls")]
            {
                let alpn: Vec<&[u8]> = t.alpn.iter().map(|a| a.as_bytes()).collect();
                b = b.tls(crate::tls::server_config(&t.cert, &t.key, &alpn)?);
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::Config {
                file: "<config>".into(),
                key: "tls".into(),
                reason: format!(
                    "this build of synack has no TLS (feature tls); cert {} not loaded",
                    t.cert.display()
                ),
            });
        }
        if let Some(k) = &self.keepalive {
            b = b.keepalive(Keepalive {
                idle: k.idle,
                interval: k.interval,
                retries: k.retries,
            });
        }
        if let Some(bo) = &self.accept_backoff {
            b = b.accept_backoff(bo.min, bo.max);
        }
        Ok(b)
    }
}
