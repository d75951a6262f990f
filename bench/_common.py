"""What every bench script needs: the repo's paths, the PostgreSQL binaries, running as `postgres`,
free loopback ports, polling instead of sleeping, the Ansible environment of this checkout and the
lab inventory's host variables (FEDIFLOW_LAB_INVENTORY selects a second lab, see
scripts/lab_inventory.py). Not a benchmark itself (scripts/bench.sh runs bench_*.py only)."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INVENTORY = Path(os.environ.get("FEDIFLOW_LAB_INVENTORY") or ROOT / "inventories" / "lab" / "hosts.yml")
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from lab_fixtures import s3_endpoint, stays_in_the_lab  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

PGBIN = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_pg(argv, check=True, **kw):
    """Run a command as the postgres OS user (PostgreSQL refuses root), from a directory it can read."""
    return subprocess.run(["runuser", "-u", "postgres", "--"] + [str(a) for a in argv], cwd="/", check=check, **kw)


def pg_env(port, password, db="bench"):
    """libpq environment for a loopback cluster (the password in the environment, never on argv)."""
    return dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres", PGPASSWORD=password, PGDATABASE=db)


def poll(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def ansible_env(json_callback=False):
    out = dict(os.environ)
    out.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    out.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".build" / "collections"))
    out["ANSIBLE_NOCOLOR"] = "1"
    if json_callback:
        out.update(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    return out


def lab_hostvars():
    """(primary, standby) host variables of the lab inventory, `{{ fediflow_lab_dir }}` resolved."""
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"], cwd=ROOT, env=ansible_env(),
                          capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    hostvars = data["_meta"]["hostvars"]
    for hvars in hostvars.values():
        for key, value in list(hvars.items()):
            if isinstance(value, str):
                hvars[key] = value.replace("{{ fediflow_lab_dir }}", hvars["fediflow_lab_dir"])
    primary, standby = hostvars[data["region_primary"]["hosts"][0]], hostvars[data["region_secondary"]["hosts"][0]]
    for hvars in (primary, standby):
        if not stays_in_the_lab(hvars["fediflow_pg_host"]):
            sys.exit("the lab is not up (no lab route to %s; a packet there would leave the machine): make lab-up"
                     % hvars["fediflow_pg_host"])
    return primary, standby
