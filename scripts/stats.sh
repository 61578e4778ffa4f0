#!/usr/bin/env bash
# Usage: stats.sh — registry counters.
set -euo pipefail
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
echo "GET $GATEWAY_URL/stats" >&2
curl --silent --show-error "$GATEWAY_URL/stats"; echo
