//! The scheduling policy of acceptor threads: `SCHED_BATCH` by default, the normal policy with
//! `acceptor_sched_batch(false)`. Alone in its test binary, so that no other test's acceptor
//! thread is about when it looks for this server's.

mod common;

use common::{fetch, wait_for};
use synack::Server;
use tokio::io::AsyncWriteExt;

#[test]
fn acceptor_threads_run_under_sched_batch_unless_told_otherwise() {
    // The policies (field 41 of stat, 3 = SCHED_BATCH) of this process's acceptor threads.
    fn acceptor_policies() -> Vec<String> {
        let mut policies = Vec::new();
        for t in std::fs::read_dir("/proc/self/task").unwrap() {
            let Ok(stat) = std::fs::read_to_string(t.unwrap().path().join("stat")) else {
                continue;
            };
            let (head, after_comm) = stat.rsplit_once(')').unwrap();
            if head.ends_with("(synack-acceptor") {
                policies.push(after_comm.split_whitespace().nth(38).unwrap().to_string());
            }
        }
        policies
    }
    for (builder, want) in [
        (Server::builder(), "3"),
        (Server::builder().acceptor_sched_batch(false), "0"),
    ] {
        let server = builder
            .bind("127.0.0.1:0")
            .unwrap()
            .workers(1)
            .serve(|mut conn: synack::Connection| async move { conn.write_all(b"x").await })
            .unwrap();
        assert_eq!(fetch(server.local_addr()), "x");
        // Served, but maybe by the idle worker: the acceptor thread names itself and takes its
        // policy on its own time (and the last server's may still be winding down).
        wait_for(&format!("one acceptor thread, with policy {want}"), || {
            acceptor_policies() == [want]
        });
        drop(server);
    }
}
