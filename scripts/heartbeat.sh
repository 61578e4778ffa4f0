#!/usr/bin/env bash
# Usage: heartbeat.sh NODE_ID — send one heartbeat.
set -euo pipefail
usage="heartbeat.sh NODE_ID"
. "$(dirname "$0")/lib.sh"
help_or_count 1 1 "$@"
need_integer NODE_ID "$1"
request POST /heartbeat "{\"node_id\": $1}"
