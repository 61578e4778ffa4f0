#!/usr/bin/env bash
# Usage: remove.sh NODE_ID — deregister a node.
set -euo pipefail
usage="remove.sh NODE_ID"
. "$(dirname "$0")/lib.sh"
help_or_count 1 1 "$@"
need_integer NODE_ID "$1"
request POST /remove "{\"node_id\": $1}"
