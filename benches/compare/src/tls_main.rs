//! The `tls` bench target: full TLS 1.3 ECDSA P-256 handshakes, side by side in one run.
//!
//! 1. The floor: rustls server and client in memory, one thread, no sockets: server CPU per
//!    handshake and client CPU per handshake, each side timed on its own calls.
//! 2. End to end over loopback, TCP included: a synack TLS server (one worker, accepting on
//!    it) against synack-load's rustls client (one thread, closed loop), both in this process;
//!    the server's CPU is its threads' (`synack-worker-*`), the generator's its thread's
//!    (`synack-load-*`), from `/proc/thread-self`.
//!
//! Runs interleave (floor, end to end, floor, ...) and the table gives medians with the
//! spread, and the ratios of end-to-end rate per core to the floor's.
//!
//! ```text
//! cargo bench -p synack-compare --bench tls -- [--runs 5] [--seconds 3]
//! ```

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use synack_load::plan::{Load, PlanBuilder};
use synack_load::tls::{Resumption, TlsOptions};
use tokio::io::AsyncWriteExt;

struct Certs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    pem: std::path::PathBuf,
}

fn certs() -> Certs {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der: CertificateDer<'static> = c.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    let server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let mut client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    let pem = std::env::temp_dir().join(format!("synack-tls-bench-{}.pem", std::process::id()));
    std::fs::write(&pem, c.cert.pem()).unwrap();
    Certs {
        server: Arc::new(server),
        client: Arc::new(client),
        pem,
    }
}

/// Moves what `from` has to write into `to`, timing each side's own calls.
fn pump(
    from: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    to: &mut dyn FnMut(&[u8]),
    buf: &mut Vec<u8>,
) -> bool {
    buf.clear();
    if !from(buf) {
        return false;
    }
    to(buf);
    true
}

/// `n` full handshakes in memory: (server CPU, client CPU), each side's own calls timed.
fn in_memory(certs: &Certs, n: usize) -> (Duration, Duration) {
    let name = ServerName::try_from("localhost").unwrap();
    let (mut server_t, mut client_t) = (Duration::ZERO, Duration::ZERO);
    let mut buf = Vec::with_capacity(16 * 1024);
    for _ in 0..n {
        let t = Instant::now();
        let mut c = ClientConnection::new(certs.client.clone(), name.clone()).unwrap();
        client_t += t.elapsed();
        let t = Instant::now();
        let mut s = ServerConnection::new(certs.server.clone()).unwrap();
        server_t += t.elapsed();
        loop {
            let mut moved = false;
            // Client to server.
            moved |= pump(
                &mut |out| {
                    let t = Instant::now();
                    while c.wants_write() {
                        c.write_tls(out).unwrap();
                    }
                    client_t += t.elapsed();
                    !out.is_empty()
                },
                &mut |data| {
                    let t = Instant::now();
                    let mut rd = data;
                    while !rd.is_empty() {
                        s.read_tls(&mut rd).unwrap();
                        s.process_new_packets().unwrap();
                    }
                    server_t += t.elapsed();
                },
                &mut buf,
            );
            // Server to client.
            moved |= pump(
                &mut |out| {
                    let t = Instant::now();
                    while s.wants_write() {
                        s.write_tls(out).unwrap();
                    }
                    server_t += t.elapsed();
                    !out.is_empty()
                },
                &mut |data| {
                    let t = Instant::now();
                    let mut rd = data;
                    while !rd.is_empty() {
                        c.read_tls(&mut rd).unwrap();
                        c.process_new_packets().unwrap();
                    }
                    client_t += t.elapsed();
                },
                &mut buf,
            );
            if !moved && !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
    }
    (server_t, client_t)
}

fn threads_cpu(prefix: &str) -> Duration {
    synack_sys::thread_cpu_times()
        .ok()
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.name.starts_with(prefix))
        .map(|t| t.cpu)
        .sum()
}

/// One end-to-end run: (handshakes, server CPU, generator CPU).
fn end_to_end(certs: &Certs, seconds: u64) -> (u64, Duration, Duration) {
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .accept_in_workers(true)
        .inherit(false)
        .tls(certs.server.clone())
        .serve(|mut c: synack::Connection| async move {
            c.write_all(b"hi").await?;
            c.shutdown().await
        })
        .unwrap();
    let tls = TlsOptions {
        sni: Some("localhost".into()),
        cacert: Some(certs.pem.clone()),
        resumption: Resumption::Off,
        ..TlsOptions::default()
    };
    let plan = PlanBuilder::new(
        &server.local_addr().to_string(),
        Load::Closed { concurrency: 16 },
        Duration::from_secs(seconds),
    )
    .threads(Some(1))
    .expect(Some(b"hi".to_vec()))
    .tls(Some(tls))
    .build()
    .unwrap();
    let before = server.stats().tls.handshakes;
    let server_before = threads_cpu("synack-worker");
    let run = synack_load::engine::run(&plan, |_, _, _| {}).unwrap();
    let server_cpu = threads_cpu("synack-worker") - server_before;
    let done = server.stats().tls.handshakes - before;
    let gen_cpu: Duration = run.thread_cpu.iter().sum();
    assert_eq!(
        run.rec.tls_full + run.rec.tls_resumed,
        run.rec.count(synack_load::outcome::Outcome::Ok)
    );
    drop(server);
    (done, server_cpu, gen_cpu)
}

fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let mut runs = 5usize;
    let mut seconds = 3u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&r| r > 0)
                    .unwrap_or_else(|| usage())
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&s| s > 0)
                    .unwrap_or_else(|| usage())
            }
            "--bench" => {}
            other => {
                eprintln!(
                    "tls bench: unknown argument {other:?}: --runs N, --seconds S are accepted"
                );
                std::process::exit(2);
            }
        }
    }
    let certs = certs();
    // Warm up both paths once.
    let _ = in_memory(&certs, 200);
    let _ = end_to_end(&certs, 1);
    let (mut floor_s, mut floor_c, mut e2e_s, mut e2e_c) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let n = 2000;
        let (s, c) = in_memory(&certs, n);
        floor_s.push(n as f64 / s.as_secs_f64());
        floor_c.push(n as f64 / c.as_secs_f64());
        let (done, s_cpu, g_cpu) = end_to_end(&certs, seconds);
        e2e_s.push(done as f64 / s_cpu.as_secs_f64());
        e2e_c.push(done as f64 / g_cpu.as_secs_f64());
        let _ = writeln!(
            std::io::stderr(),
            "run {}: floor server {:.0}/s client {:.0}/s; end to end {done} handshakes, server {:.0}/s per core, generator {:.0}/s per core",
            i + 1,
            floor_s[i],
            floor_c[i],
            e2e_s[i],
            e2e_c[i]
        );
    }
    let row = |name: &str, v: &[f64]| {
        let (m, lo, hi) = median_spread(v.to_vec());
        println!(
            "  {name:<52} {m:>9.0}/s  ({lo:.0} .. {hi:.0})  {:>6.1} us each",
            1e6 / m
        );
        m
    };
    println!("full TLS 1.3 ECDSA P-256 handshakes, medians of {runs} interleaved runs (spread):");
    let fs = row("rustls in memory, server side (the floor)", &floor_s);
    let fc = row("rustls in memory, client side (the floor)", &floor_c);
    let es = row(
        "synack server over loopback, TCP included, per core",
        &e2e_s,
    );
    let ec = row(
        "synack-load client over loopback, TCP included, per core",
        &e2e_c,
    );
    println!(
        "  server: {:.2}x the floor's rate (goal at least 0.87x)",
        es / fs
    );
    println!(
        "  generator: {:.2}x the floor's rate (goal at least 0.9x)",
        ec / fc
    );
    let _ = std::fs::remove_file(&certs.pem);
}

fn usage() -> ! {
    eprintln!("tls bench: --runs N and --seconds S take a whole number above 0");
    std::process::exit(2);
}
