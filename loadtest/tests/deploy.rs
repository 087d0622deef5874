//! The deploy artefacts: the Kubernetes manifests validate against the API's schemas
//! (kubernetes-validate, offline), and the agents' Job spec runs as local processes
//! (scripts/run-job-locally.py) against a synack server: the merged report holds every
//! agent's attempts, exactly the single-host schedule.

mod common;

use std::process::Command;

use common::{serial, skip_or_fail, tmp};
use tokio::io::AsyncWriteExt;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/run-job-locally.py");

#[test]
fn the_kubernetes_manifests_validate() {
    let files: Vec<String> = ["agents-job.yaml", "merge-job.yaml", "results-pvc.yaml"]
        .iter()
        .map(|f| format!("{DEPLOY}/{f}"))
        .collect();
    let out = match Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            return skip_or_fail(
                "the_kubernetes_manifests_validate",
                "kubernetes-validate is not installed (pip install kubernetes-validate)",
            );
        }
    };
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(said.matches("passed").count(), 3, "{said}");
}

#[test]
fn the_agents_job_runs_as_local_processes_and_merges() {
    let _g = serial();
    let yaml = Command::new("python3").args(["-c", "import yaml"]).status();
    if !yaml.is_ok_and(|s| s.success()) {
        return skip_or_fail(
            "the_agents_job_runs_as_local_processes_and_merges",
            "python3 with PyYAML is needed (pip install pyyaml)",
        );
    }
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|mut c: synack::Connection| async move {
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n")
                .await?;
            c.shutdown().await
        })
        .unwrap();
    let results = tmp("job-results");
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args([
            "--target",
            &server.local_addr().to_string(),
            "--agents",
            "3",
        ])
        .args(["--set", "rate=300", "--set", "duration=2s", "--lead", "4"])
        .arg("--results")
        .arg(&results)
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_synack-load"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m: synack_load::report::merge::MergedReport =
        serde_json::from_str(&std::fs::read_to_string(results.join("merged.json")).unwrap())
            .unwrap();
    assert_eq!(m.agents.len(), 3);
    assert_eq!(m.total.attempts, 600, "300/s for 2 s over three agents");
    assert_eq!(m.total.outcomes["ok"], 600, "{:?}", m.total.outcomes);
    assert!(results.join("report/report.html").exists());
    // And the agents' interval logs, merged second by second, hold every connect.
    let ivs = synack_load::report::hlog::read(&results.join("merged.hlog")).unwrap();
    let connects: u64 = ivs
        .iter()
        .filter(|i| i.tag.as_deref() == Some("connect"))
        .map(|i| i.histogram.len())
        .sum();
    assert_eq!(connects, m.total.established);
    drop(server);
}
