"""Helpers of the integration tier for the real lab (PostgreSQL, moto, doubles).

The lab is brought up once per test session with the same playbook users run
(`playbooks/lab_up.yml`); the tests then check the outcome independently with psycopg2,
boto3 and the kubernetes client.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORY = Path(os.environ.get("FEDIFLOW_LAB_INVENTORY") or ROOT / "inventories" / "lab" / "hosts.yml")


def ansible_env():
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".build" / "collections"))
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return env


def playbook(name, *extra, check=True):
    """Run a playbook of this collection against the lab inventory; returns (proc, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(INVENTORY), str(ROOT / "playbooks" / name), *extra],
        cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=False)
    took = time.monotonic() - t0
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (rc=%s):\n%s\n%s" % (name, proc.returncode, proc.stdout[-6000:], proc.stderr[-3000:]))
    return proc, took


def recap(stdout):
    """PLAY RECAP counters per host: {'host': {'ok': n, 'changed': n, 'failed': n, ...}}."""
    out = {}
    for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M):
        out[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
    return out


def module(name, args, check_mode=False, diff=False, host="localhost"):
    """Run one module ad hoc (`ansible HOST -m NAME -a JSON`) and return its result dict."""
    argv = [str(BIN / "ansible"), host, "-i", str(INVENTORY) if host != "localhost" else "localhost,",
            "-m", name, "-a", json.dumps(args), "-e", "ansible_python_interpreter=%s" % sys.executable,
            "-c", "local"]
    if check_mode:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    env = ansible_env()
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError("no JSON from ansible:\n%s\n%s" % (proc.stdout, proc.stderr)) from exc
    return next(iter(data["plays"][0]["tasks"][0]["hosts"].values()))


def inventory():
    """Host variables of the lab inventory, with `{{ fediflow_lab_dir }}` resolved."""
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    hostvars = data["_meta"]["hostvars"]
    for hvars in hostvars.values():
        lab_dir = hvars["fediflow_lab_dir"]
        for key, value in list(hvars.items()):
            if isinstance(value, str):
                hvars[key] = value.replace("{{ fediflow_lab_dir }}", lab_dir)
    primary = data["region_primary"]["hosts"][0]
    standby = data["region_secondary"]["hosts"][0]
    return hostvars[primary], hostvars[standby]


def pg_connect(hvars, db="postgres"):
    import psycopg2  # pylint: disable=import-outside-toplevel
    conn = psycopg2.connect(host=hvars["fediflow_pg_host"], port=hvars["fediflow_pg_port"],
                            user=hvars["fediflow_pg_superuser"],
                            password=hvars["fediflow_pg_superuser_password"], dbname=db,
                            connect_timeout=5)
    conn.autocommit = True
    return conn


def poll(predicate, timeout, interval=0.1):
    """Poll until predicate() is truthy or the deadline passes; returns the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def _ask(hv, sql):
    """First column of the first row, or None when the server does not answer or returns no row."""
    import psycopg2  # pylint: disable=import-outside-toplevel
    try:
        conn = pg_connect(hv)
    except psycopg2.OperationalError:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def pg_role(hv):
    """'primary', 'standby' or None (down)."""
    in_recovery = _ask(hv, "SELECT pg_is_in_recovery()")
    return None if in_recovery is None else ("standby" if in_recovery else "primary")


def pg_streaming(hv):
    return _ask(hv, "SELECT status FROM pg_stat_wal_receiver") == "streaming"


def lab_is_home(primary, standby):
    """The lab's regions in their inventory roles: primary writable, standby streaming."""
    return pg_role(primary) == "primary" and pg_role(standby) == "standby" and pg_streaming(standby)


def rebuild_lab_unless_home(primary, standby, logs_to=None):
    """After a test that moves production: when the lab is not in its home roles, keep the
    server logs (for the post-mortem) and rebuild it, so later tests start from a known lab."""
    if lab_is_home(primary, standby):
        return False
    if logs_to is not None:
        import shutil  # pylint: disable=import-outside-toplevel
        Path(logs_to).mkdir(parents=True, exist_ok=True)
        for hv in (primary, standby):
            log = Path(hv["fediflow_pg_data_dir"] + ".log")
            if log.exists():
                shutil.copy(log, Path(logs_to) / ("%s.log" % hv["fediflow_region"]))
    playbook("lab_down.yml")
    playbook("lab_up.yml")
    return True
