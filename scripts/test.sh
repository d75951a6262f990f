#!/usr/bin/env bash
# Test tiers of `make test`: unit (ansible-test units), sanity (ansible-test sanity),
# lint (ansible-lint --profile production), molecule (the `default` Molecule scenario end to end:
# lab up checked for idempotence, the backup run as the side effect, testinfra verify), integration (pytest against the real lab).
# molecule-drill (the full drill scenario) is not part of `all`: `make molecule-drill`.
# Usage: scripts/test.sh all|quick|unit|sanity|lint|molecule|molecule-drill|integration   (run after scripts/setup.sh)
# Order: molecule runs before integration. It leaves the lab up and in its home roles, which is
# what the integration tier starts from (its session fixture runs lab_up, idempotent); the
# integration tier ends with test_zz_lab_down. Both use FEDIFLOW_LAB_INVENTORY (default the lab).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDIFLOW_VENV:-$ROOT/.venv}"
COLL="$ROOT/.build/collections/ansible_collections/fediflow/dr"
# the lab's collection (lab/, LAB ONLY), beside it: its unit and sanity tests run in the same tiers
LAB_COLL="$ROOT/.build/collections/ansible_collections/fediflow/dr_lab"
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
# shellcheck disable=SC2317
both() {
  local rc=0 dir
  for dir in "$COLL" "$LAB_COLL"; do
    printf -- '--- %s\n' "${dir##*/ansible_collections/}"
    (cd "$dir" && "$@") || rc=1
  done
  return "$rc"
}
# shellcheck disable=SC2317
unit() { both ansible-test units --local --python "$PY_VER" --color no; }
# shellcheck disable=SC2317
sanity() { both ansible-test sanity --local --python "$PY_VER" --color no; }
# shellcheck disable=SC2317
# ANSIBLE_HOME of its own: a copy of fediflow.dr that some tool left in ~/.ansible/collections
# (same version, older code) would otherwise shadow .build/collections and fail the lint.
lint() { (cd "$ROOT" && ANSIBLE_HOME="$ROOT/.build/ansible-home" ansible-lint --profile production --offline --nocolor); }
# shellcheck disable=SC2317
molecule_scenario() {
  (cd "$ROOT" && FEDIFLOW_LAB_INVENTORY="${FEDIFLOW_LAB_INVENTORY:-$ROOT/inventories/lab/hosts.yml}" \
     molecule test --scenario-name "$1")
}
# shellcheck disable=SC2317
molecule_default() { molecule_scenario default; }
# shellcheck disable=SC2317
molecule_drill() { molecule_scenario drill; }
# shellcheck disable=SC2317
# Two pytest-xdist workers by default (FEDIFLOW_TEST_WORKERS=0 runs them in one process): each worker
# has a lab of its own (tests/integration/conftest.py), so a test that fails production over only
# moves its own worker's lab. A run with FEDIFLOW_LAB_INVENTORY set (one named lab) is serial.
# --dist loadfile: a test file runs whole on one worker, in its order, so a module-scoped fixture (a
# backup taken for the file's tests, a PITR history) is built once and no file depends on chance.
WORKERS="${FEDIFLOW_TEST_WORKERS:-2}"
if [ -n "${FEDIFLOW_LAB_INVENTORY:-}" ]; then WORKERS=0; fi
# shellcheck disable=SC2317
xdist_args() { if [ "$WORKERS" -gt 0 ] 2>/dev/null; then echo "-n $WORKERS --dist loadfile"; else echo "-p no:xdist"; fi; }
# shellcheck disable=SC2317
integration() {
  mkdir -p "$ROOT/tests/output"
  # shellcheck disable=SC2046
  (cd "$ROOT" && python -m pytest tests/integration -p no:cacheprovider -q -rs $(xdist_args) "$@" \
     --junitxml="$ROOT/tests/output/junit/integration.xml" 2>&1 | tee "$ROOT/tests/output/integration.log"
   exit "${PIPESTATUS[0]}")
}
# The developers' inner loop: the integration tests that keep the lab steady and are not marked
# slow (failover, drill, lab rebuilds and the long role runs stay in `make test`).
# shellcheck disable=SC2317
integration_quick() { integration -m "not restarts_lab and not slow"; }

# `all`: the static tiers (unit, sanity, lint: no lab, no port, files of their own) run one after
# another in the background while the lab tiers (molecule, then integration) run in the foreground.
# The lab tiers wait on PostgreSQL, WAL archiving and failure detection for a good part of their
# time (about 1.5 of 2 cores busy): the static tiers fill that idle core instead of adding their
# minutes to the run. Their output goes to tests/output/tiers/<tier>.log and is printed when the
# lab tiers are done; each tier's result and seconds are its own, as before.
TIERS_OUT="$ROOT/tests/output/tiers"
# shellcheck disable=SC2317
static_tiers() {
  local name t0 rc
  for name in unit sanity lint; do
    t0=$SECONDS
    "$name" > "$TIERS_OUT/$name.log" 2>&1
    rc=$?
    printf '%s %s\n' "$rc" "$((SECONDS - t0))" > "$TIERS_OUT/$name.result"
  done
}
# shellcheck disable=SC2317
collect_static() {
  local name rc took
  for name in unit sanity lint; do
    printf '\n=== tier: %s (ran beside the lab tiers; log %s) ===\n' "$name" "$TIERS_OUT/$name.log"
    cat "$TIERS_OUT/$name.log" 2>/dev/null
    if read -r rc took < "$TIERS_OUT/$name.result" 2>/dev/null; then :; else rc=99; took=0; fi
    RESULT[$name]=$rc
    TOOK[$name]=$took
    ORDER+=("$name")
  done
}

what="${1:-all}"
case "$what" in
  all)
    rm -f "$ROOT"/tests/output/junit/*.xml
    rm -rf "$TIERS_OUT"; mkdir -p "$TIERS_OUT"
    static_tiers &
    static_pid=$!
    tier molecule molecule_default; tier integration integration
    wait "$static_pid"
    collect_static ;;
  quick) rm -f "$ROOT"/tests/output/junit/*.xml; tier unit unit; tier integration-quick integration_quick ;;
  unit|sanity|lint|integration) tier "$what" "$what" ;;
  molecule) tier molecule molecule_default ;;
  molecule-drill) tier molecule-drill molecule_drill ;;
  *) echo "usage: $0 all|quick|unit|sanity|lint|molecule|molecule-drill|integration" >&2; exit 2 ;;
esac

failed=0
printf '\n%-12s %-6s %s\n' tier result seconds
for name in "${ORDER[@]}"; do
  if [ "${RESULT[$name]}" -eq 0 ]; then res=pass; else res="FAIL(${RESULT[$name]})"; failed=1; fi
  printf '%-12s %-6s %s\n' "$name" "$res" "${TOOK[$name]}"
done
python "$ROOT/scripts/slowest.py" 10 "$ROOT/tests/output/junit"
exit $failed
