#!/usr/bin/env bash
# Usage: leader.sh — the current leader.
set -euo pipefail
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
echo "GET $GATEWAY_URL/leader" >&2
curl --silent --show-error "$GATEWAY_URL/leader"; echo
