# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic file replacement: the one way the collection writes a file that another run, a person or a
program reads (manifests, ledgers, reports, exported configuration, incident records, state and pid files).

A reader sees the old file or the new one, never half of it, and once the call returns the new one survives a
crash: a temporary file in the target's own directory (so the rename cannot cross a file system), created 0600
or narrower (never readable by others while it is written; the final mode is set only once it is complete),
written, flushed, fsynced, renamed over the target (``os.replace``), then the directory fsynced (the rename on
disk). On any failure the temporary file is removed and the target is left as it was.

Temporary names are ``.fediflow-<16 hex>.tmp`` (TEMP_RE): s3_snapshot and the ledger skip them, and a leftover
of a killed run is recognisable as one.

walarchive.py does not use this module: it is installed alone beside fediflow_wal.py on a database host and run
by PostgreSQL's archive_command / restore_command under the system Python, where no collection is importable
(standard library only, one file). Its push also differs on purpose: it links the temporary file (refusing to
overwrite an archived segment) rather than replacing. Its ``fsync_dir`` is the collection's one directory fsync
and is used here, so there is one of those too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets

# one directory fsync for the whole collection (walarchive stays standard-library only)
from ansible_collections.fediflow.dr.plugins.module_utils.walarchive import fsync_dir

TEMP_RE = re.compile(r"^\.fediflow-[0-9a-f]{16}\.tmp$")
PRIVATE_MODE = 0o600

__all__ = ["TEMP_RE", "create_temp", "discard", "fsync_dir", "replacing", "temp_name", "write_atomic",
           "write_json_atomic"]


def temp_name():
    """A fresh temporary file name (matches TEMP_RE)."""
    return ".fediflow-%s.tmp" % secrets.token_hex(8)


def create_temp(directory=None, mode=PRIVATE_MODE, dir_fd=None):
    """``(fd, path)`` of a new, empty temporary file opened for writing: in ``directory``, or - with ``dir_fd`` - in
    the directory that descriptor holds (``path`` is then the bare name, relative to it). Created with ``mode`` but
    never wider than 0600, exclusively (never an existing file) and never through a symlink."""
    name = temp_name()
    path = name if dir_fd is not None else os.path.join(directory, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags, mode & PRIVATE_MODE, dir_fd=dir_fd), path


def discard(path, dir_fd=None):
    """Remove a temporary file; one already gone is fine."""
    try:
        os.unlink(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def replacing(path, mode=PRIVATE_MODE):
    """``with replacing(path) as handle: handle.write(b"...")``: the bytes written to ``handle`` (a binary file)
    replace ``path`` atomically and durably when the block ends normally (see the module's docstring); an exception
    in the block, or in the writing, leaves ``path`` untouched and no temporary file behind. The handle's
    ``fileno()`` serves to set its owner (``os.fchown``) inside the block."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = create_temp(directory, mode)
    replaced = False
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, path)
        replaced = True
    finally:
        if not replaced:
            discard(tmp)
    fsync_dir(directory)


def write_atomic(path, data, mode=PRIVATE_MODE):
    """Replace ``path`` with ``data`` (bytes, or text written as UTF-8), atomically and durably."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with replacing(path, mode) as handle:
        handle.write(data)


def write_json_atomic(path, data, mode=PRIVATE_MODE):
    """Replace ``path`` with ``data`` as JSON (indented, sorted keys, a final newline), atomically and durably."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)
