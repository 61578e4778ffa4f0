#!/usr/bin/env bash
# Usage: health.sh — is the gateway up? Its version, epoch and liveness settings.
set -euo pipefail
usage="health.sh"
. "$(dirname "$0")/lib.sh"
help_or_count 0 0 "$@"
request GET /health
