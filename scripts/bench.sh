#!/usr/bin/env bash
# Usage: bench.sh — benchmarks the gateway over loopback with wrk, against two baselines
# measured in the same run: a bare tiny_http server with the same workers (examples/ceiling.rs)
# and nginx serving a static file, each answering with a body the size of the gateway's answer.
# Prints one table of ratios, then memory, reaper, client and registry figures.
# Needs wrk and nginx: apt-get install wrk nginx. DURATION (seconds per run, default 5),
# WORKERS (default 8), WATCH_ROUNDS (changes timed for the long-poll latency, default 500),
# CLIENT_WATCH_ROUNDS (changes timed through the client library's watch, default 200).
# ONLY=watch runs the long-poll rows alone, ONLY=delta the delta-answer and stream rows,
# ONLY=scale the 100,000-node rows, ONLY=gzip the gzip rows, ONLY=durability the data-directory rows, ONLY=etcd the etcd rows, ONLY=table the first
# table alone (health, heartbeats, lists, registrations against both baselines). The durability and
# etcd sections print whether their targets were met in this run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
duration=${DURATION:-5}
workers=${WORKERS:-8}
for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "bench.sh needs $tool: apt-get install wrk nginx curl" >&2; exit 1; }
done

echo "building (release)" >&2
cargo build --quiet --release --examples --bins --manifest-path "$here/Cargo.toml"
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
  server { listen 127.0.0.1:$port; root $work/www; gzip_static on; }
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
  # (NOT_MODIFIED=1: 304 answers are what is measured.)
  local bad="Non-2xx|unable to|Connection refused"
  [ -n "${NOT_MODIFIED:-}" ] && bad="unable to|Connection refused"
  if grep -qE "$bad" "$work/wrk.out"; then
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
  echo "long-poll: from POST /register (a change) to a watching GatewayClient's subscriber (watch thread, /leader, view, channel)"
  start_gateway 16 30
  printf '  16 nodes:    '; "$bin/client_watch_latency" "$url" "${CLIENT_WATCH_ROUNDS:-200}"
  start_gateway 1000 30
  printf '  1,000 nodes: '; "$bin/client_watch_latency" "$url" "${CLIENT_WATCH_ROUNDS:-200}"
}
# Scale rows: gateway-server filled with 100,000 nodes over HTTP, then emptied.
scale_rows() {
echo
echo "scale: gateway-server filled over HTTP with Prefer: return=minimal (16 connections)"
cat >"$work/fill.lua" <<'LUA'
-- Each wrk thread registers its own PER nodes, then goes round them again.
local counter = 0
local threads = 0
local per = tonumber(os.getenv("PER"))
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
request = function()
  counter = counter + 1
  local id = tid * per + (counter - 1) % per + 1
  local body = string.format('{"node_id": %d, "ip_address": "10.%d.%d.%d", "port": %d, "capabilities": ["raft", "gossip"], "metadata": {"zone": "z%d", "rack": "r%d"}}',
    id, math.floor(id / 65536) % 256, math.floor(id / 256) % 256, id % 256, 5000 + id % 1000, id % 3, id % 40)
  return wrk.format("POST", "/register", {["Content-Type"] = "application/json", ["Prefer"] = "return=minimal"}, body)
end
LUA
sed -e 's|"/register", {\["Content-Type"\] = "application/json", \["Prefer"\] = "return=minimal"}, body|"/remove", {["Content-Type"] = "application/json"}, string.format(\x27{"node_id": %d}\x27, id)|' \
  "$work/fill.lua" >"$work/remove.lua"
rss_of() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
port=$(free_port)
"$here/target/release/gateway-server" --host 127.0.0.1 --port "$port" --workers "$workers" \
  --node-timeout 7200 --suspect-after 3600 --heartbeat-interval 2 --log-level ERROR 2>/dev/null &
srv=$!; pids+=("$srv"); scale="http://127.0.0.1:$port"
for _ in $(seq 100); do curl --silent --output /dev/null "$scale/health" && break; sleep 0.05; done
empty=$(rss_of "$srv")
# The rate is 100,000 over the time until the registry holds them all.
nodes_in() { curl --silent "$1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_nodes"])'; }
fill_started=$(date +%s.%N)
PER=50000 wrk --threads 2 --connections 16 --duration 300s --script "$work/fill.lua" "$scale/register" >/dev/null &
filler=$!
while [ "$(nodes_in "$scale")" -lt 100000 ]; do sleep 0.05; done
fill=$(echo "$fill_started $(date +%s.%N)" | awk '{ printf "%d", 100000 / ($2 - $1) }')
kill "$filler"; wait "$filler" 2>/dev/null || true
total=$(nodes_in "$scale")
beats=$(measure "$scale/heartbeat" 16 "$work/heartbeat.lua")
echo "$fill ${beats%% *} $total" | awk '{ printf "  %d nodes registered at %d/s; heartbeats at 16 connections %d/s (%.2fx)\n", $3, $1, $2, $1/$2 }'
curl --silent --output /dev/null "$scale/nodes"
curl --silent --output /dev/null --compressed "$scale/nodes"
full=$(rss_of "$srv")
echo "$empty $full $total" | awk '{ printf "  resident: empty %d KiB, %d nodes with lists built %d KiB: %d bytes per node\n", $1, $3, $2, ($2-$1)*1024/$3 }'
plain=$(curl --silent "$scale/nodes" | wc -c); gz=$(curl --silent -H 'Accept-Encoding: gzip' "$scale/nodes" | wc -c)
echo "$plain $gz" | awk '{ printf "  GET /nodes: %d bytes plain, %d gzip (1/%.1f)\n", $1, $2, $1/$2 }'
# Registrations at a steady rate, $1 a second for $2 seconds, from 8 connections, each on a
# schedule it catches up with when answers are slow: "change" (each one new metadata for one of
# nodes 1..1000) or "same" (exactly what fill.lua registered: a write that changes nothing).
# Prints how many were sent (examples/churn.rs).
paced() {  # $1 rate, $2 seconds, $3 mode
  "$bin/churn" "$scale" "$1" "$2" "$3"
}
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }   # clock ticks, user + system
ticks=$(getconf CLK_TCK)
# CPU a write costs the gateway, no readers: registrations that change nothing, then changes.
cpu_per_write() {  # $1 mode; prints "microseconds_per_write writes"
  local before sent
  before=$(cpu_of "$srv")
  sent=$(paced 2000 "$duration" "$1")
  echo "$before $(cpu_of "$srv") $sent $ticks" | awk '{ printf "%.1f %d\n", ($2 - $1) / $4 * 1e6 / $3, $3 }'
}
same=$(cpu_per_write same)
changed=$(cpu_per_write change)
echo "$same $changed $duration" | awk '{ printf "  a change at 100,000 nodes, no readers: %.1f us of gateway CPU (%d changes, %d/s); a write that changes nothing %.1f us (%d, %d/s): %+.1f us a change beyond the write\n", $3, $4, $4/$5, $1, $2, $2/$5, $3 - $1 }'
cat >"$work/gzip.lua" <<'LUA'
wrk.headers["Accept-Encoding"] = "gzip"
LUA
# GET /nodes quiet, then while registrations change metadata at $1 a second; $2: wrk script.
churned_reads() {  # prints "reads/s changes/s"
  paced "$1" "$((duration + 2))" change >"$work/churned" &
  local churner=$! reads
  reads=$(measure "$scale/nodes?node_id=1" 16 "$2")
  wait "$churner"
  echo "${reads%% *} $(($(cat "$work/churned") / (duration + 2)))"
}
for enc in plain gzip; do
  script=""; [ "$enc" = gzip ] && script="$work/gzip.lua"
  # Quiet before and after, averaged: a 21 MB answer's rate drifts with the machine.
  before=$(measure "$scale/nodes?node_id=1" 16 "$script")
  slow=$(churned_reads 200 "$script")
  fast=$(churned_reads 2000 "$script")
  after=$(measure "$scale/nodes?node_id=1" 16 "$script")
  quiet=$(( (${before%% *} + ${after%% *}) / 2 ))
  echo "$enc ${quiet%% *} $slow $fast" | awk '{ printf "  GET /nodes, 100,000 nodes (16), %-5s %d/s quiet (before and after); %d/s with %d metadata changes a second (%.2fx); %d/s with %d a second (%.2fx)\n", $1, $2, $3, $4, $3/$2, $5, $6, $5/$2 }'
done
tag=$(curl --silent --include "$scale/nodes?node_id=1" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
cat >"$work/etag.lua" <<LUA
wrk.headers["If-None-Match"] = '$tag'
LUA
notmod=$(NOT_MODIFIED=1 measure "$scale/nodes?node_id=1" 64 "$work/etag.lua")
health64=$(measure "$scale/health" 64 "")
echo "$notmod $health64" | awk '{ printf "  304 Not Modified (64): %d/s; GET /health (64): %d/s (%.2fx)\n", $1, $5, $1/$5 }'
PER=50000 wrk --threads 2 --connections 16 --duration 300s --script "$work/remove.lua" "$scale/remove" >/dev/null &
remover=$!
while [ "$(nodes_in "$scale")" -gt 0 ]; do sleep 0.05; done
kill "$remover"; wait "$remover" 2>/dev/null || true
sleep 3  # two sweeps (every 2 s): the one that gives memory back runs after the departures
curl --silent --output /dev/null "$scale/nodes"
soon=$(rss_of "$srv")
# Sweeps keep giving memory back for 15 s after a mass departure (what idle connection threads
# and late readers free: see src/server/allocator.rs); read it again once they have.
sleep 15
echo "$empty $soon $(rss_of "$srv")" | awk '{ printf "  every node removed: %d KiB resident after 3 s, %d KiB after 18 s (empty: %d KiB; +%d KiB, +%d KiB)\n", $2, $3, $1, $2-$1, $3-$1 }'
kill "$srv" 2>/dev/null || true
}
# gzip rows: GET /nodes?node_id=1 (an answer without the asker) with Accept-Encoding: gzip, on
# each gateway url given, against nginx serving the same compressed bytes (gzip_static).
gzip_rows() {
  echo
  echo "gzip: GET /nodes with Accept-Encoding: gzip against nginx serving the same bytes (gzip_static)"
  cat >"$work/gzip.lua" <<'LUA'
wrk.headers["Accept-Encoding"] = "gzip"
LUA
  local gw n g x
  for gw in "$@"; do
    n=$(curl --silent "$gw/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_nodes"])')
    curl --silent -H 'Accept-Encoding: gzip' "$gw/nodes?node_id=1" >"$work/www/nodes$n.json.gz"
    curl --silent "$gw/nodes?node_id=1" >"$work/www/nodes$n.json"
    g=$(measure "$gw/nodes?node_id=1" 16 "$work/gzip.lua")
    x=$(measure "$nginx_url/nodes$n.json" 16 "$work/gzip.lua")
    echo "$n $g $x $(wc -c <"$work/www/nodes$n.json.gz") $(wc -c <"$work/www/nodes$n.json")" | awk '{ printf "  %6d nodes: gateway %d/s, nginx %d/s (%.2fx); %d bytes gzip, %d plain\n", $1, $2, $6, $2/$6, $10, $11 }'
  done
}
# Durability rows: registrations that change metadata and heartbeats, with a data directory
# against memory, in the same run. Target (issues 20 and 25): durable registrations >= 0.5x
# memory; heartbeats >= 0.95x.
durability_rows() {
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
  echo "$m $d" | awk '{ printf "  target: durable registrations >= 0.50x memory: %s\n", ($5/$1 >= 0.5) ? "met" : "NOT MET" }'
  m=$(measure "$beat_memory/heartbeat" 64 "$work/heartbeat.lua")
  d=$(measure "$beat_durable/heartbeat" 64 "$work/heartbeat.lua")
  echo "$m $d" | awk '{ printf "  POST /heartbeat, 1,000 ids (64): memory %d/s, data dir %d/s (%.2fx)\n", $1, $5, $5/$1 }'
}
# etcd rows: a gateway over one etcd member against one in memory, in the same run. Target
# (issue 25): registrations >= 0.3x memory at 16 connections.
etcd_rows() {
  echo
  echo "etcd: a gateway over one etcd member (--store etcd) against one in memory, same run"
  if ! command -v etcd >/dev/null; then
    echo "  skipped: etcd is not installed (apt-get install etcd-server)"
  else
    cargo build --quiet --release --bin gateway-server --manifest-path "$here/Cargo.toml"
    etcd_client=$(free_port); etcd_peer=$(free_port)
    etcd --name bench --data-dir "$work/etcd" \
      --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
      --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
      --initial-cluster "bench=http://127.0.0.1:$etcd_peer" --logger zap --log-level error >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do curl --silent "http://127.0.0.1:$etcd_client/health" | grep -q true && break; sleep 0.1; done
    gateway_server() {  # $@: extra flags; sets $url
      local port; port=$(free_port)
      "$here/target/release/gateway-server" --host 127.0.0.1 --port "$port" --workers "$workers" \
        --log-level ERROR "$@" &
      pids+=($!)
      url="http://127.0.0.1:$port"
      for _ in $(seq 100); do curl --silent --output /dev/null "$url/health" && break; sleep 0.05; done
    }
    gateway_server; on_memory=$url
    gateway_server --store etcd --etcd-endpoints "http://127.0.0.1:$etcd_client"; on_etcd=$url
    # 1,000 nodes in each, registered with exactly what register.lua sends again (16 at a
    # time; wrk's passes each start again from the first ids, which a slow etcd never passed).
    for g in "$on_memory" "$on_etcd"; do
      python3 - "$g" <<'PY'
import concurrent.futures, http.client, json, sys, threading, urllib.parse
base = urllib.parse.urlparse(sys.argv[1])
local = threading.local()
def register(i):
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
    body = ('{"node_id": %d, "ip_address": "10.%d.%d.%d", "port": %d, "capabilities": ["raft", "gossip"], '
            '"metadata": {"zone": "z%d", "rack": "r%d"}}') % (
        i, i // 65536 % 256, i // 256 % 256, i % 256, 5000 + i % 1000, i % 3, i % 40)
    local.conn.request("POST", "/register", body, {"Content-Type": "application/json"})
    answer = local.conn.getresponse()
    answer.read()
    assert answer.status == 200, (i, answer.status)
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(register, range(1, 1001)))
PY
      nodes=$(curl --silent "$g/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_nodes"])')
      [ "$nodes" = 1000 ] || { echo "seeding $g gave $nodes nodes, not 1000" >&2; exit 1; }
    done
    etcd_row() {  # $1 name, $2 connections, $3 path, $4 lua script, $5 "writes" for the etcd share
      local m e m2 e2
      # Interleaved, best of two each: the machine's load drifts between runs.
      m=$(measure "$on_memory$3" "$2" "$4"); e=$(measure "$on_etcd$3" "$2" "$4")
      e2=$(measure "$on_etcd$3" "$2" "$4"); m2=$(measure "$on_memory$3" "$2" "$4")
      [ "${e2%% *}" -gt "${e%% *}" ] && e=$e2
      [ "${m2%% *}" -gt "${m%% *}" ] && m=$m2
      etcd_last="$m $e"
      echo "$m $e" | awk -v name="$1 ($2)" '{
        printf "  %-34s memory %7d/s, etcd %7d/s (%.2fx; p50 %.2f -> %.2f ms, p99 %.2f -> %.2f ms)\n", name, $1, $5, $5/$1, $2, $6, $3, $7 }'
      # The share of a write spent waiting on etcd, estimated as its extra median latency.
      [ "${5:-}" = writes ] && echo "$m $e" | awk '$6 > 0 { share = ($6 - $2) / $6; if (share < 0) share = 0;
        printf "  %-34s about %.0f%% of a request waits on etcd (extra p50 over memory)\n", "", 100 * share }'
      return 0
    }
    etcd_row "GET /nodes, 1,000 nodes" 16 "/nodes?node_id=1" ""
    etcd_row "GET /leader" 16 "/leader" ""
    etcd_row "POST /heartbeat, 1,000 ids" 64 "/heartbeat" "$work/heartbeat.lua" writes
    etcd_row "POST /register, 1,000 nodes" 16 "/register" "$work/register.lua" writes
    echo "$etcd_last" | awk '{ printf "  target: etcd registrations (16) >= 0.30x memory: %.2fx, %s\n", $5/$1, ($5/$1 >= 0.3) ? "met" : "NOT MET" }'
  fi
}
# Delta answers (issue 25's watcher targets, issue 21's item 8): 1,000 parked delta watchers
# (GET /nodes?index=V&changes=1) while one client changes a node's metadata 100 times a second
# at 10,000 nodes; the same with 1,000 event streams (stream=1) in place of the long-polls;
# and 50 nodes that each watch (the client's watch thread) and publish a
# metadata change every 5 s. The gateway's CPU is read from /proc over each window.
# DELTA_SECONDS (default 20) sets both windows. The full run ends with these rows (an ONLY=
# run of other rows exits before them); BENCHMARKS.md gives the commands to run them alone.
delta_rows() {
  echo
  echo "delta answers: 1,000 parked delta watchers, 100 metadata changes a second, 10,000 nodes"
  start_gateway 10000 30
  printf '  '; "$bin/delta_bench" watchers "$url" 1000 100 "${DELTA_SECONDS:-20}" "${pids[-1]}"
  echo "event streams: 1,000 streams (GET /nodes?index=V&changes=1&stream=1), the same changes"
  start_gateway 10000 30
  printf '  '; "$bin/delta_bench" streams "$url" 1000 100 "${DELTA_SECONDS:-20}" "${pids[-1]}"
  echo "delta answers: 50 nodes, each watching and publishing metadata every 5 s"
  start_gateway 0 30
  printf '  '; "$bin/delta_bench" nodes "$url" 50 5 "${DELTA_SECONDS:-20}" "${pids[-1]}"
}
if [ "${ONLY:-}" = watch ]; then watch_rows; exit 0; fi
if [ "${ONLY:-}" = delta ]; then delta_rows; exit 0; fi
if [ "${ONLY:-}" = durability ]; then durability_rows; exit 0; fi
if [ "${ONLY:-}" = etcd ]; then etcd_rows; exit 0; fi
if [ "${ONLY:-}" = scale ]; then scale_rows; exit 0; fi
if [ "${ONLY:-}" = gzip ]; then
  start_nginx
  start_gateway 1000 30; small=$url
  start_gateway 10000 30; large=$url
  gzip_rows "$small" "$large"
  exit 0
fi

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
[ "${ONLY:-}" = table ] && exit 0

durability_rows

watch_rows

scale_rows

gzip_rows "$small" "$large"
etcd_rows

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

delta_rows
