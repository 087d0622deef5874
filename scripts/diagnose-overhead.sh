#!/usr/bin/env bash
# The cost of watching many listeners: N listeners (default 1000) in a network namespace of
# its own, `synack-load diagnose` reading them every INTERVAL (default 10ms). Prints the CPU
# that SECONDS (default 16) more of watching cost, as a share of one core: a 1 s run and a
# (1 + SECONDS) s run, CPU time (user + system) from /usr/bin/time, start-up taken out.
# ONE=1 watches one port among them instead of all. Root (ip netns).
# Usage: [ONE=1] scripts/diagnose-overhead.sh [N] [INTERVAL] [SECONDS] [synack-load binary]
set -euo pipefail
N=${1:-1000}; INTERVAL=${2:-10ms}; SECS=${3:-16}
BIN=${4:-$(dirname "$0")/../target/release/synack-load}
NS=synack-overhead-$$
READY=$(mktemp)
ip netns add "$NS"
trap 'kill "$HOLDER" 2>/dev/null || true; ip netns del "$NS"; rm -f "$READY"' EXIT
ip -n "$NS" link set lo up
ip netns exec "$NS" python3 -c "
import socket, time
ss = []
for i in range($N):
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(128); ss.append(s)
print(ss[$N // 2].getsockname()[1], flush=True)
time.sleep(3600)
" > "$READY" &
HOLDER=$!
for _ in $(seq 100); do [ -s "$READY" ] && break; sleep 0.1; done
TARGET=""; WHAT="all $N listeners"
if [ "${ONE:-}" = 1 ]; then TARGET=$(head -1 "$READY"); WHAT="one port among $N listeners"; fi
cpu() { # seconds -> CPU seconds of a diagnose run that long
  ip netns exec "$NS" /usr/bin/time -f '%U %S' "$BIN" diagnose $TARGET --duration "$1s" \
    --interval "$INTERVAL" 2>&1 >/dev/null | tail -1 | awk '{print $1 + $2}'
}
A=$(cpu 1); B=$(cpu $((1 + SECS)))
python3 -c "a,b=$A,$B; print(f'diagnose, $WHAT every $INTERVAL: {b-a:.2f} s of CPU over $SECS s more = {100*(b-a)/$SECS:.2f}% of one core')"
