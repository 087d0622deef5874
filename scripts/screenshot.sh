#!/usr/bin/env bash
# Renders a synack-load report.html with headless Chromium (Debian package `chromium`) to a PNG,
# so a person can look at it: scripts/screenshot.sh DIR/report.html [OUT.png]
set -euo pipefail
page=${1:?usage: scripts/screenshot.sh REPORT.html [OUT.png]}
out=${2:-${page%.html}.png}
command -v chromium >/dev/null || { echo "needs chromium (apt-get install chromium)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# Chromium refuses to run as root with its sandbox: only then is it turned off, and said so.
sandbox=()
if [ "$(id -u)" = 0 ]; then
  echo "warning: running as root, so chromium runs without its sandbox (--no-sandbox) on $page;" \
    "render only pages you trust, or run this as an unprivileged user" >&2
  sandbox=(--no-sandbox)
fi
chromium --headless ${sandbox[@]+"${sandbox[@]}"} --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1000,2600 \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$page")" 2>/dev/null
echo "$out"
