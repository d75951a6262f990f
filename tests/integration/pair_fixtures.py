"""A throwaway PostgreSQL primary + streaming standby for tests that consume a pair
(promotion, fencing), so the shared lab clusters on 15432/15433 are never touched.

Built the way roles/replication builds the lab's standby, in miniature: initdb as the
`postgres` OS user (scram on TCP, peer on the socket), a replication role and a physical
slot, `pg_basebackup -R` with a password file, `primary_conninfo` rewritten to use the
passfile (no password in any config file or argv), both started with pg_ctl, then polled
until the standby streams. Everything lives in a fresh directory under /var/tmp owned by
`postgres` (it cannot read /root or pytest's tmp_path) and is removed by destroy().
An empty cluster makes the pair cheap (~2-3 s), so each test can consume its own.
"""
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid

import psycopg2

from doubles_fixtures import free_port
from lab_fixtures import poll

OS_USER = "postgres"
SUPERUSER = "postgres"
REPLICATOR = "replicator"


def bindir():
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _as_pg(argv, env=None, check=True):
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(["runuser", "-u", OS_USER, "--"] + list(argv), cwd="/", env=full_env,
                          capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (rc=%s): %s %s" % (argv[0], proc.returncode, proc.stdout[-2000:],
                                                           proc.stderr[-2000:]))
    return proc


def _write(path, text, mode=0o600, append=False):
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        handle.write(text)
    ent = pwd.getpwnam(OS_USER)
    os.chown(path, ent.pw_uid, ent.pw_gid)
    os.chmod(path, mode)


class Node:
    def __init__(self, pair, name):
        self.pair = pair
        self.name = name
        self.port = free_port()
        self.data_dir = os.path.join(pair.base, name)
        self.socket_dir = os.path.join(pair.base, "run-" + name)
        self.log = os.path.join(pair.base, name + ".log")

    def settings(self):
        return ("\n# test pair: host settings of %s\nlisten_addresses = '127.0.0.1'\nport = %d\n"
                "unix_socket_directories = '%s'\nfsync = off\nlogging_collector = off\n"
                % (self.name, self.port, self.socket_dir))

    def pg_ctl(self, action, *extra, check=True):
        argv = [os.path.join(self.pair.bindir, "pg_ctl"), action, "-D", self.data_dir]
        if action in ("start", "restart"):
            argv += ["-l", self.log]
        return _as_pg(argv + ["-w", "-t", "60"] + list(extra), check=check)

    def start(self):
        self.pg_ctl("start")

    def stop(self, mode="immediate"):
        self.pg_ctl("stop", "-m", mode)

    def running(self):
        return self.pg_ctl("status", check=False).returncode == 0

    def connect(self, db="postgres", autocommit=True):
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                                password=self.pair.password, dbname=db, connect_timeout=5)
        conn.autocommit = autocommit
        return conn

    def query(self, sql, args=None, db="postgres"):
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def one(self, sql, args=None):
        return self.query(sql, args)[0][0]


class PgPair:
    """`primary` streams to `standby` through the physical slot `standby`. ``extra_settings``
    (postgresql.conf lines) go to the primary before the standby is cloned: both get them."""

    def __init__(self, extra_settings=""):
        self.extra_settings = extra_settings
        self.bindir = bindir()
        self.base = tempfile.mkdtemp(prefix="fediflow-pair-", dir="/var/tmp")
        ent = pwd.getpwnam(OS_USER)
        os.chown(self.base, ent.pw_uid, ent.pw_gid)
        os.chmod(self.base, 0o700)
        # test-only credentials of a throwaway cluster; they reach libpq via kwargs/passfile
        self.password = "pair-su-" + uuid.uuid4().hex[:12]
        self.repl_password = "pair-repl-" + uuid.uuid4().hex[:12]
        self.passfile = os.path.join(self.base, "replication.pgpass")
        self.primary = Node(self, "primary")
        self.standby = Node(self, "standby")

    def build(self):
        t0 = time.monotonic()
        for node in (self.primary, self.standby):
            os.makedirs(node.socket_dir)
            ent = pwd.getpwnam(OS_USER)
            os.chown(node.socket_dir, ent.pw_uid, ent.pw_gid)
        pwfile = os.path.join(self.base, ".initdb-pw")
        _write(pwfile, self.password + "\n")
        try:
            _as_pg([os.path.join(self.bindir, "initdb"), "--pgdata=" + self.primary.data_dir,
                    "--username=" + SUPERUSER, "--pwfile=" + pwfile, "--auth-host=scram-sha-256",
                    "--auth-local=peer", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"])
        finally:
            os.unlink(pwfile)
        _write(os.path.join(self.primary.data_dir, "postgresql.conf"), self.primary.settings() + self.extra_settings,
               append=True)
        self.primary.start()
        with self.primary.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE ROLE %s LOGIN REPLICATION PASSWORD %%s" % REPLICATOR, (self.repl_password,))
            cur.execute("SELECT pg_create_physical_replication_slot('standby')")
        _write(self.passfile, "127.0.0.1:%d:*:%s:%s\n" % (self.primary.port, REPLICATOR, self.repl_password))
        _as_pg([os.path.join(self.bindir, "pg_basebackup"), "--host=127.0.0.1",
                "--port=%d" % self.primary.port, "--username=" + REPLICATOR,
                "--pgdata=" + self.standby.data_dir, "--write-recovery-conf", "--wal-method=stream",
                "--slot=standby", "--checkpoint=fast", "--no-password", "--no-sync"],
               env={"PGPASSFILE": self.passfile})
        _write(os.path.join(self.standby.data_dir, "postgresql.conf"), self.standby.settings(), append=True)
        # like roles/replication: the connection string names the passfile, never a password
        _write(os.path.join(self.standby.data_dir, "postgresql.auto.conf"),
               "primary_conninfo = 'host=127.0.0.1 port=%d user=%s passfile=%s application_name=standby'\n"
               % (self.primary.port, REPLICATOR, self.passfile), append=True)
        self.standby.start()
        streaming = poll(lambda: self.standby.query(
            "SELECT status FROM pg_stat_wal_receiver") == [("streaming",)], timeout=30, interval=0.05)
        assert streaming, "standby on port %d did not start streaming" % self.standby.port
        self.build_s = round(time.monotonic() - t0, 3)
        return self

    def wait_replayed(self, timeout=30):
        """Wait until the standby has replayed everything the primary has flushed."""
        target = self.primary.one("SELECT pg_current_wal_flush_lsn()::text")
        return poll(lambda: self.standby.one(
            "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s) >= 0", (target,)), timeout, interval=0.05)

    def wait_received(self, timeout=30):
        """Wait until the standby has received (not necessarily replayed) the primary's flushed WAL."""
        target = self.primary.one("SELECT pg_current_wal_flush_lsn()::text")
        return poll(lambda: self.standby.one(
            "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), %s) >= 0", (target,)), timeout, interval=0.05)

    def module_args(self, **extra):
        """Options of fediflow.dr.pg_promote for this pair (the standby is promoted)."""
        args = {"login_host": "127.0.0.1", "login_port": self.standby.port, "login_password": self.password,
                "old_primary_host": "127.0.0.1", "old_primary_port": self.primary.port, "timeout": 30}
        args.update(extra)
        return args

    def destroy(self):
        for node in (self.primary, self.standby):
            if os.path.isfile(os.path.join(node.data_dir, "postmaster.pid")):
                node.pg_ctl("stop", "-m", "immediate", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def make_pair(extra_settings=""):
    pair = PgPair(extra_settings)
    try:
        return pair.build()
    except BaseException:
        pair.destroy()
        raise
