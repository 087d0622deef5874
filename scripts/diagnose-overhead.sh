#!/usr/bin/env bash
# The cost of watching many listeners: N listeners (default 1000) in a network namespace of
# its own, `synack-load diagnose` reading all of them every INTERVAL (default 10ms) for
# SECONDS (default 10); prints diagnose's CPU time as a share of one core. Root (ip netns).
# Usage: scripts/diagnose-overhead.sh [N] [INTERVAL] [SECONDS] [synack-load binary]
set -euo pipefail
N=${1:-1000}; INTERVAL=${2:-10ms}; SECONDS_=${3:-10}
BIN=${4:-$(dirname "$0")/../target/release/synack-load}
NS=synack-overhead-$$
ip netns add "$NS"
trap 'kill "$HOLDER" 2>/dev/null || true; ip netns del "$NS"' EXIT
ip -n "$NS" link set lo up
ip netns exec "$NS" python3 -c "
import socket, time
ss = []
for i in range($N):
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(128); ss.append(s)
print('ready', flush=True)
time.sleep(3600)
" > /tmp/$NS.ready &
HOLDER=$!
for _ in $(seq 100); do grep -q ready /tmp/$NS.ready 2>/dev/null && break; sleep 0.1; done
# diagnose's own CPU (user + system), from /usr/bin/time's format, against the wall time.
OUT=$(ip netns exec "$NS" /usr/bin/time -f '%U %S %e' "$BIN" diagnose --duration "${SECONDS_}s" --interval "$INTERVAL" 2>&1 >/dev/null | tail -1)
read -r U S E <<<"$OUT"
python3 -c "u,s,e=$U,$S,$E; print(f'diagnose: $N listeners every $INTERVAL for {e:.1f} s: {u+s:.2f} s of CPU = {100*(u+s)/e:.2f}% of one core')"
rm -f /tmp/$NS.ready
