# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the pgBackRest modules do on a host (pgbackrest.py holds the plain logic they use)."""

from __future__ import annotations

import os
import pwd

from ansible_collections.fediflow.dr.plugins.module_utils import atomic, pgbackrest, repos
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer

DIR_MODE = 0o750

CONFIG_SPEC = {
    "path": {"type": "path", "required": True},
    "owner": {"type": "str", "default": "postgres"},
    "stanza": {"type": "str", "required": True},
    "pg": {"type": "dict", "required": True, "options": {
        "data_dir": {"type": "path", "required": True},
        "port": {"type": "int"},
        "socket_dir": {"type": "path"},
        "user": {"type": "str"},
    }},
    "repositories": dict(repos.argument_spec(write=False)["repositories"], required=True),
    "access_key": {"type": "str", "no_log": True},
    "secret_key": {"type": "str", "no_log": True},
    "ca_file": {"type": "path"},
    "archive_async": {"type": "bool", "default": True},
    "spool_path": {"type": "path", "default": "/var/spool/pgbackrest"},
    "log_path": {"type": "path", "default": "/var/log/pgbackrest"},
    "lock_path": {"type": "path", "default": "/tmp/pgbackrest"},
    "process_max": {"type": "int", "default": 2},
    "compress_type": {"type": "str", "default": "lz4", "choices": list(pgbackrest.COMPRESS_TYPES)},
    "compress_level": {"type": "int"},
    "retention_full": {"type": "int"},
    "cipher_pass": {"type": "str", "no_log": True},
    "archive_push_queue_max": {"type": "str"},
}


def _owner(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise FediflowError("owner '%s' is no user of this host" % name) from None


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def configure(p, check_mode):
    """pgbackrest_config: render, compare, write (0600, the owner's), make the directories."""
    timer = Timer()
    user = _owner(p["owner"])
    repo_list = repos.normalize({"repositories": p["repositories"], "s3_prefix": ""})
    settings = {k: p[k] for k in ("spool_path", "log_path", "lock_path", "archive_async", "process_max",
                                  "compress_type", "compress_level", "ca_file", "retention_full", "cipher_pass",
                                  "archive_push_queue_max")}
    text = pgbackrest.render_config(p["stanza"], p["pg"], repo_list,
                                    {"access_key": p.get("access_key"), "secret_key": p.get("secret_key")}, settings)
    path = pgbackrest.absolute_path(p["path"], "path")
    if p.get("ca_file") and not os.path.isfile(p["ca_file"]):
        raise FediflowError("ca_file %s is not a file" % p["ca_file"])
    if os.path.islink(path):
        raise FediflowError("path %s is a symbolic link: refused (the file holds a secret)" % path)
    before = _read(path)
    try:
        st = os.lstat(path)
        right_owner = st.st_uid == user.pw_uid and (st.st_mode & 0o777) == 0o600
    except FileNotFoundError:
        right_owner = False
    wanted_dirs = [os.path.dirname(path), p["log_path"], p["lock_path"]] + ([p["spool_path"]] if p["archive_async"] else [])
    missing = [d for d in wanted_dirs if not os.path.isdir(d)]
    changed = before != text or not right_owner or bool(missing)
    if changed and not check_mode:
        for directory in missing:
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
            if directory != os.path.dirname(path):
                os.chown(directory, user.pw_uid, user.pw_gid)
            else:  # the configuration's directory: root's, the owner's group may enter
                os.chown(directory, 0, user.pw_gid)
            os.chmod(directory, DIR_MODE)
        with atomic.replacing(path, 0o600) as handle:
            handle.write(text.encode("utf-8"))
            os.fchown(handle.fileno(), user.pw_uid, user.pw_gid)
    binary = pgbackrest.binary()
    return {
        "changed": changed, "path": path, "stanza": p["stanza"],
        "repositories": [{"key": i, "name": r["name"], "bucket": r["bucket"], "path": pgbackrest.repo_path(r.get("prefix"))}
                         for i, r in enumerate(repo_list, start=1)],
        "archive_command": pgbackrest.archive_command(binary, path, p["stanza"]),
        "restore_command": pgbackrest.restore_command(binary, path, p["stanza"]),
        "directories": missing,
        "diff": {"before": pgbackrest.redact(before or ""), "after": pgbackrest.redact(text),
                 "before_header": path, "after_header": path},
        "duration_s": timer.elapsed(),
    }
