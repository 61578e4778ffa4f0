#!/usr/bin/env bash
# Checks scripts/deploy/cluster-gateway.service with `systemd-analyze verify`, against the
# gateway-server binary given (default target/debug/gateway-server): any warning fails, not just
# an error. First it proves the check is real: a copy with an unknown key must fail it.
# Where systemd-analyze cannot run (no systemd in the container), it says why and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=$(realpath "${1:-target/debug/gateway-server}")

if ! command -v systemd-analyze >/dev/null; then
  echo "SKIPPED: systemd-analyze is not installed (apt-get install systemd)"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The unit names /usr/local/bin/gateway-server; verify checks that ExecStart= is executable.
sed "s|/usr/local/bin/gateway-server|$binary|" scripts/deploy/cluster-gateway.service \
  >"$work/cluster-gateway.service"

verify() { # unit file -> prints what systemd-analyze said, returns non-zero on any complaint
  local said
  said=$(cd "$(dirname "$1")" && SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_COLOR=0 \
    systemd-analyze verify --man=no "./$(basename "$1")" 2>&1) || {
    echo "$said"
    return 1
  }
  # Warnings (unknown keys, bad values "ignoring") still exit 0: treat them as failures.
  if [ -n "$said" ]; then
    echo "$said"
    return 1
  fi
}

# Can systemd-analyze load units here at all?
printf '[Service]\nExecStart=/bin/true\n' >"$work/probe.service"
if ! probe=$(verify "$work/probe.service"); then
  echo "SKIPPED: systemd-analyze cannot load units in this container: $probe"
  exit 0
fi

mkdir "$work/bad"
{ cat "$work/cluster-gateway.service"; echo "NotASystemdKey=1"; } >"$work/bad/cluster-gateway.service"
if verify "$work/bad/cluster-gateway.service" >/dev/null; then
  echo "systemd-analyze verify accepted an unknown key: the check would prove nothing" >&2
  exit 1
fi

echo "systemd-analyze verify scripts/deploy/cluster-gateway.service ($(systemd-analyze --version | head -n 1))"
if ! verify "$work/cluster-gateway.service"; then
  echo "scripts/deploy/cluster-gateway.service does not pass systemd-analyze verify" >&2
  exit 1
fi
echo "ok"
