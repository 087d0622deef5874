//! synack-load against real servers on loopback: every attempt accounted for, across the table, the
//! JSON and the interval log; the embedded server.
//! No timed assertions: counts and classes only.

use synack_load::report::{FloodReport, SCHEMA, hlog};

mod common;
use common::{bin, flood, greeting_server, tmp};

#[test]
fn every_attempt_is_accounted_for_in_table_json_and_hlog() {
    let server = greeting_server();
    let addr = server.local_addr().to_string();
    let hlog_path = tmp("accounting.hlog");
    let (out, rep) = flood(
        &addr,
        &[
            "--connections",
            "500",
            "--concurrency",
            "16",
            "--read",
            "2",
            "--threads",
            "2",
            "--hlog",
            hlog_path.to_str().unwrap(),
        ],
        "accounting",
    );
    assert_eq!(rep.schema, SCHEMA);
    assert_eq!(rep.attempts, 500);
    assert_eq!(rep.established, 500);
    assert_eq!(rep.outcomes["ok"], 500);
    assert_eq!(rep.outcomes.values().sum::<u64>(), 500);
    assert_eq!(rep.latency_us["connect"].count, 500);
    assert_eq!(rep.latency_us["first_byte"].count, 500);
    assert_eq!(
        rep.syn_retransmits
            .iter()
            .map(|b| b.connections)
            .sum::<u64>(),
        500
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("attempts 500   established 500   ok 500"),
        "{table}"
    );
    let kernel = rep.kernel.as_ref().expect("Linux publishes TCP counters");
    assert_eq!(kernel.scope, "host");
    assert!(kernel.counters["Tcp.ActiveOpens"] >= 500);
    // The interval log holds the same 500 connects, and the 500 answers read, by tag.
    let intervals = hlog::read(&hlog_path).unwrap();
    assert!(!intervals.is_empty());
    for tag in [hlog::CONNECT_TAG, hlog::RESPONSE_TAG] {
        let total: u64 = intervals
            .iter()
            .filter(|i| i.tag.as_deref() == Some(tag))
            .map(|i| i.histogram.len())
            .sum();
        assert_eq!(total, 500, "{tag}");
    }
    assert!(intervals.iter().all(|i| {
        i.tag.as_deref() == Some(hlog::CONNECT_TAG) || i.tag.as_deref() == Some(hlog::RESPONSE_TAG)
    }));
    assert_eq!(rep.latency_us["response"].count, 500);
    let merged = bin()
        .args([
            "merge",
            hlog_path.to_str().unwrap(),
            hlog_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(merged.status.success());
    let text = String::from_utf8(merged.stdout).unwrap();
    // Each series merged on its own, never mixed.
    for tag in ["connect", "response"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{tag}: ")))
            .unwrap_or_else(|| panic!("no {tag} line: {text}"));
        assert!(line.contains("1000 values"), "{text}");
    }
    // The server agrees.
    let s = server.stats();
    assert_eq!(s.accepted, 500);
}

#[test]
fn json_report_round_trips() {
    let server = greeting_server();
    let (_, rep) = flood(
        &server.local_addr().to_string(),
        &["--connections", "20", "--rate", "2k"],
        "roundtrip",
    );
    let text = serde_json::to_string(&rep).unwrap();
    let back: FloodReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, rep);
    assert_eq!(rep.mode, "open");
    assert_eq!(rep.attempts, 20);
    assert_eq!(rep.latency_us["from_schedule"].count, 20);
    assert_eq!(rep.latency_us["start_lag"].count, 20);
}

#[test]
fn embedded_runs_a_synack_server_and_floods_it() {
    let out = bin()
        .args([
            "flood",
            "--embedded",
            "--quiet",
            "--connections",
            "100",
            "--read",
            "18",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("established 100   ok 100"), "{text}");
    assert!(text.contains("embedded synack server 127.0.0.1:"), "{text}");
    assert!(text.contains("accepted 100"), "{text}");
}
