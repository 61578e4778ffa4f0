#!/usr/bin/env bash
# Usage: public-api.sh [--check | --bless]
#
# Records the library's public API (every public module, type, field, variant, function and
# method with its signature, trait, constant, re-export and trait impl) in public-api.txt at the
# repository root, so that a change to the API shows up in review as a diff of that file.
# CI (.ci/run) runs `scripts/public-api.sh --check`: it fails, printing the diff, when the API
# built from the tree no longer matches public-api.txt. Review the diff; if the change is meant,
# run `scripts/public-api.sh --bless` and commit public-api.txt with the change.
#
# With no flag it prints the API to standard output; --check compares it with public-api.txt
# (exit 1 and a unified diff when they differ); --bless writes public-api.txt.
#
# The API is that of the default build (--features server,client); a line that the client-only
# build (--no-default-features --features client, as a node embeds the client) lacks ends with
# "  [not in client-only]", and a line only that build has ends with "  [only in client-only]".
#
# How: rustdoc's JSON output (a nightly-only flag, allowed on the stable toolchain with
# RUSTC_BOOTSTRAP=1; no extra crate or tool), read by scripts/public_api.py (python3, standard
# library only). The JSON lands in target/doc/cluster_gateway.json (CARGO_TARGET_DIR is
# honoured); copies of both builds' JSON are kept in target/public-api/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

mode=print
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --bless) mode=bless ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: scripts/public-api.sh [--check | --bless]" >&2
    exit 2
    ;;
esac
[ "$#" -le 1 ] || { echo "usage: scripts/public-api.sh [--check | --bless]" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in /*) ;; *) target=$root/$target ;; esac
keep=$target/public-api
mkdir -p "$keep"
log=$(mktemp)
trap 'rm -f "$log" "$log.api"' EXIT

# rustdoc_json NAME CARGO-FEATURE-FLAGS...: builds the library's rustdoc JSON, kept as NAME.json.
rustdoc_json() {
  local name=$1
  shift
  rm -f "$target/doc/cluster_gateway.json"
  if ! RUSTC_BOOTSTRAP=1 cargo rustdoc --lib --quiet "$@" -- -Z unstable-options --output-format json \
    >"$log" 2>&1; then
    cat "$log" >&2
    echo "public-api.sh: cargo rustdoc $* failed" >&2
    exit 2
  fi
  cp "$target/doc/cluster_gateway.json" "$keep/$name.json"
}

# The client-only build first, so that target/doc/cluster_gateway.json is the default build's.
rustdoc_json client-only --no-default-features --features client
rustdoc_json default --features server,client

python3 scripts/public_api.py "$keep/default.json" --also "client-only=$keep/client-only.json" >"$log.api"

case $mode in
  print) cat "$log.api" ;;
  bless)
    cp "$log.api" public-api.txt
    echo "public-api.sh: wrote public-api.txt ($(wc -l <public-api.txt) lines)" >&2
    ;;
  check)
    if [ ! -f public-api.txt ]; then
      echo "public-api.sh: public-api.txt is missing: run scripts/public-api.sh --bless" >&2
      exit 1
    fi
    if ! diff -u --label public-api.txt --label "public API of the tree" public-api.txt "$log.api"; then
      echo "the public API changed: review the diff, then run scripts/public-api.sh --bless" >&2
      exit 1
    fi
    echo "public-api.sh: the public API matches public-api.txt" >&2
    ;;
esac
