//! `--cpus` and `--server-cpus`: where the generator and the server it starts may run, said
//! back in the report's host view; bad lists are one line and exit 2.
//! No timed assertions.

use synack_load::report::FloodReport;
use synack_load::report::tune::TuneReport;

mod common;
use common::{bin, greeting_bin, greeting_server, json_run, serial, tmp};

fn allowed() -> Vec<usize> {
    synack_load::plan::allowed_cpus()
}

#[test]
fn bad_cpu_lists_are_one_line_and_exit_2() {
    for (list, want) in [
        ("x", "\"x\" is not a CPU number"),
        ("3-1", "\"3-1\" is not a CPU number"),
        (
            "1023",
            "--cpus: CPU 1023 is not one this process may run on",
        ),
    ] {
        let out = bin()
            .args(["flood", "127.0.0.1:9", "--connections", "1", "--cpus", list])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{list}: {err}");
        assert!(err.contains(want), "{list}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn the_generator_runs_where_cpus_says_and_the_report_says_so() {
    let _turn = serial();
    let server = greeting_server();
    let cpu = *allowed().last().expect("this host names its CPUs");
    let (_, rep): (_, FloodReport) = {
        let json = tmp("cpus.json");
        json_run(
            bin().args([
                "flood",
                &server.local_addr().to_string(),
                "--quiet",
                "--connections",
                "20",
                "--threads",
                "1",
                "--cpus",
                &cpu.to_string(),
                "--read",
                "1",
                "--json",
                json.to_str().unwrap(),
            ]),
            &json,
        )
    };
    let host = rep.host.expect("a host view");
    assert_eq!(host.generator_cpus, Some(cpu.to_string()));
    // The embedded test server holds the listener: this process is found as its owner.
    let s = host.server.expect("the server found by its listener");
    assert!(s.pids.contains(&std::process::id()), "{s:?}");
}

#[test]
fn tune_splits_the_cpus_between_the_server_it_starts_and_the_generator() {
    let _turn = serial();
    let cpus = allowed();
    if cpus.len() < 2 {
        eprintln!("one CPU here: nothing to split");
        return;
    }
    let json = tmp("tune-cpus.json");
    let cmd = format!(
        "exec {} --workers 1 --addr 127.0.0.1:{{port}} --backlog {{backlog}}",
        greeting_bin().display()
    );
    let (out, rep): (_, TuneReport) = json_run(
        bin()
            .args(["tune", "--server-cmd", &cmd, "--read", "5"])
            .args([
                "--backlogs",
                "64",
                "--load",
                "0.1",
                "--rate",
                "200",
                "--burst",
                "10",
                "--step-duration",
                "500ms",
                "--retries",
                "0",
                "--json",
                json.to_str().unwrap(),
            ]),
        &json,
    );
    let (server, generator) = cpus.split_at(cpus.len() / 2);
    let list = synack_sys::cpu::format_list;
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains(&format!(
            "CPUs: the server on {}, the generator on {}",
            list(server),
            list(generator)
        )),
        "{progress}"
    );
    let step = &rep.backlogs[0].steps[0];
    let host = step.flood.host.as_ref().expect("a host view");
    assert_eq!(host.generator_cpus.as_deref(), Some(&*list(generator)));
    let s = host
        .server
        .as_ref()
        .expect("the server found by its listener");
    assert_eq!(s.allowed.as_deref(), Some(&*list(server)), "{s:?}");
}
