#!/usr/bin/env bash
# Idempotent set-up for `make test` / `make drill`: system packages, the pinned .venv,
# the dependency collections (offline, from the `ansible` PyPI package) and copies of this
# repository's two collections: the product under .build/collections/ansible_collections/fediflow/dr,
# the lab (lab/, LAB ONLY) under .build/collections/ansible_collections/fediflow/dr_lab.
# Fast when already done: each step is keyed by a stamp of its inputs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDIFLOW_VENV:-$ROOT/.venv}"
BUILD="$ROOT/.build"
COLL="$BUILD/collections/ansible_collections"
PYTHON_BOOT="${FEDIFLOW_PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }

need_apt=()
# PostgreSQL 15 server binaries (initdb, pg_ctl, pg_basebackup, pg_verifybackup ...)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  need_apt+=(postgresql-15 postgresql-contrib)
fi
# zstd / lz4: pg_backup_verify streams compressed base backups through them to verify them;
# and ansible-test sanity lints the shell scripts with the shellcheck program (skipped without it).
for tool in zstd lz4 shellcheck; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
# age: Debian's age CLI, the tool an operator decrypts configuration backups with in a disaster (age -d -i key);
# the lab makes its test key pair with age-keygen and the tests prove the CLI opens what config_export wrote.
command -v age >/dev/null 2>&1 && command -v age-keygen >/dev/null 2>&1 || need_apt+=(age)
# pgbackrest: the pgBackRest engine (fediflow.dr.pgbackrest_config; issue 21) and its tests.
command -v pgbackrest >/dev/null 2>&1 || need_apt+=(pgbackrest)
# redis-server: the lab runs a Redis per region (Debian's package; its default instance is not used).
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# chromium: the dr_report integration test opens the HTML report in headless Chromium (screenshot, DOM);
# fonts-dejavu-core so the page has text to render on a minimal machine.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium fonts-dejavu-core)
# The lab's region hosts (bindep profile "lab"): network namespaces (ip), partitions (nft), an sshd per
# region (Debian's openssh-server; its own system instance is not used) and sudo for `become`.
[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_apt+=(iproute2)
[ -x /usr/sbin/nft ] || need_apt+=(nftables)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
[ -x /usr/bin/sudo ] || need_apt+=(sudo)
# What the modules import on a database host, from the host's own python3 (bindep: the database host's
# Python libraries): the lab's region hosts run modules with /usr/bin/python3, as a real Debian host does.
# (The roles install them on a real host with apt; in the lab, whose namespaces have no route out, they
# are here already and apt finds nothing to do.)
for mod_pkg in psycopg2:python3-psycopg2 boto3:python3-boto3 redis:python3-redis yaml:python3-yaml \
               kubernetes:python3-kubernetes jinja2:python3-jinja2; do
  /usr/bin/python3 -c "import ${mod_pkg%%:*}" >/dev/null 2>&1 || need_apt+=("${mod_pkg#*:}")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing system packages: ${need_apt[*]} (run as root or install them)"; exit 1
  fi
  log "installing system packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No package may start its system service while installing (sshd on every address, a default
  # PostgreSQL cluster, Redis): policy-rc.d says no, for this install only.
  policy_rc=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy_rc=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# fediflow.dr scripts/setup.sh: no service starts while it installs packages\nexit 101\n' > "$policy_rc"
    chmod 0755 "$policy_rc"
    trap 'rm -f "$policy_rc"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  if [ -n "$policy_rc" ]; then rm -f "$policy_rc"; trap - EXIT; fi
  # Debian's package creates and starts a default cluster on 5432; the lab does not use it.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
      pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
  fi
  # Debian's redis-server package starts a default instance on 6379 where it can; the lab does not use it.
  # Nor its sshd (the lab runs one per region, inside the region's namespace).
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
    if [[ " ${need_apt[*]} " == *" openssh-server "* ]]; then
      systemctl disable --now ssh.socket ssh.service >/dev/null 2>&1 || true
    fi
  fi
fi

# pyrage (config_export's age encryption) has no Debian package: the lab's region hosts run modules with
# /usr/bin/python3, so it goes there from PyPI (pip installs into /usr/local as root), at the pin of
# requirements-dev.txt. On a real database host the replication role installs it (replication_host_pip_packages).
pyrage_pin="$(grep -E '^pyrage==' "$ROOT/requirements-dev.txt")"
if [ "$(/usr/bin/python3 -c 'import importlib.metadata as m; print("pyrage==" + m.version("pyrage"))' 2>/dev/null)" != "$pyrage_pin" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing for /usr/bin/python3: $pyrage_pin (run as root or install it)"; exit 1
  fi
  /usr/bin/python3 -m pip --version >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  log "installing $pyrage_pin for /usr/bin/python3"
  /usr/bin/python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --break-system-packages "$pyrage_pin"
fi

# 1. the pinned virtualenv
req_stamp="$(sha256sum < "$ROOT/requirements-dev.txt" | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.fediflow-stamp" 2>/dev/null)" != "$req_stamp" ]; then
  log "creating $VENV (pinned tool chain, a few minutes on a fresh machine)"
  [ -x "$VENV/bin/python" ] || "$PYTHON_BOOT" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
  echo "$req_stamp" > "$VENV/.fediflow-stamp"
else
  log "venv up to date ($VENV)"
fi

# 2. dependency collections, offline from the `ansible` package's site-packages: the dependencies of galaxy.yml
# and of lab/galaxy.yml (their one home; the packaging test installs the tarball with these copies as its
# dependency sources), but this repository's own collections (copied in step 3)
DEP_COLLECTIONS="$("$VENV/bin/python" -c '
import sys, yaml
deps = set()
for path in sys.argv[1:]:
    deps.update(yaml.safe_load(open(path))["dependencies"])
print(" ".join(sorted(d for d in deps if not d.startswith("fediflow."))))' "$ROOT/galaxy.yml" "$ROOT/lab/galaxy.yml")"
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
col_stamp="$(printf '%s %s' "$req_stamp" "$DEP_COLLECTIONS" | sha256sum | cut -c1-16)"
if [ "$(cat "$BUILD/.collections-stamp" 2>/dev/null)" != "$col_stamp" ]; then
  log "installing dependency collections: $DEP_COLLECTIONS"
  mkdir -p "$BUILD/collections"
  for c in $DEP_COLLECTIONS; do
    ns="${c%%.*}"; name="${c#*.}"
    rm -rf "${COLL:?}/$ns/$name"
    if ! "$VENV/bin/ansible-galaxy" collection install --offline --force -p "$BUILD/collections" \
      "$site/ansible_collections/$ns/$name" >"$BUILD/galaxy-install.log" 2>&1; then
      cat "$BUILD/galaxy-install.log"; exit 1
    fi
  done
  echo "$col_stamp" > "$BUILD/.collections-stamp"
else
  log "dependency collections up to date"
fi

# 3. this repository's collections, copied where ansible and ansible-test expect them: the product
# (everything but lab/) and the lab (lab/ alone)
sync_collection() {
  local name="$1" src="$2" dest="$COLL/fediflow/$1"
  shift 2
  rm -rf "$dest"
  mkdir -p "$dest"
  tar -C "$src" --exclude=./.venv --exclude=./.build --exclude=./.git --exclude=./.pytest_cache \
    --exclude='__pycache__' --exclude=./tests/output "$@" -cf - . | tar -C "$dest" -xf -
  # ansible-test lists files through git when it finds a repository; the copy sits inside this
  # checkout's ignored .build/, so give it a repository of its own.
  git -C "$dest" init -q
  log "collection fediflow.$name synced to $dest"
}
sync_collection dr "$ROOT" --exclude=./bench/out --exclude=./lab
sync_collection dr_lab "$ROOT/lab"

# 4. ansible-test sanity --local wants pip's bootstrap script in its cache; offline it cannot
# download it, so provide a shim that bootstraps pip with ensurepip instead. ansible-test runs
# pip with a filtered environment (no PIP_CERT, SSL_CERT_FILE, REQUESTS_CA_BUNDLE), so a machine
# whose registry traffic passes a TLS proxy with its own CA would see pip's bundled certifi
# refuse PyPI; the shim gives each of ansible-test's virtual environments (never the system
# Python) a site pip.conf naming the system CA bundle. Rewritten on every set-up so that a
# changed shim reaches an existing cache.
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for v in 24_2 25_3; do
  cat > "$cache/get_pip_$v.py.new" <<'PY'
"""Offline stand-in for get-pip.py: bootstrap pip from the interpreter's own ensurepip."""
import ensurepip
import os
import sys

CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def trust_system_ca():
    if sys.prefix == sys.base_prefix:
        return
    names = [os.environ.get(k) for k in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")]
    bundle = next((n for n in list(names) + list(CA_BUNDLES) if n and os.path.isfile(n)), None)
    if bundle is None:
        return
    with open(os.path.join(sys.prefix, "pip.conf"), "w", encoding="utf-8") as conf:
        conf.write("[global]\ncert = %s\n" % bundle)


if __name__ == "__main__":
    rc = ensurepip._main(["--upgrade", "--default-pip"])
    if not rc:
        trust_system_ca()
    sys.exit(rc)
PY
  mv "$cache/get_pip_$v.py.new" "$cache/get_pip_$v.py"
done
