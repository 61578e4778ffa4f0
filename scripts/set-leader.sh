#!/usr/bin/env bash
# Usage: set-leader.sh NODE_ID — make a registered node the leader.
set -euo pipefail
usage="set-leader.sh NODE_ID"
. "$(dirname "$0")/lib.sh"
help_or_count 1 1 "$@"
need_integer NODE_ID "$1"
request POST /leader "{\"leader_id\": $1}"
