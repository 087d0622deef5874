#!/usr/bin/env bash
# Generator CPU per TLS connection, side by side: synack-load (rustls, one thread) and h2load
# (nghttp2, OpenSSL, one thread), each opening CONNECTIONS new TLS 1.3 connections (16 at a
# time, one HTTP/1.1 request each, the server closing) against the same synack greeting
# server (rustls, one worker). Both offer X25519 (synack-load with --tls-kx x25519, as
# OpenSSL does by default). CPU from /usr/bin/time; interleaved RUNS times; medians and the
# ratio. Traffic stays on 127.0.0.1. Needs h2load (apt-get install nghttp2-client).
# Usage: scripts/tls-generator-vs-h2load.sh [RUNS] [CONNECTIONS]
set -euo pipefail
RUNS=${1:-3}; N=${2:-4000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v h2load >/dev/null || { echo "tls-generator-vs-h2load: h2load is not installed (apt-get install nghttp2-client)" >&2; exit 2; }
(cd "$ROOT" && cargo build --release -q -p synack-loadtest && cargo build --release -q -p synack --features tls --example greeting)
DIR=$(mktemp -d)
trap 'kill "${GPID:-}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$DIR/key.pem" \
  -out "$DIR/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ROOT/target/release/examples/greeting" --addr "127.0.0.1:$PORT" --workers 1 --accept-in-workers \
  --tls-cert "$DIR/cert.pem" --tls-key "$DIR/key.pem" \
  --greeting $'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n' >/dev/null 2>&1 &
GPID=$!
sleep 0.5
cpu_us() { # command... -> microseconds of its CPU per connection
  local t; t=$( { /usr/bin/time -f '%U %S' "$@" >/dev/null 2>"$DIR/err"; } 2>&1; tail -1 "$DIR/err")
  python3 -c "u, s = map(float, '$t'.split()); print(f'{(u + s) / $N * 1e6:.0f}')"; }
SL=(); H2=()
for _ in $(seq "$RUNS"); do
  SL+=("$(cpu_us "$ROOT/target/release/synack-load" flood "127.0.0.1:$PORT" --tls --insecure --tls-kx x25519 \
      --http "GET /" --connections "$N" --concurrency 16 --threads 1 --quiet)")
  H2+=("$(cpu_us h2load -n "$N" -c 16 -t 1 --h1 "https://127.0.0.1:$PORT/")")
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
S=$(med "${SL[@]}"); H=$(med "${H2[@]}")
echo "generator CPU per new TLS 1.3 connection (X25519, one HTTP/1.1 request), $N per run, medians of $RUNS interleaved runs:"
echo "  synack-load (rustls, 1 thread): $S us  (runs: ${SL[*]})"
echo "  h2load $(h2load --version | awk '{print $2}') (OpenSSL, 1 thread): $H us  (runs: ${H2[*]})"
python3 -c "print(f'  synack-load opens {$H / $S:.2f}x the connections per CPU second of h2load')"
