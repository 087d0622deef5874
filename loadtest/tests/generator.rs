//! synack-load at and past its own limit: it degrades instead of collapsing, classes what it
//! could not do as its own, and sweep and tune judge only what it delivered. Real sockets on
//! loopback; no timed assertions.

use synack_load::outcome::Outcome;
use synack_load::report::FloodReport;
use synack_load::report::sweep::{SweepReport, Verdict};
use synack_load::report::tune::TuneReport;

mod common;
use common::{bin, flood, greeting_server, serial, tmp};

/// Every timeout must have the kernel's evidence behind it: a listen overflow (host-wide) or
/// a SYN the kernel retransmitted.
fn timeouts_have_evidence(rep: &FloodReport) {
    let overflows = rep.kernel_delta("TcpExt.ListenOverflows").unwrap_or(0);
    assert!(
        rep.outcome(Outcome::Timeout) == 0 || overflows > 0 || rep.timeouts_retransmitted > 0,
        "timeouts without evidence: {rep:#?}"
    );
}

#[test]
fn past_its_capacity_the_generator_degrades_and_says_so() {
    let _turn = serial();
    let server = greeting_server();
    let addr = server.local_addr().to_string();
    // One thread cannot start a million connections a second.
    let (out, rep) = flood(
        &addr,
        &[
            "--rate",
            "1m",
            "--duration",
            "1s",
            "--threads",
            "1",
            "--read",
            "2",
        ],
        "past-capacity",
    );
    let g = &rep.generator;
    assert!(!g.delivered, "{g:#?}");
    assert!(g.not_started > 0, "{g:#?}");
    assert_eq!(g.scheduled, Some(1_000_000));
    assert_eq!(rep.outcome(Outcome::NotStarted), g.not_started);
    assert!(
        g.reasons.iter().any(|r| r.contains("never started")),
        "{g:#?}"
    );
    // Every scheduled attempt is classified: started ones by how they ended, the rest as
    // not started.
    assert_eq!(rep.outcomes.values().sum::<u64>(), 1_000_000);
    assert_eq!(rep.classified(), 1_000_000);
    assert_eq!(rep.attempts + g.not_started, 1_000_000);
    // No collapse: the descriptors never ran out, the bound held, and what did not work
    // has the kernel's word for it.
    assert_eq!(rep.outcome(Outcome::FdLimit), 0, "{rep:#?}");
    assert!(g.peak_in_flight <= g.max_in_flight as u64, "{g:#?}");
    timeouts_have_evidence(&rep);
    assert_eq!(rep.latency_us["start_lag"].count, rep.attempts);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("GENERATOR-BOUND"), "{table}");
    assert!(table.contains("[gen]"), "{table}");
    assert!(
        table.contains("the generator did not deliver the load asked"),
        "{table}"
    );
    // The server accepted what was started and established.
    common::wait_for(|| server.stats().accepted >= rep.established);
}

#[test]
fn the_in_flight_bound_is_kept() {
    let _turn = serial();
    let server = greeting_server();
    let (_, rep) = flood(
        &server.local_addr().to_string(),
        &[
            "--rate",
            "200k",
            "--duration",
            "500ms",
            "--threads",
            "2",
            "--read",
            "2",
            "--max-in-flight",
            "8",
        ],
        "bound",
    );
    let g = &rep.generator;
    assert_eq!(g.max_in_flight, 8);
    assert!(g.peak_in_flight <= 8, "{g:#?}");
    assert!(g.peak_in_flight >= 1);
    assert_eq!(rep.outcomes.values().sum::<u64>(), g.scheduled.unwrap());
    timeouts_have_evidence(&rep);
}

#[test]
fn a_run_on_schedule_is_delivered() {
    let _turn = serial();
    let server = greeting_server();
    let (out, rep) = flood(
        &server.local_addr().to_string(),
        &[
            "--rate",
            "200",
            "--duration",
            "500ms",
            "--threads",
            "1",
            "--read",
            "2",
            // A generous limit: this is a shared machine, and the point here is the shape.
            "--lag-limit",
            "200ms",
        ],
        "delivered",
    );
    assert!(rep.generator.delivered, "{:#?}", rep.generator);
    assert!(rep.generator.reasons.is_empty());
    assert_eq!(rep.generator.scheduled, Some(100));
    assert_eq!(rep.attempts, 100);
    assert_eq!(rep.outcome(Outcome::Ok), 100);
    assert!(rep.generator.thread_busy.len() == 1, "{:#?}", rep.generator);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("generator: delivered the load asked"),
        "{table}"
    );
}

#[test]
fn a_closed_loop_whose_starts_all_fail_ends_at_its_duration() {
    let _turn = serial();
    // A multicast address: the kernel refuses a TCP connect to it at once (ENETUNREACH),
    // before any packet is sent.
    let (_, rep) = flood(
        "224.0.0.1:80",
        &[
            "--duration",
            "300ms",
            "--concurrency",
            "4",
            "--threads",
            "1",
        ],
        "closed-fails",
    );
    assert!(rep.attempts >= 1);
    assert_eq!(rep.outcome(Outcome::Unreachable), rep.attempts, "{rep:#?}");
    assert_eq!(rep.outcomes.values().sum::<u64>(), rep.attempts);
    assert_eq!(rep.established, 0);
}

#[test]
fn what_cannot_work_is_refused_at_the_start() {
    // More than any descriptor limit here allows, whatever it is.
    let (_, hard) = synack_sys::nofile_limit().unwrap();
    let too_many = (hard + 1).to_string();
    let concurrency = format!("--concurrency {too_many}");
    let in_flight = format!("--max-in-flight {too_many}");
    for (args, needle) in [
        (
            vec![
                "flood",
                "127.0.0.1:9",
                "--source",
                "198.51.100.7",
                "--duration",
                "300ms",
            ],
            "--source 198.51.100.7: not an address of this host",
        ),
        (
            vec!["flood", "127.0.0.1:9", "--concurrency", &too_many],
            concurrency.as_str(),
        ),
        (
            vec!["flood", "127.0.0.1:9", "--max-in-flight", &too_many],
            in_flight.as_str(),
        ),
        (
            vec![
                "sweep",
                "127.0.0.1:9",
                "--from",
                "1k",
                "--to",
                "2k",
                "--steps",
                "0",
            ],
            "--steps 0",
        ),
        (vec!["sweep", "127.0.0.1:9", "--rates", "5k,1k"], "--rates"),
        (
            vec!["flood", "127.0.0.1:9", "--lag-limit", "0s"],
            "--lag-limit",
        ),
    ] {
        let out = bin().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        // One line says it (clap adds a hint to --help below its own).
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn sweep_never_names_a_generator_bound_step_the_saturation_point() {
    let _turn = serial();
    let server = greeting_server();
    let json = tmp("sweep-gen.json");
    let (out, rep): (_, SweepReport) = common::json_run(
        bin().args([
            "sweep",
            &server.local_addr().to_string(),
            "--rates",
            "200,2m",
            "--step-duration",
            "1s",
            "--settle",
            "100ms",
            "--threads",
            "1",
            "--read",
            "2",
            "--p99-limit",
            "500ms",
            "--lag-limit",
            "200ms",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]),
        &json,
    );
    assert_eq!(
        rep.steps[1].verdict,
        Verdict::GeneratorBound,
        "{:#?}",
        rep.steps[1].reasons
    );
    assert!(!rep.steps[1].saturated);
    assert_ne!(rep.saturation_rate, Some(2e6));
    assert_eq!(rep.generator_bound_from, Some(2e6));
    if rep.steps[0].verdict == Verdict::Clean {
        assert_eq!(rep.last_good_rate, Some(200.0));
    }
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("GENERATOR-BOUND (no verdict)"), "{table}");
    assert!(table.contains("the generator could not deliver"), "{table}");
}

#[test]
fn tune_refuses_to_recommend_from_what_the_generator_did_not_deliver() {
    let _turn = serial();
    let json = tmp("tune-gen.json");
    // 64 slots of 100 us: a capacity far past what one generator thread starts.
    let out = bin()
        .args([
            "tune",
            "--service-time",
            "100us",
            "--max-connections",
            "64",
            "--backlogs",
            "64",
            "--load",
            "0.9",
            "--burst",
            "0",
            "--step-duration",
            "1s",
            "--threads",
            "1",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: TuneReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep.recommended_backlog, None);
    assert!(
        rep.backlogs[0].generator_bound_at.is_some(),
        "{:#?}",
        rep.backlogs[0]
    );
    // Run again twice (--retries 2), never delivered: it stands as generator-bound.
    assert_eq!(rep.backlogs[0].reruns, 2);
    assert!(
        text.contains("run again because the generator had not delivered"),
        "{text}"
    );
    assert!(
        rep.reasoning[0].starts_with("no recommendation: the generator could not deliver"),
        "{:?}",
        rep.reasoning
    );
    assert!(text.contains("--threads"), "{text}");
}
