# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's WAL archive / restore command (PostgreSQL ``archive_command`` and
``restore_command``), standard library only so it runs under the system Python as the
``postgres`` user.

Backend today: a directory repository (``--repo DIR``). The S3 backend comes with the
backup issue; the contract stays the same:

* ``push PATH NAME``: archive a segment. Succeeds when an identical copy is already there,
  fails (exit 1, so PostgreSQL retries and alerts) when a *different* file has that name,
  never leaves a partial file visible (temp file + fsync + rename + fsync of the directory).
* ``fetch NAME PATH``: restore a segment; exit 1 when it is not in the archive (PostgreSQL
  treats that as "end of archive").
* ``status``: JSON with the newest archived segment and its age, for RPO checks.

The command-line entry point is ``roles/replication/files/fediflow_wal.py``, installed beside
this file on the database host: ``python3 fediflow_wal.py --repo DIR push %p %f``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import time

# segments (and their .partial / .backup companions) and timeline history files
SEGMENT_RE = re.compile(r"^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$")
CHUNK = 1024 * 1024


class ArchiveError(Exception):
    pass


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_name(name):
    if not SEGMENT_RE.match(name or ""):
        raise ArchiveError("not a WAL file name: %r" % name)


def push(repo, src, name):
    """Archive ``src`` as ``name``. Returns 'archived' or 'already-archived'."""
    _check_name(name)
    if not os.path.isdir(repo):
        raise ArchiveError("archive repository %s does not exist" % repo)
    dest = os.path.join(repo, name)
    src_sum = sha256_file(src)
    if os.path.exists(dest):
        if sha256_file(dest) == src_sum:
            return "already-archived"
        raise ArchiveError("%s is already archived with different contents: refusing to overwrite" % name)
    tmp = os.path.join(repo, ".%s.tmp.%d" % (name, os.getpid()))
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
        if sha256_file(tmp) != src_sum:
            raise ArchiveError("%s changed while it was copied" % name)
        os.link(tmp, dest)  # fails if someone archived the same name meanwhile
    except FileExistsError:
        raise ArchiveError("%s appeared in the archive while pushing: retry" % name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(repo)
    return "archived"


def fetch(repo, name, dest):
    _check_name(name)
    src = os.path.join(repo, name)
    if not os.path.exists(src):
        raise ArchiveError("%s is not in the archive" % name)
    tmp = "%s.fediflow-tmp" % dest
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return "fetched"


def status(repo, now=None):
    now = time.time() if now is None else now
    segments = [n for n in os.listdir(repo) if re.match(r"^[0-9A-F]{24}$", n)]
    if not segments:
        return {"segments": 0, "last_segment": None, "last_archived_at": None, "age_s": None}
    last = max(segments)
    mtime = os.stat(os.path.join(repo, last)).st_mtime
    return {"segments": len(segments), "last_segment": last,
            "last_archived_at": mtime, "age_s": round(max(0.0, now - mtime), 3)}


def main(argv=None):
    """Run one command; returns ``(exit_code, stdout_text, stderr_text)``."""
    parser = argparse.ArgumentParser(prog="fediflow-wal", description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--repo", required=True, help="archive repository directory")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_push = sub.add_parser("push")
    p_push.add_argument("path")
    p_push.add_argument("name")
    p_fetch = sub.add_parser("fetch")
    p_fetch.add_argument("name")
    p_fetch.add_argument("path")
    sub.add_parser("status")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "push":
            push(args.repo, args.path, args.name)
            return 0, "", ""
        if args.cmd == "fetch":
            fetch(args.repo, args.name, args.path)
            return 0, "", ""
        return 0, json.dumps(status(args.repo)) + "\n", ""
    except (ArchiveError, OSError) as exc:
        return 1, "", "fediflow-wal %s: %s\n" % (args.cmd, exc)
