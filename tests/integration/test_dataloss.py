"""The data-loss windows of issue 19, each closed against real parts: a throwaway PostgreSQL cluster with its own
WAL archive (pitr_fixtures, never the shared lab's clusters), a private redis-server, the modules run as real
processes (traced with strace where the order of system calls is the contract).

- PITR to latest with the switch keeps the commits still in the old cluster's un-archived WAL.
- restore_command: a repository error aborts an archive recovery instead of ending it early (and promoting).
- the default physical `list` check refuses a backup whose pg_wal.tar is missing, truncated or short of a segment.
- a cache backup's file and directory are on disk (fsync) before its manifest; killed at any of those points, no
  manifest is ever left without its file, and the next run removes the dead run's work directory.
"""
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import pytest

from doubles_fixtures import free_port
from lab_fixtures import COLLECTIONS, ROOT, ansible_env, module, poll
from pair_fixtures import OS_USER, _as_pg, _write
from pitr_fixtures import make_cluster

PITR = "fediflow.dr.pitr_restore"
VERIFY = "fediflow.dr.pg_backup_verify"


# --------------------------------------------------------------------------- PITR to latest


@pytest.mark.parametrize("how", ["crashed", "archive_failing"])
def test_latest_with_the_switch_keeps_commits_not_yet_archived(how):
    """Batch b is committed after the last archived segment (archive_timeout has not passed: it is only in the
    cluster's pg_wal). A clean stop of a primary switches WAL and archives it (PostgreSQL's own shutdown), so the
    window is where that cannot happen: the cluster crashed (stopped with -m immediate here), or it runs but its
    archive cannot take the segment at the stop (the archive directory read-only for it). The restore to latest,
    switched in place, still has b."""
    cluster = make_cluster()
    try:
        cluster.base_backup()
        cluster.batch("a")
        cluster.archive_now()
        cluster.batch("b")
        current = cluster.node.one("SELECT pg_walfile_name(pg_current_wal_lsn())")
        if how == "crashed":
            cluster.node.stop("immediate")
        else:
            os.chmod(cluster.archive, 0o500)  # the archive can be read (the restore does), not written (the stop does)
        assert not os.path.exists(os.path.join(cluster.archive, current)), "b must not be archived yet"
        res = module(PITR, cluster.args(target_latest=True))
        os.chmod(cluster.archive, 0o700)
        assert res.get("failed") is not True, res.get("msg")
        assert res["switched"] and res["state"] == "promoted"
        assert not os.path.exists(os.path.join(cluster.archive, current)), "b was archived after all: no window tested"
        assert dict(cluster.exec("SELECT batch, count(*) FROM t GROUP BY batch")) == {"a": 5, "b": 5}
        assert cluster.node.one("SELECT NOT pg_is_in_recovery()") is True
        assert current in res["unarchived_wal"]["segments"]
    finally:
        os.chmod(cluster.archive, 0o700)
        cluster.destroy()


# --------------------------------------------------------------------------- restore_command exit status


def test_a_repository_error_stops_archive_recovery_rather_than_promoting_early():
    """A base backup without WAL, then batches a, b, c each in their own archived segment; b's segment cannot be
    read (permission denied). An archive recovery to the end of the archive must stop at b (PostgreSQL aborts on an
    exit status > 125), not take the error for the end of the archive and promote with a only. Readable again, the
    same data directory recovers everything."""
    cluster = make_cluster()
    try:
        restore = os.path.join(cluster.base, "restore")
        _as_pg([os.path.join(cluster.bindir, "pg_basebackup"), "--pgdata=" + restore, "--wal-method=none",
                "--checkpoint=fast", "--host=" + cluster.node.socket_dir, "--port=%d" % cluster.node.port,
                "--username=postgres"])
        cluster.archive_now()
        segments = {}
        for name in ("a", "b", "c"):
            cluster.batch(name)
            segments[name] = cluster.archive_now()
        port = free_port()
        socket_dir = os.path.join(cluster.base, "run-restore")
        os.makedirs(socket_dir)
        shutil.chown(socket_dir, OS_USER, OS_USER)
        restore_cmd = "/usr/bin/python3 %s --config %s fetch %%f %%p" % (cluster.wal_tool, cluster.wal_config)
        _write(os.path.join(restore, "postgresql.auto.conf"), (
            "port = %d\nunix_socket_directories = '%s'\narchive_mode = off\nrestore_command = '%s'\n"
            % (port, socket_dir, restore_cmd)), append=True)
        _write(os.path.join(restore, "recovery.signal"), "")
        bad = os.path.join(cluster.archive, segments["b"])
        os.chmod(bad, 0o000)
        log = restore + ".log"
        pg_ctl = os.path.join(cluster.bindir, "pg_ctl")

        def outcome():
            """From the server's log: 'stopped' (it shut down), 'promoted' (out of recovery, open for writes - not
            the read-only connections of a hot standby) or None (still going)."""
            if not os.path.exists(log):
                return None
            with open(log, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
            if "database system is ready to accept connections" in text:
                return "promoted"
            return "stopped" if "database system is shut down" in text else None
        _as_pg([pg_ctl, "start", "-D", restore, "-l", log, "-W"])
        cluster.started.append(restore)
        assert poll(outcome, 120, interval=0.1), "recovery neither stopped nor promoted within 120 s"
        with open(log, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        assert outcome() == "stopped", "recovery took the repository error for the end of the archive:\n" + text[-3000:]
        assert "could not restore file \"%s\"" % segments["b"] in text and "exit code 255" in text, text[-3000:]
        assert poll(lambda: not os.path.exists(os.path.join(restore, "postmaster.pid")), 30, interval=0.1)
        control = subprocess.run([os.path.join(cluster.bindir, "pg_controldata"), restore], env={"LC_ALL": "C"},
                                 capture_output=True, text=True, check=True).stdout
        assert "in archive recovery" in control  # never promoted
        os.chmod(bad, 0o600)
        _as_pg([pg_ctl, "start", "-D", restore, "-l", log, "-W"])
        assert poll(lambda: outcome() is not None and "selected new timeline ID" in open(log, encoding="utf-8").read(),
                    120, interval=0.1), open(log, encoding="utf-8").read()[-3000:]
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=cluster.password, dbname="app",
                                connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT batch, count(*) FROM t GROUP BY batch")
                assert dict(cur.fetchall()) == {"a": 5, "b": 5, "c": 5}
        finally:
            conn.close()
    finally:
        cluster.destroy()


# --------------------------------------------------------------------------- pg_wal.tar in the list check


def _reverify(cluster, backup_id):
    return module(VERIFY, {"mode": "physical", "backup_id": backup_id, "verify": "list", "dest": cluster.backups,
                           "login_host": "127.0.0.1", "login_port": cluster.node.port,
                           "login_password": cluster.password, "cluster_name": "pitr-test"})


def _rewrite_without_last_segment(path):
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]
    wal = sorted(m.name for m, _d in members if m.isfile() and len(os.path.basename(m.name)) == 24)
    with tarfile.open(path, "w") as out:
        for member, data in members:
            if member.name != wal[-1]:
                out.addfile(member, io.BytesIO(data) if data is not None else None)
    return wal[-1]


@pytest.mark.parametrize("damage", ["missing", "truncated", "short_of_a_segment"])
def test_list_check_refuses_a_backup_whose_pg_wal_tar_is_damaged(damage):
    cluster = make_cluster()
    try:
        taken = cluster.base_backup()
        path = os.path.join(taken["backup_path"], "pg_wal.tar")
        if damage == "missing":
            os.unlink(path)
        elif damage == "truncated":
            os.truncate(path, os.path.getsize(path) // 2)
        else:
            _rewrite_without_last_segment(path)
        res = _reverify(cluster, taken["backup_id"])
        assert res.get("failed") is True and res["verified"] is False, res
        assert "pg_wal" in res["verification"]["error"] or "WAL" in res["verification"]["error"], res["verification"]
        manifest = json.load(open(os.path.join(taken["backup_path"], "manifest.json"), encoding="utf-8"))
        assert manifest["verification"]["ok"] is False  # no longer counts as verified for retention and PITR
        wal = taken["verification"]["steps"][0]["wal"]  # the backup when it was good: its WAL was checked
        assert wal["method"] == "pg_wal.tar" and wal["wal_segments"] >= 1
    finally:
        cluster.destroy()


# --------------------------------------------------------------------------- cache backup durability


@pytest.fixture
def private_redis():
    """A redis-server of this test only, on a free loopback port, no persistence."""
    import redis
    base = tempfile.mkdtemp(prefix="fediflow-redis-", dir="/var/tmp")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", base], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)

    def up():
        try:
            return client.ping()
        except redis.ConnectionError:
            return proc.poll() is not None
    try:
        assert poll(up, 30, interval=0.05) and proc.poll() is None, "redis-server did not start"
        for i in range(200):
            client.set("session:%d" % i, "v%d" % i)
        yield port, base
    finally:
        proc.kill()
        proc.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def _traced_backup(port, dest, strace_args):
    """redis_cache state=backup as a real process under strace; returns (returncode, trace lines)."""
    args = {"state": "backup", "dest": dest, "patterns": ["session:*"], "redis_port": port,
            "source_name": "test", "region_name": "here"}
    fd, argfile = tempfile.mkstemp(prefix="fediflow-args-", suffix=".json")
    trace = argfile + ".trace"
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
        env = ansible_env()
        env["PYTHONPATH"] = str(COLLECTIONS)
        proc = subprocess.run(["strace", "-f", "-y", "-qq", "-o", trace] + strace_args +
                              [sys.executable, "-m", "ansible_collections.fediflow.dr.plugins.modules.redis_cache", argfile],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
        with open(trace, encoding="utf-8", errors="replace") as handle:
            return proc.returncode, handle.read().splitlines()
    finally:
        for path in (argfile, trace):
            if os.path.exists(path):
                os.unlink(path)


def _index(lines, predicate, after=-1):
    for pos, line in enumerate(lines):
        if pos > after and predicate(line):
            return pos
    return None


def test_cache_backup_is_on_disk_before_its_manifest(private_redis, tmp_path):
    """The order of the system calls of a real backup: the data file fsynced, the work directory fsynced, renamed,
    the parent directory fsynced, and only then the manifest created. A crash of the host between any two of them
    leaves either no manifest or a manifest whose files are on disk."""
    port, _base = private_redis
    dest = str(tmp_path / "cache")
    rc, lines = _traced_backup(port, dest, ["-e", "trace=openat,fsync,fdatasync,rename,renameat,renameat2"])
    assert rc == 0, "\n".join(lines[-20:])
    (backup_id,) = [n for n in os.listdir(dest) if not n.startswith(".")]
    real = os.path.realpath(dest)
    data = "<%s/.partial-%s/keys.jsonl.gz>" % (real, backup_id)
    data_sync = _index(lines, lambda l: "fsync(" in l and data in l)
    work_sync = _index(lines, lambda l: "fsync(" in l and "<%s/.partial-%s>)" % (real, backup_id) in l)
    renamed = _index(lines, lambda l: "rename" in l and '/.partial-%s"' % backup_id in l and '/%s"' % backup_id in l)
    assert data_sync is not None, "the data file is never fsynced"
    assert work_sync is not None, "the work directory is never fsynced"
    assert renamed is not None and data_sync < renamed and work_sync < renamed
    parent_sync = _index(lines, lambda l: "fsync(" in l and "<%s>)" % real in l, renamed)
    # the manifest's temporary file (module_utils/atomic: .fediflow-<hex>.tmp beside it, renamed over manifest.json)
    manifest = _index(lines, lambda l: "openat(" in l and "/%s/.fediflow-" % backup_id in l and ".tmp" in l)
    assert parent_sync is not None, "the rename is never fsynced (the parent directory)"
    assert manifest is not None and parent_sync < manifest


def _every_manifest_has_its_files(dest):
    """Checked here independently (hashlib): each manifest's files exist with their size and sha256. The count."""
    import hashlib
    count = 0
    for path in glob.glob(os.path.join(dest, "*", "manifest.json")):
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        assert manifest["files"], path
        for entry in manifest["files"]:
            with open(os.path.join(os.path.dirname(path), entry["path"]), "rb") as handle:
                data = handle.read()
            assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"], entry
        count += 1
    return count


def test_a_cache_backup_killed_at_any_durability_point_leaves_no_manifest_without_its_file(private_redis, tmp_path):
    """SIGKILL delivered at the 1st, 2nd, ... fsync of a real backup: after each, every manifest in dest names
    files that are there with their checksums; the next complete run removes the dead runs' work directories."""
    port, _base = private_redis
    dest = str(tmp_path / "cache")
    killed = 0
    for when in range(1, 30):
        rc, _lines = _traced_backup(port, dest, ["-e", "trace=fsync", "-e", "inject=fsync:signal=KILL:when=%d" % when])
        if rc == 0:
            break  # fewer fsyncs than `when`: the run completed
        killed += 1
        _every_manifest_has_its_files(dest)
    assert killed >= 3, "the backup was killed at %d points only" % killed
    assert _every_manifest_has_its_files(dest) >= 1  # the last run (and one killed after its manifest was in place)
    assert not glob.glob(os.path.join(dest, ".partial-*")), "the last run did not clean the dead runs' leftovers"
