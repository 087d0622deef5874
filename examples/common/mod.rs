// Shared command-line flags and start-up report of the examples (included with `mod common;`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// The address the examples listen on when neither --addr nor --config names one.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// Flags every example server takes: the common knobs (the rest through --config). With
/// --config, the file is the base and the flags given override it; a flag left out (an on/off
/// flag included) keeps the file's value.
#[derive(Debug, Args)]
pub struct ServerFlags {
    /// A TOML configuration file (every builder knob; see examples/synack.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (repeat for several; IPv6 as [::1]:7878). [default: 127.0.0.1:7878]
    #[arg(long = "addr")]
    pub addrs: Vec<String>,
    /// The listen(2) backlog (capped by net.core.somaxconn). [default: 1024]
    #[arg(long)]
    pub backlog: Option<u32>,
    /// Most connections open at once (Tomcat's maxConnections). [default: 8192]
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Worker threads. [default: one per core]
    #[arg(long)]
    pub workers: Option<usize>,
    /// Acceptor threads. [default: 1]
    #[arg(long)]
    pub acceptors: Option<usize>,
    /// SO_REUSEPORT: with several acceptors, one socket each.
    #[arg(long)]
    pub reuse_port: bool,
    /// Run the worker threads under SCHED_BATCH too (the acceptors are by default).
    #[arg(long)]
    pub sched_batch: bool,
    /// Run the acceptor threads under the normal policy instead of SCHED_BATCH.
    #[arg(long)]
    pub acceptor_sched_normal: bool,
    /// Accept on the workers' own runtimes instead of on acceptor threads (no handoff).
    #[arg(long)]
    pub accept_in_workers: bool,
    /// Every accept on the acceptor threads: an idle worker does not accept for its acceptor.
    #[arg(long, conflicts_with = "accept_in_workers")]
    pub acceptor_alone: bool,
    /// Every write sent at once: the FIN does not wait to ride in the segment of the handler's
    /// last write (fin_with_data off).
    #[arg(long)]
    pub fin_apart: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (built with --features prometheus);
    /// `--metrics` alone binds 127.0.0.1:9090.
    #[cfg(feature = "prometheus")]
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9090")]
    pub metrics: Option<std::net::SocketAddr>,
    /// On SIGHUP, re-execute this program with the same arguments and hand it every listening
    /// socket (the accept queues are kept), then wind down: a restart that loses nothing.
    #[arg(long)]
    pub handoff: bool,
    /// Serve TLS with this certificate chain (PEM, with --tls-key; built with --features tls).
    /// ALPN offers h2 and http/1.1.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Grace period for in-flight connections on Ctrl-C, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub grace_ms: u64,
}

impl ServerFlags {
    /// A builder configured from the file (if any), then the flags.
    pub fn builder(&self) -> Result<synack::ServerBuilder, synack::Error> {
        let mut file_binds = false;
        let mut b = match &self.config {
            Some(path) => {
                let cfg = synack::ServerConfig::from_file(path)?;
                file_binds = !cfg.bind.is_empty();
                if !self.addrs.is_empty() {
                    // --addr replaces the file's addresses.
                    let mut cfg = cfg;
                    cfg.bind.clear();
                    cfg.builder()?
                } else {
                    cfg.builder()?
                }
            }
            None => synack::Server::builder(),
        };
        if let Some(v) = self.backlog {
            b = b.backlog(v);
        }
        if let Some(v) = self.max_connections {
            b = b.max_connections(v);
        }
        if let Some(v) = self.workers {
            b = b.workers(v);
        }
        if let Some(v) = self.acceptors {
            b = b.acceptors(v);
        }
        if self.reuse_port {
            b = b.reuse_port(true);
        }
        if self.acceptor_sched_normal {
            b = b.acceptor_sched_batch(false);
        }
        if self.sched_batch {
            b = b.sched_batch(true);
        }
        if self.accept_in_workers {
            b = b.accept_in_workers(true);
        }
        if self.acceptor_alone {
            b = b.idle_worker_accepts(false);
        }
        if self.fin_apart {
            b = b.fin_with_data(false);
        }
        for a in &self.addrs {
            b = b.bind(a.as_str())?;
        }
        if self.addrs.is_empty() && !file_binds {
            b = b.bind(DEFAULT_ADDR)?;
        }
        #[cfg(feature = "tls")]
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            b = b.tls(synack::tls::server_config(
                cert,
                key,
                &[b"h2", b"http/1.1"],
            )?);
        }
        #[cfg(feature = "prometheus")]
        if let Some(addr) = self.metrics {
            synack::metrics::install_prometheus(addr)?;
            println!("metrics on http://{addr}/metrics");
            b = b.metrics(Duration::from_secs(1));
        }
        Ok(b)
    }

    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }
}

/// Logs to stderr, `RUST_LOG` filtering (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prints each listener with the backlog asked for and the one the kernel granted.
pub fn print_listeners(name: &str, server: &synack::Server) {
    for l in server.listeners() {
        let eff = l
            .effective_backlog
            .map_or_else(|| "unknown".to_string(), |b| b.to_string());
        let from = match &l.origin {
            synack::ListenerOrigin::Handoff { from_pid, member } => {
                format!(", inherited from pid {from_pid} (member {member:?})")
            }
            synack::ListenerOrigin::SocketActivation { name } => {
                format!(", from socket activation (name {name:?})")
            }
            synack::ListenerOrigin::Adopted => ", adopted".to_string(),
            _ => String::new(),
        };
        println!(
            "{name} listening on {} (backlog asked {}, effective {eff}{from}); Ctrl-C to stop",
            l.local_addr, l.requested_backlog
        );
    }
}

/// Runs until SIGINT/SIGTERM, shuts down gracefully and prints the report; with `--handoff`,
/// hands over to a new process on SIGHUP instead.
pub fn run(server: synack::Server, flags: &ServerFlags) -> Result<(), synack::Error> {
    let grace = flags.grace();
    if let Some(i) = server.inheritance() {
        println!(
            "pid {} took over from pid {} (handoff {}), {:?} after it was asked",
            std::process::id(),
            i.from_pid,
            i.generation,
            i.requested_to_ready
        );
    }
    let report = if flags.handoff {
        let handoff = synack::Handoff::new().grace(grace);
        match server.run_with_handoff(grace, &handoff)? {
            synack::RunEnd::HandedOff(r) => {
                println!(
                    "handed over to pid {}: ready after {:.1} ms, stopped accepting after {:.1} ms, done after {:.1} ms; {} completed, {} aborted, {} lost, {} reset at close, {} unaccounted",
                    r.new_pid,
                    r.ready_after.as_secs_f64() * 1e3,
                    r.stopped_after.as_secs_f64() * 1e3,
                    r.duration.as_secs_f64() * 1e3,
                    r.old.completed,
                    r.old.aborted,
                    r.old.lost,
                    r.reset_at_close,
                    r.old.unaccounted
                );
                return Ok(());
            }
            synack::RunEnd::Stopped(r) => r,
            _ => return Ok(()),
        }
    } else {
        server.run_until_signal(grace)?
    };
    println!(
        "stopped: {} open at shutdown, {} drained from the queue, {} completed, {} aborted, {} lost, {} left in the kernel queue, {} unaccounted",
        report.open_at_start,
        report.drained,
        report.completed,
        report.aborted,
        report.lost,
        report.left_in_queue,
        report.unaccounted
    );
    Ok(())
}
