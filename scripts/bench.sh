#!/usr/bin/env bash
# Usage: bench.sh — benchmarks the gateway over loopback with wrk, against two baselines
# measured in the same run: a bare tiny_http server with the same workers (examples/ceiling.rs)
# and nginx serving a static file, each answering with a body the size of the gateway's answer.
# Prints one table of ratios, then memory, reaper, client and registry figures.
# Needs wrk and nginx: apt-get install wrk nginx. DURATION (seconds per run, default 5),
# WORKERS (default 8), WATCH_ROUNDS (changes timed for the long-poll latency, default 500).
# ONLY=watch runs the long-poll rows alone.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
duration=${DURATION:-5}
workers=${WORKERS:-8}
for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "bench.sh needs $tool: apt-get install wrk nginx curl" >&2; exit 1; }
done

echo "building (release)" >&2
cargo build --quiet --release --examples --manifest-path "$here/Cargo.toml"
bin="$here/target/release/examples"
work=$(mktemp -d)
chmod 755 "$work"   # nginx workers may run as another user
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A free port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts bench_server with $1 nodes and a $2-second sweep (and data directory $3, if given);
# sets $url, and $out (its output).
started=0
start_gateway() {
  local port
  port=$(free_port)
  started=$((started + 1))
  out="$work/server.$started"
  mkfifo "$out.in"
  "$bin/bench_server" "$port" "$workers" "$1" "$2" ${3:+"$3"} <"$out.in" >"$out" &
  pids+=($!)
  exec {hold}>"$out.in"   # keeps the server's stdin open until the script ends
  for _ in $(seq 600); do grep -q '^ready' "$out" 2>/dev/null && break; sleep 0.1; done
  url="http://127.0.0.1:$port"
}

start_ceiling() {  # $1 body bytes; sets $ceiling_url
  local port; port=$(free_port)
  "$bin/ceiling" "$port" "$workers" "$1" >/dev/null &
  pids+=($!)
  ceiling_url="http://127.0.0.1:$port"
  for _ in $(seq 100); do curl --silent --output /dev/null "$ceiling_url/" && break; sleep 0.05; done
}

# nginx serving files of any size from $work/www, on $nginx_url.
start_nginx() {
  local port; port=$(free_port)
  mkdir -p "$work/www" "$work/nginx"
  cat >"$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$port; root $work/www; }
}
CONF
  nginx -c "$work/nginx.conf"
  nginx_url="http://127.0.0.1:$port"
}

# wrk: $1 url, $2 connections, $3 lua script or ""; prints "req/s p50_ms p99_ms".
measure() {
  local threads=2 script=()
  [ "$2" -lt 2 ] && threads=1
  [ -n "$3" ] && script=(--script "$3")
  # A second to open the connections and warm up, not measured: see BENCHMARKS.md on bursts.
  wrk --threads "$threads" --connections "$2" --duration 1s "${script[@]}" "$1" >/dev/null 2>&1 || true
  wrk --threads "$threads" --connections "$2" --duration "${duration}s" --latency "${script[@]}" "$1" \
    >"$work/wrk.out" 2>&1 || true
  # Every answer must have been a success: a benchmark of errors measures nothing. Socket
  # timeouts (a connection never served within wrk's 2 s) are counted and shown instead.
  if grep -qE "Non-2xx|unable to|Connection refused" "$work/wrk.out"; then
    echo "wrk reported errors for $1:" >&2; cat "$work/wrk.out" >&2; exit 1
  fi
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    /Socket errors/ { split($0, f, "timeout "); timeouts = f[2] + 0 }
    END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, timeouts }' "$work/wrk.out"
}

cat >"$work/heartbeat.lua" <<'LUA'
local counter = 0
request = function()
  counter = counter + 1
  local id = counter % 1000 + 1
  return wrk.format("POST", "/heartbeat", {["Content-Type"] = "application/json"}, '{"node_id": ' .. id .. '}')
end
LUA
# Re-registers seeded nodes with exactly what they registered with (bench_server's records).
cat >"$work/register.lua" <<'LUA'
local counter = 0
request = function()
  counter = counter + 1
  local id = counter % 1000 + 1
  -- wrk's LuaJIT has no bit operators: divide instead.
  local body = string.format('{"node_id": %d, "ip_address": "10.%d.%d.%d", "port": %d, "capabilities": ["raft", "gossip"], "metadata": {"zone": "z%d", "rack": "r%d"}}',
    id, math.floor(id / 65536) % 256, math.floor(id / 256) % 256, id % 256, 5000 + id % 1000, id % 3, id % 40)
  return wrk.format("POST", "/register", {["Content-Type"] = "application/json"}, body)
end
LUA

# Registrations that each change a node's metadata (16 nodes, so the answers stay small and the
# write is what is measured); every wrk thread numbers its own requests.
cat >"$work/churn.lua" <<'LUA'
local counter = 0
local threads = 0
setup = function(thread) threads = threads + 1; thread:set("tid", threads) end
request = function()
  counter = counter + 1
  local id = counter % 16 + 1
  local body = string.format('{"node_id": %d, "ip_address": "10.0.0.%d", "port": %d, "capabilities": ["raft"], "metadata": {"seq": "%d-%d"}}',
    id, id, 5000 + id, tid, counter)
  return wrk.format("POST", "/register", {["Content-Type"] = "application/json"}, body)
end
LUA

# Long-poll rows: heartbeats with 1,000 parked watchers against none (measured before and after,
# same gateway), and the time from a change to a watching client's whole answer.
watch_rows() {
  echo
  echo "long-poll: POST /heartbeat, 1,000 ids (64 connections), with 1,000 parked watchers"
  start_gateway 1000 30
  local before after parked
  before=$(measure "$url/heartbeat" 64 "$work/heartbeat.lua")
  mkfifo "$work/park.in"
  "$bin/watch_bench" park "$url" 1000 <"$work/park.in" >"$work/park.out" &
  pids+=($!)
  exec {hold_park}>"$work/park.in"
  for _ in $(seq 600); do grep -q '^parked' "$work/park.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^parked' "$work/park.out" || { echo "watch_bench could not park 1,000 watchers" >&2; exit 1; }
  parked=$(measure "$url/heartbeat" 64 "$work/heartbeat.lua")
  exec {hold_park}>&-
  wait "${pids[-1]}" 2>/dev/null || true
  after=$(measure "$url/heartbeat" 64 "$work/heartbeat.lua")
  echo "$before $parked $after" | awk '{ none = ($1 + $9) / 2;
    printf "  none %d/s (before %d, after %d), 1,000 parked %d/s: %.2fx; p99 %.2f -> %.2f ms\n", none, $1, $9, $5, $5/none, ($3 + $11) / 2, $7 }'
  echo "long-poll: from POST /register (a change) to a watcher's whole GET /nodes answer"
  start_gateway 16 30
  printf '  16 nodes:    '; "$bin/watch_bench" latency "$url" "${WATCH_ROUNDS:-500}"
  start_gateway 1000 30
  printf '  1,000 nodes: '; "$bin/watch_bench" latency "$url" "${WATCH_ROUNDS:-500}"
}
if [ "${ONLY:-}" = watch ]; then watch_rows; exit 0; fi

start_nginx
start_gateway 1000 30; small=$url
start_gateway 10000 30; large=$url

printf '\n%-34s %11s %9s %9s %9s %11s %11s %9s\n' "scenario (connections)" "gateway/s" "p50 ms" "p99 ms" "body B" "x tiny_http" "x nginx" "timeouts"
row() {  # $1 name, $2 connections, $3 gateway url+path, $4 lua script, $5 body size
  local g c n
  g=$(measure "$3" "$2" "$4")
  start_ceiling "$5"
  c=$(measure "$ceiling_url/" "$2" "")
  head -c "$5" /dev/zero | tr '\0' x >"$work/www/body$5"
  n=$(measure "$nginx_url/body$5" "$2" "")
  set -- "$1" "$2" "$g" "$c" "$n" "$5"
  awk -v name="$1 ($2)" -v g="$3" -v c="$4" -v n="$5" -v size="$6" 'BEGIN {
    split(g, G, " "); split(c, C, " "); split(n, N, " ");
    printf "%-34s %11d %9.2f %9.2f %9d %10.2fx %10.2fx %3d/%d/%d\n", name, G[1], G[2], G[3], size, G[1]/C[1], G[1]/N[1], G[4], C[4], N[4] }'
  kill "${pids[-1]}" 2>/dev/null || true
}
size() { curl --silent "$@" | wc -c; }
health=$(size "$small/health")
beat=$(size --data '{"node_id": 1}' "$small/heartbeat")
nodes1k=$(size "$small/nodes?node_id=1")
nodes10k=$(size "$large/nodes?node_id=1")
reg=$(size --data '{"node_id": 1, "ip_address": "10.0.0.1", "port": 5001, "capabilities": ["raft", "gossip"], "metadata": {"zone": "z1", "rack": "r1"}}' "$small/register")

row "GET /health" 1 "$small/health" "" "$health"
row "GET /health" 64 "$small/health" "" "$health"
row "POST /heartbeat, 1,000 ids" 1 "$small/heartbeat" "$work/heartbeat.lua" "$beat"
row "POST /heartbeat, 1,000 ids" 64 "$small/heartbeat" "$work/heartbeat.lua" "$beat"
row "GET /nodes, 1,000 nodes" 16 "$small/nodes?node_id=1" "" "$nodes1k"
row "GET /nodes, 10,000 nodes" 16 "$large/nodes?node_id=1" "" "$nodes10k"
row "POST /register, 1,000 nodes" 16 "$small/register" "$work/register.lua" "$reg"
echo "(baselines answer GET with a fixed body of the same size; wrk --threads 2, ${duration}s a run;"
echo " timeouts: connections wrk saw unanswered for 2 s, gateway/tiny_http/nginx)"

echo
echo "durability: a data directory (--data-dir) against memory, same run"
start_gateway 16 30; churn_memory=$url
start_gateway 16 30 "$work/data16"; churn_durable=$url
start_gateway 1000 30; beat_memory=$url
start_gateway 1000 30 "$work/data1000"; beat_durable=$url
m=$(measure "$churn_memory/register" 16 "$work/churn.lua")
d=$(measure "$churn_durable/register" 16 "$work/churn.lua")
syncs=$(curl --silent "$churn_durable/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_syncs"])')
echo "$m $d $syncs" | awk '{ printf "  POST /register changing metadata (16): memory %d/s, data dir %d/s (%.2fx; p99 %.2f -> %.2f ms; %d syncs)\n", $1, $5, $5/$1, $3, $7, $9 }'
m=$(measure "$beat_memory/heartbeat" 64 "$work/heartbeat.lua")
d=$(measure "$beat_durable/heartbeat" 64 "$work/heartbeat.lua")
echo "$m $d" | awk '{ printf "  POST /heartbeat, 1,000 ids (64): memory %d/s, data dir %d/s (%.2fx)\n", $1, $5, $5/$1 }'

watch_rows

echo
echo "memory (resident, whole process):"
for n in 0 10000 100000; do
  start_gateway "$n" 30
  before=$(awk '/^rss_before/ {print $2}' "$out")
  after=$(awk '/^rss_after/ {print $2}' "$out")
  if [ "$n" -gt 0 ]; then per=$(( (after - before) / n )); else per=0; fi
  printf '  %7d nodes: %6d KiB resident, %5d bytes per node\n' "$n" $((after / 1024)) "$per"
done

echo
echo "reaper: POST /heartbeat p99 with 100,000 nodes (64 connections)"
start_gateway 100000 3600; quiet=$(measure "$url/heartbeat" 64 "$work/heartbeat.lua")
start_gateway 100000 0.05; sweeping=$(measure "$url/heartbeat" 64 "$work/heartbeat.lua")
echo "$quiet $sweeping" | awk '{ printf "  no sweeps: p99 %.2f ms; a sweep every 50 ms: p99 %.2f ms (%.2fx)\n", $3, $6, $6/$3 }'

echo
echo "client heartbeat thread at a 1 s interval:"
printf '  '; "$bin/client_cpu" "$small" "${CLIENT_SECONDS:-60}"

echo
echo "registry micro-benchmark (no HTTP):"
"$bin/registry_bench" | sed 's/^/  /'
