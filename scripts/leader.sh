#!/usr/bin/env bash
# Usage: leader.sh — the current leader.
set -euo pipefail
usage="leader.sh"
. "$(dirname "$0")/lib.sh"
help_or_count 0 0 "$@"
request GET /leader
