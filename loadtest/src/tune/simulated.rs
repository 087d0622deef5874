//! tune's own server: synack on 127.0.0.1 with a simulated handler that holds its connection
//! slot for a service time, then answers `ok`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use synack::Server;
use tokio::io::AsyncWriteExt;

use super::{ServiceDist, Simulated};

/// What the simulated handler answers.
pub const ANSWER: &[u8] = b"ok\n";

fn service_time(mean: Duration, dist: ServiceDist) -> Duration {
    match dist {
        ServiceDist::Fixed => mean,
        ServiceDist::Exp => {
            // Inverse transform: -ln(U) * mean, U in (0, 1].
            let u = 1.0 - fastrand::f64();
            mean.mul_f64(-u.ln())
        }
    }
}

/// Starts the simulated server: probe on, queue sampling off (inet_diag watches it), a handler
/// that holds its slot for a service time, then answers [`ANSWER`].
///
/// # Errors
///
/// synack's: a configuration it refuses, a bind that fails.
pub fn start_server(
    sim: &Simulated,
    backlog: u32,
    served: Arc<ServiceClock>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<Server, synack::Error> {
    let mean = sim.service_time;
    let dist = sim.dist;
    let mut b = Server::builder()
        .bind("127.0.0.1:0")?
        .backlog(backlog)
        .workers(sim.workers)
        .max_connections(sim.max_connections)
        .inherit(false)
        .probe(true);
    if let Some(cfg) = tls {
        b = b.tls(cfg);
    }
    b.serve(move |mut conn: synack::Connection| {
        let served = served.clone();
        async move {
            let t = std::time::Instant::now();
            let want = service_time(mean, dist);
            // Sleep short by the timer's usual overshoot, so the mean comes out as asked.
            tokio::time::sleep(want.saturating_sub(served.overshoot())).await;
            served.add(want, t.elapsed());
            conn.write_all(ANSWER).await
        }
    })
}

/// The service times the simulated handler really took (tokio's timer rounds sleeps up to
/// its millisecond tick, so they run longer than asked).
///
/// ```no_run
/// use std::io::Read;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use synack_load::tune::{ServiceClock, ServiceDist, Simulated, start_server};
///
/// let service_time = Duration::from_millis(2);
/// let sim = Simulated { service_time, dist: ServiceDist::Fixed, workers: 1, max_connections: 8 };
/// let served = Arc::new(ServiceClock::default());
/// assert_eq!(served.mean(), None); // nothing served yet
/// let server = start_server(&sim, 64, served.clone(), None)?;
/// // The probe header, then "ok\n" after the service time, then the close.
/// std::net::TcpStream::connect(server.local_addr())?.read_to_end(&mut Vec::new())?;
/// // One service was timed: the mean of what the handler really took is known.
/// assert!(served.mean().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct ServiceClock {
    total_ns: AtomicU64,
    count: AtomicU64,
    /// Running mean of (slept - asked), ns: what the timer adds to a sleep.
    overshoot_ns: AtomicU64,
}

impl ServiceClock {
    fn overshoot(&self) -> Duration {
        Duration::from_nanos(self.overshoot_ns.load(Relaxed))
    }

    fn add(&self, asked: Duration, took: Duration) {
        self.total_ns.fetch_add(took.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
        // An exponential moving average (1/64) of how far past the asked time sleeps end,
        // counted from what was really slept.
        let slept = asked.saturating_sub(self.overshoot());
        let over = took.saturating_sub(slept).as_nanos() as u64;
        let old = self.overshoot_ns.load(Relaxed);
        self.overshoot_ns.store(old - old / 64 + over / 64, Relaxed);
    }

    /// The mean service time so far.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count.load(Relaxed);
        (n > 0).then(|| Duration::from_nanos(self.total_ns.load(Relaxed) / n))
    }
}

/// A certificate made for one tune run: the simulated server's TLS configuration, and the
/// generator's options trusting that certificate alone (as `localhost`).
pub(crate) struct SelfSigned {
    pub server: Arc<rustls::ServerConfig>,
    pub client: crate::tls::TlsOptions,
}

/// Makes a self-signed certificate for `localhost` (rcgen; nothing is kept after the run but
/// a temporary PEM of the certificate for the generator to trust).
pub(crate) fn self_signed(
    asked: &crate::tls::TlsOptions,
) -> Result<SelfSigned, crate::error::LoadError> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let run = |e: String| {
        crate::error::LoadError::Run(format!("a certificate for the simulated server: {e}"))
    };
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| run(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    // A synack server's defaults (synack::tls::server_config's), as the user's would have.
    let alpn: Vec<&[u8]> = asked.alpn.iter().map(|a| a.as_bytes()).collect();
    let server = synack::tls::config_for(vec![c.cert.der().clone()], key, &alpn)
        .map_err(|e| run(e.to_string()))?;
    let pem = std::env::temp_dir().join(format!("synack-tune-{}-ca.pem", std::process::id()));
    std::fs::write(&pem, c.cert.pem()).map_err(|e| run(format!("{}: {e}", pem.display())))?;
    let client = crate::tls::TlsOptions {
        sni: Some("localhost".into()),
        cacert: Some(pem),
        insecure: false,
        ..asked.clone()
    };
    Ok(SelfSigned {
        server: Arc::new(server),
        client,
    })
}
