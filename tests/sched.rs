//! The scheduling policy of acceptor threads: `SCHED_BATCH` by default, the normal policy with
//! `acceptor_sched_batch(false)`. Alone in its test binary, so that no other test's acceptor
//! thread is about when it looks for this server's.

mod common;

use common::fetch;
use synack::Server;
use tokio::io::AsyncWriteExt;

#[test]
fn acceptor_threads_run_under_sched_batch_unless_told_otherwise() {
    // The policy (field 41 of stat, 3 = SCHED_BATCH) of this process's acceptor thread.
    fn acceptor_policy() -> String {
        for t in std::fs::read_dir("/proc/self/task").unwrap() {
            let Ok(stat) = std::fs::read_to_string(t.unwrap().path().join("stat")) else {
                continue;
            };
            let (head, after_comm) = stat.rsplit_once(')').unwrap();
            if head.ends_with("(synack-acceptor") {
                return after_comm.split_whitespace().nth(38).unwrap().to_string();
            }
        }
        panic!("no acceptor thread");
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
        // Served: the acceptor is up and has taken its policy.
        assert_eq!(fetch(server.local_addr()), "x");
        assert_eq!(acceptor_policy(), want);
        drop(server);
    }
}
