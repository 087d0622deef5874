//! Several generators sharing one run (`--agents N --agent-index I --start-at T`): their
//! schedules add up exactly to the single-host one, they share the run's id, each says how late
//! it started, their reports merge, and their interval logs line up second by second; the same
//! with every agent in a network namespace of its own.

mod common;

use std::process::Command;

use common::{greeting_server, serial, tmp};
use synack_load::report::FloodReport;

fn json_of(name: &str, i: u64) -> std::path::PathBuf {
    tmp(&format!("{name}-{i}.json"))
}

fn hlog_of(name: &str, i: u64) -> std::path::PathBuf {
    tmp(&format!("{name}-{i}.hlog"))
}

/// Runs `n` agents of one flood of `addr` (a shared start 3 s ahead), each started by
/// `launch(i)` (the synack-load binary, or it inside a namespace); their JSON report files.
fn run_agents_via(
    addr: &str,
    n: u64,
    args: &[&str],
    name: &str,
    launch: impl Fn(u64) -> Command,
) -> Vec<std::path::PathBuf> {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 3.0;
    let start = format!("{start:.3}");
    let children: Vec<_> = (0..n)
        .map(|i| {
            let json = json_of(name, i);
            let child = launch(i)
                .args(["flood", addr, "--quiet", "--threads", "1", "--json"])
                .arg(&json)
                .arg("--hlog")
                .arg(hlog_of(name, i))
                .args(["--agents", &n.to_string(), "--agent-index", &i.to_string()])
                .args(["--start-at", &start])
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (json, child)
        })
        .collect::<Vec<_>>();
    children
        .into_iter()
        .map(|(json, child)| {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            json
        })
        .collect()
}

/// `synack-load merge FILES ARGS --json NAME`, which must succeed: the merged report, and the
/// table it printed.
fn merge_json(
    files: &[std::path::PathBuf],
    args: &[&std::ffi::OsStr],
    name: &str,
) -> (synack_load::report::merge::MergedReport, String) {
    let json = tmp(name);
    let (out, m) = common::json_run(
        common::bin()
            .arg("merge")
            .args(files)
            .args(args)
            .arg("--json")
            .arg(&json),
        &json,
    );
    (m, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_agents(addr: &str, n: u64, args: &[&str], name: &str) -> Vec<FloodReport> {
    run_agents_via(addr, n, args, name, |_| {
        Command::new(env!("CARGO_BIN_EXE_synack-load"))
    })
    .into_iter()
    .map(|json| serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap())
    .collect()
}

#[test]
fn three_agents_add_up_to_the_single_host_schedule() {
    let _g = serial();
    let server = greeting_server();
    let addr = server.local_addr().to_string();
    // The server's side: diagnose on its host, from before the agents' start to past their end.
    let port = server.local_addr().port().to_string();
    let diag_json = tmp("open-diagnose.json");
    let diagnose = common::bin()
        .args(["diagnose", &port, "--duration", "8s", "--json"])
        .arg(&diag_json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Open loop with bursts: 2 s of 500/s plus 101 at each second, over three agents.
    let reps = std::thread::scope(|s| {
        s.spawn(|| {
            run_agents(
                &addr,
                3,
                &["--rate", "500", "--burst", "101", "--duration", "2s"],
                "open",
            )
        })
        .join()
        .unwrap()
    });
    let total: u64 = reps.iter().map(|r| r.attempts).sum();
    assert_eq!(
        total,
        2 * (500 + 101),
        "the union is the single-host schedule"
    );
    let ids: Vec<&str> = reps
        .iter()
        .map(|r| r.agent.as_ref().unwrap().run_id.as_str())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    for r in &reps {
        let a = r.agent.as_ref().unwrap();
        assert!(a.start_lateness_us.is_some(), "{a:?}");
        assert_eq!(a.count, 3);
    }
    // Merged: counts summed exactly, percentiles from the merged histograms.
    let files: Vec<_> = (0..3).map(|i| json_of("open", i)).collect();
    let (m, _) = merge_json(&files, &[], "open-merged.json");
    assert_eq!(m.total.attempts, 2 * (500 + 101));
    assert_eq!(m.agents.len(), 3);
    // The whole's threads and in-flight bound are all the agents'.
    assert_eq!(m.total.threads, 3);
    assert_eq!(
        m.total.generator.max_in_flight,
        reps.iter()
            .map(|r| r.generator.max_in_flight)
            .sum::<usize>()
    );
    assert_eq!(m.run_id.as_deref(), Some(ids[0]));
    let mut union = synack_load::record::latency_histogram();
    for r in &reps {
        let h = synack_load::report::hlog::decode_histogram(&r.histograms["connect"]).unwrap();
        union.add(&h).unwrap();
    }
    let p = synack_load::report::Percentiles::of(&union);
    let got = &m.total.latency_us["connect"];
    // Every percentile exactly; the mean to float rounding (it went through JSON).
    assert_eq!(
        (
            got.count, got.min, got.p50, got.p90, got.p99, got.p999, got.max
        ),
        (p.count, p.min, p.p50, p.p90, p.p99, p.p999, p.max),
        "merged percentiles are the union's"
    );
    assert!(
        (got.mean - p.mean).abs() <= 1e-9 * p.mean.abs().max(1.0),
        "{got:?} {p:?}"
    );
    assert_eq!(
        m.total.outcomes["ok"],
        reps.iter().map(|r| r.outcomes["ok"]).sum::<u64>()
    );
    // With the server's host's diagnose report: its listener, and a watch that covered the run.
    let out = diagnose.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (m2, text) = merge_json(
        &files,
        &["--server".as_ref(), diag_json.as_os_str()],
        "open-merged-server.json",
    );
    assert!(text.contains("its watch covered the whole run"), "{text}");
    let side = m2.server.as_ref().unwrap();
    assert_eq!(side.covered_run, Some(true));
    assert!(
        side.diagnose
            .listeners
            .iter()
            .any(|l| l.address.ends_with(&format!(":{port}"))),
        "{:?}",
        side.diagnose.listeners
    );
    // A flood report given as the server's: refused, naming it.
    let err = common::fails_with(
        common::bin()
            .arg("merge")
            .args(&files)
            .arg("--server")
            .arg(&files[0]),
        2,
    );
    assert!(
        err.contains("open-0.json") && err.contains("not a synack-load diagnose report"),
        "{err}"
    );
    // The interval logs line up: every agent's starts at the shared start time, its
    // intervals at whole seconds after it, and merged second by second they hold every
    // established connection.
    let start = reps[0].agent.as_ref().unwrap().start_at_unix_s.unwrap();
    let start =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis((start * 1000.0).round() as u64);
    for i in 0..3 {
        let ivs = synack_load::report::hlog::read(&hlog_of("open", i)).unwrap();
        assert!(!ivs.is_empty());
        for iv in &ivs {
            let after = iv.at.duration_since(start).unwrap();
            assert_eq!(after.subsec_millis(), 0, "{iv:?}");
            assert_eq!(iv.at - iv.start, start, "{iv:?}");
        }
    }
    let merged_hlog = tmp("open-merged.hlog");
    let hlogs: Vec<_> = (0..3).map(|i| hlog_of("open", i)).collect();
    let out = common::bin()
        .arg("merge")
        .args(&hlogs)
        .arg("--hlog")
        .arg(&merged_hlog)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("intervals line up"),
        "{text}"
    );
    let ivs = synack_load::report::hlog::read(&merged_hlog).unwrap();
    let connects: u64 = ivs
        .iter()
        .filter(|i| i.tag.as_deref() == Some("connect"))
        .map(|i| i.histogram.len())
        .sum();
    assert_eq!(connects, reps.iter().map(|r| r.established).sum::<u64>());
    let seconds: std::collections::BTreeSet<_> = ivs.iter().map(|i| i.at).collect();
    assert!(
        seconds.len() <= 3,
        "2 s of schedule, one more at most for the stragglers: {seconds:?}"
    );
    // Closed loop with --connections 100: 34, 33, 33.
    let reps = run_agents(
        &addr,
        3,
        &["--concurrency", "4", "--connections", "100"],
        "closed",
    );
    let mut got: Vec<u64> = reps.iter().map(|r| r.attempts).collect();
    got.sort_unstable();
    assert_eq!(got, [33, 33, 34]);
    // A report of another run does not merge with these: named.
    let err = common::fails_with(
        common::bin()
            .arg("merge")
            .arg(json_of("open", 0))
            .arg(json_of("closed", 1)),
        2,
    );
    assert!(
        err.contains("closed-1.json") && err.contains("different runs"),
        "{err}"
    );
    drop(server);
}

#[test]
fn a_start_time_past_and_an_index_out_of_range_are_refused() {
    for args in [
        &["--start-at", "2020-01-01T00:00:00Z"][..],
        &["--start-at", "yesterday"][..],
        &["--agents", "2", "--agent-index", "2"][..],
    ] {
        let out = common::bin()
            .args(["flood", "127.0.0.1:9", "--connections", "1"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--start-at") || err.contains("--agent-index"),
            "{err}"
        );
    }
}

/// `ip netns exec NS ARGS...` as a command.
fn in_ns(ns: &common::Netns, program: &std::path::Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.0]).arg(program);
    c
}

#[test]
fn agents_in_their_own_namespaces_merge_to_the_schedule() {
    let test = "agents_in_their_own_namespaces_merge_to_the_schedule";
    if !synack_sys::is_root() {
        return common::skip_or_fail(test, "needs root for network namespaces");
    }
    let _g = serial();
    let tag = std::process::id() % 100_000;
    let name = |k: &str| format!("syag{tag}{k}");
    // The server's namespace holds a bridge; each agent's joins it by a veth pair, with an
    // address of its own.
    let srv = match common::ip(&["netns", "add", &name("s")]) {
        Ok(()) => common::Netns(name("s")),
        Err(why) => return common::skip_or_fail(test, &format!("ip netns add: {why}")),
    };
    let ip = |args: &[&str]| common::ip(args).unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    ip(&["-n", &srv.0, "link", "set", "lo", "up"]);
    ip(&["-n", &srv.0, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &srv.0, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
    ip(&["-n", &srv.0, "link", "set", "br0", "up"]);
    let mut agents = Vec::new();
    for k in 0..3 {
        let ns = name(&format!("a{k}"));
        ip(&["netns", "add", &ns]);
        let ns = common::Netns(ns);
        let (inner, outer) = (format!("ag{k}"), format!("sv{tag}{k}"));
        ip(&[
            "link", "add", &inner, "netns", &ns.0, "type", "veth", "peer", "name", &outer, "netns",
            &srv.0,
        ]);
        ip(&["-n", &srv.0, "link", "set", &outer, "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns.0,
            "addr",
            "add",
            &format!("10.77.0.{}/24", 10 + k),
            "dev",
            &inner,
        ]);
        ip(&["-n", &ns.0, "link", "set", &inner, "up"]);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        agents.push(ns);
    }
    let mut server = in_ns(&srv, &common::greeting_bin())
        .args(["--addr", "10.77.0.1:7878", "--workers", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Up when an agent's namespace reaches it.
    common::wait_for(|| {
        in_ns(&agents[0], std::path::Path::new("bash"))
            .args(["-c", "exec 3<>/dev/tcp/10.77.0.1/7878"])
            .status()
            .is_ok_and(|s| s.success())
    });
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_synack-load"));
    let files = run_agents_via(
        "10.77.0.1:7878",
        3,
        &["--rate", "300", "--duration", "2s", "--expect", "hello"],
        "netns",
        |k| in_ns(&agents[k as usize], bin),
    );
    let _ = server.kill();
    let _ = server.wait();
    let m = synack_load::report::merge::merge_files(&files).unwrap();
    assert_eq!(
        m.total.attempts, 600,
        "300/s for 2 s, split over three namespaces"
    );
    assert_eq!(m.total.outcomes["ok"], 600, "{:?}", m.total.outcomes);
    for a in &m.agents {
        assert!(a.start_lateness_us.is_some(), "{a:?}");
        eprintln!(
            "{test}: agent {} started {:?} us late",
            a.index, a.start_lateness_us
        );
    }
    drop(agents);
    drop(srv);
}
