#!/usr/bin/env bash
# `make bench`: run every bench/*.py script; each prints its own side-by-side table
# (the project against the named anchor, in the same run; ratios, not absolute times).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDIFLOW_VENV:-$ROOT/.venv}"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.build/collections"
export PATH="$VENV/bin:$PATH"
shopt -s nullglob
scripts=("$ROOT"/bench/bench_*.py)
if [ "${#scripts[@]}" -eq 0 ]; then
  echo "bench: no benchmark scripts yet (each capability issue adds bench/bench_<area>.py)"
  exit 0
fi
rc=0
for script in "${scripts[@]}"; do
  printf '\n=== %s ===\n' "$(basename "$script")"
  "$VENV/bin/python" "$script" || rc=1
done
exit $rc
