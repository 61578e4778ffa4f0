#!/usr/bin/env bash
# Usage: set-leader.sh NODE_ID — make a registered node the leader.
set -euo pipefail
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
node_id=${1:?usage: set-leader.sh NODE_ID}
echo "POST $GATEWAY_URL/leader leader_id=$node_id" >&2
curl --silent --show-error --header "Content-Type: application/json" --data "{\"leader_id\": $node_id}" "$GATEWAY_URL/leader"; echo
