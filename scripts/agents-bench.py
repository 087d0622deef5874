#!/usr/bin/env python3
"""1, 2 and 4 local agents against one synack greeting server: aggregate opens per second and
the merged connect p99, from `synack-load merge` of the agents' JSON reports.

Every run is one closed-loop flood of --concurrency connections in all (split over the agents
by --agents), --seconds long, all agents started together with --start-at; each connection
waits for the server's first byte (--read 1), so the loop goes at the server's pace. Agent counts
interleave (1, 2, 4, 1, 2, 4, ...) and the table gives medians of --runs with the spread.
On this machine the agents and the server share the same cores: the figures say what one host
does, not what N hosts would.

Usage: scripts/agents-bench.py [--runs 3] [--seconds 3] [--concurrency 64] [--agents 1,2,4]
Builds nothing: run `cargo build --release -p synack-loadtest -p synack --example greeting` first.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_run(bin_, addr, n, concurrency, seconds, out):
    start = time.time() + 1.5
    procs = []
    for i in range(n):
        procs.append(subprocess.Popen(
            [bin_, "flood", addr, "--quiet", "--concurrency", str(concurrency),
             "--duration", f"{seconds}s", "--read", "1", "--agents", str(n), "--agent-index", str(i),
             "--start-at", f"{start:.3f}", "--json", os.path.join(out, f"agent-{i}.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for i, p in enumerate(procs):
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"agents-bench: agent {i} of {n} failed ({p.returncode}): {err.strip()}")
    merged = os.path.join(out, "merged.json")
    files = [os.path.join(out, f"agent-{i}.json") for i in range(n)]
    r = subprocess.run([bin_, "merge", *files, "--json", merged],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"agents-bench: merge failed: {r.stderr.strip()}")
    m = json.load(open(merged))
    total = m["total"]
    bound = sum(1 for a in m["agents"] if not a.get("delivered", False))
    return total["achieved_rate"], total["latency_us"]["connect"]["p99"], bound, r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--agents", default="1,2,4")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/synack-load"))
    ap.add_argument("--server", default=os.path.join(ROOT, "target/release/examples/greeting"))
    ap.add_argument("--port", type=int, default=7931)
    a = ap.parse_args()
    try:
        counts = [int(x) for x in a.agents.split(",")]
    except ValueError:
        sys.exit(f"agents-bench: --agents {a.agents!r}: a comma-separated list of whole numbers")
    if a.runs < 1 or a.seconds < 1 or a.concurrency < max(counts) or min(counts) < 1:
        sys.exit("agents-bench: --runs, --seconds and the agent counts take whole numbers above 0, "
                 "and --concurrency at least the largest agent count")
    for path in (a.bin, a.server):
        if not os.access(path, os.X_OK):
            sys.exit(f"agents-bench: {path} is missing: "
                     "cargo build --release -p synack-loadtest -p synack --example greeting")
    addr = f"127.0.0.1:{a.port}"
    server = subprocess.Popen([a.server, "--addr", addr, "--backlog", "4096"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        if server.poll() is not None:
            sys.exit(f"agents-bench: the server on {addr} exited ({server.returncode})")
        rates = {n: [] for n in counts}
        p99s = {n: [] for n in counts}
        bounds = {n: 0 for n in counts}
        last = {}
        with tempfile.TemporaryDirectory(prefix="synack-agents-bench-") as tmp:
            for run in range(a.runs):
                for n in counts:
                    out = os.path.join(tmp, f"run{run}-n{n}")
                    os.makedirs(out)
                    rate, p99, bound, table = one_run(a.bin, addr, n, a.concurrency,
                                                      a.seconds, out)
                    rates[n].append(rate)
                    p99s[n].append(p99)
                    bounds[n] += bound
                    last[n] = table
                    print(f"run {run + 1}, {n} agent(s): {rate:,.0f} opens/s, merged connect "
                          f"p99 {p99} us", file=sys.stderr)
        print(f"\n{a.runs} interleaved runs of {a.seconds} s, a closed loop of {a.concurrency} "
              f"in all, against one synack greeting server; medians (spread):")
        print("| agents | opens/s, all agents | merged connect p99 | agents that did not deliver their part |")
        print("|---|---|---|---|")
        for n in counts:
            r, p = rates[n], p99s[n]
            print(f"| {n} | {statistics.median(r):,.0f} ({min(r):,.0f} .. {max(r):,.0f}) | "
                  f"{statistics.median(p):.0f} us ({min(p)} .. {max(p)}) | "
                  f"{bounds[n]} of {n * a.runs} |")
        cores = os.cpu_count()
        print(f"(on this host the agents and the server share its {cores} cores: more agents "
              "here split the same CPUs, they do not add any)")
        print(f"\nthe last {max(counts)}-agent run's merged report:\n{last[max(counts)]}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
