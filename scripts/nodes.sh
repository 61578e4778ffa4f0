#!/usr/bin/env bash
# Usage: nodes.sh [EXCLUDE_NODE_ID] [all] — active nodes (all: suspected too).
set -euo pipefail
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
query=""
if [ -n "${1:-}" ] && [ "$1" != all ]; then query="node_id=$1"; fi
if [ "${1:-}" = all ] || [ "${2:-}" = all ]; then query="${query:+$query&}status=all"; fi
echo "GET $GATEWAY_URL/nodes?$query" >&2
curl --silent --show-error "$GATEWAY_URL/nodes?$query"; echo
