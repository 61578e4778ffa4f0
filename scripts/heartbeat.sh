#!/usr/bin/env bash
# Usage: heartbeat.sh NODE_ID — send one heartbeat.
set -euo pipefail
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
node_id=${1:?usage: heartbeat.sh NODE_ID}
echo "POST $GATEWAY_URL/heartbeat node_id=$node_id" >&2
curl --silent --show-error --header "Content-Type: application/json" --data "{\"node_id\": $node_id}" "$GATEWAY_URL/heartbeat"; echo
