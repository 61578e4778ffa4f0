#!/usr/bin/env bash
# Usage: register.sh NODE_ID [IP] [PORT] [CAPABILITIES] — register a node (capabilities
# comma-separated; defaults: 127.0.0.1, 5000 + NODE_ID, raft,gossip).
set -euo pipefail
usage="register.sh NODE_ID [IP] [PORT] [CAPABILITIES]"
. "$(dirname "$0")/lib.sh"
help_or_count 1 4 "$@"
need_integer NODE_ID "$1"
node_id=$1
ip=${2:-127.0.0.1}
[ -n "$ip" ] || usage_error "IP must not be empty"
port=${3:-$((5000 + 10#$node_id % 60000))}
need_integer PORT "$port" 1 65535
caps=${4:-raft,gossip}
caps_json=""
IFS=, read -r -a list <<<"$caps"
for cap in "${list[@]}"; do
  [ -n "$cap" ] || usage_error "CAPABILITIES has an empty entry: \"$caps\""
  caps_json="${caps_json:+$caps_json, }$(json_string "$cap")"
done
body="{\"node_id\": $node_id, \"ip_address\": $(json_string "$ip"), \"port\": $port, \"capabilities\": [$caps_json], \"metadata\": {}}"
request POST /register "$body"
