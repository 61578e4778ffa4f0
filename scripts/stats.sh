#!/usr/bin/env bash
# Usage: stats.sh — registry counters, settings and the store.
set -euo pipefail
usage="stats.sh"
. "$(dirname "$0")/lib.sh"
help_or_count 0 0 "$@"
request GET /stats
