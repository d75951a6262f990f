#!/usr/bin/env bash
# Test tiers of `make test`: unit (ansible-test units), sanity (ansible-test sanity),
# lint (ansible-lint --profile production), integration (pytest against the real lab).
# Usage: scripts/test.sh all|unit|sanity|lint|integration   (run after scripts/setup.sh)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDIFLOW_VENV:-$ROOT/.venv}"
COLL="$ROOT/.build/collections/ansible_collections/fediflow/dr"
PY_VER="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
export PATH="$VENV/bin:$PATH"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.build/collections"

declare -A RESULT
declare -A TOOK
ORDER=()

tier() {
  local name="$1"; shift
  local t0=$SECONDS
  printf '\n=== tier: %s ===\n' "$name"
  "$@"
  local rc=$?
  RESULT[$name]=$rc
  TOOK[$name]=$((SECONDS - t0))
  ORDER+=("$name")
  return 0
}

# The tier functions are called indirectly, through `tier NAME FUNCTION`.
# shellcheck disable=SC2317
unit() { (cd "$COLL" && ansible-test units --local --python "$PY_VER" --color no); }
# shellcheck disable=SC2317
sanity() { (cd "$COLL" && ansible-test sanity --local --python "$PY_VER" --color no); }
# shellcheck disable=SC2317
lint() { (cd "$ROOT" && ansible-lint --profile production --offline --nocolor); }
# shellcheck disable=SC2317
integration() {
  (cd "$ROOT" && python -m pytest tests/integration -p no:cacheprovider -q -rs \
     --junitxml="$ROOT/tests/output/junit/integration.xml")
}

what="${1:-all}"
case "$what" in
  all) tier unit unit; tier sanity sanity; tier lint lint; tier integration integration ;;
  unit|sanity|lint|integration) tier "$what" "$what" ;;
  *) echo "usage: $0 all|unit|sanity|lint|integration" >&2; exit 2 ;;
esac

failed=0
printf '\n%-12s %-6s %s\n' tier result seconds
for name in "${ORDER[@]}"; do
  if [ "${RESULT[$name]}" -eq 0 ]; then res=pass; else res="FAIL(${RESULT[$name]})"; failed=1; fi
  printf '%-12s %-6s %s\n' "$name" "$res" "${TOOK[$name]}"
done
exit $failed
