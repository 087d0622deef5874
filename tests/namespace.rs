//! Per-namespace sysctls: in a network namespace of its own with `net.core.somaxconn` = 64, a
//! listener asking for 1024 gets 64, and synack says so. There too, where loopback is the only
//! interface, a wildcard listener (`0.0.0.0`) reports the address a client actually reached
//! (so no test listens on every interface of the host). Needs root and iproute2: skipped
//! visibly without them, and a failure under CI (`CI=true`), which runs as root.

mod common;

use std::io::Write;
use std::process::Command;

use synack::Server;
use tokio::io::AsyncWriteExt;

struct Netns(String);

impl Netns {
    /// Creates a namespace with loopback up, or says why it cannot.
    fn create() -> Result<Self, String> {
        let name = format!("synack-test-{}", std::process::id());
        run(&["ip", "netns", "add", &name])?;
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        run(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs inside the namespace, started by the test below.
#[test]
#[ignore = "run inside a network namespace by somaxconn_caps_the_backlog_in_a_namespace"]
fn somaxconn_child() {
    if std::env::var_os("SYNACK_NETNS_CHILD").is_none() {
        common::skipped(
            "somaxconn_child",
            "a helper run inside a network namespace by somaxconn_caps_the_backlog_in_a_namespace; \
             it checks nothing on its own",
        );
        return;
    }
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .backlog(1024)
        .workers(1)
        .serve(|_conn: synack::Connection| async {})
        .unwrap();
    let l = &server.listeners()[0];
    let mut out = std::io::stdout();
    writeln!(
        out,
        "RESULT requested={} effective={:?} somaxconn={:?}",
        l.requested_backlog, l.effective_backlog, l.somaxconn
    )
    .unwrap();
    // A wildcard listener: the connection's local address is read with getsockname.
    let wild = Server::builder()
        .bind("0.0.0.0:0")
        .unwrap()
        .workers(1)
        .serve(|mut conn: synack::Connection| async move {
            let l = conn.local_addr();
            conn.write_all(l.to_string().as_bytes()).await
        })
        .unwrap();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], wild.local_addr().port()));
    writeln!(
        out,
        "WILDCARD reached={} reported={}",
        target,
        common::fetch(target)
    )
    .unwrap();
    out.flush().unwrap();
}

#[test]
fn somaxconn_caps_the_backlog_in_a_namespace() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            common::skip_unless_ci(
                "somaxconn_caps_the_backlog_in_a_namespace",
                &format!("needs root and iproute2 ({why})"),
            );
            return;
        }
    };
    ns.exec(&["sysctl", "-qw", "net.core.somaxconn=64"])
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = ns
        .exec(&[
            "env",
            "SYNACK_NETNS_CHILD=1",
            "RUST_LOG=warn",
            exe.to_str().unwrap(),
            "--exact",
            "somaxconn_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .unwrap();
    assert!(
        out.contains("RESULT requested=1024 effective=Some(64) somaxconn=Some(64)"),
        "{out}"
    );
    let wildcard = out
        .lines()
        .find_map(|l| l.split_once("WILDCARD ").map(|(_, w)| w))
        .unwrap_or_else(|| panic!("{out}"));
    let (reached, reported) = wildcard
        .strip_prefix("reached=")
        .and_then(|w| w.split_once(" reported="))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(reached, reported.trim(), "{out}");
}
