# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A cluster's configuration files, wherever they live (used by ``pitr_restore`` and ``pg_backup_verify``).

Two layouts: ``initdb``'s, with ``postgresql.conf``, ``pg_hba.conf`` and ``pg_ident.conf`` inside the data
directory, and Debian's packaged one (``postgresql-common``), with them in ``/etc/postgresql/VERSION/NAME``
and ``postgresql.conf`` naming the data directory (``data_directory``), the other files and a pid file.
A base backup holds the data directory only: restored from a Debian cluster it has no configuration at
all, and a copy of Debian's ``postgresql.conf`` beside a restore would point the restored server at the
running cluster's data directory. ``postgresql.auto.conf`` (ALTER SYSTEM) is always in the data directory.
"""

from __future__ import annotations

import os
import re
import shutil

CONFIG_FILES = ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")
AUTO_CONF = "postgresql.auto.conf"
# settings that tie a postgresql.conf to one cluster's files (Debian sets each of them)
PATH_SETTINGS = ("data_directory", "hba_file", "ident_file", "external_pid_file")
_PATH_LINE = re.compile(r"^\s*(%s)\b" % "|".join(PATH_SETTINGS), re.IGNORECASE)
# postgresql-common's own files in a cluster's configuration directory (not the server's)
DEBIAN_OWN = ("start.conf", "pg_ctl.conf")
MARK = "# fediflow.dr: not this copy's (a restore beside the cluster) - "


def detach(text):
    """``postgresql.conf`` text with every setting of ``PATH_SETTINGS`` commented out, so that a copy of it
    in another data directory makes the server use that directory's own files."""
    return "".join(MARK + line if _PATH_LINE.match(line) else line for line in text.splitlines(True))


def separate(config_dir, data_dir):
    """Whether the configuration directory is apart from the data directory (Debian's layout)."""
    return bool(config_dir) and os.path.realpath(config_dir) != os.path.realpath(data_dir)


def copy_config(config_dir, data_dir, dest):
    """The running cluster's configuration into ``dest`` (a restore beside it); returns the names copied.

    From a separate ``config_dir``: every ``*.conf`` file there (the included ones too; not postgresql-common's
    ``start.conf`` and ``pg_ctl.conf``) and ``conf.d``, with
    ``postgresql.conf`` detached from the cluster's paths; ``postgresql.auto.conf`` from ``data_dir``. From a
    plain data directory: every ``*.conf`` file at its top (the included ones too, e.g. the replication role's
    ``fediflow.local.conf`` with the host's listen address and TLS: without it the restore listens on localhost
    only and is not reachable where it is probed)."""
    copied = []
    if separate(config_dir, data_dir):
        for name in sorted(os.listdir(config_dir)):
            src = os.path.join(config_dir, name)
            if name.endswith(".conf") and os.path.isfile(src) and name not in DEBIAN_OWN + (AUTO_CONF,):
                if name == "postgresql.conf":
                    with open(src, "r", encoding="utf-8") as handle:
                        text = detach(handle.read())
                    with open(os.path.join(dest, name), "w", encoding="utf-8") as handle:
                        handle.write(text)
                    shutil.copystat(src, os.path.join(dest, name))
                else:
                    shutil.copy2(src, os.path.join(dest, name))
                copied.append(name)
            elif name == "conf.d" and os.path.isdir(src) and not os.path.islink(src):
                shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
                shutil.copytree(src, os.path.join(dest, name), symlinks=True)
                copied.append(name)
        names = [AUTO_CONF]
    else:
        tops = {n for n in os.listdir(data_dir) if n.endswith(".conf") and os.path.isfile(os.path.join(data_dir, n))}
        names = sorted(set(CONFIG_FILES) | tops | {AUTO_CONF})
    for name in names:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            shutil.copy2(path, os.path.join(dest, name))
            copied.append(name)
    return copied


def minimal_hba(login_host=None):
    """pg_hba lines of a restore that has none: the OS user on the socket, passwords from loopback and from
    ``login_host`` (the address the restore is probed at) when it is an IP address."""
    lines = ["local all all peer", "host all all 127.0.0.1/32 scram-sha-256", "host all all ::1/128 scram-sha-256"]
    host = login_host or ""
    if host and host not in ("127.0.0.1", "::1", "localhost") and re.match(r"^[0-9a-fA-F.:]+$", host):
        lines.append("host all all %s/%d scram-sha-256" % (host, 128 if ":" in host else 32))
    return lines


def ensure_minimal(data_dir, hba_lines):
    """Write the configuration files a server needs to start where ``data_dir`` has none (a base backup of a
    Debian cluster): an empty ``postgresql.conf`` (PostgreSQL's defaults; ``postgresql.auto.conf`` is kept),
    ``pg_hba.conf`` of ``hba_lines`` and an empty ``pg_ident.conf``. Returns the names written."""
    content = {"postgresql.conf": "# fediflow.dr: the backup held no postgresql.conf (its configuration lived apart "
                                  "from its data directory); PostgreSQL's defaults and postgresql.auto.conf apply\n",
               "pg_hba.conf": "".join(line + "\n" for line in hba_lines),
               "pg_ident.conf": ""}
    written = []
    for name in CONFIG_FILES:
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(content[name])
            os.chmod(path, 0o600)
            written.append(name)
    return written
