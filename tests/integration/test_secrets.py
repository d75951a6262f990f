"""Secrets against the real lab: a PostgreSQL program's environment never holds the password (read from
/proc/PID/environ while pg_basebackup runs), its password file is gone afterwards (also after a kill at
the time-out), what a backup writes is private from the start, and the lab's Redis password never shows
in ``--diff``."""
import glob
import os
import shutil
import re
import subprocess
import tempfile
import threading
import uuid

import pytest

from lab_fixtures import BIN, INVENTORY, ROOT, ansible_env, module, pg_connect


@pytest.fixture
def private_tmp():
    """A TMPDIR of this test's own for the module (where its password files go): other tests run beside it
    (xdist workers on other labs) write theirs to the shared /tmp, so only this directory says what this
    test's module left behind. 0711 so a program run as another OS user can reach its own 0700 directory."""
    path = tempfile.mkdtemp(prefix="fediflow-test-tmp-")
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _passfile_dirs(tmp):
    return set(glob.glob(os.path.join(tmp, "fediflow-pgpass-*")))


def _args(lab, tmp_path, **kw):
    p = lab["primary"]
    args = {"login_host": p["fediflow_pg_host"], "login_port": p["fediflow_pg_port"],
            "login_password": p["fediflow_pg_superuser_password"], "db": p["fediflow_app_db"],
            "ssl_mode": p.get("fediflow_pg_ssl_mode") or "prefer", "ca_cert": p.get("fediflow_pg_ca_cert") or "",
            "dest": str(tmp_path / "repo")}
    args.update(kw)
    return args


def _loose(root):
    """Paths under ``root`` (itself included) that group or others may read, write or enter."""
    found = []
    for base, dirs, files in os.walk(str(root)):
        for path in [base] + [os.path.join(base, n) for n in dirs + files]:
            if os.lstat(path).st_mode & 0o077:
                found.append("%s %s" % (path, oct(os.lstat(path).st_mode & 0o777)))
    return found


def _environ_of(program, passfiles_seen, stop):
    """Poll /proc for ``program`` run with a PGPASSFILE; record (environ, passfile content) of each one seen."""
    seen = {}
    while not stop.is_set():
        for path in glob.glob("/proc/[0-9]*/cmdline"):
            pid = path.split("/")[2]
            if pid in seen:
                continue
            try:
                with open(path, "rb") as handle:
                    argv0 = handle.read().split(b"\0")[0].decode(errors="replace")
                if os.path.basename(argv0) != program:
                    continue
                with open("/proc/%s/environ" % pid, "rb") as handle:
                    environ = handle.read().decode(errors="replace")
            except OSError:
                continue
            entries = dict(e.split("=", 1) for e in environ.split("\0") if "=" in e)
            content = None
            if entries.get("PGPASSFILE"):
                try:
                    with open(entries["PGPASSFILE"], encoding="utf-8") as handle:
                        content = handle.read()
                except OSError:
                    pass
            seen[pid] = True
            passfiles_seen.append((environ, entries.get("PGPASSFILE"), content))


def test_pg_basebackup_reads_its_password_from_a_file_not_its_environment_and_writes_privately(lab, tmp_path, private_tmp):
    password = lab["primary"]["fediflow_pg_superuser_password"]
    seen, stop = [], threading.Event()
    watcher = threading.Thread(target=_environ_of, args=("pg_basebackup", seen, stop), daemon=True)
    watcher.start()
    try:
        res = module("fediflow.dr.pg_backup_verify", _args(lab, tmp_path, mode="physical", format="tar", verify="list"),
                     env={"TMPDIR": private_tmp})
    finally:
        stop.set()
        watcher.join(10)
    assert res.get("verified") is True, res.get("msg")
    assert seen, "pg_basebackup was not seen running"
    for environ, passfile, content in seen:
        assert password not in environ and "PGPASSWORD=" not in environ
        assert passfile and content is not None and password in content  # libpq's source: the file
        assert os.path.dirname(os.path.dirname(passfile)) == private_tmp
        assert not os.path.exists(passfile) and not os.path.exists(os.path.dirname(passfile))
    assert _passfile_dirs(private_tmp) == set()
    # the backup directory, its files and manifest: 0700 / 0600, none readable by others
    assert os.listdir(str(tmp_path / "repo")) and _loose(tmp_path / "repo") == []
    assert password not in str(res)


def test_logical_backup_files_are_private_and_a_killed_dump_leaves_no_password_file(lab, tmp_path, private_tmp):
    res = module("fediflow.dr.pg_backup_verify", _args(lab, tmp_path, mode="logical", format="directory", verify="list"),
                 env={"TMPDIR": private_tmp})
    assert res.get("verified") is True, res.get("msg")
    assert _loose(tmp_path / "repo") == []
    assert _passfile_dirs(private_tmp) == set()
    # pg_dump killed at its time-out: a table of the database locked (ACCESS EXCLUSIVE) holds it at its LOCK TABLE
    table = "fediflow_test_lock_%s" % uuid.uuid4().hex[:8]
    conn = pg_connect(lab["primary"], lab["primary"]["fediflow_app_db"])
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE %s (id int)" % table)
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE" % table)
        res = module("fediflow.dr.pg_backup_verify", _args(lab, tmp_path, mode="logical", verify="none", command_timeout=2,
                                                           dest=str(tmp_path / "killed")), env={"TMPDIR": private_tmp})
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS %s" % table)
        conn.commit()
        conn.close()
    assert res.get("failed") and "did not finish within 2s" in res["msg"], res.get("msg")
    assert _passfile_dirs(private_tmp) == set()


def test_the_lab_redis_password_never_shows_in_diff(lab, tmp_path):
    """The lab role's Redis configuration task, run with --check --diff -v and a password other than the
    configured one: the task sees a change (so --diff would print the file), and neither password shows."""
    old = lab["primary"]["fediflow_redis_password"]
    new = "fediflow-test-redis-%s" % uuid.uuid4().hex
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(INVENTORY),
                           str(ROOT / "tests" / "integration" / "playbooks" / "lab_redis_conf.yml"),
                           "--check", "--diff", "-v", "-e", "lab_redis_password=%s" % new],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=False, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    task = out.split("TASK [fediflow.dr_lab.lab : Redis configuration (password inside", 1)
    assert len(task) == 2, out[-3000:]
    # the configuration would change on both regions: a diff was there to show
    shown = re.split(r"\n(?:TASK \[|RUNNING HANDLER|PLAY RECAP)", task[1], maxsplit=1)[0]
    assert shown.count("changed: [") == 2, shown
    assert new not in out and old not in out
    assert "requirepass" not in out
