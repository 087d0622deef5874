//! What the synack-load tests share: the binary, temporary files, a flood run, a run that
//! must write its JSON report or fail with a given code, a greeting
//! server, waiting for a condition, and tests that need root.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use synack_load::report::FloodReport;
use tokio::io::AsyncWriteExt;

pub mod real;

/// The synack-load binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_synack-load"))
}

/// A path in this test process's own temporary directory.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("synack-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `synack-load flood ADDR args... --json F --quiet`, which must succeed; returns the
/// output and the report.
pub fn flood(addr: &str, args: &[&str], name: &str) -> (Output, FloodReport) {
    let json = tmp(&format!("{name}.json"));
    json_run(
        bin()
            .args(["flood", addr, "--quiet", "--json", json.to_str().unwrap()])
            .args(args),
        &json,
    )
}

/// Runs `cmd`, which must succeed: its output, and the JSON report it wrote to `json`.
pub fn json_run<T: serde::de::DeserializeOwned>(cmd: &mut Command, json: &Path) -> (Output, T) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "synack-load failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(json).unwrap();
    (out, serde_json::from_str(&text).unwrap())
}

/// Runs `cmd`, which must exit with `code`: what it wrote to standard error.
pub fn fails_with(cmd: &mut Command, code: i32) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A synack server on 127.0.0.1 that writes "hi" and closes.
pub fn greeting_server() -> synack::Server {
    synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .serve(|mut c: synack::Connection| async move {
            c.write_all(b"hi").await?;
            c.shutdown().await
        })
        .unwrap()
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One heavy test at a time within a test binary: the kernel's overflow counters are
/// host-wide (one test's overflows must not be read as another's), and floods load both
/// cores (one's load must not make another's generator late).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits (bounded: 20 s) until `cond` holds.
pub fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("condition not reached in 20 s");
}

/// A test that needs what this machine lacks (root, iproute2): under CI (`CI=true`, where
/// tests run as root) that is a failure; elsewhere the test is skipped, visibly. The line is
/// written to the stderr handle itself, which libtest does not capture (it captures only the
/// print macros), so `cargo test` shows it.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run: {why} (CI=true: tests that need root must run)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (runs as root; CI=true makes this a failure)"
    );
}

/// A network namespace a test made (`ip netns add`), deleted when dropped.
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `ip ARGS`; its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `examples/greeting`, built beside this test (cargo builds the workspace's examples for
/// `cargo test --workspace`; built here when only this test was).
pub fn greeting_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = profile_dir.join("examples").join("greeting");
    if !bin.exists() {
        let target = profile_dir.parent().unwrap();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "-p",
            "synack",
            "--example",
            "greeting",
            "--target-dir",
        ])
        .arg(target);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "cannot build examples/greeting"
        );
    }
    bin
}
