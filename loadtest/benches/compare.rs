//! The comparison harness: the synack greeting server, a plain tokio accept loop, and the floor
//! (one thread, epoll + accept4 + write + close, through mio), each in a child process pinned to
//! CPU 0, flooded one at a time by synack-load's engine pinned to CPU 1 with identical settings.
//!
//! ```text
//! cargo bench -p synack-loadtest --bench compare              # the table (about a minute)
//! cargo bench -p synack-loadtest --bench compare -- --memory  # also RSS per held connection
//! cargo bench -p synack-loadtest --bench compare -- --only synack-inworker --runs 5
//! cargo bench -p synack-loadtest --bench compare -- --generators --runs 9   # generators only
//! cargo bench -p synack-loadtest --bench compare -- --open-loop --runs 5    # past capacity only
//! ```
//!
//! Each connection: connect, the server writes 8 bytes and closes, the client reads them and
//! closes with RST. Server CPU is the child's `getrusage` user + system time over the flood.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use synack_load::engine;
use synack_load::plan::{CloseMode, Load, Plan};

const PAYLOAD: &[u8] = b"8 bytes\n";
/// The servers compared, in table order; actix-server only when built with `--features actix`.
const KINDS: &[&str] = &[
    "floor",
    "synack",
    "synack-batch",
    "synack-inworker",
    "tokio",
    #[cfg(feature = "actix")]
    "actix",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--server") {
        let cpu = args
            .iter()
            .position(|a| a == "--cpu")
            .and_then(|i| args.get(i + 1)?.parse().ok());
        return child(&args[i + 1], cpu);
    }
    let memory = args.iter().any(|a| a == "--memory");
    let num = |flag: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(default)
    };
    // `--only floor,synack-inworker`: a subset of the servers (the floor is always run, as
    // the ratios are to it).
    let kinds: Vec<&str> = match args.iter().position(|a| a == "--only") {
        Some(i) => {
            let want: Vec<&str> = args.get(i + 1).map_or(vec![], |v| v.split(',').collect());
            if let Some(bad) = want.iter().find(|k| !KINDS.contains(k)) {
                eprintln!(
                    "compare: --only: unknown server {bad:?}; known: {}",
                    KINDS.join(", ")
                );
                std::process::exit(2);
            }
            KINDS
                .iter()
                .copied()
                .filter(|k| *k == "floor" || want.contains(k))
                .collect()
        }
        None => KINDS.to_vec(),
    };
    if args.iter().any(|a| a == "--open-loop") {
        let cpus = setup();
        return open_loop(cpus, num("--seconds", 3), num("--runs", 3).max(1) as usize);
    }
    if args.iter().any(|a| a == "--generators") {
        let cpus = setup();
        return generators(cpus, num("--seconds", 3), num("--runs", 3).max(1) as usize);
    }
    parent(
        &kinds,
        memory,
        num("--seconds", 3),
        num("--runs", 3).max(1) as usize,
    );
}

// ---------------------------------------------------------------- the servers (child side)

fn child(kind: &str, cpu: Option<usize>) {
    if let Some(c) = cpu {
        let _ = synack_sys::pin_to_cpu(c);
    }
    if let Ok((_, hard)) = synack_sys::nofile_limit() {
        let _ = synack_sys::set_nofile_limit(hard, hard);
    }
    let mut out = std::io::stdout();
    // "-hold" variants keep each connection open until the client closes it (for memory).
    let (kind, hold) = match kind.strip_suffix("-hold") {
        Some(k) => (k, true),
        None => (kind, false),
    };
    // "synack-batch": the same server with sched_batch(true).
    // "synack-inworker": the same server accepting on its worker (no acceptor thread).
    let (kind, batch, in_worker) = match kind {
        "synack-batch" => ("synack", true, false),
        "synack-inworker" => ("synack", false, true),
        k => (k, false, false),
    };
    let stats: Box<dyn Fn() -> String> = match kind {
        "floor" => {
            let addr = floor_server();
            writeln!(out, "READY {addr}").unwrap();
            Box::new(|| "-".into())
        }
        "synack" => {
            let server = synack::Server::builder()
                .bind("127.0.0.1:0")
                .unwrap()
                .backlog(BACKLOG as u32)
                .workers(1)
                .acceptors(1)
                .max_connections(100_000)
                .sched_batch(batch)
                .accept_in_workers(in_worker)
                .serve(move |mut c: synack::Connection| async move {
                    tokio::io::AsyncWriteExt::write_all(&mut c, PAYLOAD).await?;
                    if hold {
                        let mut b = [0u8; 64];
                        while tokio::io::AsyncReadExt::read(&mut c, &mut b).await? != 0 {}
                    }
                    Ok::<_, std::io::Error>(())
                })
                .unwrap();
            writeln!(out, "READY {}", server.local_addr()).unwrap();
            Box::new(move || {
                let s = server.stats();
                format!(
                    "{}/{}",
                    s.dispatch_latency_us.value_at_quantile(0.5),
                    s.dispatch_latency_us.value_at_quantile(0.99)
                )
            })
        }
        "tokio" => {
            let addr = tokio_server(hold);
            writeln!(out, "READY {addr}").unwrap();
            Box::new(|| "-".into())
        }
        #[cfg(feature = "actix")]
        "actix" => {
            let addr = actix_server();
            writeln!(out, "READY {addr}").unwrap();
            Box::new(|| "-".into())
        }
        other => panic!("unknown server {other}"),
    };
    out.flush().unwrap();
    let base_rss = synack_sys::resident_bytes().unwrap_or(0);
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        if line == "report" {
            let cpu = synack_sys::process_cpu_time().unwrap();
            writeln!(
                out,
                "REPORT {} {} {} {}",
                cpu.as_nanos(),
                stats(),
                synack_sys::resident_bytes().unwrap_or(0),
                base_rss
            )
            .unwrap();
            out.flush().unwrap();
        } else {
            break;
        }
    }
}

/// The floor: one thread, mio (epoll) readiness, accept4, write, close.
fn floor_server() -> SocketAddr {
    use mio::net::TcpListener;
    use mio::{Events, Interest, Poll, Token};
    let std_listener = listener(BACKLOG);
    std_listener.set_nonblocking(true).unwrap();
    let mut listener = TcpListener::from_std(std_listener);
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut listener, Token(0), Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(64);
        loop {
            let _ = poll.poll(&mut events, None);
            loop {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = std::io::Write::write(&mut s, PAYLOAD);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
    });
    addr
}

/// A plain tokio accept loop on a current-thread runtime, a task per connection.
/// Every server's listen backlog: the same for all, so that none drops SYNs another would
/// have queued (mio's and std's own default is 128, tokio's 1024).
const BACKLOG: i32 = 4096;

/// A listening socket on 127.0.0.1 with `backlog`, for the baselines.
fn listener(backlog: i32) -> std::net::TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(backlog).unwrap();
    s.into()
}

fn tokio_server(hold: bool) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let std_listener = listener(BACKLOG);
            std_listener.set_nonblocking(true).unwrap();
            let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                if let Ok((mut s, _)) = l.accept().await {
                    tokio::spawn(async move {
                        let _ = tokio::io::AsyncWriteExt::write_all(&mut s, PAYLOAD).await;
                        if hold {
                            let mut b = [0u8; 64];
                            while let Ok(n) = tokio::io::AsyncReadExt::read(&mut s, &mut b).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        }
                    });
                }
            }
        });
    });
    rx.recv().unwrap()
}

/// actix-server 2 with one worker: a service per connection writing the payload.
#[cfg(feature = "actix")]
fn actix_server() -> SocketAddr {
    let listener = listener(BACKLOG);
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            actix_server::Server::build()
                .listen("greeting", listener, || {
                    actix_service::fn_service(|mut s: actix_rt::net::TcpStream| async move {
                        tokio::io::AsyncWriteExt::write_all(&mut s, PAYLOAD).await
                    })
                })
                .unwrap()
                .workers(1)
                .run()
                .await
                .unwrap();
        });
    });
    addr
}

// ---------------------------------------------------------------- the generator (parent side)

struct ChildServer {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    addr: SocketAddr,
}

struct Report {
    cpu: Duration,
    dispatch: String,
    rss: u64,
    base_rss: u64,
}

impl ChildServer {
    fn start(kind: &str, cpus: usize) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--server", kind]);
        if cpus > 1 {
            cmd.args(["--cpu", "0"]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("READY ").unwrap().parse().unwrap();
        ChildServer {
            child,
            stdin,
            out,
            addr,
        }
    }

    fn report(&mut self) -> Report {
        writeln!(self.stdin, "report").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        Report {
            cpu: Duration::from_nanos(f[1].parse().unwrap()),
            dispatch: f[2].to_string(),
            rss: f[3].parse().unwrap(),
            base_rss: f[4].parse().unwrap(),
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn plan(addr: SocketAddr, load: Load, duration: Duration, hold: Option<Duration>) -> Plan {
    Plan {
        target_text: addr.to_string(),
        target: addr,
        load,
        duration,
        connections: None,
        send: 0,
        read: if hold.is_some() {
            None
        } else {
            Some(PAYLOAD.len())
        },
        read_timeout: Duration::from_secs(2),
        hold,
        close: CloseMode::Rst,
        reuse_sockets: true,
        threads: 1,
        sources: vec![],
        connect_timeout: Duration::from_secs(3),
        probe: false,
        // The memory phase holds 15,000: the limit must allow them (checked where it runs).
        max_in_flight: synack_load::plan::fd_budget(1, 0).map_or(1 << 20, |b| b as usize),
        lag_limit: Duration::from_millis(1),
    }
}

/// Phase 1 once: (connections per second, server CPU per connection in us).
fn phase1(kind: &str, cpus: usize, seconds: u64) -> (f64, f64) {
    let mut s = ChildServer::start(kind, cpus);
    let before = s.report();
    let run = engine::run(
        &plan(
            s.addr,
            Load::Closed { concurrency: 64 },
            Duration::from_secs(seconds),
            None,
        ),
        |_, _, _| {},
    )
    .unwrap();
    let after = s.report();
    drop(s);
    let served = run.rec.established;
    let rate = served as f64 / run.active.as_secs_f64();
    let cpu_us = (after.cpu - before.cpu).as_secs_f64() * 1e6 / served.max(1) as f64;
    std::thread::sleep(Duration::from_millis(300));
    (rate, cpu_us)
}

/// Phase 2 once, after the kernel has settled from the last flood: dispatch p50/p99 (servers
/// that report it), time to first byte p50/p99 and the generator's lag p99, in us.
fn phase2(kind: &str, cpus: usize) -> (Option<[u64; 2]>, [u64; 3]) {
    let mut s = ChildServer::start(kind, cpus);
    std::thread::sleep(Duration::from_secs(1));
    let run = engine::run(
        &plan(
            s.addr,
            Load::Open {
                from: 10_000.0,
                to: 10_000.0,
                burst: 0,
            },
            Duration::from_secs(3),
            None,
        ),
        |_, _, _| {},
    )
    .unwrap();
    let r = s.report();
    drop(s);
    // "p50/p99" from a synack child, "-" from the others.
    let dispatch = r
        .dispatch
        .split_once('/')
        .and_then(|(a, b)| Some([a.parse().ok()?, b.parse().ok()?]));
    let fb = &run.rec.first_byte;
    (
        dispatch,
        [
            fb.value_at_quantile(0.5),
            fb.value_at_quantile(0.99),
            run.rec.start_lag.value_at_quantile(0.99),
        ],
    )
}

/// The median of each field over runs.
fn medians<const N: usize>(runs: impl Iterator<Item = [u64; N]>) -> [u64; N] {
    let runs: Vec<[u64; N]> = runs.collect();
    std::array::from_fn(|k| median(runs.iter().map(|r| r[k] as f64).collect()) as u64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pins the parent (the generator) to CPU 1 when there are two, raises its descriptor limit,
/// and returns the CPU count.
fn setup() -> usize {
    // Counted before pinning: the mask narrows what available_parallelism sees.
    let cpus = num_cpus();
    if cpus > 1 {
        let _ = synack_sys::pin_to_cpu(1);
    }
    if let Ok((_, hard)) = synack_sys::nofile_limit() {
        let _ = synack_sys::set_nofile_limit(hard, hard);
    }
    cpus
}

fn parent(kinds: &[&str], memory: bool, seconds: u64, runs: usize) {
    let cpus = setup();
    println!("compare: {cpus} CPUs; servers pinned to CPU 0, the generator (1 thread) to CPU 1");
    println!(
        "phase 1: closed loop, 64 in flight, {seconds} s; phase 2: open loop 10k/s, 3 s; {runs} runs of each, interleaved (medians)\n"
    );
    // Before any flood (whose kernel clean-up lingers): what the machine leaves a pacer.
    let (p50, p99) = ideal_pacer_lag(10_000.0, Duration::from_secs(3));
    // Phase 1: as fast as the generator goes, the servers taking turns so drift hits all.
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = kinds.iter().map(|_| (vec![], vec![])).collect();
    for _ in 0..runs {
        for (i, kind) in kinds.iter().enumerate() {
            let (rate, cpu) = phase1(kind, cpus, seconds);
            samples[i].0.push(rate);
            samples[i].1.push(cpu);
        }
    }
    // Phase 2: a fixed 10k/s for time to first byte and dispatch latency, the servers taking
    // turns again; each percentile is the median over the runs, as tails move a lot here.
    let mut tails: Vec<Vec<_>> = kinds.iter().map(|_| vec![]).collect();
    for _ in 0..runs {
        for (i, kind) in kinds.iter().enumerate() {
            tails[i].push(phase2(kind, cpus));
        }
    }
    let mut rows = Vec::new();
    for (i, kind) in kinds.iter().copied().enumerate() {
        let rate = median(samples[i].0.clone());
        let cpu_us = median(samples[i].1.clone());
        let dispatch: Option<Vec<[u64; 2]>> = tails[i].iter().map(|t| t.0).collect();
        let dispatch = dispatch.map_or("-".into(), |d| {
            let [p50, p99] = medians(d.into_iter());
            format!("{p50}/{p99} us")
        });
        let [fb50, fb99, lag99] = medians(tails[i].iter().map(|t| t.1));
        rows.push((kind, rate, cpu_us, dispatch, fb50, fb99, lag99));
    }
    let floor = rows[0].2;
    println!(
        "{:<16} {:>8} {:>12} {:>9} {:>16} {:>16} {:>12}",
        "server",
        "conn/s",
        "CPU us/conn",
        "vs floor",
        "dispatch p50/p99",
        "TTFB p50/p99 us",
        "gen lag p99"
    );
    for (kind, rate, cpu, dispatch, fb50, fb99, lag) in &rows {
        println!(
            "{:<16} {:>8.0} {:>12.1} {:>8.2}x {:>16} {:>16} {:>12}",
            kind,
            rate,
            cpu,
            cpu / floor,
            dispatch,
            format!("{fb50}/{fb99}"),
            lag
        );
    }
    println!(
        "\ngen lag: the generator's start minus its schedule at 10k/s. This machine's own floor \
         for it, a pacer that only spins and does nothing else, on the generator's CPU before \
         the floods: p50 {p50} us, p99 {p99} us."
    );
    generators(cpus, seconds, runs);
    open_loop(cpus, seconds, runs);
    if memory {
        println!("\nmemory: 15,000 idle connections held (--hold), resident set growth");
        for kind in ["synack", "tokio"] {
            let mut s = ChildServer::start(&format!("{kind}-hold"), cpus);
            let addr = s.addr;
            // Connections the generator holds (established, not ended), as of its last tick.
            let held = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let seen = held.clone();
            let holder = std::thread::spawn(move || {
                engine::run(
                    &plan(
                        addr,
                        Load::Closed {
                            concurrency: 15_000,
                        },
                        Duration::from_secs(6),
                        Some(Duration::from_secs(6)),
                    ),
                    move |_, p, _| {
                        let est = p.established.load(std::sync::atomic::Ordering::Relaxed);
                        let done = p.finished.load(std::sync::atomic::Ordering::Relaxed);
                        seen.store(
                            est.saturating_sub(done),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    },
                )
                .unwrap()
            });
            std::thread::sleep(Duration::from_secs(5));
            let r = s.report();
            let grown = r.rss.saturating_sub(r.base_rss);
            let n = held.load(std::sync::atomic::Ordering::Relaxed);
            println!(
                "{:<8} resident +{:.1} MiB over {n} held = {:.0} bytes per held connection",
                kind,
                grown as f64 / (1 << 20) as f64,
                grown as f64 / n.max(1) as f64
            );
            let _ = holder.join();
            drop(s);
        }
    }
}

/// Past the generator's capacity: one thread, against the floor server. Each round measures
/// the closed-loop capacity C (64 in flight), then offers 1.5 C and 3 C open loop; the achieved
/// rate is a ratio of that round's C (goal: at least 0.9x), every outcome that is not `ok`
/// is listed with the kernel's evidence (goal: none the kernel did not cause), and a 10k/s
/// run gives the start-lag p99 (goal: under 50 us). Medians over rounds.
fn open_loop(cpus: usize, seconds: u64, runs: usize) {
    use synack_load::outcome::Outcome;
    use synack_load::report::{FloodReport, kernel_snapshot};
    println!(
        "
open loop past capacity: one generator thread on CPU 1, the floor server on CPU 0, {seconds} s each; \
         C = that round's closed-loop rate (64 in flight)"
    );
    let server = ChildServer::start("floor", cpus);
    let addr = server.addr;
    let flood = |load: Load| -> FloodReport {
        let p = plan(addr, load, Duration::from_secs(seconds), None);
        let before = kernel_snapshot();
        let run = engine::run(&p, |_, _, _| {}).unwrap();
        let after = kernel_snapshot();
        std::thread::sleep(Duration::from_millis(500));
        FloodReport::build(
            &p,
            &run,
            &synack_load::report::HostFacts::read(),
            before,
            after,
            Vec::new(),
        )
    };
    let open = |rate: f64| Load::Open {
        from: rate,
        to: rate,
        burst: 0,
    };
    let mut caps = Vec::new();
    let mut ratios: [Vec<f64>; 2] = [vec![], vec![]];
    let mut lag = Vec::new();
    let mut not_ok: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut overflows, mut retransmitted, mut late) = (0i64, 0u64, 0u64);
    for _ in 0..runs {
        let closed = flood(Load::Closed { concurrency: 64 });
        let c = closed.achieved_rate;
        caps.push(c);
        for (k, mult) in [1.5, 3.0].into_iter().enumerate() {
            let r = flood(open(c * mult));
            ratios[k].push(r.achieved_rate / c);
            for o in Outcome::ALL {
                if o != Outcome::Ok && o != Outcome::NotStarted && r.outcome(o) > 0 {
                    *not_ok.entry(o.name().to_string()).or_default() += r.outcome(o);
                }
            }
            overflows += r.kernel_delta("TcpExt.ListenOverflows").unwrap_or(0);
            retransmitted += r.timeouts_retransmitted;
            late += r.generator.late;
        }
        let r = flood(open(10_000.0));
        lag.push(r.latency_us["start_lag"].p99 as f64);
    }
    drop(server);
    println!("closed loop C                 {:>8.0} conn/s", median(caps));
    for (k, mult) in ["1.5", "3"].iter().enumerate() {
        println!(
            "offered {mult:>3} C, achieved    {:>8.2}x C   (goal >= 0.9x)",
            median(ratios[k].clone())
        );
    }
    let listed: Vec<String> = not_ok.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "outcomes besides ok and not_started, all rounds: {}   (kernel: {overflows:+} ListenOverflows host-wide, {retransmitted} timeouts with a retransmitted SYN; late is the generator's: {late})",
        if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        }
    );
    println!(
        "start lag p99 at 10k/s         {:>8.0} us   (goal < 50 us)",
        median(lag)
    );
}

/// The lag an ideal pacer would see here: starts due every `1/rate` s, the thread doing nothing
/// but spin on the clock; returns p50 and p99 of (observed - due) in us. What the machine
/// (interrupts, the hypervisor, other threads) takes from any generator's pacing.
fn ideal_pacer_lag(rate: f64, duration: Duration) -> (u64, u64) {
    let mut h = synack_load::record::latency_histogram();
    let t0 = std::time::Instant::now();
    let step = Duration::from_secs_f64(1.0 / rate);
    let mut due = t0 + step;
    while due < t0 + duration {
        let mut now = std::time::Instant::now();
        while now < due {
            now = std::time::Instant::now();
        }
        synack_load::record::record_us(&mut h, now.duration_since(due));
        due += step;
    }
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
}

/// Connections the kernel completed passively (server side) so far: what a generator opened.
fn passive_opens() -> u64 {
    synack_sys::tcp_counters()
        .ok()
        .flatten()
        .and_then(|c| c.get("Tcp.PassiveOpens").copied())
        .unwrap_or(0)
}

/// Opens per second over a window while a generator runs (skipping its first second).
fn opens_rate(window: Duration) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    let a = passive_opens();
    std::thread::sleep(window);
    (passive_opens() - a) as f64 / window.as_secs_f64()
}

/// The generator floor: one thread, `in_flight` non-blocking connects through mio; each is
/// reset as soon as it is established (at once when `connect` itself completes it, else when
/// epoll reports it writable) and replaced. No timing, no records, no error kept: what one
/// core opens when the generator does nothing else. With `reuse`, a connection is reset by
/// `synack_sys::disconnect` and its socket connects again (as synack-load does by default);
/// without, it is closed with `SO_LINGER` 0 and a new socket made. Stops at `until`.
fn connect_loop(addr: SocketAddr, in_flight: usize, until: std::time::Instant, reuse: bool) {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use socket2::{Domain, Socket};
    use std::os::fd::AsRawFd;
    let mut poll = Poll::new().unwrap();
    let target = addr.into();
    let open = |poll: &Poll, slot: usize| -> Option<Socket> {
        while std::time::Instant::now() < until {
            let s = synack_sys::tcp_socket(Domain::for_address(addr)).ok()?;
            let _ = s.set_linger(Some(Duration::ZERO));
            match s.connect(&target) {
                Ok(()) => continue, // established already: closed (RST) here
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    let fd = s.as_raw_fd();
                    poll.registry()
                        .register(&mut SourceFd(&fd), Token(slot), Interest::WRITABLE)
                        .ok()?;
                    return Some(s);
                }
                Err(_) => return None,
            }
        }
        None
    };
    let mut conns: Vec<Option<Socket>> = (0..in_flight).map(|i| open(&poll, i)).collect();
    let mut events = Events::with_capacity(in_flight);
    let mut again = Vec::with_capacity(in_flight);
    while std::time::Instant::now() < until {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
        again.clear();
        for ev in events.iter() {
            let slot = ev.token().0;
            match &conns[slot] {
                Some(s) if reuse && synack_sys::disconnect(s).is_ok() => again.push(slot),
                _ => conns[slot] = None, // closed with RST (linger 0)
            }
        }
        // Every slot reopened after the batch of resets (resetting all first measured faster
        // than resetting and reopening one by one), and any whose connect failed.
        for &slot in &again {
            let Some(s) = &conns[slot] else { continue };
            match s.connect(&target) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(_) => conns[slot] = None,
            }
        }
        for (slot, conn) in conns.iter_mut().enumerate() {
            if conn.is_none() {
                *conn = open(&poll, slot);
            }
        }
    }
}

/// One-thread generators side by side against the floor server, interleaved: the bare connect
/// loop above, synack-load's engine and, when found, tcpkali (`TCPKALI=/path/to/tcpkali`, or
/// `tcpkali` on the PATH), all pinned to CPU 1, 64 connections in flight, each closed as soon
/// as it is established.
fn generators(cpus: usize, seconds: u64, runs: usize) {
    let tcpkali = std::env::var("TCPKALI").unwrap_or_else(|_| "tcpkali".into());
    let found = Command::new(&tcpkali)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    println!(
        "\ngenerators, one thread each on CPU 1, 64 in flight, connect then reset at once, \
         against the floor server; opens/s from the kernel's Tcp.PassiveOpens over {seconds} s"
    );
    let server = ChildServer::start("floor", cpus);
    let addr = server.addr;
    let window = Duration::from_secs(seconds);
    let run_ours = |reuse: bool| {
        let run = std::thread::spawn(move || {
            let mut p = plan(
                addr,
                Load::Closed { concurrency: 64 },
                window + Duration::from_secs(2),
                None,
            );
            p.read = None;
            p.reuse_sockets = reuse;
            engine::run(&p, |_, _, _| {}).unwrap()
        });
        let rate = opens_rate(window);
        let _ = run.join();
        rate
    };
    let run_floor = |reuse: bool| {
        let until = std::time::Instant::now() + window + Duration::from_secs(2);
        let run = std::thread::spawn(move || connect_loop(addr, 64, until, reuse));
        let rate = opens_rate(window);
        let _ = run.join();
        rate
    };
    let run_theirs = || {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", if cpus > 1 { "1" } else { "0" }, &tcpkali]);
        cmd.args(["-w", "1", "-c", "64", "--connect-rate", "1m"]);
        cmd.args(["--channel-lifetime", "0", "-T"]);
        cmd.arg(format!("{}s", seconds + 3));
        cmd.arg(addr.to_string());
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let rate = opens_rate(window);
        let _ = child.kill();
        let _ = child.wait();
        Some(rate)
    };
    // The contenders, each run once per round (tcpkali only when found), each with the connect
    // loop that makes its sockets the same way.
    struct Gen<'a> {
        name: &'static str,
        run: Box<dyn Fn() -> Option<f64> + 'a>,
        its_loop: Option<usize>,
    }
    let mut gens = vec![
        Gen {
            name: "connect loop, new sockets",
            its_loop: None,
            run: Box::new(|| Some(run_floor(false))),
        },
        Gen {
            name: "connect loop, reused",
            its_loop: None,
            run: Box::new(|| Some(run_floor(true))),
        },
        Gen {
            name: "synack-load --fresh-sockets",
            its_loop: Some(0),
            run: Box::new(|| Some(run_ours(false))),
        },
        Gen {
            name: "synack-load",
            its_loop: Some(1),
            run: Box::new(|| Some(run_ours(true))),
        },
    ];
    if found {
        gens.push(Gen {
            name: "tcpkali",
            its_loop: None,
            run: Box::new(run_theirs),
        });
    }
    let mut rates: Vec<Vec<f64>> = gens.iter().map(|_| vec![]).collect();
    // Interleaved, the order reversed every other round, so drift on this shared machine hits
    // all alike.
    for round in 0..runs {
        let mut order: Vec<usize> = (0..gens.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            rates[i].extend((gens[i].run)());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    drop(server);
    let medians: Vec<Option<f64>> = rates
        .into_iter()
        .map(|r| (!r.is_empty()).then(|| median(r)))
        .collect();
    let tcpkali = gens
        .iter()
        .position(|g| g.name == "tcpkali")
        .and_then(|i| medians[i]);
    for (g, rate) in gens.iter().zip(&medians) {
        let name = g.name;
        let Some(rate) = rate else {
            println!("{name:<28} no run completed");
            continue;
        };
        let mut line = format!("{name:<28} {rate:>8.0} opens/s");
        if let Some(f) = g.its_loop.and_then(|l| medians[l]) {
            line += &format!("   {:.2}x its connect loop", rate / f);
        }
        if let Some(t) = tcpkali.filter(|_| name != "tcpkali") {
            line += &format!("   {:.2}x tcpkali", rate / t);
        }
        println!("{line}");
    }
    if tcpkali.is_none() {
        println!(
            "{:<28} not found (set TCPKALI=/path/to/tcpkali, or put it on the PATH)",
            "tcpkali"
        );
    }
    println!("(medians of {runs} rounds)");
}
