"""A throwaway PostgreSQL cluster with WAL archiving for point-in-time restore tests, so the
shared lab clusters (15432/15433) are never touched.

Built the way roles/replication sets up a primary, in miniature: initdb as the `postgres` OS
user, the collection's own `fediflow_wal.py` (with walarchive.py beside it, as the replication
role installs them) as archive_command with a JSON config (dir backend), a physical base backup
taken with fediflow.dr.pg_backup_verify into a local ledger. Everything lives in a fresh
directory under /var/tmp owned by `postgres`, on free ports, removed by destroy().
"""
import datetime
import glob
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from doubles_fixtures import free_port
from lab_fixtures import module, poll
from pair_fixtures import OS_USER, SUPERUSER, Node, _as_pg, _write, bindir

ROOT = Path(__file__).resolve().parents[2]


class ArchivedCluster:
    def __init__(self, s3=None):
        self.s3 = s3  # {endpoint_url, bucket, access_key, secret_key}: WAL and backups in S3
        import pwd
        self.bindir = bindir()
        self.base = tempfile.mkdtemp(prefix="fediflow-pitr-", dir="/var/tmp")
        ent = pwd.getpwnam(OS_USER)
        os.chown(self.base, ent.pw_uid, ent.pw_gid)
        os.chmod(self.base, 0o700)
        self.password = "pitr-su-" + uuid.uuid4().hex[:12]  # a throwaway test cluster's password
        self.node = Node(self, "pgdata")
        self.data_dir = self.node.data_dir
        self.archive = os.path.join(self.base, "wal-archive")
        self.tools = os.path.join(self.base, "tools")
        self.wal_config = os.path.join(self.base, "fediflow-wal.json")
        self.wal_tool = os.path.join(self.tools, "fediflow_wal.py")
        self.backups = os.path.join(self.base, "backups")
        self.started = []  # side-by-side restores to stop in destroy()

    def build(self):
        import pwd
        ent = pwd.getpwnam(OS_USER)
        for path in (self.archive, self.tools, self.node.socket_dir):
            os.makedirs(path)
            os.chown(path, ent.pw_uid, ent.pw_gid)
        for src in (ROOT / "roles/replication/files/fediflow_wal.py", ROOT / "plugins/module_utils/walarchive.py"):
            shutil.copy(src, self.tools)
            os.chown(os.path.join(self.tools, src.name), ent.pw_uid, ent.pw_gid)
        if self.s3:
            _write(self.wal_config, json.dumps({
                "backend": "s3", "bucket": self.s3["bucket"], "prefix": "wal/pitr-test", "region": "us-east-1",
                "endpoint_url": self.s3["endpoint_url"], "access_key": self.s3["access_key"],
                "secret_key": self.s3["secret_key"]}))
        else:
            _write(self.wal_config, json.dumps({"backend": "dir", "repo": self.archive}))
        pwfile = os.path.join(self.base, ".initdb-pw")
        _write(pwfile, self.password + "\n")
        try:
            _as_pg([os.path.join(self.bindir, "initdb"), "--pgdata=" + self.data_dir, "--username=" + SUPERUSER,
                    "--pwfile=" + pwfile, "--auth-host=scram-sha-256", "--auth-local=peer", "--encoding=UTF8",
                    "--locale=C.UTF-8", "--no-sync"])
        finally:
            os.unlink(pwfile)
        archive_command = "/usr/bin/python3 %s --config %s push %%p %%f" % (self.wal_tool, self.wal_config)
        _write(os.path.join(self.data_dir, "postgresql.conf"), self.node.settings() + (
            "wal_level = replica\narchive_mode = on\narchive_command = '%s'\nmax_wal_size = 64MB\n"
            % archive_command), append=True)
        self.node.start()
        self.node.query("CREATE DATABASE app")
        self.exec("CREATE TABLE t (id serial PRIMARY KEY, batch text NOT NULL)")
        self.exec("CREATE EXTENSION amcheck")
        return self

    # -- data

    def exec(self, sql, args=None, db="app"):
        return self.node.query(sql, args, db=db)

    def batch(self, name, rows=5):
        """Insert a batch in one transaction; returns its xid and the commit's end LSN and time."""
        conn = self.node.connect("app", autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO t (batch) SELECT %s FROM generate_series(1, %s)", (name, rows))
                cur.execute("SELECT txid_current()")
                xid = cur.fetchone()[0]
            conn.commit()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_current_wal_insert_lsn()::text, clock_timestamp()")
                lsn, after = cur.fetchone()
            conn.commit()
        finally:
            conn.close()
        return {"xid": xid, "lsn": lsn, "after": after}

    def a_then_b(self, compression="none"):
        """A base backup, batch a, batch b, all archived: returns the time between a and b (ISO 8601, UTC), where
        a restore keeps a and undoes b."""
        self.base_backup(compression)
        a = self.batch("a")
        self.batch("b")
        self.archive_now()
        return a["after"].astimezone(datetime.timezone.utc).isoformat()

    def archive_now(self, timeout=30):
        """Switch WAL and wait until the segment is in the archive (polled, no sleep)."""
        # the segment just completed (pg_current_wal_lsn() on a segment boundary names the previous one)
        seg = self.node.one("SELECT pg_walfile_name(pg_switch_wal())")
        ok = poll(lambda: self.node.one("SELECT last_archived_wal >= %s FROM pg_stat_archiver", (seg,)), timeout, interval=0.05)
        assert ok, "segment %s was not archived within %ss" % (seg, timeout)
        return seg

    def s3_args(self):
        if not self.s3:
            return {}
        return {"s3_bucket": self.s3["bucket"], "s3_prefix": "postgres/pitr-test/physical", "region": "us-east-1",
                "endpoint_url": self.s3["endpoint_url"], "access_key": self.s3["access_key"],
                "secret_key": self.s3["secret_key"]}

    def base_backup(self, compression="none"):
        args = {"mode": "physical", "compression": compression, "verify": "list", "login_host": "127.0.0.1",
                "login_port": self.node.port, "login_password": self.password, "dest": self.backups,
                "cluster_name": "pitr-test"}
        args.update(self.s3_args())
        res = module("fediflow.dr.pg_backup_verify", args)
        assert res.get("verified") is True, res.get("msg")
        return res

    def args(self, **extra):
        args = {"data_dir": self.data_dir, "backup_dest": self.backups, "wal_config": self.wal_config,
                "wal_tool": self.wal_tool, "login_host": "127.0.0.1", "login_port": self.node.port,
                "login_password": self.password, "db": "app", "timeout": 120}
        args.update(extra)
        return args

    def standby(self):
        """A streaming standby of the primary (pg_basebackup -R: standby.signal), caught up; returns its Node."""
        standby = Node(self, "standby")
        os.makedirs(standby.socket_dir)
        import pwd
        ent = pwd.getpwnam(OS_USER)
        os.chown(standby.socket_dir, ent.pw_uid, ent.pw_gid)
        passfile = os.path.join(self.base, "repl.pgpass")
        _write(passfile, "127.0.0.1:%d:*:%s:%s\n" % (self.node.port, SUPERUSER, self.password))
        _as_pg([os.path.join(self.bindir, "pg_basebackup"), "--host=127.0.0.1", "--port=%d" % self.node.port,
                "--username=" + SUPERUSER, "--pgdata=" + standby.data_dir, "--write-recovery-conf",
                "--wal-method=stream", "--checkpoint=fast", "--no-password", "--no-sync"],
               env={"PGPASSFILE": passfile})
        _write(os.path.join(standby.data_dir, "postgresql.conf"), standby.settings(), append=True)
        _write(os.path.join(standby.data_dir, "postgresql.auto.conf"),
               "primary_conninfo = 'host=127.0.0.1 port=%d user=%s passfile=%s'\n"
               % (self.node.port, SUPERUSER, passfile), append=True)
        standby.start()
        flushed = self.node.one("SELECT pg_current_wal_flush_lsn()::text")
        assert poll(lambda: standby.one("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s) >= 0", (flushed,)), 30, interval=0.05)
        return standby

    def fail_over(self):
        """A streaming standby built from the primary (pg_basebackup -R), the primary killed, the
        standby promoted: timeline 2, archiving into the same archive (as a promoted region does).
        Afterwards ``node`` and ``data_dir`` are the new primary's."""
        standby = self.standby()
        # Every completed timeline-1 segment archived before the kill. pg_basebackup above ends with a
        # WAL switch; a primary killed before its archiver took that segment leaves a real gap in the
        # archive (a standby with archive_mode=on never archives what it streamed), and the restore
        # across the switch then rightly refuses: the cause of a failure seen once in a full run.
        assert poll(lambda: self.node.one("SELECT count(*) = 0 FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"),
                    30, interval=0.05), "the old primary did not archive its completed segments within 30 s"
        self.node.stop("immediate")
        standby.pg_ctl("promote")
        assert poll(lambda: standby.one("SELECT NOT pg_is_in_recovery()"), 30, interval=0.05)
        self.old_node, self.node, self.data_dir = self.node, standby, standby.data_dir
        assert poll(lambda: os.path.exists(os.path.join(self.archive, "00000002.history")), 30, interval=0.05)
        return self

    def restored(self, port):
        return Restored(self, port)

    def restore_beside(self, args):
        """fediflow.dr.pitr_restore with ``args`` beside the cluster (switch=false, a free port); returns its result
        and the restore (``Restored``), stopped by destroy() or stop_restore()."""
        port = free_port()
        res = module("fediflow.dr.pitr_restore", dict(args, switch=False, restore_port=port))
        assert res.get("failed") is not True, res.get("msg")
        self.started.append(res["new_data_dir"])
        return res, self.restored(port)

    def stop_restore(self, res):
        _as_pg([os.path.join(self.bindir, "pg_ctl"), "stop", "-D", res["new_data_dir"], "-m", "immediate", "-w"])

    def leftovers(self):
        """New data directories of restores (their server logs excluded)."""
        return sorted(p for p in glob.glob(self.data_dir + ".pitr-*") if not p.endswith(".log"))

    def destroy(self):
        for data_dir in sorted(set(self.started + glob.glob(os.path.join(self.base, "*")))):
            if os.path.isfile(os.path.join(data_dir, "postmaster.pid")):
                _as_pg([os.path.join(self.bindir, "pg_ctl"), "stop", "-D", data_dir, "-m", "immediate", "-w"],
                       check=False)
        shutil.rmtree(self.base, ignore_errors=True)


class Restored:
    """A side-by-side restore on its own port, queried independently with psycopg2."""

    def __init__(self, cluster, port):
        self.cluster = cluster
        self.port = port

    def batches(self):
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.cluster.password,
                                dbname="app", connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT batch, count(*) FROM t GROUP BY batch ORDER BY batch")
                return dict(cur.fetchall())
        finally:
            conn.close()


def make_cluster(s3=None):
    cluster = ArchivedCluster(s3)
    try:
        return cluster.build()
    except BaseException:
        cluster.destroy()
        raise


def wait_s(t0):
    return round(time.monotonic() - t0, 3)


__all__ = ["ArchivedCluster", "make_cluster", "free_port"]


def start_moto():
    """A private moto server on a free port (never the lab's); returns (process, endpoint)."""
    import subprocess
    import sys
    import urllib.request
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = "http://127.0.0.1:%d" % port

    def up():
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
                return True
        except OSError:
            return proc.poll() is not None  # died: stop polling, asserted below
    assert poll(up, 30, interval=0.05) and proc.poll() is None, "moto_server did not start on port %d" % port
    return proc, endpoint
