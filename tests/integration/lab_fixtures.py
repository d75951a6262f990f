"""Helpers of the integration tier for the real lab (PostgreSQL, moto, doubles).

The lab is brought up once per test session with the same playbook users run
(`lab/playbooks/lab_up.yml`); the tests then check the outcome independently with psycopg2,
boto3 and the kubernetes client.
"""
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COLLECTIONS = ROOT / ".build" / "collections"
INVENTORY = Path(os.environ.get("FEDIFLOW_LAB_INVENTORY") or ROOT / "inventories" / "lab" / "hosts.yml")


def ansible_env():
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS))
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return env


PLAYBOOK_DIRS = (ROOT / "playbooks", ROOT / "lab" / "playbooks")  # fediflow.dr's, then the lab's (fediflow.dr_lab)


def playbook_path(name):
    """A playbook of fediflow.dr (playbooks/) or of the lab collection fediflow.dr_lab (lab/playbooks/), by file name."""
    found = [d / name for d in PLAYBOOK_DIRS if (d / name).is_file()]
    if not found:
        raise AssertionError("no playbook %s in %s" % (name, ", ".join(str(d) for d in PLAYBOOK_DIRS)))
    return found[0]


def playbook(name, *extra, check=True):
    """Run a playbook of this repository (fediflow.dr's or the lab's) against the lab inventory; returns (proc, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(INVENTORY), str(playbook_path(name)), *extra],
        cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=False)
    took = time.monotonic() - t0
    keep_log(name, proc, took)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (rc=%s):\n%s\n%s" % (name, proc.returncode, proc.stdout[-6000:], proc.stderr[-3000:]))
    return proc, took


def playbook_result(name, result_var, result_path, *extra, check=True):
    """Run a playbook that writes a JSON result file (its variable result_var names the path);
    returns (proc, the parsed result or None when none was written, seconds)."""
    proc, took = playbook(name, "-e", "%s=%s" % (result_var, result_path), *extra, check=check)
    result = json.loads(Path(result_path).read_text()) if Path(result_path).exists() else None
    return proc, result, took


OUTPUT = ROOT / "tests" / "output"
_LOG_SEQ = [0]


def keep_log(name, proc, took):
    """Every playbook run's whole output under tests/output/playbooks/<test>/, kept whether the
    test passes or fails (and after a failed run), for the post-mortem of a failure seen once."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "session").split(" ")[0]
    folder = OUTPUT / "playbooks" / re.sub(r"[^A-Za-z0-9_.-]+", "_", test)[-150:]
    folder.mkdir(parents=True, exist_ok=True)
    _LOG_SEQ[0] += 1
    path = folder / ("%03d-%s.log" % (_LOG_SEQ[0], name))
    path.write_text("# %s rc=%s %.1f s\n%s\n# stderr\n%s" % (name, proc.returncode, took, proc.stdout, proc.stderr),
                    encoding="utf-8")
    return path


def recap(stdout):
    """PLAY RECAP counters per host: {'host': {'ok': n, 'changed': n, 'failed': n, ...}}."""
    out = {}
    for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M):
        out[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
    return out


# How module() runs a module. "direct" (the default) runs the module file itself with its options in
# an ANSIBLE_MODULE_ARGS file, the way ansible's own test-module hacking script does: the same
# argument spec, check mode, diff, no_log censoring and exit/fail JSON, without the ~1.3 s an
# `ansible` process spends starting up. "ansible" runs `ansible localhost -m NAME` as before.
# Every capability keeps at least one end-to-end ansible-playbook run for the wiring (roles,
# module_defaults, action groups); FEDIFLOW_TEST_MODULES=ansible runs the whole tier the slow way.
MODULES_VIA = os.environ.get("FEDIFLOW_TEST_MODULES", "direct")


def module(name, args, check_mode=False, diff=False, via=None, timeout=900, netns=None, env=None):
    """Run one module of this collection on localhost and return its result dict. ``netns``: run it
    inside that network namespace (a lab region's host: what it starts listens on the region's address).
    ``env``: variables added to the module's environment (e.g. a TMPDIR of the test's own)."""
    via = via or MODULES_VIA
    if via == "ansible" and netns is None:
        return _module_via_ansible(name, args, check_mode, diff, env)
    if via not in ("direct", "ansible"):
        raise ValueError("FEDIFLOW_TEST_MODULES must be direct or ansible, not %r" % via)
    return _module_direct(name, args, check_mode, diff, timeout, netns, env)


def _module_direct(name, args, check_mode, diff, timeout, netns=None, extra_env=None):
    namespace, collection, short = name.split(".")
    payload = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    # the options may hold secrets: a 0600 file, never argv, removed right after
    fd, path = tempfile.mkstemp(prefix="fediflow-args-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        env = ansible_env()
        env.update(extra_env or {})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(COLLECTIONS), env.get("PYTHONPATH", "")) if p)
        inside = ["/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip", "netns", "exec", netns] if netns else []
        proc = subprocess.run(
            inside + [sys.executable, "-m", "ansible_collections.%s.%s.plugins.modules.%s" % (namespace, collection, short),
                      path],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    finally:
        os.unlink(path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        raise AssertionError("no JSON from module %s (rc=%s):\n%s\n%s" % (name, proc.returncode, proc.stdout[-3000:],
                                                                          proc.stderr[-3000:])) from exc
    result.setdefault("changed", False)
    for key in ("warnings", "deprecations"):  # 2.19 modules emit structured summaries; the controller shows their text
        if key in result:
            result[key] = [_summary_text(item) for item in result[key]]
    return result


def _summary_text(item):
    if isinstance(item, dict):
        return (item.get("event") or {}).get("msg", json.dumps(item))
    return item


def _module_via_ansible(name, args, check_mode, diff, extra_env=None):
    argv = [str(BIN / "ansible"), "localhost", "-i", "localhost,",
            "-m", name, "-a", json.dumps(args), "-e", "ansible_python_interpreter=%s" % sys.executable,
            "-c", "local"]
    if check_mode:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    env = ansible_env()
    env.update(extra_env or {})
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError("no JSON from ansible:\n%s\n%s" % (proc.stdout, proc.stderr)) from exc
    return next(iter(data["plays"][0]["tasks"][0]["hosts"].values()))


def inventory():
    """Host variables of the lab inventory, with `{{ fediflow_lab_dir }}` resolved and the host's name."""
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    hostvars = data["_meta"]["hostvars"]
    for name, hvars in hostvars.items():
        hvars.setdefault("inventory_hostname", name)  # as ansible names the host (not in --list's host variables)
        lab_dir = hvars["fediflow_lab_dir"]
        for key, value in list(hvars.items()):
            if isinstance(value, str):
                hvars[key] = value.replace("{{ fediflow_lab_dir }}", lab_dir)
    primary = data["region_primary"]["hosts"][0]
    standby = data["region_secondary"]["hosts"][0]
    return hostvars[primary], hostvars[standby]


def lab_netns(hvars):
    """The network namespace of a lab region's host (lab/roles/lab: fdl<lab index>-<region>)."""
    return "fdl%d-%s" % (int(hvars["lab_net_index"]), hvars["fediflow_region"])


LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")


def stays_in_the_lab(address):
    """False when a packet to ``address`` (a lab address) would leave this machine: once the last lab is down
    its routes (the bridge's subnet, the range blackhole) are gone and 198.18.x.y follows the default route.
    Callers then treat the address as down without sending anything. Addresses outside the lab range pass."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return True  # a host name: not a lab address
    if addr not in LAB_RANGE:
        return True
    from netns_fixtures import ip_json  # pylint: disable=import-outside-toplevel
    for route in ip_json("route", "show", "match", str(addr)):
        dst = route.get("dst", "default")
        if dst != "default" and ipaddress.ip_network(dst if "/" in dst else dst + "/32").subnet_of(LAB_RANGE):
            return True
    return False


def s3_endpoint(hvars):
    """The S3 endpoint of this host's region (its bucket lives there); the global one when it names none."""
    return hvars.get("fediflow_s3_endpoint_url") or hvars["fediflow_aws_endpoint_url"]


def listening(address, port, netns=None):
    """True when a TCP connection to address:port succeeds, from the controller or inside ``netns``; False
    without sending anything when the lab does not route the address (see stays_in_the_lab)."""
    if netns is None and not stays_in_the_lab(address):
        return False
    if netns is None:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((address, int(port))) == 0
    from netns_fixtures import probe  # pylint: disable=import-outside-toplevel
    return probe(address, port, netns=netns, timeout=0.5, connect_only=True).startswith("ok")


def pg_tls(hvars):
    """psycopg2 keywords for the inventory's TLS settings (the lab: verify-full against the lab CA)."""
    out = {"sslmode": hvars.get("fediflow_pg_ssl_mode") or "prefer"}
    if hvars.get("fediflow_pg_ca_cert"):
        out["sslrootcert"] = hvars["fediflow_pg_ca_cert"]
    return out


def pg_connect(hvars, db="postgres"):
    import psycopg2  # pylint: disable=import-outside-toplevel
    if not stays_in_the_lab(hvars["fediflow_pg_host"]):
        raise psycopg2.OperationalError("the lab does not route %s (no lab is up): nothing sent" % hvars["fediflow_pg_host"])
    conn = psycopg2.connect(host=hvars["fediflow_pg_host"], port=hvars["fediflow_pg_port"],
                            user=hvars["fediflow_pg_superuser"],
                            password=hvars["fediflow_pg_superuser_password"], dbname=db,
                            connect_timeout=5, **pg_tls(hvars))
    conn.autocommit = True
    return conn


def pg_value(hvars, sql, args=None, db="postgres"):
    """The first column of the first row of ``sql`` on that host's PostgreSQL (None for a statement without rows)."""
    conn = pg_connect(hvars, db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


def poll(predicate, timeout, interval=0.1):
    """Poll until predicate() is truthy or the deadline passes; returns the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def _ask(hv, sql):
    """First column of the first row, or None when the server does not answer or returns no row (or the lab
    does not route its address: nothing is sent then)."""
    import psycopg2  # pylint: disable=import-outside-toplevel
    if not stays_in_the_lab(hv["fediflow_pg_host"]):
        return None
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


# After a partition heals, the primary's walsender of the standby's slot is still "active" on the dead
# connection until wal_sender_timeout (60 s by default) ends it; until then the standby's reconnects are
# refused ("replication slot ... is active"), retried every wal_retrieve_retry_interval (5 s). So streaming
# resumes within about a minute, as it would in production: the tests wait that long, plus a margin.
RESUME_S = 60 + 5 + 40


def lab_region(hv, state):
    """lab/playbooks/lab_region.yml for this host's region (down, partitioned, up); returns its output."""
    proc, _took = playbook("lab_region.yml", "-e", "region=%s" % hv["fediflow_region"], "-e", "state=%s" % state)
    return proc.stdout


def back_home(lab):
    """Every region up again, lab_up (it starts what a test left down), the standby streaming."""
    for hv in (lab["primary"], lab["standby"]):
        lab_region(hv, "up")
    playbook("lab_up.yml")
    assert poll(lambda: pg_streaming(lab["standby"]), timeout=RESUME_S), "the standby did not stream again"
