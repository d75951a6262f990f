# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scratch cluster of a restore verification (one home for logical and physical backups).

A throwaway PostgreSQL cluster on the host this runs on (the verify host), never the production
server: its own 0700 directory, a port checked free, no TCP at all (its only socket lives inside
that directory, so nobody else on the host can reach the restored data), archiving and replication
off, started and stopped with ``pg_ctl``, and removed afterwards - also when what ran inside failed.

    with ScratchCluster(p, commands, host_name) as scratch:
        scratch.init_empty(user)          # logical: initdb   (or scratch.adopt(fill) for a base backup)
        scratch.start()
        conn = postgres.connect(scratch.conn_params(p, db))
    scratch.where  ->  {host, port, data_dir, socket_dir, removed}
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from ansible_collections.fediflow.dr.plugins.module_utils import pgconf, pgctl, postgres
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, last_lines, run, wait_until

SCRATCH_PREFIX = "fediflow-verify-"
# the only way in: the socket inside the 0700 directory (root and the cluster's OS user can enter it)
HBA = ["local all all trust"]


def port_is_free(port):
    """Nothing uses ``port``: a bind on the wildcard address (IPv4, and IPv6 where the host has it) fails when any
    socket of any address holds it. Needs no interface up (a bare network namespace has none)."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this host
        with sock:
            try:
                sock.bind((addr, port))
            except OSError:
                return False
    return True


def pick_port(explicit=None, attempts=20):
    """``explicit`` when it is free (else refused, naming the option), or a free one the kernel hands out."""
    if explicit:
        if not 1024 <= int(explicit) < 65536:
            raise FediflowError("scratch_port must be between 1024 and 65535, got %s" % explicit)
        if not port_is_free(int(explicit)):
            raise FediflowError("scratch_port %s is in use on this host: choose a free one, or leave it unset "
                                "to take a free port" % explicit)
        return int(explicit)
    for _attempt in range(attempts):
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", 0))
            port = sock.getsockname()[1]
        if port_is_free(port):
            return port
    raise FediflowError("no free port for the scratch cluster after %d tries" % attempts)


def leftovers(parent):
    """Scratch directories under ``parent`` (what a run leaves when it is killed; tests look for none)."""
    try:
        return sorted(n for n in os.listdir(parent) if n.startswith(SCRATCH_PREFIX))
    except OSError:
        return []


class ScratchCluster:
    """See the module docstring. ``where`` says where it ran; ``removed`` is set on exit."""

    def __init__(self, p, commands, host_name=None):
        self.os_user = p.get("os_user") or "postgres"
        self.parent = p.get("scratch_dir") or "/var/tmp"
        self.bindir = pgctl.find_bindir(p.get("bin_dir"))
        self.commands = commands
        self.wanted_port = p.get("scratch_port")
        self.port = None
        self.work = self.data_dir = self.log = None
        self.where = {"host": host_name or socket.gethostname(), "port": None, "data_dir": None,
                      "socket_dir": None, "removed": None}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self):
        probe = run(["test", "-x", self.parent], user=self.os_user, timeout=10)
        if probe.rc != 0:
            raise FediflowError("scratch_dir '%s' is not reachable by OS user %s (PostgreSQL runs the scratch "
                                "cluster as that user): choose a directory it can enter" % (self.parent, self.os_user))
        self.port = pick_port(self.wanted_port)
        self.work = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=self.parent)  # 0700 from the start
        self.data_dir = os.path.join(self.work, "data")
        self.log = os.path.join(self.work, "server.log")
        run(["chown", "%s:" % self.os_user, self.work])
        self.where.update(port=self.port, data_dir=self.data_dir, socket_dir=self.work, removed=False)
        return self

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)
        self.where["removed"] = not os.path.exists(self.work)
        return False

    def stop(self):
        """``pg_ctl stop`` when a postmaster runs (fast, then immediate when fast does not finish)."""
        if not os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            return
        for mode in ("fast", "immediate"):
            res = run(pgctl.control_argv(self.bindir, "stop", self.data_dir, mode=mode, timeout=60),
                      user=self.os_user, timeout=90, cwd="/")
            self.commands.append(res.as_dict())
            if res.rc == 0:
                return

    # ------------------------------------------------------------------ making the data directory

    def init_empty(self, superuser):
        """``initdb`` an empty cluster whose superuser is ``superuser`` (C locale, UTF8: any dump's encoding fits)."""
        argv = [os.path.join(self.bindir, "initdb"), "-D", self.data_dir, "--username=%s" % superuser,
                "--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--locale=C", "--no-sync",
                "--no-instructions"]
        res = run(argv, user=self.os_user, timeout=300, cwd="/")
        self.commands.append(res.as_dict())
        if res.rc != 0:
            raise FediflowError("initdb of the scratch cluster in %s failed: %s" % (self.data_dir, last_lines(res.stderr)))

    def adopt(self, fill):
        """A data directory made by ``fill(data_dir)`` (a base backup restored into it), made ours to start."""
        fill(self.data_dir)
        for leftover in ("standby.signal", "recovery.signal", "postmaster.pid"):
            path = os.path.join(self.data_dir, leftover)
            if os.path.exists(path):
                os.unlink(path)
        # a backup of a Debian cluster holds no configuration (it lived in /etc/postgresql): enough to start
        pgconf.ensure_minimal(self.data_dir, HBA)
        run(["chown", "-R", "%s:" % self.os_user, self.data_dir])
        os.chmod(self.data_dir, 0o700)

    # ------------------------------------------------------------------ running it

    def start(self):
        """Configure (whatever the data directory carries: socket only, archiving and replication off) and start."""
        # the scratch cluster is ours: its pg_hba is ours, whatever the backup carries
        with open(os.path.join(self.data_dir, "pg_hba.conf"), "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in HBA))
        with open(os.path.join(self.data_dir, "postgresql.auto.conf"), "a", encoding="utf-8") as handle:
            handle.write("\n# fediflow.dr scratch verification cluster\n"
                         "port = %d\nlisten_addresses = ''\nunix_socket_directories = '%s'\n"
                         "archive_mode = off\nprimary_conninfo = ''\nprimary_slot_name = ''\n"
                         "restore_command = ''\nhot_standby = on\nshared_buffers = '32MB'\n"
                         "max_wal_senders = 0\nmax_replication_slots = 0\nssl = off\n"
                         % (self.port, self.work))
        run(["chown", "-R", "%s:" % self.os_user, self.work])
        os.chmod(self.work, 0o700)
        if not port_is_free(self.port):  # taken since it was picked
            raise FediflowError("port %d of the scratch cluster was taken before it started: run again" % self.port)
        res = run(pgctl.control_argv(self.bindir, "start", self.data_dir, log_file=self.log, timeout=120),
                  user=self.os_user, timeout=180, cwd="/")
        self.commands.append(res.as_dict())
        if res.rc != 0:
            raise FediflowError("scratch cluster in %s did not start: %s" % (self.data_dir, self.log_tail()))

    def log_tail(self):
        if not os.path.exists(self.log):
            return ""
        with open(self.log, "r", encoding="utf-8", errors="replace") as handle:
            return last_lines(handle.read())

    def conn_params(self, p, db=None):
        """Connection options for the scratch cluster: its socket, ``p``'s user, no TLS or password needed."""
        return dict(p, login_host=self.work, login_unix_socket="", login_port=self.port, login_password="",
                    ssl_mode="disable", ca_cert="", db=db or p.get("db") or "postgres")

    def libpq_env(self, p, db=None):
        env = postgres.libpq_env(self.conn_params(p, db))
        env.pop("PGPASSWORD", None)
        return env

    def wait_writable(self, p, timeout=120):
        """Poll until the cluster accepts connections and has left recovery; returns the seconds waited."""
        params = self.conn_params(p)
        last = {"error": None}

        def writable():
            try:
                conn = postgres.connect(params)
            except FediflowError as exc:
                last["error"] = exc.message   # not yet accepting connections: said on timeout
                return None
            last["error"] = None
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT NOT pg_is_in_recovery()")
                    return cur.fetchone()[0]
            finally:
                conn.close()

        ready, waited = wait_until(writable, timeout)
        if not ready:
            raise FediflowError("scratch cluster did not finish recovery within %ss (%s); its log: %s" % (
                timeout, ("last connection attempt: " + last["error"]) if last["error"] else "it answered, still in recovery",
                self.log_tail()))
        return waited
