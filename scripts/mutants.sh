#!/usr/bin/env bash
# Usage: scripts/mutants.sh [FILE...]
#
# Mutation testing, run on demand (not in CI: it takes long): cargo-mutants puts small bugs
# into the code one at a time (a condition negated, a `+` made `-`, a function body replaced
# by a default) and runs the tests; a bug that no test catches "survives". The survivors are
# where the suite is weak. RELIABILITY.md ("Mutation testing") keeps the last result and the
# survivors accepted, each with its reason.
#
# By default it mutates the registry, the data-directory store and the HTTP layer, and runs
# the unit tests (the fast ones that cover them); set MUTANTS_TESTS=all to run the whole suite
# for each mutant (hours on two cores). Needs cargo-mutants: cargo install --locked cargo-mutants.
# Results land in mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-mutants >/dev/null || {
  echo "cargo-mutants is not installed: cargo install --locked cargo-mutants" >&2
  exit 1
}

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=(src/server/registry.rs src/server/store/log.rs src/server/store/log/recover.rs
    src/server/store/local.rs src/server/http.rs src/server/http/query.rs)
fi
args=()
for f in "${files[@]}"; do args+=(--file "$f"); done

test_args=(--lib)
[ "${MUTANTS_TESTS:-}" = all ] && test_args=()

cargo mutants "${args[@]}" --timeout 120 -- "${test_args[@]}"
