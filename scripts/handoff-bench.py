#!/usr/bin/env python3
"""What a restart costs under a connect flood: N handoffs of `examples/greeting --handoff`
(SIGHUP: the new process adopts the listening socket, the old one winds down) against N naive
restarts (SIGTERM, wait for the exit, start again on the same address), each under the same
open-loop flood of `synack-load flood --rate RATE`. Prints what clients saw (every outcome
class, SYN retransmissions) and the handoff durations (p50, p99) as the old processes reported
them. A benchmark, not a test: its figures go in docs/performance.md and the issue note.

Usage: scripts/handoff-bench.py [--restarts 100] [--rate 20000] [--every-ms 100] [--runs 3]
(BACKLOG=1024 the server's listen backlog; GEN_THREADS=1 generator threads by default: on 2 cores a second one only takes CPU from the
server; WATCH=1 adds --watch-listener; KINDS=handoff runs one kind.)
Builds the release binaries first (cargo build --release). Traffic stays on 127.0.0.1.
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GREETING = os.path.join(ROOT, "target/release/examples/greeting")
LOAD = os.path.join(ROOT, "target/release/synack-load")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """A greeting server (and the processes it hands over to) with its stdout collected."""

    def __init__(self, port, handoff):
        args = [GREETING, "--addr", f"127.0.0.1:{port}", "--workers", "1", "--grace-ms", "5000",
                "--backlog", os.environ.get("BACKLOG", "1024")]
        if handoff:
            args.append("--handoff")
        self.lines = []
        self.cv = threading.Condition()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env={**os.environ, "RUST_LOG": "warn"})
        self.pid = self.proc.pid
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("listening on", 0)

    def _read(self):
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()

    def wait_for(self, what, seen, timeout=30):
        """Waits for the (seen+1)th line containing `what`; returns it."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                hits = [l for l in self.lines if what in l]
                if len(hits) > seen:
                    return hits[seen]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"no line {what!r} after {timeout} s: {self.lines[-5:]}")
                self.cv.wait(left)


def flood(port, rate, seconds, out):
    return subprocess.Popen([LOAD, "flood", f"127.0.0.1:{port}", "--rate", str(rate),
                             "--duration", f"{seconds}s", "--expect", "hello",
                             "--threads", os.environ.get("GEN_THREADS", "1"),
                             "--connect-timeout", "3s", "--quiet", "--json", out]
                            + (["--watch-listener"] if os.environ.get("WATCH") else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run(kind, restarts, rate, every_ms):
    port = free_port()
    server = Server(port, handoff=(kind == "handoff"))
    seconds = int(restarts * every_ms / 1000) + 3
    out = tempfile.mktemp(suffix=".json")
    load = flood(port, rate, seconds, out)
    time.sleep(1.0)
    durations, readies = [], []
    for i in range(restarts):
        t = time.monotonic()
        if kind == "handoff":
            os.kill(server.pid, signal.SIGHUP)
            line = server.wait_for("handed over to pid", i)
            m = re.search(r"pid (\d+): ready after ([\d.]+) ms, stopped accepting after [\d.]+ ms,"
                          r" done after ([\d.]+) ms", line)
            server.pid = int(m.group(1))
            readies.append(float(m.group(2)))
            durations.append(float(m.group(3)))
        else:
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait()
            server = Server(port, handoff=False)
            durations.append((time.monotonic() - t) * 1e3)
        time.sleep(max(0.0, every_ms / 1000 - (time.monotonic() - t)))
    _, err = load.communicate(timeout=seconds + 60)
    if load.returncode != 0:
        raise SystemExit(f"synack-load failed: {err}")
    os.kill(server.pid, signal.SIGTERM)
    rep = json.load(open(out))
    os.unlink(out)
    retrans = sum(b["connections"] for b in rep["syn_retransmits"] if b["retransmits"] > 0)
    return {
        "kind": kind,
        "restarts": restarts,
        "attempts": rep["attempts"],
        "outcomes": {k: v for k, v in rep["outcomes"].items() if v},
        "syn_retransmitted": retrans + rep.get("timeouts_retransmitted", 0),
        "delivered": rep["generator"]["delivered"],
        "generator_reasons": rep["generator"].get("reasons", []),
        # Host-wide: every socket of this host, not only the server's.
        "kernel_host_wide": {k: v for k, v in (rep.get("kernel") or {}).get("counters", {}).items() if v},
        "queue": [(p["t_ms"], p["len"]) for p in (rep.get("listener_queue") or {}).get("series", []) if p["len"] > 300],
        "per_second_not_ok": [s for s in rep.get("per_second", []) if set(s["outcomes"]) - {"ok"}],
        "achieved_rate": rep["achieved_rate"],
        "connect_p99_us": rep["latency_us"]["connect"]["p99"],
        "restart_ms_p50": statistics.median(durations),
        "restart_ms_p99": sorted(durations)[min(len(durations) - 1, int(len(durations) * 0.99))],
        "ready_ms_p50": statistics.median(readies) if readies else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--restarts", type=int, default=100)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--every-ms", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs of each kind")
    a = ap.parse_args()
    if a.restarts < 1 or a.rate < 1 or a.every_ms < 10:
        ap.error("--restarts and --rate at least 1, --every-ms at least 10")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "synack", "--example", "greeting"],
                   cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "synack-loadtest"], cwd=ROOT,
                   check=True)
    kinds = os.environ.get("KINDS", "handoff,naive").split(",")
    results = [run(k, a.restarts, a.rate, a.every_ms) for _ in range(a.runs) for k in kinds]
    for r in results:
        print(f"{r['kind']:8} {r['restarts']} restarts under {a.rate}/s "
              f"(generator {'delivered' if r['delivered'] else 'NOT delivered'}, "
              f"{r['achieved_rate']:.0f}/s): {r['attempts']} attempts, outcomes {r['outcomes']}, "
              f"{r['syn_retransmitted']} SYN retransmitted, connect p99 {r['connect_p99_us']} us; "
              f"restart p50 {r['restart_ms_p50']:.1f} ms, p99 {r['restart_ms_p99']:.1f} ms"
              + (f", new process ready p50 {r['ready_ms_p50']:.1f} ms" if r["ready_ms_p50"] else ""))
    for k in kinds:
        rs = [r for r in results if r["kind"] == k]
        bad = [r["attempts"] - r["outcomes"].get("ok", 0) for r in rs]
        print(f"{k:8} median of {len(rs)}: not ok {statistics.median(bad):.0f} per run "
              f"({', '.join(str(b) for b in bad)}), SYN retransmitted "
              f"{statistics.median(r['syn_retransmitted'] for r in rs):.0f}, restart p50 "
              f"{statistics.median(r['restart_ms_p50'] for r in rs):.1f} ms, p99 "
              f"{statistics.median(r['restart_ms_p99'] for r in rs):.1f} ms")
    json.dump(results, sys.stdout if os.environ.get("JSON") else open(os.devnull, "w"), indent=1)


if __name__ == "__main__":
    main()
