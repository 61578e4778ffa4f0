#!/usr/bin/env bash
# Usage: demo-cluster.sh — one gateway and five gateway-client nodes with short timeouts; node 3
# is stopped, turns suspected, then disappears. GATEWAY_BIN_DIR names the folder holding
# gateway-server and gateway-client (default: built with cargo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${GATEWAY_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  echo "building gateway-server and gateway-client" >&2
  cargo build --quiet --release --bins --manifest-path "$here/../Cargo.toml"
  bin_dir="$here/../target/release"
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Polls a command until it succeeds, for at most $1 seconds.
wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.1
  done
}

"$bin_dir/gateway-server" --host 127.0.0.1 --port 0 --heartbeat-interval 0.2 \
  --suspect-after 1 --node-timeout 2.5 2>"$work/server.log" &
pids+=($!)
wait_for 10 grep -q "listening on http://" "$work/server.log"
GATEWAY_URL=$(sed -n 's|.*listening on \(http://[^ ]*\).*|\1|p' "$work/server.log" | head -n 1)
export GATEWAY_URL
echo "== gateway at $GATEWAY_URL"

client="$bin_dir/gateway-client"
for id in 1 2 3 4 5; do
  "$client" --node-id "$id" --port $((5000 + id)) --heartbeat-interval 0.2 --metadata demo=yes \
    >"$work/node$id.out" 2>"$work/node$id.log" &
  pids+=($!)
  node_pids[id]=$!
done

# Each check reads the whole listing first: a pipe into `grep -q` could end the listing early.
listing() { "$client" nodes "$@"; }
count_nodes() { local out; out=$(listing); [ "$(tail -n +2 <<<"$out" | wc -l)" -eq "$1" ]; }
wait_for 20 count_nodes 5
echo "== five nodes joined"
"$client" nodes
"$client" leader

echo "== stopping node 3 (it does not leave: the gateway must notice)"
kill -TERM "${node_pids[3]}"
node3() { local out; out=$(listing --all); grep -qE "^3 .*$1" <<<"$out"; }
wait_for 20 node3 suspected
echo "== node 3 is suspected"
"$client" nodes --all
gone() { local out; out=$(listing --all); ! grep -qE "^3 " <<<"$out"; }
wait_for 20 gone
echo "== node 3 was reaped"
"$client" nodes --all
"$client" stats | grep -E "total_nodes|reaped_total"
echo "== done"
