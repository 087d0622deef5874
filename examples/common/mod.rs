// Shared command-line flags and start-up report of the examples (included with `mod common;`).

use std::time::Duration;

use clap::Args;

/// Flags every example server takes.
#[derive(Debug, Args)]
pub struct ServerFlags {
    /// Address to listen on (repeat for several; IPv6 as [::1]:7878).
    #[arg(long = "addr", default_value = "127.0.0.1:7878")]
    pub addrs: Vec<String>,
    /// The listen(2) backlog (capped by net.core.somaxconn).
    #[arg(long, default_value_t = 1024)]
    pub backlog: u32,
    /// Most connections open at once (Tomcat's maxConnections).
    #[arg(long, default_value_t = synack::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Worker threads [default: one per core].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Acceptor threads.
    #[arg(long, default_value_t = 1)]
    pub acceptors: usize,
    /// SO_REUSEPORT: with several acceptors, one socket each.
    #[arg(long)]
    pub reuse_port: bool,
    /// Grace period for in-flight connections on Ctrl-C, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub grace_ms: u64,
}

impl ServerFlags {
    /// A builder configured from the flags.
    pub fn builder(&self) -> Result<synack::ServerBuilder, synack::Error> {
        let mut b = synack::Server::builder()
            .backlog(self.backlog)
            .max_connections(self.max_connections)
            .acceptors(self.acceptors)
            .reuse_port(self.reuse_port);
        if let Some(w) = self.workers {
            b = b.workers(w);
        }
        for a in &self.addrs {
            b = b.bind(a.as_str())?;
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
        println!(
            "{name} listening on {} (backlog asked {}, effective {eff}); Ctrl-C to stop",
            l.local_addr, l.requested_backlog
        );
    }
}

/// Runs until SIGINT/SIGTERM, shuts down gracefully and prints the report.
pub fn run(server: synack::Server, grace: Duration) -> Result<(), synack::Error> {
    let report = server.run_until_signal(grace)?;
    println!(
        "stopped: {} open at shutdown, {} drained from the queue, {} completed, {} aborted, {} left in the kernel queue",
        report.open_at_start,
        report.drained,
        report.completed,
        report.aborted,
        report.left_in_queue
    );
    Ok(())
}
