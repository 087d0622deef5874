#!/usr/bin/env bash
# What each accept mode of synack costs per connection, side by side on the same flood: the
# greeting example with one worker pinned to CPU 0 (both of its threads), flooded by
# `synack-load flood` (closed loop of 64, one thread) on CPU 1. Three modes: the default (the
# idle worker accepts for its acceptor thread), `--acceptor-alone` (every accept on the acceptor
# thread, the default before), `--accept-in-workers` (no acceptor thread), and `--fin-apart`
# (the default with every write sent at once: the FIN in a segment of its own). Per connection:
# the server's CPU (its /proc stat ticks, user + system), its context switches (voluntary and
# involuntary, every thread, /proc/PID/task/*/status), the acceptor thread's own CPU (its
# /proc task stat ticks: what it still does), and the TCP segments the host sent (Tcp.OutSegs
# of /proc/net/snmp: host-wide, both ends on loopback). Interleaved RUNS times (default 3),
# medians.
# Traffic stays on 127.0.0.1.
# Usage: scripts/accept-modes.sh [RUNS] [SECONDS]
set -euo pipefail
RUNS=${1:-3}; SECS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD=$ROOT/target/release/synack-load
GREETING=$ROOT/target/release/examples/greeting
(cd "$ROOT" && cargo build --release -q -p synack-loadtest && cargo build --release -q -p synack --example greeting)
DIR=$(mktemp -d)
trap 'kill "${GPID:-}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }
acceptor_ticks() { # the acceptor thread's user + system ticks (0 without one)
  local t; for t in /proc/"$1"/task/*; do
    if grep -q '^synack-acceptor' "$t/comm"; then awk '{print $14 + $15}' "$t/stat"; return; fi
  done; echo 0; }
out_segs() { awk '/^Tcp:/ {n++; if (n == 2) print $12}' /proc/net/snmp; }
HZ=$(getconf CLK_TCK)
run() { # mode flag -> "cpu_us switches_per_conn acceptor_cpu_us segs_per_conn"
  local port; port=$(free_port)
  # shellcheck disable=SC2086
  taskset -c 0 "$GREETING" --addr "127.0.0.1:$port" --workers 1 $1 >/dev/null 2>&1 &
  GPID=$!
  sleep 0.3
  local t0 s0 a0 o0 t1 s1 a1 o1
  t0=$(ticks "$GPID"); s0=$(switches "$GPID"); a0=$(acceptor_ticks "$GPID"); o0=$(out_segs)
  taskset -c 1 "$LOAD" flood "127.0.0.1:$port" --concurrency 64 --duration "${SECS}s" --read 17 \
    --quiet --json "$DIR/f.json" >/dev/null
  t1=$(ticks "$GPID"); s1=$(switches "$GPID"); a1=$(acceptor_ticks "$GPID"); o1=$(out_segs)
  kill -INT "$GPID"; wait "$GPID" 2>/dev/null || true
  python3 - "$DIR/f.json" "$t0" "$t1" "$s0" "$s1" "$a0" "$a1" "$o0" "$o1" "$HZ" <<'PY'
import json, sys
f, t0, t1, s0, s1, a0, a1, o0, o1, hz = sys.argv[1], *map(int, sys.argv[2:])
ok = json.load(open(f))["outcomes"]["ok"]
print(f"{(t1 - t0) / hz / ok * 1e6:.2f} {(s1 - s0) / ok:.3f} {(a1 - a0) / hz / ok * 1e6:.2f} {(o1 - o0) / ok:.2f}")
PY
}
declare -A CPU SW SH SG
MODES=(default acceptor-alone accept-in-workers fin-apart)
flag() { case $1 in default) echo "";; *) echo "--$1";; esac; }
for _ in $(seq "$RUNS"); do
  for m in "${MODES[@]}"; do
    read -r c s h g < <(run "$(flag "$m")")
    CPU[$m]+="$c "; SW[$m]+="$s "; SH[$m]+="$h "; SG[$m]+="$g "
  done
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "per connection, greeting example (1 worker, CPU 0) under synack-load flood --concurrency 64 (CPU 1), ${SECS} s, medians of $RUNS interleaved runs:"
printf '  %-18s %14s %22s %20s %18s\n' mode "server CPU us" "context switches" "acceptor thread us" "segments (host)"
for m in "${MODES[@]}"; do
  # shellcheck disable=SC2086
  printf '  %-18s %14s %22s %20s %18s\n' "$m" "$(med ${CPU[$m]})" "$(med ${SW[$m]})" "$(med ${SH[$m]})" "$(med ${SG[$m]})"
  # shellcheck disable=SC2086
  printf '  %-18s %14s %22s %20s %18s\n' "  (runs)" "${CPU[$m]}" "${SW[$m]}" "${SH[$m]}" "${SG[$m]}"
done
