# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Everything read back from storage is untrusted input: the one home of its checks.

A manifest, a ledger entry, a snapshot listing or a tar member may have been written by anyone who
could write to the bucket or the backup directory. Before any download, extraction, restore or
deletion, what came from there is checked here: ids against an allow-list, relative paths that cannot
leave their root (no ``..``, no absolute names, no symlinked parent), JSON of a bounded size and the
expected shape, tar members that stay inside the target (no links outside, no devices). Every refusal
names what was wrong and where it came from; a reader of many manifests skips a bad one (``skip``)
and reports it, so one malformed manifest never blocks the others nor is trusted.

Standard library only, importable without Ansible running.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import stat as st
import tarfile

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
ID_RULE = "letters, digits, '.', '_' or '-', 1 to 128 characters, not '.' or '..'"
MAX_PATH = 4096
MAX_MANIFEST_BYTES = 8 * 1024 * 1024            # a ledger manifest (a few files): far below this
MAX_SNAPSHOT_MANIFEST_BYTES = 256 * 1024 * 1024  # a snapshot manifest lists every file of a tree (~1M files)
MAX_SMALL_JSON_BYTES = 1024 * 1024              # locks, markers
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
MODE_RE = re.compile(r"^[0-7]{3,4}$")
MANIFEST_NAME = "manifest.json"   # ledger.MANIFEST (ledger imports this module)


class Untrusted(FediflowError):
    """Something read from storage failed its check: refused before it was used."""


def _refuse(where, what):
    raise Untrusted("%s: %s; refused (nothing was downloaded, extracted, restored or deleted for it)" % (where, what))


# ---------------------------------------------------------------- ids and paths

def check_id(value, where, what="backup id"):
    """``value`` when it is an id that can name a directory or a key part of its own; refuses otherwise."""
    if not isinstance(value, str) or not ID_RE.match(value) or value in (".", ".."):
        _refuse(where, "%s %s is not an id (%s)" % (what, _show(value), ID_RULE))
    return value


def is_id(value):
    return isinstance(value, str) and bool(ID_RE.match(value)) and value not in (".", "..")


def check_relpath(value, where, what="path"):
    """A relative path (``a/b/c``) that cannot leave the directory it is joined to: no absolute name, no
    empty, ``.`` or ``..`` part, no NUL, bounded length. Returns it."""
    if not isinstance(value, str) or not value:
        _refuse(where, "%s %s is not a relative path" % (what, _show(value)))
    if len(value) > MAX_PATH or "\0" in value:
        _refuse(where, "%s %s is too long or holds a NUL byte" % (what, _show(value)))
    if value.startswith("/"):
        _refuse(where, "%s %s is absolute" % (what, _show(value)))
    if any(part in ("", ".", "..") for part in value.split("/")):
        _refuse(where, "%s %s has an empty, '.' or '..' part" % (what, _show(value)))
    return value


def contained(root, rel, where, what="path"):
    """``root/rel`` after checking ``rel`` (``check_relpath``) and that no directory between ``root`` and it
    is a symlink or anything but a directory (what exists of it): writing there cannot land outside ``root``."""
    check_relpath(rel, where, what)
    parts = rel.split("/")
    current = root
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            break
        if st.S_ISLNK(info.st_mode):
            _refuse(where, "%s %s: %s is a symlink in the target directory (a write would follow it out of %s)"
                    % (what, _show(rel), current, root))
        if not st.S_ISDIR(info.st_mode):
            _refuse(where, "%s %s: %s is not a directory" % (what, _show(rel), current))
    full = os.path.join(root, rel)
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(os.path.dirname(full))
    if real_parent != real_root and not real_parent.startswith(real_root.rstrip("/") + "/"):
        _refuse(where, "%s %s resolves outside %s" % (what, _show(rel), root))
    return full


def open_dir_under(root, rel_dir, where):
    """A file descriptor of the directory ``root/rel_dir`` opened one part at a time without following any
    symlink (``O_NOFOLLOW``): what is created through it stays under ``root`` even if the tree changes
    meanwhile. ``rel_dir`` '' or '.' is ``root`` itself. The caller closes it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    if rel_dir in ("", "."):
        return fd
    check_relpath(rel_dir, where, "directory")
    try:
        for part in rel_dir.split("/"):
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                _refuse(where, "directory %s under %s cannot be entered without following a symlink (%s)"
                        % (_show(rel_dir), root, exc.strerror))
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


# ---------------------------------------------------------------- JSON of a bounded size

def load_json(data, where, limit=MAX_MANIFEST_BYTES):
    """A JSON object from ``data`` (bytes or str) of at most ``limit`` bytes."""
    if len(data) > limit:
        _refuse(where, "%d bytes, more than the %d a manifest may have" % (len(data), limit))
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        _refuse(where, "not valid JSON (%s)" % str(exc).splitlines()[0][:200])
    if not isinstance(value, dict):
        _refuse(where, "not a JSON object")
    return value


def read_json_file(path, limit=MAX_MANIFEST_BYTES):
    """A JSON object from a local file, never through a symlink, read up to ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        if not st.S_ISREG(os.fstat(handle.fileno()).st_mode):
            _refuse(path, "not a regular file")
        data = handle.read(limit + 1)
    return load_json(data, path, limit)


def check_size(length, where, limit=MAX_MANIFEST_BYTES):
    """Refuse an object whose listed size (or ContentLength) is over ``limit``, before reading it."""
    if length is not None and length > limit:
        _refuse(where, "%d bytes, more than the %d a manifest may have" % (length, limit))


def read_body(body, where, limit=MAX_MANIFEST_BYTES, length=None):
    """At most ``limit`` bytes of a stream (an S3 object body); ``length`` (its ContentLength) refuses a
    too large one before reading it."""
    check_size(length, where, limit)
    return body.read(limit + 1)


# ---------------------------------------------------------------- manifests

def _show(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _time(manifest, key, where):
    value = manifest.get(key)
    if value is None:
        return
    if not isinstance(value, str):
        _refuse(where, "%s %s is not a timestamp" % (key, _show(value)))
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _refuse(where, "%s %s is not an ISO 8601 timestamp" % (key, _show(value)))


def _optional(manifest, key, kind, where):
    value = manifest.get(key)
    if value is not None and not isinstance(value, kind):
        _refuse(where, "%s is not a %s" % (key, {dict: "mapping", list: "list", str: "string"}[kind]))
    return value


def _entries(manifest, key, where):
    items = manifest.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
        _refuse(where, "%s is not a list of entries" % key)
    return items


def backup_manifest(manifest, where, expected_id=None):
    """A ledger manifest (database, cache backup) fit to use: its id an id (and the name it was found under,
    ``expected_id``), times and LSNs readable, every file a safe relative path listed once with a size and a
    sha256. Returns it; refuses naming the field and ``where``."""
    if not isinstance(manifest, dict):
        _refuse(where, "not a JSON object")
    check_id(manifest.get("id"), where)
    if expected_id is not None and manifest["id"] != expected_id:
        _refuse(where, "its id %s is not the name it is stored under (%s)" % (_show(manifest["id"]), expected_id))
    if manifest.get("kind") is not None and (not isinstance(manifest["kind"], str) or not manifest["kind"]):
        _refuse(where, "kind %s is not a backup kind" % _show(manifest.get("kind")))
    for key in ("start_time", "stop_time"):
        _time(manifest, key, where)
    for key in ("start_lsn", "stop_lsn"):
        value = manifest.get(key)
        if value is not None and not (isinstance(value, str) and LSN_RE.match(value)):
            _refuse(where, "%s %s is not an LSN" % (key, _show(value)))
    for key in ("verification", "source", "tags"):
        _optional(manifest, key, dict, where)
    for key in ("region", "cluster"):
        _optional(manifest, key, str, where)
    source = manifest.get("source") or {}
    if source.get("timeline") is not None and not _int(source["timeline"]):
        _refuse(where, "source.timeline %s is not a timeline" % _show(source["timeline"]))
    _files(_entries(manifest, "files", where), where, set())
    return manifest


def _files(entries, where, seen):
    for entry in entries:
        path = check_relpath(entry.get("path"), where, "file path")
        if path in seen:
            _refuse(where, "path %s is listed twice" % _show(path))
        seen.add(path)
        if path == MANIFEST_NAME:
            _refuse(where, "a file is listed as %s (the manifest itself)" % MANIFEST_NAME)
        if not _int(entry.get("size")):
            _refuse(where, "file %s has no valid size (%s)" % (_show(path), _show(entry.get("size"))))
        if not isinstance(entry.get("sha256"), str) or not SHA256_RE.match(entry["sha256"]):
            _refuse(where, "file %s has no valid sha256 (%s)" % (_show(path), _show(entry.get("sha256"))))


def snapshot_manifest(manifest, where, expected_id=None):
    """A snapshot manifest fit to restore from: ``backup_manifest``'s id and time checks, every file,
    directory and symlink a safe relative path listed once, each below a directory of the snapshot (never
    below one of its symlinks or files: a restore would write through it), modes, times, owners numbers."""
    if not isinstance(manifest, dict):
        _refuse(where, "not a JSON object")
    check_id(manifest.get("id"), where, "snapshot id")
    if expected_id is not None and manifest["id"] != expected_id:
        _refuse(where, "its id %s is not the name it is stored under (%s)" % (_show(manifest["id"]), expected_id))
    for key in ("start_time", "stop_time"):
        _time(manifest, key, where)
    _optional(manifest, "source", dict, where)
    files, dirs, links = (_entries(manifest, key, where) for key in ("files", "dirs", "symlinks"))
    seen, dir_paths = set(), {"."}
    _files(files, where, seen)
    for entry in dirs:
        path = entry.get("path")
        if path != ".":
            check_relpath(path, where, "directory")
            if path in seen:
                _refuse(where, "path %s is listed twice" % _show(path))
            seen.add(path)
        dir_paths.add(path)
        _meta(entry, where, path)
    for entry in links:
        path = check_relpath(entry.get("path"), where, "symlink")
        if path in seen:
            _refuse(where, "path %s is listed twice" % _show(path))
        seen.add(path)
        target = entry.get("target")
        if not isinstance(target, str) or not target or "\0" in target or len(target) > MAX_PATH:
            _refuse(where, "symlink %s has no valid target" % _show(path))
        _owner(entry, where, path)
    for entry in files:
        _meta(entry, where, entry["path"])
    for entry in files + dirs + links:
        path = entry["path"]
        if path == ".":
            continue
        parent = path.rsplit("/", 1)[0] if "/" in path else "."
        if parent not in dir_paths:
            _refuse(where, "%s lies below %s, which is not a directory of the snapshot (a restore would write "
                    "through it)" % (_show(path), _show(parent)))
    return manifest


def _owner(entry, where, path):
    for key in ("uid", "gid"):
        if entry.get(key) is not None and not _int(entry[key]):
            _refuse(where, "%s of %s is not a number" % (key, _show(path)))


def _meta(entry, where, path):
    if not isinstance(entry.get("mode"), str) or not MODE_RE.match(entry["mode"]):
        _refuse(where, "mode of %s is not an octal mode (%s)" % (_show(path), _show(entry.get("mode"))))
    if not _int(entry.get("mtime_ns")):
        _refuse(where, "mtime_ns of %s is not a number" % _show(path))
    _owner(entry, where, path)


def skip(skipped, where, exc):
    """Record a manifest that failed its check (``skipped``: a list, or None to drop it silently)."""
    if skipped is not None:
        skipped.append({"where": where, "error": getattr(exc, "message", None) or str(exc)})


def warnings_for(skipped):
    """One warning line per skipped manifest (module results)."""
    return ["malformed manifest skipped, not trusted: %s" % item["error"] for item in skipped or []]


# ---------------------------------------------------------------- tar archives

def check_tar_member(member, where, links=None):
    """Refuse a member that could land outside the directory it is extracted into or that is no plain data:
    an absolute name or one with '..', a symlink or hard link to an absolute path or with '..' in its target,
    a device, FIFO or anything but a file, directory or link; with ``links`` (names of the symlinks seen so
    far), a member below one of them (it would be written through the link). Returns the member."""
    name = member.name
    label = "%s member %s" % (where, _show(name))
    parts = name.rstrip("/").split("/")
    if not name or "\0" in name or name.startswith("/") or ".." in parts:
        _refuse(label, "an absolute name or one with '..'")
    if links:
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in links:
                _refuse(label, "below the symlink %s of the same archive (it would be written through it)"
                        % _show("/".join(parts[:depth])))
    if member.isfile() and member.mode & 0o6000:
        _refuse(label, "a file with setuid or setgid bits")
    if member.isfile() or member.isdir():
        return member
    if not (member.issym() or member.islnk()):
        _refuse(label, "a device, FIFO or other special file")
    kind = "symlink" if member.issym() else "hard link"
    target = member.linkname
    if not target or target.startswith("/") or "\0" in target:
        _refuse(label, "a %s to an absolute path %s" % (kind, _show(target)))
    if ".." in target.split("/"):
        _refuse(label, "a %s with '..' in its target %s (it could point outside the target directory)"
                % (kind, _show(target)))
    return member


def tar_filter(where):
    """An extraction filter for ``TarFile.extractall``: ``check_tar_member``, then Python's ``data`` filter
    (modes of plain data, no owners; it also refuses whatever escapes by a path resolved on disk)."""
    links = set()

    def check(member, path):
        check_tar_member(member, where, links)
        if member.issym():
            links.add(member.name.rstrip("/"))
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError as exc:
            _refuse("%s member %s" % (where, _show(member.name)), str(exc))
    return check


def checked_members(members, where):
    """The members of an archive (an iterable of TarInfo), each checked (``check_tar_member``, names below a
    symlink of the archive, a name listed twice) as it is reached."""
    seen, links = set(), set()
    for member in members:
        check_tar_member(member, where, links)
        name = member.name.rstrip("/")
        if name in seen and not member.isdir():
            _refuse("%s member %s" % (where, _show(member.name)), "listed twice")
        seen.add(name)
        if member.issym():
            links.add(name)
        yield member


def check_tar(members, where):
    """Every member of an archive checked before anything is extracted; returns how many."""
    return sum(1 for _member in checked_members(members, where))
