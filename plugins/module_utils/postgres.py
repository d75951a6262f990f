# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection options (as community.postgresql names them) and helpers.

Passwords reach libpq programs through a password file of their own (``passfile``: E(PGPASSFILE) in a
0700 directory, removed afterwards) and psycopg2 through its keyword arguments: never a command line, never
a child's environment (``/proc/PID/environ`` is readable by the same user and lands in crash reports).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, current_user, require_readable_file


# libpq connection errors, classified once for every module (health_check's detection, pg_promote's
# split-brain guard, the integrity checks), so that they agree on what a message means.
# Nothing is listening at the address:
# ("invalid argument": Linux's connect() to an address whose route is a blackhole - a region whose network is
# gone, as the lab's `down` makes it; like "network is unreachable", the local routing says nothing goes there.)
_UNREACHABLE = ("connection refused", "could not translate host name", "no route to host", "network is unreachable",
                "no such file or directory", "name or service not known", "host is down", "invalid argument")
# A live server that refused our login, or whose certificate we refused (a wrong login_*, ssl_mode or
# ca_cert option must not pass for "down": a server answered):
_LOGIN_REFUSED = ("password authentication failed", "no pg_hba.conf entry", "does not exist", "permission denied",
                  "authentication failed", "certificate verify failed", "does not match host name", "ssl error",
                  "does not support ssl")


def classify_connect_error(message):
    """What a libpq connection error means: ``unreachable`` (nothing answers at the address),
    ``login_refused`` (a server answered and refused the login), ``timeout`` (no answer in time: a
    network partition looks exactly like this, the server may be alive and taking writes) or
    ``unknown`` (a server answered: starting up, shutting down, in crash recovery ...)."""
    text = (message or "").lower()
    if any(marker in text for marker in _UNREACHABLE):
        return "unreachable"
    if any(marker in text for marker in _LOGIN_REFUSED):
        return "login_refused"
    if "timeout expired" in text or "timed out" in text:
        return "timeout"
    return "unknown"


# libpq's sslmode values (community.postgresql's ssl_mode choices).
SSL_MODES = ("allow", "disable", "prefer", "require", "verify-ca", "verify-full")


def postgres_common_argument_spec():
    """The argument spec matching ``doc_fragments/postgres.py``."""
    return {
        "login_user": {"type": "str", "default": "postgres", "aliases": ["login"]},
        "login_password": {"type": "str", "default": "", "no_log": True},
        "login_host": {"type": "str", "default": "", "aliases": ["host"]},
        "login_port": {"type": "int", "default": 5432, "aliases": ["port"]},
        "login_unix_socket": {"type": "str", "default": "", "aliases": ["unix_socket"]},
        "db": {"type": "str", "default": "postgres", "aliases": ["login_db"]},
        "connect_timeout": {"type": "int", "default": 10},
        "ssl_mode": {"type": "str", "default": "prefer", "choices": list(SSL_MODES)},
        "ca_cert": {"type": "path", "default": "", "aliases": ["ssl_rootcert"]},
    }


def validate_conn(params):
    port = params.get("login_port")
    if port is not None and not 0 < int(port) < 65536:
        raise FediflowError("login_port must be between 1 and 65535, got %s" % port)
    if params.get("connect_timeout") is not None and int(params["connect_timeout"]) < 1:
        raise FediflowError("connect_timeout must be at least 1 second")
    mode = params.get("ssl_mode") or "prefer"
    if mode not in SSL_MODES:
        raise FediflowError("ssl_mode must be one of %s, got %s" % (", ".join(SSL_MODES), mode))
    require_readable_file(params.get("ca_cert"), "ca_cert")


def _tls(params):
    """(sslmode, sslrootcert or None) of the connection options."""
    return params.get("ssl_mode") or "prefer", params.get("ca_cert") or None


def libpq_env(params):
    """Environment for libpq programs (pg_dump, pg_basebackup, psql ...), without the password: run them
    inside ``passfile`` (its environment holds this and E(PGPASSFILE))."""
    validate_conn(params)
    env = {
        "PGUSER": params.get("login_user") or "postgres",
        "PGPORT": str(params.get("login_port") or 5432),
        "PGDATABASE": params.get("db") or "postgres",
        "PGCONNECT_TIMEOUT": str(params.get("connect_timeout") or 10),
        "PGAPPNAME": "fediflow.dr",
    }
    host = params.get("login_host") or params.get("login_unix_socket")
    if host:
        env["PGHOST"] = host
    env["PGSSLMODE"], root = _tls(params)
    if root:
        env["PGSSLROOTCERT"] = root
    return env


def passfile_line(password, host="*", port="*", database="*", user="*"):
    """One line of libpq's password file: ':' and '\\' inside a field escaped with '\\'."""
    fields = [host, port, database, user, password]
    return ":".join(str(f).replace("\\", "\\\\").replace(":", "\\:") for f in fields) + "\n"


@contextlib.contextmanager
def passfile(params, user=None):
    """``with passfile(params, user) as env: run(argv, user=user, env=env)``: the environment for a libpq
    program (``libpq_env``) run as OS ``user`` (default: this process's), the password (login_password)
    in a password file: mode 0600 in a fresh 0700 directory, both owned by that user, E(PGPASSFILE) naming
    it. The directory is removed when the block ends, however it ends (the program failed, was killed at
    its time-out, an exception). E(PGPASSWORD) is unset in the child (it would take precedence over the
    file). No password: the plain environment, nothing written."""
    env = libpq_env(params)
    password = params.get("login_password")
    if not password:
        yield env
        return
    if "\n" in password or "\r" in password:
        raise FediflowError("login_password holds a line break: libpq's password file cannot carry it")
    owner = user or current_user()
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise FediflowError("OS user '%s' does not exist (it would run the PostgreSQL program)" % owner)
    work = tempfile.mkdtemp(prefix="fediflow-pgpass-")  # 0700
    try:
        path = os.path.join(work, "pgpass")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(passfile_line(password))
        if owner != current_user():
            os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chown(work, entry.pw_uid, entry.pw_gid)
        env["PGPASSFILE"] = path
        env["PGPASSWORD"] = None  # unset: run() removes a None entry from the inherited environment
        yield env
    finally:
        shutil.rmtree(work, ignore_errors=True)


def connect_kwargs(params):
    """Keyword arguments for ``psycopg2.connect`` (password kept out of any DSN string)."""
    validate_conn(params)
    kwargs = {
        "user": params.get("login_user") or "postgres",
        "port": int(params.get("login_port") or 5432),
        "dbname": params.get("db") or "postgres",
        "connect_timeout": int(params.get("connect_timeout") or 10),
        "application_name": "fediflow.dr",
    }
    host = params.get("login_host") or params.get("login_unix_socket")
    if host:
        kwargs["host"] = host
    if params.get("login_password"):
        kwargs["password"] = params["login_password"]
    kwargs["sslmode"], root = _tls(params)
    if root:
        kwargs["sslrootcert"] = root
    return kwargs


def connect(params, autocommit=True):
    try:
        import psycopg2  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise FediflowError("psycopg2 is required on the managed node (pip install psycopg2-binary)")
    kwargs = connect_kwargs(params)
    try:
        conn = psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FediflowError("cannot connect to PostgreSQL at %s:%s db=%s as %s: %s" % (
            kwargs.get("host", "(socket)"), kwargs["port"], kwargs["dbname"], kwargs["user"], first))
    conn.autocommit = autocommit
    return conn
