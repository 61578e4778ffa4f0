#!/usr/bin/env bash
# Usage: health.sh — is the gateway up?
set -euo pipefail
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
echo "GET $GATEWAY_URL/health" >&2
curl --silent --show-error "$GATEWAY_URL/health"; echo
