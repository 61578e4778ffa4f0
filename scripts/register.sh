#!/usr/bin/env bash
# Usage: register.sh NODE_ID [IP] [PORT] [CAPABILITIES] — register a node (capabilities comma-separated).
set -euo pipefail
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
node_id=${1:?usage: register.sh NODE_ID [IP] [PORT] [CAPABILITIES]}
ip=${2:-127.0.0.1}
port=${3:-$((5000 + node_id))}
caps=${4:-raft,gossip}
caps_json=$(printf "%s" "$caps" | sed -e "s/[^,][^,]*/\"&\"/g")
body="{\"node_id\": $node_id, \"ip_address\": \"$ip\", \"port\": $port, \"capabilities\": [$caps_json], \"metadata\": {}}"
echo "POST $GATEWAY_URL/register $body" >&2
curl --silent --show-error --header "Content-Type: application/json" --data "$body" "$GATEWAY_URL/register"; echo
