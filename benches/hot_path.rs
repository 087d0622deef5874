//! Micro-benchmarks of the per-connection hot path, so a regression shows in isolation:
//! the connection limit, the statistics a worker records per connection, a snapshot merge, and
//! one whole accept -> handler -> close round trip on loopback (through an acceptor thread, and
//! accepting in the worker).
//!
//! ```text
//! cargo bench --bench hot_path
//! ```

use std::io::Read;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use synack::__bench::{AcceptorStats, Limit, WorkerStats, merge};
use tokio::io::AsyncWriteExt;

fn limit(c: &mut Criterion) {
    let l = Limit::new(1024);
    c.bench_function("limit: try_acquire + release", |b| {
        b.iter(|| {
            assert!(l.try_acquire());
            l.release();
        })
    });
}

fn stats(c: &mut Criterion) {
    let w = WorkerStats::new();
    c.bench_function("stats: record one dispatch", |b| {
        b.iter(|| {
            w.record_dispatch(Duration::from_micros(37));
            w.completed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
    });
    let a = [AcceptorStats::new(), AcceptorStats::new()];
    let ws = [WorkerStats::new(), WorkerStats::new()];
    for w in &ws {
        for i in 0..10_000 {
            w.record_dispatch(Duration::from_micros(i % 500));
        }
    }
    c.bench_function("stats: snapshot merge (2 acceptors, 2 workers)", |b| {
        b.iter(|| {
            let s = merge(&[&a[0], &a[1]], &[&ws[0], &ws[1]], vec![0, 0]);
            std::hint::black_box(s.accepted)
        })
    });
}

fn round_trip(c: &mut Criterion) {
    // The same round trip through an acceptor thread's handoff and through a worker that
    // accepts for itself.
    for (name, in_workers) in [
        ("acceptor thread", false),
        ("accepting in the worker", true),
    ] {
        let server = synack::Server::builder()
            .bind("127.0.0.1:0")
            .unwrap()
            .workers(1)
            .accept_in_workers(in_workers)
            .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi").await })
            .unwrap();
        let addr = server.local_addr();
        c.bench_function(
            &format!("loopback: connect, accept, handler writes 2 bytes, close ({name})"),
            |b| {
                b.iter(|| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    let mut buf = [0u8; 2];
                    s.read_exact(&mut buf).unwrap();
                })
            },
        );
    }
}

criterion_group! {
    name = hot_path;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = limit, stats, round_trip
}
criterion_main!(hot_path);
