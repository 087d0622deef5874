#!/usr/bin/env bash
# Server CPU per full TLS handshake, side by side on the same flood: nginx from Debian (OpenSSL,
# one worker process) and the synack greeting example (one worker accepting on it), each
# serving TLS 1.3 with the same ECDSA P-256 certificate and the same suite (both prefer
# TLS_AES_128_GCM_SHA256, as synack::tls::server_config does), against `synack-load flood --tls`
# (one thread, closed loop of 16, resumption off). The server's CPU is read from /proc (its
# worker process, or the greeting process) around the flood. Interleaved RUNS times (default
# 3), medians. Traffic stays on 127.0.0.1.
# Usage: scripts/tls-server-cpu.sh [RUNS] [CONNECTIONS]
set -euo pipefail
RUNS=${1:-3}; N=${2:-6000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD=$ROOT/target/release/synack-load
GREETING=$ROOT/target/release/examples/greeting
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "tls-server-cpu: nginx is not installed (apt-get install nginx)" >&2; exit 2; }
(cd "$ROOT" && cargo build --release -q -p synack-loadtest && cargo build --release -q -p synack --features tls --example greeting)
DIR=$(mktemp -d)
trap 'kill $(cat "$DIR"/nginx.pid 2>/dev/null) 2>/dev/null || true; kill "${GPID:-}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$DIR/key.pem" \
  -out "$DIR/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
flood() { "$LOAD" flood "127.0.0.1:$1" --tls --insecure --tls-resumption off --http "GET /" \
  --connections "$N" --concurrency 16 --threads 1 --quiet --json "$DIR/f.json" >/dev/null
  python3 -c "import json; r=json.load(open('$DIR/f.json')); print(r['outcomes']['ok'], r['tls']['full'])"; }
measure() { # pid port -> microseconds of server CPU per handshake
  local a b ok; a=$(ticks "$1"); read -r ok _ < <(flood "$2"); b=$(ticks "$1")
  python3 -c "print(f'{($b - $a) / $HZ / $ok * 1e6:.0f}')"; }
NPORT=$(free_port)
cat > "$DIR/nginx.conf" <<CONF
daemon on; master_process on; worker_processes 1; pid "$DIR/nginx.pid"; error_log "$DIR/error.log" warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path "$DIR/cb"; proxy_temp_path "$DIR/p"; fastcgi_temp_path "$DIR/f";
  uwsgi_temp_path "$DIR/u"; scgi_temp_path "$DIR/s";
  server { listen 127.0.0.1:$NPORT ssl backlog=1024; ssl_certificate "$DIR/cert.pem";
    ssl_certificate_key "$DIR/key.pem"; ssl_protocols TLSv1.3; ssl_session_tickets off;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
    ssl_prefer_server_ciphers on;
    location / { return 200 "hi\n"; } } }
CONF
"$NGINX" -p "$DIR" -c "$DIR/nginx.conf" -e "$DIR/error.log"
sleep 0.5
NWORKER=$(pgrep -P "$(cat "$DIR/nginx.pid")" | head -1)
GPORT=$(free_port)
"$GREETING" --addr "127.0.0.1:$GPORT" --workers 1 --accept-in-workers --tls-cert "$DIR/cert.pem" \
  --tls-key "$DIR/key.pem" --greeting $'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n' >/dev/null 2>&1 &
GPID=$!
sleep 0.5
flood "$NPORT" >/dev/null; flood "$GPORT" >/dev/null   # warm up
NG=(); SY=()
for _ in $(seq "$RUNS"); do
  NG+=("$(measure "$NWORKER" "$NPORT")"); SY+=("$(measure "$GPID" "$GPORT")")
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "server CPU per full TLS 1.3 handshake (ECDSA P-256), TCP and one HTTP answer included, $N connections per run, medians of $RUNS interleaved runs:"
echo "  nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') (OpenSSL, 1 worker): $(med "${NG[@]}") us  (runs: ${NG[*]})"
echo "  synack greeting (rustls, 1 worker):  $(med "${SY[@]}") us  (runs: ${SY[*]})"
