//! The generator comparison: one-thread generators against the floor server, opens per second
//! counted by the kernel. The contenders: a bare connect loop (the floor for any generator),
//! synack-load's engine, and tcpkali when found (`TCPKALI=/path/to/tcpkali`, or on the PATH).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use synack_load::engine;
use synack_load::plan::Load;

use crate::harness::{ChildServer, median, plan};

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
pub fn connect_loop(addr: SocketAddr, in_flight: usize, until: std::time::Instant, reuse: bool) {
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
pub fn generators(cpus: usize, seconds: u64, runs: usize) {
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
            p.answer = synack_load::exchange::Answer::Ignored;
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
