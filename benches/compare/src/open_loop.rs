//! Past the generator's own capacity: the open-loop section.

use std::time::{Duration, Instant};

use synack_load::engine;
use synack_load::plan::Load;

use crate::harness::{ChildServer, median, plan};

/// Past the generator's capacity: one thread, against the floor server. Each round measures
/// the closed-loop capacity C (64 in flight), then offers 1.5 C and 3 C open loop; the achieved
/// rate is a ratio of that round's C (goal: at least 0.9x), every outcome that is not `ok`
/// is listed with the kernel's evidence (goal: none the kernel did not cause), and a 10k/s
/// run gives the start-lag p99 (goal: under 50 us). Medians over rounds.
///
/// Then the pacing rows: at 1k/s and 10k/s, the generator thread's CPU (its schedstat) and
/// start-lag p99, beside the goal of issue 26 (the closed loop's CPU per connection x rate x
/// 1.3 + 2%, from the same round), the same goal with the two sleeps a greeting costs the
/// generator added to each connection, and a bare timerfd loop of this thread that does
/// nothing but sleep and wake at that rate (its CPU per wake, and its wake lag): what sleeping
/// costs on this host before any work.
pub fn open_loop(cpus: usize, seconds: u64, runs: usize) {
    use synack_load::outcome::Outcome;
    use synack_load::report::{FloodReport, HostFacts, Latency, kernel_snapshot};
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
        FloodReport::build(&p, &run, &HostFacts::read(), before, after, Vec::new())
    };
    let open = |rate: f64| Load::Open {
        from: rate,
        to: rate,
        burst: 0,
    };
    let mut caps = Vec::new();
    let mut ratios: [Vec<f64>; 2] = [vec![], vec![]];
    let mut lag = Vec::new();
    // Per rate of PACED: the generator's CPU share, its start-lag p99, the goal, the
    // bare loop's CPU per wake (us) and lag p99, and the goal with two wakes a connection.
    let mut paced: [[Vec<f64>; 6]; 2] = Default::default();
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
        lag.push(r.latency(Latency::StartLag).map_or(0.0, |p| p.p99 as f64));
        // The closed loop's generator CPU per connection, us.
        let per_conn = closed.generator.thread_busy.first().copied().unwrap_or(0.0)
            * closed.elapsed_s
            / closed.established.max(1) as f64
            * 1e6;
        for (k, rate) in PACED.into_iter().enumerate() {
            let r = if rate == 10_000.0 {
                r.clone()
            } else {
                flood(open(rate))
            };
            let (wake_us, wake_lag) = bare_wake(rate, Duration::from_secs(seconds.min(2)));
            let row = &mut paced[k];
            row[0].push(r.generator.thread_busy.first().copied().unwrap_or(0.0) * 100.0);
            row[1].push(r.generator.start_lag_p99_us.unwrap_or(0) as f64);
            row[2].push(per_conn * rate * 1.3 / 1e4 + 2.0);
            row[3].push(wake_us);
            row[4].push(wake_lag);
            // A greeting costs the generator two sleeps: its start, and its answer.
            row[5].push((per_conn + 2.0 * wake_us) * rate * 1.3 / 1e4 + 2.0);
        }
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
    println!(
        "pacing, the generator thread against the floor server, medians of {runs} rounds:\n\
         \x20   rate  gen CPU  goal (issue 26)  goal (+2 wakes)  start-lag p99  bare timerfd loop: CPU per wake, wake lag p99"
    );
    for (k, rate) in PACED.into_iter().enumerate() {
        let m = |i: usize| median(paced[k][i].clone());
        println!(
            "  {:>6}  {:>6.1}%  {:>14.1}%  {:>14.1}%  {:>10.0} us  {:>14.1} us, {:>6.0} us",
            synack_load::report::fmt_rate(rate),
            m(0),
            m(2),
            m(5),
            m(1),
            m(3),
            m(4)
        );
    }
}

/// The rates of the pacing rows.
const PACED: [f64; 2] = [1_000.0, 10_000.0];

/// A thread that only sleeps on a timerfd and wakes at `rate`: its CPU per wake (us, its own
/// schedstat) and its wake lag p99 (us). What any sleeping pacer pays here before any work.
fn bare_wake(rate: f64, duration: Duration) -> (f64, f64) {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::os::fd::AsRawFd;
    let (Ok(mut poll), Ok(mut timer)) = (Poll::new(), synack_sys::timer::PollTimer::new()) else {
        return (0.0, 0.0);
    };
    let fd = timer.as_raw_fd();
    if poll
        .registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .is_err()
    {
        return (0.0, 0.0);
    }
    let _ = synack_sys::cpu::set_timer_slack(Duration::from_nanos(1));
    let mut events = Events::with_capacity(4);
    let mut lags = synack_load::record::latency_histogram();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let n = (rate * duration.as_secs_f64()) as u32;
    let cpu = || {
        synack_sys::current_thread_cpu()
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    let before = cpu();
    let t0 = Instant::now();
    for i in 1..=n {
        let at = t0 + gap * i;
        if timer.arm_at(at).is_err() {
            return (0.0, 0.0);
        }
        while Instant::now() < at {
            let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
            timer.expired();
        }
        synack_load::record::record_us(&mut lags, Instant::now().duration_since(at));
    }
    let used = cpu().saturating_sub(before).as_secs_f64();
    (
        used / f64::from(n.max(1)) * 1e6,
        synack_load::report::rank_p99(&lags) as f64,
    )
}
