//! synack-load against servers nobody here wrote: nginx from Debian (its own config, prefix and
//! access log, on 127.0.0.1) for `--http` and `--expect`, whose counts must agree with the
//! access log; and a small Python server for `tune --server-cmd` with two backlogs. Bad input
//! to `tune` with a real server: one line and exit 2 each, nothing left running. They skip
//! visibly without nginx or python3 (and fail under CI=true). Every load is bounded in count
//! and time; no timed assertions.

use std::collections::BTreeMap;
use std::process::Output;

use synack_load::report::FloodReport;
use synack_load::report::sweep::{SweepReport, Verdict};
use synack_load::report::tune::TuneReport;

mod common;
use common::real::{Nginx, PythonServer, backlog_server_script, python3};
use common::{bin, flood, serial, skip_or_fail, tmp};

const LOCATIONS: &str = r#"
    location = /health { return 200 "ok\n"; }
    location /static/ { gzip on; gzip_min_length 1; gzip_types text/plain; root WWW; }
    location / { return 404; }
"#;

/// nginx with /health (200, Content-Length), /static/ (a file, gzip: chunked) and 404
/// elsewhere; `None` (after skip_or_fail) without nginx.
fn nginx(test: &str) -> Option<Nginx> {
    let www = tmp(&format!("www-{test}"));
    std::fs::create_dir_all(www.join("static")).unwrap();
    std::fs::write(www.join("static/page.txt"), "synack ".repeat(2000)).unwrap();
    let n = Nginx::start(128, &LOCATIONS.replace("WWW", www.to_str().unwrap()));
    if n.is_none() {
        skip_or_fail(test, "nginx is not installed (apt-get install nginx)");
    }
    n
}

fn statuses(rep: &FloodReport) -> BTreeMap<u16, u64> {
    rep.http_statuses
        .iter()
        .map(|(c, n)| (c.parse().unwrap(), *n))
        .collect()
}

fn add(total: &mut BTreeMap<u16, u64>, more: BTreeMap<u16, u64>) {
    for (c, n) in more {
        *total.entry(c).or_default() += n;
    }
}

#[test]
fn http_requests_and_expect_agree_with_nginx_access_log() {
    let _turn = serial();
    let Some(ngx) = nginx("http_requests_and_expect_agree_with_nginx_access_log") else {
        return;
    };
    let addr = ngx.addr.to_string();
    let mut ours = BTreeMap::new();

    // 300 health checks, each answer checked.
    let (out, rep) = flood(
        &addr,
        &[
            "--http",
            "GET /health",
            "--expect",
            "HTTP/1.1 200",
            "--connections",
            "300",
            "--concurrency",
            "8",
        ],
        "nginx-health",
    );
    assert_eq!(rep.outcomes["ok"], 300, "{}", text(&out));
    assert_eq!(statuses(&rep), BTreeMap::from([(200, 300)]));
    assert_eq!(rep.latency_us["response"].count, 300);
    assert_eq!(
        rep.exchange.http_request.as_deref(),
        Some("GET /health HTTP/1.1")
    );
    assert!(
        text(&out).contains("HTTP responses by status"),
        "{}",
        text(&out)
    );
    // The JSON reads back as it was written.
    let again: FloodReport = serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
    assert_eq!(again, rep);
    add(&mut ours, statuses(&rep));

    // 100 to a page nginx does not have: every answer a 404, so --expect fails them all, and
    // the report shows the answer.
    let (out, rep) = flood(
        &addr,
        &[
            "--http",
            "GET /nope",
            "--expect",
            "HTTP/1.1 200",
            "--connections",
            "100",
            "--concurrency",
            "4",
        ],
        "nginx-404",
    );
    assert_eq!(rep.outcomes["bad_response"], 100, "{}", text(&out));
    assert_eq!(rep.outcomes["ok"], 0);
    assert_eq!(statuses(&rep), BTreeMap::from([(404, 100)]));
    assert_eq!(rep.unexpected.len(), 1, "{:?}", rep.unexpected);
    assert!(
        rep.unexpected[0].why.contains("HTTP/1.1 404 Not Found"),
        "{:?}",
        rep.unexpected
    );
    assert!(text(&out).contains("bad_response: did not start with --expect"));
    add(&mut ours, statuses(&rep));

    // 50 gzip-compressed pages: nginx answers them chunked, read to the last chunk.
    let (out, rep) = flood(
        &addr,
        &[
            "--http",
            "GET /static/page.txt",
            "--header",
            "Accept-Encoding: gzip",
            "--connections",
            "50",
            "--concurrency",
            "2",
        ],
        "nginx-chunked",
    );
    assert_eq!(rep.outcomes["ok"], 50, "{}", text(&out));
    add(&mut ours, statuses(&rep));

    // The same requests by a raw text, and an answer checked by its first bytes.
    let (out, rep) = flood(
        &addr,
        &[
            "--send-text",
            "GET /health HTTP/1.0\\r\\n\\r\\n",
            "--expect",
            "HTTP/1.1 200 OK\\r\\n",
            "--connections",
            "40",
            "--concurrency",
            "2",
        ],
        "nginx-text",
    );
    assert_eq!(rep.outcomes["ok"], 40, "{}", text(&out));
    assert!(
        rep.http_statuses.is_empty(),
        "no HTTP parsing without --http"
    );
    ours.entry(200).and_modify(|n| *n += 40);

    let logged = ngx.stop_and_log();
    let mut theirs: BTreeMap<u16, u64> = BTreeMap::new();
    for l in &logged {
        *theirs.entry(l.status).or_default() += 1;
    }
    assert_eq!(
        ours, theirs,
        "synack-load's tally against nginx's access log"
    );
    assert_eq!(
        logged
            .iter()
            .filter(|l| l.uri == "/static/page.txt")
            .count(),
        50
    );
}

#[test]
fn a_sweep_with_http_counts_what_nginx_logged() {
    let _turn = serial();
    let Some(ngx) = nginx("a_sweep_with_http_counts_what_nginx_logged") else {
        return;
    };
    let json = tmp("nginx-sweep.json");
    let out = bin()
        .args([
            "sweep",
            &ngx.addr.to_string(),
            "--http",
            "GET /health",
            "--expect",
            "HTTP/1.1 200",
            "--rates",
            "200,400",
            "--step-duration",
            "1s",
            "--settle",
            "200ms",
            "--p99-limit",
            "1s",
            "--lag-limit",
            "100ms",
            "--threads",
            "1",
            "--watch-listener",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rep: SweepReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep.schema, synack_load::report::sweep::SCHEMA);
    assert_eq!(rep.steps.len(), 2);
    let mut ours: u64 = 0;
    for st in &rep.steps {
        // A step may be the generator's (a busy shared box); what it sent still counts.
        if st.verdict == Verdict::Clean {
            assert_eq!(st.bad_responses, 0);
            assert_eq!(st.effective_backlog, Some(128));
        }
        ours += st.flood.http_statuses.values().sum::<u64>();
    }
    assert!(text(&out).contains("resp p99"), "{}", text(&out));
    let logged = ngx.stop_and_log();
    assert_eq!(ours, logged.len() as u64);
    assert!(logged.iter().all(|l| l.status == 200 && l.uri == "/health"));
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Processes whose command line holds `marker` (`/proc/*/cmdline`), zombies apart.
fn running_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = e.path();
        let Ok(cmd) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(p.join("stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .map(|i| s[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if cmd.contains(marker) && !zombie {
            found.push(cmd);
        }
    }
    found
}

/// What tune asks of the Python backlog server (2 workers of 5 ms): bursts of 60 at half its
/// capacity, short steps, each connection a request and its 3-byte answer.
const PYTHON_TUNE: &[&str] = &[
    "--burst",
    "60",
    "--load",
    "0.5",
    "--step-duration",
    "1s",
    "--lag-limit",
    "200ms",
    "--send-text",
    "PING\\r\\n\\r\\n",
    "--read",
    "3",
];

/// The Python server's command template, its answer marked with this test process's id so
/// that a copy left running can be found.
fn python_server(python: &std::path::Path, marker: &str) -> String {
    format!(
        "{} {} --port {{port}} --backlog {{backlog}} --workers 2 --service-ms 5 --answer 'ok {marker}\\n'",
        python.display(),
        backlog_server_script().display()
    )
}

#[test]
fn tune_server_cmd_tries_each_backlog_on_a_real_server_and_leaves_nothing_running() {
    let _turn = serial();
    let Some(python) = python3() else {
        skip_or_fail(
            "tune_server_cmd_tries_each_backlog_on_a_real_server_and_leaves_nothing_running",
            "python3 is not installed",
        );
        return;
    };
    let marker = format!("tune-test-{}", std::process::id());
    let json = tmp("tune-cmd.json");
    let out = bin()
        .args([
            "tune",
            "--server-cmd",
            &python_server(&python, &marker),
            "--backlogs",
            "4,256",
        ])
        .args(PYTHON_TUNE)
        .args([
            "--expect",
            "ok ",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(running_with(&marker).is_empty(), "left running: {all}");
    // Exit 1 is a run the generator could not deliver on this shared box: said, not hidden.
    let rep: TuneReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep.schema, synack_load::report::tune::SCHEMA);
    assert_eq!(rep.server.kind, "command");
    assert_eq!(rep.capacity_source, "measured");
    let cap = rep.capacity_run.as_ref().unwrap();
    assert!(cap.ok > 0 && cap.rate > 0.0, "{cap:?}");
    assert_eq!(rep.server_runs.len(), 2, "{all}");
    assert!(rep.server_runs.iter().all(|r| r.command.contains(&marker)));
    let effective: Vec<Option<u32>> = rep.backlogs.iter().map(|b| b.effective_backlog).collect();
    assert_eq!(effective, vec![Some(4), Some(256)], "{all}");
    if rep.generator_bound {
        assert_eq!(out.status.code(), Some(1), "{all}");
        return;
    }
    assert!(out.status.success(), "{all}");
    // Bursts of 60 cannot wait in a queue of 5: backlog 4 drops them; 256 holds them.
    assert_eq!(rep.backlogs[0].max_clean_rate, None, "{all}");
    assert!(rep.backlogs[0].past_it.is_some(), "{all}");
    assert_eq!(rep.recommended_backlog, Some(256), "{all}");
    assert!(all.contains("recommended backlog: 256"), "{all}");
    // The JSON reads back as it was written.
    let again: TuneReport = serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
    assert_eq!(again, rep);
}

/// `tune ADDR` on the Python server at `backlog`, started here; its report and its output.
fn tune_running(backlog: u32) -> Option<(TuneReport, Output)> {
    let server = PythonServer::start(backlog, 2, 5)?;
    let json = tmp(&format!("tune-running-{backlog}.json"));
    let out = bin()
        .args(["tune", &server.addr.to_string()])
        .args(PYTHON_TUNE)
        .args(["--quiet", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let rep: TuneReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    Some((rep, out))
}

#[test]
fn tune_addr_says_whether_a_running_servers_backlog_absorbs_the_bursts() {
    let _turn = serial();
    let Some((small, out)) = tune_running(4) else {
        skip_or_fail(
            "tune_addr_says_whether_a_running_servers_backlog_absorbs_the_bursts",
            "python3 is not installed",
        );
        return;
    };
    let all = text(&out);
    assert_eq!(small.server.kind, "running");
    assert_eq!(small.backlogs.len(), 1);
    assert_eq!(small.backlogs[0].effective_backlog, Some(4), "{all}");
    assert_eq!(small.recommended_backlog, None);
    if !small.generator_bound {
        // Bursts of 60 cannot wait in a queue of 5; the model's estimate: (60 + 0.5) / 0.75
        // to a power of two.
        assert_eq!(small.absorbs, Some(false), "{all}");
        assert_eq!(small.estimated_backlog, Some(128), "{all}");
        assert!(
            all.contains("estimate (the queue model, not measured)"),
            "{all}"
        );
    }
    let (big, out) = tune_running(256).unwrap();
    let all = text(&out);
    assert_eq!(big.backlogs[0].effective_backlog, Some(256), "{all}");
    if !big.generator_bound {
        assert_eq!(big.absorbs, Some(true), "{all}");
        assert_eq!(big.estimated_backlog, None);
        assert!(all.contains("the server's backlog (256) absorbs"), "{all}");
    }
}

/// Runs `synack-load tune ARGS`, which must fail with exit 2 and one line naming `want`.
fn usage(args: &[&str], want: &str) {
    let out = bin().arg("tune").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    assert!(err.contains(want), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn tune_refuses_a_server_command_that_cannot_work_and_leaves_nothing_running() {
    let _turn = serial();
    let marker = format!("tune-bad-{}", std::process::id());
    let talk = ["--send-text", "x", "--read", "1"];
    // Two backlogs, one command line: the same server twice.
    usage(
        &[
            &["--server-cmd", &format!("sleep 30 {{port}} # {marker}")],
            &talk[..],
        ]
        .concat(),
        "no {backlog}",
    );
    usage(
        &[
            &["--server-cmd", "srv --backlog {backlog}", "--backlogs", "8"],
            &talk[..],
        ]
        .concat(),
        "no {port}",
    );
    // A command that exits at once, with what it said.
    usage(
        &[
            &[
                "--server-cmd",
                &format!("echo 'bad flag {marker}' >&2; exit 3; {{port}} {{backlog}}"),
                "--backlogs",
                "8",
            ],
            &talk[..],
        ]
        .concat(),
        "exited (exit status 3) before listening",
    );
    // A port someone else listens on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    usage(
        &[
            &[
                "--server-cmd",
                &format!("sleep 30 {marker} {{backlog}}"),
                "--server-addr",
                &addr,
                "--backlogs",
                "8",
            ],
            &talk[..],
        ]
        .concat(),
        "something already listens there",
    );
    // A server that never listens where it was said to.
    usage(
        &[
            &[
                "--server-cmd",
                &format!("sleep 30; echo {marker} {{port}} {{backlog}}"),
                "--backlogs",
                "8",
                "--startup-timeout",
                "300ms",
            ],
            &talk[..],
        ]
        .concat(),
        "did not listen on",
    );
    // Without a request, tune cannot tell a served connection; the simulated server's flags
    // and the request flags do not mix.
    usage(
        &["--server-cmd", "srv {port} {backlog}"],
        "tune needs to know what a connection",
    );
    usage(
        &["127.0.0.1:9", "--max-connections", "4", "--read", "1"],
        "--max-connections configures the simulated server",
    );
    usage(&["--http", "GET /"], "give its ADDR or --server-cmd");
    usage(
        &["127.0.0.1:9", "--backlogs", "8", "--read", "1"],
        "--backlogs",
    );
    assert!(running_with(&marker).is_empty());
}
