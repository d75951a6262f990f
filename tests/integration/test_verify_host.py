"""Restore verification off the production primary (issue 19), against real PostgreSQL and S3.

A logical backup verified by restore must leave no trace on its source (the primary): no scratch database
appears in its pg_database at any moment of the run (polled while it runs), and the source writes no WAL for the
restore (pg_stat_wal.wal_bytes grows by less than half the data a restore there would write). The result names
where the scratch cluster ran; the cluster is gone afterwards, also when the restore fails.

The module-level tests use a throwaway source cluster and a private moto (pitr_fixtures), as the verify host
flow of the backup role runs it: the source's host takes the backup (checked to checksum level, row counts
recorded, written to the repository), the verify host restores it from there. The last test runs the backup
playbook on the lab: the primary's host backs up, pg-eu-west-1 restores."""
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import boto3
import pytest

from lab_fixtures import module, pg_connect, playbook, s3_endpoint
from pitr_fixtures import make_cluster, start_moto

BULK_ROWS = 60000   # ~8 MB of table data: a restore of it on the primary writes at least that much WAL
VERIFY_HOST_NAME = "verify-host-under-test"
PGBIN = (sorted(glob.glob("/usr/lib/postgresql/*/bin")) or ["/usr/bin"])[-1]


class PrimaryWatch:
    """While it runs: every database name the primary's pg_database shows that was not there at the start (polled
    every 20 ms on one connection), and the WAL the primary generated (pg_stat_wal.wal_bytes, cluster-wide)."""

    def __init__(self, conn):
        self.conn = conn
        self.baseline = set(self._names())
        self.seen, self.polls = set(), 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.wal_before = self._settled_wal_bytes(12)

    def _names(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            return [row[0] for row in cur.fetchall()]

    def _wal_bytes(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT wal_bytes FROM pg_stat_wal")
            return int(cur.fetchone()[0])

    def _settled_wal_bytes(self, timeout):
        """pg_stat_wal.wal_bytes once it stops moving (two readings 0.5 s apart agree): sessions that just ended
        flush their WAL statistics as they exit, idle ones within 10 s."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            now = self._wal_bytes()
            if now == last:
                return now
            last = now
            time.sleep(0.5)
        return last

    def _run(self):
        while not self.stop.is_set():
            self.seen.update(set(self._names()) - self.baseline)
            self.polls += 1
            self.stop.wait(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        # backends flush their WAL statistics when they end (at the latest within a second): poll for quiet
        self.wal_generated = self._settled_wal_bytes(5) - self.wal_before
        self.conn.close()
        return False


def _make_bulk(conn):
    """A table big enough that restoring the dump on its source would show in the source's WAL."""
    table = "verify_host_bulk_%s" % uuid.uuid4().hex[:6]
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE %s (id int PRIMARY KEY, payload text NOT NULL)" % table)
        cur.execute("INSERT INTO %s SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, %d) g" % (table, BULK_ROWS))
        cur.execute("SELECT pg_total_relation_size(%s)", (table,))
        size = cur.fetchone()[0]
        # Reading a page whose tuples' hint bits are not set yet sets them, and with data checksums (the lab's
        # initdb) that writes the page's image to the WAL: the backup's own pg_dump, reading rows earlier tests left
        # in the database, made the primary write 15.7 and 16.5 MB of WAL in CI during a verification of 11.4 MB.
        # The whole database is vacuumed (hint bits set, autovacuum left nothing to do) before the watch starts.
        cur.execute("VACUUM (FREEZE, ANALYZE)")
        # This very session's WAL (the insert, the freeze: ~16 + ~12 MB) reaches pg_stat_wal only when it flushes its
        # statistics - when it ends, or up to 10 s after it goes idle (PostgreSQL's idle stats interval), that is
        # inside the watch: the 15.7, 16.5 and 29.4 MB CI saw were this fixture's own writes. Flushed now.
        cur.execute("SELECT pg_stat_force_next_flush()")
    return {"table": "public." + table, "bytes": size}


@pytest.fixture
def source():
    """A throwaway primary (WAL archived) and a private S3 repository (moto) with a bucket."""
    proc, endpoint = start_moto()
    s3cfg = {"endpoint_url": endpoint, "bucket": "verify-host-%s" % uuid.uuid4().hex[:8],
             "access_key": "verify-test", "secret_key": "verify-test-secret"}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=s3cfg["access_key"],
                      aws_secret_access_key=s3cfg["secret_key"])
    s3.create_bucket(Bucket=s3cfg["bucket"])
    cluster = make_cluster(s3cfg)
    try:
        conn = cluster.node.connect("app")
        bulk = _make_bulk(conn)
        conn.close()
        yield {"cluster": cluster, "s3": s3, "s3cfg": s3cfg, "bulk": bulk}
    finally:
        cluster.destroy()
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def bulk(lab):
    """_make_bulk on the lab's primary, dropped afterwards."""
    p = lab["primary"]
    conn = pg_connect(p, p["fediflow_app_db"])
    made = _make_bulk(conn)
    conn.close()   # a session that ends flushes its statistics (its WAL bytes) at once
    yield made
    conn = pg_connect(p, p["fediflow_app_db"])
    with conn.cursor() as cur:
        cur.execute("DROP TABLE %s" % made["table"])
    conn.close()


@pytest.fixture
def scratch_parent():
    path = tempfile.mkdtemp(prefix="fediflow-test-verifyhost-", dir="/var/tmp")
    os.chmod(path, 0o755)  # the scratch cluster runs as postgres
    yield path
    for name in os.listdir(path):  # a failed test leaves nothing running (the assertion already said so)
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PGBIN, "pg_ctl"), "stop", "-D",
                        os.path.join(path, name, "data"), "-m", "immediate"], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


def _args(source, tmp_path, where, **extra):
    """pg_backup_verify options for the source's backups; ``where`` names the host's own work directory."""
    cluster, s3cfg = source["cluster"], source["s3cfg"]
    args = {"login_host": "127.0.0.1", "login_port": cluster.node.port, "login_password": cluster.password, "db": "app",
            "dest": str(tmp_path / where), "s3_bucket": s3cfg["bucket"], "s3_prefix": "postgres/test/logical",
            "endpoint_url": s3cfg["endpoint_url"], "access_key": s3cfg["access_key"], "secret_key": s3cfg["secret_key"],
            "region": "us-east-1", "cluster_name": "verify-test"}
    args.update(extra)
    return args


def _postmasters_in(path):
    """PIDs of processes whose command line names a directory under ``path`` (a scratch postmaster left running)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                if path.encode() in handle.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _tcp_in_use(port):
    """Something holds ``port`` on some IPv4 address (a bind on the wildcard address fails)."""
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _restore_step(res):
    return [s for s in res["verification"]["steps"] if s["method"] == "restore"][0]


def test_logical_restore_verification_leaves_no_trace_on_the_primary(source, tmp_path, scratch_parent):
    """The role's flow, module by module: the primary's host backs up (checksums, row counts recorded, written to
    the repository), the verify host restores it from the repository. The primary is watched all along."""
    bulk = source["bulk"]
    with PrimaryWatch(source["cluster"].node.connect()) as watch:
        taken = module("fediflow.dr.pg_backup_verify", _args(source, tmp_path, "primary-host", verify="checksum",
                                                             record_row_counts=True))
        assert taken.get("verified") is True, taken.get("msg")
        assert taken["manifest"]["source"]["row_counts"][bulk["table"]] == BULK_ROWS
        res = module("fediflow.dr.pg_backup_verify", _args(source, tmp_path, "verify-host", backup_id=taken["backup_id"],
                                                           verify="restore", scratch_dir=scratch_parent,
                                                           verify_host_name=VERIFY_HOST_NAME))
    assert res.get("verified") is True, res.get("msg")
    assert watch.polls > 10, "the primary was not watched while the verification ran"
    assert watch.seen == set(), "databases appeared on the primary during the verification: %s" % watch.seen
    assert watch.wal_generated < bulk["bytes"] / 2, (
        "the primary wrote %d bytes of WAL during a verification of %d bytes of data" % (watch.wal_generated, bulk["bytes"]))
    step = _restore_step(res)
    restored = {r["table"]: r for r in step["tables"]}
    assert restored[bulk["table"]]["restored"] == BULK_ROWS and restored[bulk["table"]]["ok"]
    where = res["verification"]["where"]
    assert where["host"] == VERIFY_HOST_NAME and where["removed"] is True
    assert where["data_dir"].startswith(scratch_parent + "/") and isinstance(where["port"], int)
    assert VERIFY_HOST_NAME in step["target"] and str(where["port"]) in step["target"]
    assert os.listdir(scratch_parent) == [] and not os.path.exists(where["data_dir"])
    assert _postmasters_in(scratch_parent) == []
    # the repository's ledger entry holds the restore and where it ran (read back with boto3)
    key = "postgres/test/logical/%s/manifest.json" % taken["backup_id"]
    manifest = json.loads(source["s3"].get_object(Bucket=source["s3cfg"]["bucket"], Key=key)["Body"].read())
    assert manifest["verification"]["level"] == "restore" and manifest["verification"]["ok"] is True
    assert manifest["verification"]["where"]["host"] == VERIFY_HOST_NAME
    assert res["ledger_written"] == ["s3"]
    assert os.listdir(str(tmp_path / "verify-host")) == []  # the downloaded copy is gone too


def test_a_restore_that_fails_still_removes_its_scratch_cluster(source, tmp_path, scratch_parent):
    """A dump whose table of contents reads (pg_restore --list passes) but whose data does not restore, with a
    ledger that agrees with its bytes (so the checksums pass too): the restore fails, and its scratch cluster - by
    then initdb'd and running - is stopped and removed all the same."""
    args = _args(source, tmp_path, "host", verify="list", compression_level=1, verify_host_name=VERIFY_HOST_NAME)
    args.pop("s3_bucket")
    taken = module("fediflow.dr.pg_backup_verify", args)
    assert taken.get("verified") is True, taken.get("msg")
    bdir = os.path.join(args["dest"], taken["backup_id"])
    dump = os.path.join(bdir, "db.dump")
    with open(dump, "r+b") as handle:  # garble the compressed data of the tables, past the table of contents
        size = os.path.getsize(dump)
        handle.seek(size // 2)
        handle.write(os.urandom(min(4096, size // 4)))
    manifest_path = os.path.join(bdir, "manifest.json")
    manifest = json.load(open(manifest_path, encoding="utf-8"))
    for entry in manifest["files"]:
        if entry["path"] == "db.dump":
            entry["sha256"] = hashlib.sha256(open(dump, "rb").read()).hexdigest()
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    bad = module("fediflow.dr.pg_backup_verify", dict(args, backup_id=taken["backup_id"], verify="restore",
                                                      scratch_dir=scratch_parent))
    assert bad.get("failed"), "a garbled dump restored: the test did not break the restore"
    assert "pg_restore into the scratch cluster failed" in bad["msg"], bad["msg"]
    where = bad["verification"]["where"]
    assert where["host"] == VERIFY_HOST_NAME and where["port"] and where["removed"] is True
    assert os.listdir(scratch_parent) == [] and _postmasters_in(scratch_parent) == []


def test_physical_restore_verification_shares_the_scratch_cluster(source, tmp_path, scratch_parent):
    """A base backup restored through the same scratch cluster: its own pg_hba (the socket only), no TCP listener,
    recovered to consistency, counted, removed."""
    args = _args(source, tmp_path, "host", mode="physical", compression="gzip", verify="restore",
                 scratch_dir=scratch_parent, verify_host_name=VERIFY_HOST_NAME)
    args.pop("s3_bucket")
    seen_listening, observed = [], set()

    def watch_tcp(stop):
        while not stop.is_set():  # a scratch postmaster must never listen on TCP: its port is free all along
            for name in os.listdir(scratch_parent):
                try:
                    with open(os.path.join(scratch_parent, name, "data", "postmaster.pid"), encoding="utf-8") as pid:
                        lines = pid.read().splitlines()
                except OSError:
                    continue  # not started (or gone) yet
                if len(lines) > 3 and lines[3].isdigit():
                    observed.add(int(lines[3]))
                    if _tcp_in_use(int(lines[3])):
                        seen_listening.append(int(lines[3]))
            stop.wait(0.05)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_tcp, args=(stop,), daemon=True)
    watcher.start()
    try:
        res = module("fediflow.dr.pg_backup_verify", args)
    finally:
        stop.set()
        watcher.join(10)
    assert res.get("verified") is True, res.get("msg")
    where = res["verification"]["where"]
    assert where["host"] == VERIFY_HOST_NAME and where["removed"] is True and where["data_dir"].startswith(scratch_parent)
    restored = {r["table"]: r["restored"] for r in _restore_step(res)["tables"]}
    assert restored[source["bulk"]["table"]] == BULK_ROWS
    assert observed == {where["port"]}, "the running scratch cluster was not watched"
    assert seen_listening == []
    assert os.listdir(scratch_parent) == [] and _postmasters_in(scratch_parent) == []


def test_backup_role_runs_the_restore_verification_on_the_verify_host(lab, bulk, scratch_parent):
    """The backup playbook (logical only, verify restore): the primary's host takes the backup, the other region's
    host (the default verify host) restores it from the repositories; the primary sees no scratch database and
    writes no WAL for it; the ledger entry in S3 says where the restore ran, and that the cluster was removed."""
    p = lab["primary"]
    off = ["-e", "backup_physical=false", "-e", "backup_media=false", "-e", "backup_cache=false", "-e", "backup_config=false",
           "-e", "backup_wal_check=false", "-e", "backup_logical_verify=restore",
           "-e", "backup_verify_scratch_dir=%s" % scratch_parent]
    with PrimaryWatch(pg_connect(p)) as watch:
        proc, _took = playbook("backup.yml", *off)
    # delegated: Ansible shows the delegate with its address when that differs ("-> pg-eu-west-1(198.18...)")
    assert "Restore verification on the verify host: logical on pg-eu-west-1" in proc.stdout, proc.stdout[-3000:]
    assert re.search(r"changed: \[pg-us-east-1 -> pg-eu-west-1[\](]", proc.stdout), proc.stdout[-3000:]
    assert watch.polls > 10 and watch.seen == set(), watch.seen
    assert watch.wal_generated < bulk["bytes"] / 2, (watch.wal_generated, bulk["bytes"])
    s3 = boto3.client("s3", endpoint_url=s3_endpoint(p), region_name=p["fediflow_region"],
                      aws_access_key_id=p["fediflow_aws_access_key"], aws_secret_access_key=p["fediflow_aws_secret_key"])
    prefix = "postgres/%s/logical/" % p["fediflow_region"]
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=p["fediflow_backup_bucket"], Prefix=prefix)
            for o in page.get("Contents", []) if o["Key"].endswith("/manifest.json")]
    newest = max(keys)
    manifest = json.loads(s3.get_object(Bucket=p["fediflow_backup_bucket"], Key=newest)["Body"].read())
    record = manifest["verification"]
    assert record["level"] == "restore" and record["ok"] is True, record
    assert record["where"]["host"] == "pg-eu-west-1" and record["where"]["removed"] is True
    assert record["where"]["data_dir"].startswith(scratch_parent + "/")
    counts = {r["table"]: r["restored"] for r in [s for s in record["steps"] if s["method"] == "restore"][0]["tables"]}
    assert counts[bulk["table"]] == BULK_ROWS
    assert os.listdir(scratch_parent) == [] and _postmasters_in(scratch_parent) == []
