//! synack-load under packet loss, in a network namespace the test makes itself (root), with an
//! nftables rule that drops what the test names. netem is not in every kernel; nftables is.
//! No timed assertions: counts and classes only.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};

use synack_load::report::FloodReport;

mod common;
use common::{Netns, greeting_bin, ip, skip_or_fail, tmp, wait_for};

/// Loads an nftables ruleset into the namespace.
fn nft(ns: &Netns, rules: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The greeting server inside the namespace, killed when dropped.
struct InNs(Child);

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A connection whose final ACK never reaches the server is `half_open`, not `unserved`: the
/// server kept it in SYN-RECV and re-sent its SYN-ACK, which the client's TCP_INFO counts.
#[test]
fn a_handshake_whose_final_ack_is_dropped_is_half_open() {
    let test = "a_handshake_whose_final_ack_is_dropped_is_half_open";
    let name = format!("synack-loss-{}", std::process::id());
    if let Err(why) = ip(&["netns", "add", &name]) {
        return skip_or_fail(test, &format!("needs root and iproute2 ({why})"));
    }
    let ns = Netns(name);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
    let port = 7000;
    // Every pure ACK to the server's port is lost: the handshake's last packet, and the
    // client's answers to the re-sent SYN-ACKs. SYNs, data and RSTs pass.
    let rules = format!(
        "table inet synack_test {{\n  chain input {{\n    type filter hook input priority 0;\n    \
         tcp dport {port} tcp flags == ack drop\n  }}\n}}\n"
    );
    if Command::new("nft").arg("--version").output().is_err() {
        return skip_or_fail(test, "needs nftables (nft)");
    }
    nft(&ns, &rules).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let _server = InNs(
        Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(greeting_bin())
            .args(["--workers", "1", "--addr", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Listening: a probe from inside the namespace gets refused until then.
    wait_for(|| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "ss",
                "-Hltn",
                &format!("sport = :{port}"),
            ])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    let json = tmp("half-open.json");
    // The server re-sends its SYN-ACK after 1 s: the read deadline is past that.
    let (out, rep): (_, FloodReport) = common::json_run(
        Command::new("ip")
            .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_synack-load")])
            .args(["flood", &addr, "--quiet", "--json", json.to_str().unwrap()])
            .args(["--connections", "3", "--concurrency", "3", "--threads", "1"])
            .args(["--read", "1", "--read-timeout", "2500ms"]),
        &json,
    );
    assert_eq!(rep.outcomes["half_open"], 3, "{rep:#?}");
    assert_eq!(rep.outcomes["unserved"], 0, "{rep:#?}");
    assert_eq!(rep.outcomes.values().sum::<u64>(), rep.attempts);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("3 connections were half-open"),
        "the note says what happened: {text}"
    );
}
