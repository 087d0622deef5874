//! The `tls` bench target: full TLS 1.3 ECDSA P-256 handshakes, side by side in one run.
//!
//! 1. The floor: rustls server and client in memory, one thread, no sockets: server CPU per
//!    handshake and client CPU per handshake: the thread's CPU time, split by each side's timed calls.
//! 2. The same flood against a rustls server on one blocking thread (`complete_io` on a
//!    `std::net::TcpStream`, no runtime): what TCP over loopback costs rustls itself.
//! 3. End to end over loopback, TCP included: a synack TLS server (one worker, accepting on
//!    it) against synack-load's rustls client (one thread, closed loop), both in this process;
//!    the server's CPU is its threads' (`synack-worker-*`), the generator's its thread's
//!    (`synack-load-*`), from `/proc/self/task/*/schedstat` (nanoseconds). The servers' time is
//!    split into user space and kernel by their threads' clock ticks (`stat`), to show where
//!    it goes beside the floor, which makes no syscalls.
//!
//! Runs interleave (floor, blocking, synack, floor, ...); the table gives medians with the
//! spread, and each run's rates per core over the floor of that same run (so a slower minute of
//! the shared host divides out), medians of those ratios.
//!
//! While it runs, a `SCHED_IDLE` spinner on each CPU keeps the virtual CPUs from halting when
//! the end-to-end threads sleep between connections (the floor never sleeps); it never takes
//! the CPU from them. `--let-cpus-idle` measures without.
//!
//! ```text
//! cargo bench -p synack-compare --bench tls -- [--runs 5] [--seconds 3] [--let-cpus-idle]
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

/// `n` full handshakes in memory: (server CPU, client CPU). The thread's CPU time over the
/// whole loop (what the scheduler ran, so time the host took away is not counted, as it is not
/// for the end-to-end threads), split between the sides by their own timed calls.
fn in_memory(certs: &Certs, n: usize) -> (Duration, Duration) {
    let cpu = || synack_sys::current_thread_cpu().ok().flatten();
    let before = cpu();
    let (server_t, client_t) = in_memory_timed(certs, n);
    let (Some(before), Some(after)) = (before, cpu()) else {
        return (server_t, client_t);
    };
    let total = (after - before).as_secs_f64();
    let share = server_t.as_secs_f64() / (server_t + client_t).as_secs_f64();
    (
        Duration::from_secs_f64(total * share),
        Duration::from_secs_f64(total * (1.0 - share)),
    )
}

/// `n` full handshakes in memory, each side's own calls timed.
fn in_memory_timed(certs: &Certs, n: usize) -> (Duration, Duration) {
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

/// The CPU time of this process's threads named `prefix...`, and the system time's share
/// of it (from the clock ticks of `/proc/self/task/*/stat`).
#[derive(Clone, Copy, Default)]
struct Cpu {
    total: Duration,
    user_ticks: Duration,
    system_ticks: Duration,
}

impl Cpu {
    fn of(prefix: &str) -> Cpu {
        synack_sys::thread_cpu_times()
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.name.starts_with(prefix))
            .fold(Cpu::default(), |a, t| Cpu {
                total: a.total + t.cpu,
                user_ticks: a.user_ticks + t.user,
                system_ticks: a.system_ticks + t.system,
            })
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            total: self.total - before.total,
            user_ticks: self.user_ticks - before.user_ticks,
            system_ticks: self.system_ticks - before.system_ticks,
        }
    }

    /// The share of the time spent in the kernel.
    fn system_share(self) -> f64 {
        let ticks = (self.user_ticks + self.system_ticks).as_secs_f64();
        if ticks > 0.0 {
            self.system_ticks.as_secs_f64() / ticks
        } else {
            0.0
        }
    }
}

/// The flood every server here gets: one generator thread, a closed loop of 16, full
/// handshakes (no resumption), each answer `hi`.
fn flood(certs: &Certs, addr: &str, seconds: u64) -> synack_load::plan::Plan {
    let tls = TlsOptions {
        sni: Some("localhost".into()),
        cacert: Some(certs.pem.clone()),
        resumption: Resumption::Off,
        ..TlsOptions::default()
    };
    PlanBuilder::new(
        addr,
        Load::Closed { concurrency: 16 },
        Duration::from_secs(seconds),
    )
    .threads(Some(1))
    .expect(Some(b"hi".to_vec()))
    .tls(Some(tls))
    .build()
    .unwrap()
}

/// One end-to-end run: (handshakes, server CPU, generator CPU, the generator's kernel share).
fn end_to_end(certs: &Certs, seconds: u64) -> (u64, Cpu, Duration, f64) {
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
    let plan = flood(certs, &server.local_addr().to_string(), seconds);
    let before = server.stats().tls.handshakes;
    let server_before = Cpu::of("synack-worker");
    // The generator's threads end with the run, their ticks with them: its split is read
    // while it runs, from the first progress tick (about a second in) to the last.
    let (mut first, mut last) = (None, None);
    let run = synack_load::engine::run(&plan, |_, _, _| {
        let now = Cpu::of("synack-load");
        if first.is_none() {
            first = Some(now);
        } else {
            last = Some(now);
        }
    })
    .unwrap();
    let server_cpu = Cpu::of("synack-worker").since(server_before);
    let gen_kernel = match (first, last) {
        (Some(a), Some(b)) => b.since(a).system_share(),
        _ => f64::NAN,
    };
    let done = server.stats().tls.handshakes - before;
    let gen_cpu: Duration = run.thread_cpu.iter().sum();
    assert_eq!(
        run.rec.tls_full + run.rec.tls_resumed,
        run.rec.count(synack_load::outcome::Outcome::Ok)
    );
    drop(server);
    (done, server_cpu, gen_cpu, gen_kernel)
}

/// The same flood against a blocking rustls server on one plain thread (no runtime, no
/// acceptor): what TCP over loopback adds to the in-memory floor, server CPU only.
fn blocking_baseline(certs: &Certs, seconds: u64) -> (u64, Cpu) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = certs.server.clone();
    let stop2 = stop.clone();
    let server = std::thread::Builder::new()
        .name("baseline-server".into())
        .spawn(move || {
            let mut done = 0u64;
            for conn in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(mut tcp) = conn else { continue };
                let _ = tcp.set_nodelay(true);
                let mut tls = ServerConnection::new(config.clone()).unwrap();
                let ok = (|| -> std::io::Result<()> {
                    while tls.is_handshaking() {
                        tls.complete_io(&mut tcp)?;
                    }
                    tls.writer().write_all(b"hi")?;
                    tls.send_close_notify();
                    while tls.wants_write() {
                        tls.write_tls(&mut tcp)?;
                    }
                    Ok(())
                })();
                if ok.is_ok() {
                    done += 1;
                }
                let mut sink = [0u8; 64];
                let _ = tcp.shutdown(std::net::Shutdown::Write);
                let _ = tcp.read(&mut sink);
            }
            done
        })
        .unwrap();
    let plan = flood(certs, &addr.to_string(), seconds);
    let before = Cpu::of("baseline-server");
    let _ = synack_load::engine::run(&plan, |_, _, _| {}).unwrap();
    let cpu = Cpu::of("baseline-server").since(before);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = std::net::TcpStream::connect(addr);
    let done = server.join().unwrap();
    (done, cpu)
}

/// One `SCHED_IDLE` spinner per CPU, until `stop`: a virtual CPU whose threads all sleep
/// halts, the host runs someone else on it, and the caches the server had are gone when the
/// next connection wakes it. The in-memory floor never sleeps; with spinners the end-to-end
/// threads do not either, and they still get the CPU the moment they want it (the spinners'
/// time is their own, not counted for anyone measured).
fn keep_cpus_awake(stop: &Arc<std::sync::atomic::AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..cpus)
        .map(|cpu| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("awake-{cpu}"))
                .spawn(move || {
                    let _ = synack_sys::pin_to_cpu(cpu);
                    if synack_sys::set_sched_idle().is_err() {
                        return;
                    }
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
                .unwrap()
        })
        .collect()
}

/// A side's CPU per handshake at `rate` handshakes per CPU second, split by its kernel share:
/// (user space, kernel) in microseconds.
fn split(rate: f64, kernel_share: f64) -> (f64, f64) {
    let each = 1e6 / rate;
    (each * (1.0 - kernel_share), each * kernel_share)
}

fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let mut runs = 5usize;
    let mut seconds = 3u64;
    let mut awake = true;
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
            "--let-cpus-idle" => awake = false,
            "--bench" => {}
            other => {
                eprintln!(
                    "tls bench: unknown argument {other:?}: --runs N, --seconds S and --let-cpus-idle are accepted"
                );
                std::process::exit(2);
            }
        }
    }
    let certs = certs();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners = if awake {
        keep_cpus_awake(&stop)
    } else {
        Vec::new()
    };
    // Warm up both paths once.
    let _ = in_memory(&certs, 200);
    let _ = end_to_end(&certs, 1);
    let mut rows: [Vec<f64>; 5] = Default::default();
    let (mut server_ratio, mut baseline_ratio, mut client_ratio) = (vec![], vec![], vec![]);
    // Per handshake, split by the ticks: synack's user space and kernel, the blocking
    // server's kernel; synack's user space over the floor.
    let (mut user_us, mut kernel_us, mut b_kernel_us, mut user_ratio) =
        (vec![], vec![], vec![], vec![]);
    let (mut g_user_us, mut g_kernel_us, mut g_user_ratio) = (vec![], vec![], vec![]);
    for i in 0..runs {
        let n = 2000;
        let (s, c) = in_memory(&certs, n);
        let (fs, fc) = (n as f64 / s.as_secs_f64(), n as f64 / c.as_secs_f64());
        let (bd, b_cpu) = blocking_baseline(&certs, seconds);
        let bs = bd as f64 / b_cpu.total.as_secs_f64();
        let (done, s_cpu, g_cpu, g_share) = end_to_end(&certs, seconds);
        let (es, ec) = (
            done as f64 / s_cpu.total.as_secs_f64(),
            done as f64 / g_cpu.as_secs_f64(),
        );
        let (user, kernel) = split(es, s_cpu.system_share());
        user_us.push(user);
        kernel_us.push(kernel);
        user_ratio.push(1e6 / fs / user);
        b_kernel_us.push(split(bs, b_cpu.system_share()).1);
        if g_share.is_finite() {
            let (user, kernel) = split(ec, g_share);
            g_user_us.push(user);
            g_kernel_us.push(kernel);
            g_user_ratio.push(1e6 / fc / user);
        }
        for (row, v) in rows.iter_mut().zip([fs, fc, bs, es, ec]) {
            row.push(v);
        }
        server_ratio.push(es / fs);
        baseline_ratio.push(bs / fs);
        client_ratio.push(ec / fc);
        let _ = writeln!(
            std::io::stderr(),
            "run {}: floor server {fs:.0}/s client {fc:.0}/s; blocking rustls server over loopback {bs:.0}/s; synack {done} handshakes, server {es:.0}/s per core, generator {ec:.0}/s per core",
            i + 1,
        );
    }
    let row = |name: &str, v: &[f64]| {
        let (m, lo, hi) = median_spread(v.to_vec());
        println!(
            "  {name:<58} {m:>7.0}/s  ({lo:.0} .. {hi:.0})  {:>6.1} us each",
            1e6 / m
        );
    };
    let ratio = |name: &str, v: &[f64], goal: &str| {
        let (m, lo, hi) = median_spread(v.to_vec());
        println!("  {name:<58} {m:>7.2}x  ({lo:.2} .. {hi:.2}){goal}");
    };
    println!(
        "full TLS 1.3 ECDSA P-256 handshakes (X25519MLKEM768, rustls' default), CPU time per handshake, medians of {runs} interleaved runs (spread):"
    );
    row("rustls in memory, server side (the floor)", &rows[0]);
    row("rustls in memory, client side (the floor)", &rows[1]);
    row(
        "rustls server, one blocking thread, over loopback",
        &rows[2],
    );
    row(
        "synack server over loopback, TCP included, per core",
        &rows[3],
    );
    row(
        "synack-load client over loopback, TCP included, per core",
        &rows[4],
    );
    println!("ratios to the floor of the same run, medians (spread):");
    ratio("synack server", &server_ratio, "  goal at least 0.87x");
    ratio(
        "blocking rustls server over loopback (what TCP costs rustls)",
        &baseline_ratio,
        "",
    );
    ratio("synack-load client", &client_ratio, "  goal at least 0.9x");
    let time = |name: &str, v: &[f64]| {
        let (m, lo, hi) = median_spread(v.to_vec());
        println!("  {name:<58} {m:>7.1} us  ({lo:.1} .. {hi:.1})");
    };
    println!(
        "where the server's time goes, per handshake (its threads' CPU split by the clock ticks of /proc/self/task/*/stat), medians (spread):"
    );
    time(
        "synack server, user space (rustls, runtime, synack)",
        &user_us,
    );
    time(
        "synack server, kernel (syscalls, TCP over loopback)",
        &kernel_us,
    );
    time("blocking rustls server, kernel", &b_kernel_us);
    ratio(
        "synack server's user space alone, to the floor",
        &user_ratio,
        "  (the floor makes no syscalls)",
    );
    if !g_user_us.is_empty() {
        time(
            "synack-load client, user space (rustls, the engine)",
            &g_user_us,
        );
        time(
            "synack-load client, kernel (syscalls, TCP over loopback)",
            &g_kernel_us,
        );
        ratio(
            "synack-load client's user space alone, to the floor",
            &g_user_ratio,
            "",
        );
    }
    println!(
        "  (the synack server's own part: {:.2}x the blocking rustls server's rate, medians)",
        median_spread(
            server_ratio
                .iter()
                .zip(&baseline_ratio)
                .map(|(s, b)| s / b)
                .collect()
        )
        .0
    );
    println!(
        "  CPUs {}",
        if awake {
            "kept from halting by a SCHED_IDLE spinner each, as the floor's never halts (--let-cpus-idle: without)"
        } else {
            "left to halt between connections (the end-to-end threads sleep, the floor does not)"
        }
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        let _ = s.join();
    }
    let _ = std::fs::remove_file(&certs.pem);
}

fn usage() -> ! {
    eprintln!("tls bench: --runs N and --seconds S take a whole number above 0");
    std::process::exit(2);
}
