# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup ledger: one JSON manifest beside every backup, locally and in S3.

A backup exists when, and only when, its manifest exists: the manifest is written last
(atomically) and deleted first. Retention, PITR base selection, drills and reports read the
ledger, never file names or mtimes. Plain data in, plain data out.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import secrets
import shutil
import stat as st

from ansible_collections.fediflow.dr.plugins.module_utils import atomic, untrusted
from ansible_collections.fediflow.dr.plugins.module_utils.atomic import fsync_dir
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError
# one streaming sha256 for the whole collection (walarchive stays standard-library only)
from ansible_collections.fediflow.dr.plugins.module_utils.walarchive import sha256_file

MANIFEST = "manifest.json"
LEDGER_VERSION = 1
# hidden work directories of runs (a backup being taken, a backup downloaded to verify it) and their locks
WORK_PREFIXES = (".partial-", ".verify-")
LOCK_PREFIX = ".lock-"


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(ts):
    return ts.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text):
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_backup_id(kind, now=None):
    """Sortable, unique: ``20261125T223151Z-logical-3f9a1c``."""
    now = now or utcnow()
    return "%s-%s-%s" % (now.strftime("%Y%m%dT%H%M%SZ"), kind, secrets.token_hex(3))


def file_entries(backup_dir):
    """Every file of a backup (relative path, size, sha256), manifest excluded, sorted."""
    entries = []
    for root, _dirs, files in os.walk(backup_dir):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, backup_dir)
            # a temporary file of atomic.replacing (".tmp-*": the name this module used before) is no backup file
            if rel == MANIFEST or atomic.TEMP_RE.match(name) or name.startswith(".tmp-"):
                continue
            entries.append({"path": rel, "size": os.path.getsize(full), "sha256": sha256_file(full)})
    return sorted(entries, key=lambda e: e["path"])


def write_manifest(backup_dir, manifest):
    atomic.write_json_atomic(os.path.join(backup_dir, MANIFEST), manifest)


def fsync_tree(path):
    """Every file, then every directory (deepest first) of a tree on disk."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        del dirs
        fsync_dir(root)


def publish(work, final, manifest):
    """The one way a work directory becomes a backup: its files and directories on disk (fsync), renamed into
    place, the rename on disk (fsync of the parent), and only then the manifest (written atomically, fsynced): a
    crash at any point never leaves a manifest whose files are not on disk - the manifest says the backup exists."""
    fsync_tree(work)
    os.rename(work, final)
    fsync_dir(os.path.dirname(final) or ".")
    write_manifest(final, manifest)


class WorkDir:
    """A hidden work directory (``dest/.partial-ID``, ``dest/.verify-ID``) held by its run: the run takes an
    exclusive ``flock`` on ``dest/.lock-NAME`` before the directory exists and holds it until the directory is
    gone (renamed into a backup, or removed). The kernel drops the lock when the process dies however it dies, so
    ``clean_leftovers`` tells a live run from a dead one by the lock - never by age (a backup may run for hours)."""

    def __init__(self, dest, name):
        if not name.startswith(WORK_PREFIXES) or os.sep in name:
            raise FediflowError("not a work directory name: %r" % name)
        self.path = os.path.join(dest, name)
        self.lock_path = os.path.join(dest, LOCK_PREFIX + name)
        self._fd = None

    def __enter__(self):
        # dest itself may not exist yet: a verify host verifies a backup it never held (its verify dest is new)
        os.makedirs(os.path.dirname(self.lock_path), mode=0o700, exist_ok=True)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise FediflowError("%s is in use by another run (its lock %s exists)" % (self.path, self.lock_path))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # a cleaner may have taken this lock file for a stray one between open and flock, and removed it
            if os.fstat(fd).st_ino != os.stat(self.lock_path).st_ino:
                raise FileNotFoundError(self.lock_path)
            os.write(fd, ("%d\n" % os.getpid()).encode("ascii"))  # for a person looking; the lock decides
            os.makedirs(self.path, mode=0o700)
        except (OSError, BlockingIOError) as exc:
            os.close(fd)
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
            raise FediflowError("cannot start %s (its lock %s): %s - retry" % (self.path, self.lock_path, exc))
        self._fd = fd
        return self

    def __exit__(self, *exc):
        try:
            shutil.rmtree(self.path, ignore_errors=True)  # still here: the run failed (renamed away when it worked)
            os.unlink(self.lock_path)
        finally:
            os.close(self._fd)  # the directory is gone before the lock goes
        return False


def _owner_alive(lock_path):
    """True when a live process holds ``lock_path``; False when nobody does (the lock is then held by the caller
    until it closes the returned descriptor) or the lock file does not exist. ``(alive, fd or None)``."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return False, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return True, None
    return False, fd


def clean_leftovers(dest):
    """Remove the work directories of runs that died (killed, host rebooted): a leftover is never a backup (no
    manifest). One is kept, whatever its age, while its run is alive (it holds the lock, see WorkDir); one without
    a lock file never had a live owner (WorkDir locks before it creates the directory) or predates the locks.
    Returns the names removed."""
    cleaned = []
    names = set(os.listdir(dest))
    for name in sorted(names):
        if name.startswith(WORK_PREFIXES):
            alive, fd = _owner_alive(os.path.join(dest, LOCK_PREFIX + name))
            if alive:
                continue
            try:
                shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
                if fd is not None:
                    os.unlink(os.path.join(dest, LOCK_PREFIX + name))
            finally:
                if fd is not None:
                    os.close(fd)
            cleaned.append(name)
        elif name.startswith(LOCK_PREFIX) and name[len(LOCK_PREFIX):] not in names:
            alive, fd = _owner_alive(os.path.join(dest, name))  # a lock whose directory is gone (died at the end)
            if fd is not None:
                try:
                    os.unlink(os.path.join(dest, name))
                finally:
                    os.close(fd)
    return cleaned


def read_manifest(backup_dir):
    """The manifest of the backup in ``backup_dir`` (None without one), checked as untrusted input: its id
    is the directory's name, its file paths stay inside it (``untrusted.backup_manifest``); a bad one raises
    ``untrusted.Untrusted`` naming the file."""
    path = os.path.join(backup_dir, MANIFEST)
    try:
        data = untrusted.read_json_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise untrusted.Untrusted("%s: cannot be read (%s); refused" % (path, exc.strerror))
    return untrusted.backup_manifest(data, path, os.path.basename(os.path.normpath(backup_dir)))


def list_local(dest, skipped=None):
    """Manifests of every backup in a local repository directory (no manifest = no backup). A malformed
    manifest, or a backup directory that is a symlink, is left out and recorded in ``skipped``."""
    if not os.path.isdir(dest):
        return []
    found = []
    for name in sorted(os.listdir(dest)):
        full = os.path.join(dest, name)
        if name.startswith("."):
            continue
        info = os.lstat(full)
        if st.S_ISLNK(info.st_mode):
            if os.path.isdir(full):
                untrusted.skip(skipped, full, "%s is a symlink, not a backup directory; left out" % full)
            continue
        if not st.S_ISDIR(info.st_mode):
            continue
        try:
            manifest = read_manifest(full)
        except untrusted.Untrusted as exc:
            untrusted.skip(skipped, os.path.join(full, MANIFEST), exc)
            continue
        if manifest:
            found.append(manifest)
    return found


def remove_local(dest, backup_id):
    """Delete the manifest first (the backup stops existing), then its files. Refuses an id that is no id
    (``..``, empty, a path) and a backup directory that is a symlink, before deleting anything."""
    untrusted.check_id(backup_id, "removal from %s" % dest)
    backup_dir = os.path.join(dest, backup_id)
    if os.path.islink(backup_dir):
        raise untrusted.Untrusted("%s is a symlink, not a backup directory; refused (nothing deleted)" % backup_dir)
    manifest = os.path.join(backup_dir, MANIFEST)
    if os.path.exists(manifest):
        os.unlink(manifest)
    shutil.rmtree(backup_dir, ignore_errors=True)


def is_verified(manifest):
    return bool((manifest.get("verification") or {}).get("ok"))


def sort_key(manifest):
    return (manifest.get("stop_time") or "", manifest.get("id") or "")


def plan_retention(manifests, now, retention_count=None, retention_days=None, kind=None):
    """Which backups retention removes, as ``[(id, reason)]``. Pure function of the ledger.

    Backups of ``kind`` only (others untouched). A backup is kept when it is among the newest
    ``retention_count`` or younger than ``retention_days``; when both are given, a backup is
    removed only if both say so. The newest *verified* backup is never removed, and a failed or
    unverified backup never pushes it out. Unverified/failed backups newer than it are kept only
    up to ``retention_count`` (so nightly failures cannot fill the disk); with nothing verified
    at all, nothing is removed.
    """
    if retention_count is None and retention_days is None:
        return []
    pool = sorted((m for m in manifests if kind is None or m.get("kind") == kind), key=sort_key, reverse=True)
    verified = [m for m in pool if is_verified(m)]
    newest_verified = verified[0] if verified else None
    protected = set()
    if newest_verified is not None:
        protected.add(newest_verified["id"])
        newer = []
        for m in pool:
            if m["id"] == newest_verified["id"]:
                break
            newer.append(m["id"])
        protected.update(newer[:retention_count] if retention_count is not None else newer)
    else:
        protected = {m["id"] for m in pool}  # nothing verified yet: delete nothing
    removals = []
    for index, manifest in enumerate(pool):
        if manifest["id"] in protected:
            continue
        by_count = retention_count is not None and index >= retention_count
        age_days = None
        stop = parse_iso(manifest.get("stop_time"))
        if stop is not None:
            age_days = (now - stop).total_seconds() / 86400.0
        by_age = retention_days is not None and age_days is not None and age_days > retention_days
        if retention_count is not None and retention_days is not None:
            remove = by_count and by_age
        else:
            remove = by_count or by_age
        if remove:
            reason = []
            if by_count:
                reason.append("beyond the newest %d" % retention_count)
            if by_age:
                reason.append("older than %s days (%.1f)" % (retention_days, age_days))
            removals.append((manifest["id"], " and ".join(reason)))
    return removals
