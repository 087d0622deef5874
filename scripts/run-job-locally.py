#!/usr/bin/env python3
"""Runs deploy/kubernetes/agents-job.yaml's agents as local processes, then its merge Job: the
same arguments, one process per completion index (JOB_COMPLETION_INDEX set as Kubernetes sets
it), a start time a few seconds ahead, /results a local directory. For trying a Job spec
without a cluster (every agent shares this machine's cores, so the figures are this host's).

Usage: scripts/run-job-locally.py --target 127.0.0.1:7878 [--agents N] [--set rate=2k]...
       [--results DIR] [--job deploy/kubernetes/agents-job.yaml]
Needs PyYAML (pip install pyyaml; kubernetes-validate brings it).
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="host:port the agents flood (TARGET)")
    ap.add_argument("--agents", type=int, help="agents to run (default: the Job's parallelism)")
    ap.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                    help="replace a flag's value in the agents' arguments (rate=2k for --rate)")
    ap.add_argument("--results", default=None, help="the local /results (default: a new temp dir)")
    ap.add_argument("--job", default=os.path.join(ROOT, "deploy/kubernetes/agents-job.yaml"))
    ap.add_argument("--merge-job", default=os.path.join(ROOT, "deploy/kubernetes/merge-job.yaml"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/synack-load"))
    ap.add_argument("--lead", type=float, default=3.0, help="seconds from now to START_AT")
    a = ap.parse_args()
    try:
        import yaml
    except ImportError:
        sys.exit("run-job-locally: PyYAML is missing (pip install pyyaml)")
    job = yaml.safe_load(open(a.job))
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    n = a.agents or int(spec["parallelism"])
    if n < 1:
        ap.error(f"--agents {n}: at least 1")
    results = a.results or __import__("tempfile").mkdtemp(prefix="synack-job-")
    os.makedirs(results, exist_ok=True)
    start_at = time.time() + a.lead
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
    env["TARGET"] = a.target
    env["START_AT"] = f"{start_at:.3f}"
    args = [str(x) for x in container["args"]]
    for s in a.set:
        flag, _, value = s.partition("=")
        flag = "--" + flag.lstrip("-")
        if flag not in args or not value:
            ap.error(f"--set {s!r}: give FLAG=VALUE for a flag the Job passes ({' '.join(x[2:] for x in args if x.startswith('--'))})")
        args[args.index(flag) + 1] = value
    if "--agents" in args:
        args[args.index("--agents") + 1] = str(n)

    def expand(arg, index):
        vals = dict(env, JOB_COMPLETION_INDEX=str(index))
        arg = re.sub(r"\$\((\w+)\)", lambda m: vals.get(m.group(1), m.group(0)), arg)
        return arg.replace("/results", results)

    procs = []
    for i in range(n):
        cmd = [a.bin] + [expand(x, i) for x in args]
        procs.append(subprocess.Popen(cmd, env=dict(os.environ, JOB_COMPLETION_INDEX=str(i)),
                                      stderr=subprocess.PIPE, text=True))
    failed = 0
    for i, p in enumerate(procs):
        _, err = p.communicate()
        if p.returncode != 0:
            failed += 1
            print(f"agent {i} failed ({p.returncode}): {err.strip()}", file=sys.stderr)
    if failed:
        sys.exit(f"run-job-locally: {failed} of {n} agents failed; reports in {results}")
    merge = yaml.safe_load(open(a.merge_job))["spec"]["template"]["spec"]["containers"][0]
    line = " ".join(str(x) for x in merge["args"]).replace("/results", results)
    line = line.replace("/usr/local/bin/synack-load", a.bin)
    r = subprocess.run(["/bin/sh", "-c", line])
    print(f"reports and the merge in {results}")
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
