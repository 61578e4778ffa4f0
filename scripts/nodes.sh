#!/usr/bin/env bash
# Usage: nodes.sh [EXCLUDE_NODE_ID] [all] — active nodes (all: suspected too), without
# EXCLUDE_NODE_ID.
set -euo pipefail
usage="nodes.sh [EXCLUDE_NODE_ID] [all]"
. "$(dirname "$0")/lib.sh"
help_or_count 0 2 "$@"
exclude="" all=""
for arg in "$@"; do
  if [ "$arg" = all ] && [ -z "$all" ]; then all=1
  elif [ -z "$exclude" ] && [ -z "$all" ]; then need_integer EXCLUDE_NODE_ID "$arg"; exclude=$arg
  else usage_error "unexpected argument \"$arg\""
  fi
done
query=${exclude:+node_id=$exclude}
if [ -n "$all" ]; then query="${query:+$query&}status=all"; fi
request GET "/nodes${query:+?$query}"
