#!/usr/bin/env bash
# Usage: demo.sh — start a gateway on a free port, register three nodes, show nodes, leader and
# stats, stop it, and show what it logged. GATEWAY_SERVER_BIN names the binary (default: built
# with cargo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${GATEWAY_SERVER_BIN:-}
if [ -z "$bin" ]; then
  echo "building gateway-server" >&2
  cargo build --quiet --release --bin gateway-server --manifest-path "$here/../Cargo.toml"
  bin="$here/../target/release/gateway-server"
fi
log=$(mktemp)
"$bin" --host 127.0.0.1 --port 0 --log-level INFO 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT

# The server logs the port it got; wait for that line (at most 10 s).
for _ in $(seq 100); do
  url=$(sed -n 's|.*listening on \(http://[^ ]*\).*|\1|p' "$log" | head -n 1)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "gateway did not start:" >&2; cat "$log" >&2; exit 1; }
export GATEWAY_URL=$url
echo "gateway running at $GATEWAY_URL" >&2

"$here/health.sh"
for id in 1 2 3; do "$here/register.sh" "$id"; done
"$here/heartbeat.sh" 2
"$here/nodes.sh"
"$here/nodes.sh" 1
"$here/leader.sh"
"$here/stats.sh"

echo "stopping the gateway" >&2
kill -TERM "$server"
wait "$server"
echo "gateway stopped; what it logged:" >&2
sed 's/^/  | /' "$log" >&2
