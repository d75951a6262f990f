# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time snapshots of a directory tree in S3 (the ``s3_snapshot`` module).

Layout under ``s3://<bucket>/<prefix>/``::

    objects/ab/abcdef...   every distinct file content once, named by its sha256
    snapshots/<id>.json    a snapshot's manifest (its ledger entry), written last
    locks/<run>.json       runs writing: snapshots share, garbage collection is exclusive

A snapshot exists when, and only when, its manifest exists. Objects are uploaded (and
checked) before the manifest, so a run killed half-way leaves only unreferenced objects,
which the next run reuses and garbage collection removes. Retention deletes manifests
first and objects no kept manifest references after that, never before.

The planning parts (what changed, what to keep, what to delete) are pure functions of
plain data, so they are unit-tested without S3.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import hashlib
import json
import os
import re
import secrets
import socket
import stat as st
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.fediflow.dr.plugins.module_utils import atomic, aws, ledger, repos as repositories, untrusted
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer
from ansible_collections.fediflow.dr.plugins.module_utils.s3store import S3Backups

FORMAT = "fediflow.dr/snapshot"
FORMAT_VERSION = 1
STATES = ("present", "restored", "absent", "verified")
KEEP_COUNTS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly")
CHUNK = 1024 * 1024
HEAD_LIMIT = 256            # up to this many objects to check: HEAD each; more: one listing
RACY_NS = 100 * 1000 * 1000            # timestamps from the kernel's coarse clock
COARSE_RACY_NS = 2 * 1000 * 1000 * 1000  # filesystems with whole-second timestamps
LOCK_STALE_S = 24 * 3600
DIFF_LINES = 1000
ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
ID_TIME_RE = re.compile(r"^(\d{8}T\d{6}Z)-")
DURATION_RE = re.compile(r"(\d+)([wdhms])")
UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
UTC = datetime.timezone.utc


# ---------------------------------------------------------------- input (pure)

def parse_duration(text, option="keep_within"):
    """``7d``, ``12h``, ``1w2d``, ``90m`` (minutes), ``30s`` -> timedelta."""
    value = str(text or "").strip().lower()
    if not value or DURATION_RE.sub("", value):
        raise FediflowError("%s must be a duration such as 7d, 12h or 1w2d (w, d, h, m=minutes, s), got '%s'"
                            % (option, text))
    seconds = sum(int(n) * UNITS[u] for n, u in DURATION_RE.findall(value))
    if seconds <= 0:
        raise FediflowError("%s must be longer than 0, got '%s'" % (option, text))
    return datetime.timedelta(seconds=seconds)


def parse_before(text):
    """An ISO 8601 timestamp with a time zone -> aware datetime."""
    try:
        when = datetime.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise FediflowError("before must be an ISO 8601 timestamp with a time zone, such as "
                            "2026-11-25T14:30:00+00:00, got '%s'" % text)
    if when.tzinfo is None:
        raise FediflowError("before '%s' has no time zone; add one (Z or +01:00)" % text)
    return when


def validate(params):
    """Refuse bad input before anything is touched; returns the normalized parameters."""
    p = dict(params)
    p["state"] = p.get("state") or "present"
    if p["state"] not in STATES:
        raise FediflowError("state must be one of %s, got '%s'" % (", ".join(STATES), p["state"]))
    if not p.get("s3_bucket") and not p.get("repositories"):
        raise FediflowError("s3_bucket or repositories is required")
    p["s3_prefix"] = (p.get("s3_prefix") or "").strip("/")
    p["repos"] = repositories.normalize(p)
    p["copies_required"] = repositories.required(p, p["repos"])
    parallel = 4 if p.get("parallel") is None else p["parallel"]
    if not 1 <= parallel <= 64:
        raise FediflowError("parallel must be between 1 and 64, got %s" % parallel)
    p["parallel"] = parallel
    threshold = 64 if p.get("multipart_threshold_mb") is None else p["multipart_threshold_mb"]
    if threshold < 5:
        raise FediflowError("multipart_threshold_mb must be at least 5 (the S3 minimum part size), got %s" % threshold)
    p["multipart_threshold_mb"] = threshold
    for option in KEEP_COUNTS:
        if p.get(option) is not None and p[option] < 1:
            raise FediflowError("%s must be at least 1, got %s (%s=0 would remove every snapshot)"
                                % (option, p[option], option))
    p["keep_within_td"] = parse_duration(p["keep_within"]) if p.get("keep_within") else None
    p["before_dt"] = parse_before(p["before"]) if p.get("before") else None
    sid = p.get("snapshot_id")
    if sid and sid != "latest" and not ID_RE.match(sid):
        raise FediflowError("snapshot_id '%s' is not a snapshot id (letters, digits, '.', '_', '-')" % sid)
    if sid and p["before_dt"] is not None:
        raise FediflowError("snapshot_id and before are mutually exclusive")
    p["exclude"] = [str(x) for x in (p.get("exclude") or [])]
    if p.get("s3_kms_key_id") and p.get("s3_sse") != "aws:kms":
        raise FediflowError("s3_kms_key_id needs s3_sse: aws:kms")
    p["retention"] = any(p.get(o) is not None for o in KEEP_COUNTS) or p["keep_within_td"] is not None
    if p["state"] == "present":
        src = p.get("src")
        if not src:
            raise FediflowError("src is required with state=present")
        if not os.path.isabs(src):
            raise FediflowError("src must be an absolute path, got '%s'" % src)
        if not os.path.isdir(src):
            raise FediflowError("src '%s' %s" % (src, "is not a directory" if os.path.exists(src) else "does not exist"))
        if sid or p["before_dt"]:
            raise FediflowError("snapshot_id and before select a snapshot to restore, verify or remove; "
                                "state=present takes a new one")
    elif p["state"] == "restored":
        dest = p.get("dest")
        if not dest or not os.path.isabs(dest):
            raise FediflowError("dest must be an absolute directory path with state=restored, got '%s'" % dest)
        if os.path.lexists(dest) and not os.path.isdir(dest):
            raise FediflowError("dest '%s' exists and is not a directory" % dest)
    elif p["state"] == "absent":
        if sid == "latest" or p["before_dt"] is not None:
            raise FediflowError("state=absent removes one snapshot by its exact snapshot_id, not 'latest' or before")
        if not sid and not p["retention"]:
            raise FediflowError("state=absent needs snapshot_id or a retention option "
                                "(keep_last, keep_within, keep_hourly, keep_daily, keep_weekly)")
    return p


def excluded(rel, patterns):
    """rsync-like: a pattern holding '/' (or starting with it) matches the path relative to
    the tree's root, one without matches a file or directory name at any depth."""
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        anchored = pattern.startswith("/")
        pattern = pattern.strip("/")
        if anchored or "/" in pattern:
            if fnmatch.fnmatchcase(rel, pattern):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


# ---------------------------------------------------------------- change detection (pure)

def stat_key(entry):
    return (entry.get("size"), entry.get("mtime_ns"), entry.get("ctime_ns"), entry.get("ino"))


def is_racy(entry, scan_start_ns):
    """Changed within the timestamp granularity before the scan that recorded it (git's
    'racily clean'): a later edit in the same clock tick would keep every timestamp."""
    if not scan_start_ns:
        return True
    window = COARSE_RACY_NS if entry.get("ctime_ns", 0) % 1000000000 == 0 else RACY_NS
    return max(entry.get("ctime_ns") or 0, entry.get("mtime_ns") or 0) >= scan_start_ns - window


def needs_hash(current, previous, scan_start_ns, force_hash=False):
    """Re-read a file unless size, mtime, ctime and inode all match what the previous snapshot
    recorded (as git and restic do): ``utime`` can put back an mtime, never a ctime."""
    if force_hash or not previous or not previous.get("sha256"):
        return True
    if stat_key(current) != stat_key(previous):
        return True
    return is_racy(previous, scan_start_ns)


# ---------------------------------------------------------------- manifests (pure)

def _identity(entry, kind):
    if kind == "file":
        return ("file", entry["size"], entry["mode"], entry["mtime_ns"], entry["sha256"],
                entry.get("uid"), entry.get("gid"))
    if kind == "symlink":
        return ("symlink", entry["target"], entry.get("uid"), entry.get("gid"))
    return ("dir", entry["mode"], entry.get("uid"), entry.get("gid"))


def entry_map(manifest):
    """{path: identity} over files, symlinks and directories (directories end in '/')."""
    out = {}
    if not manifest:
        return out
    for entry in manifest.get("files", []):
        out[entry["path"]] = _identity(entry, "file")
    for entry in manifest.get("symlinks", []):
        out[entry["path"]] = _identity(entry, "symlink")
    for entry in manifest.get("dirs", []):
        out[entry["path"] + "/"] = _identity(entry, "dir")
    return out


def diff_manifests(old, new):
    """Paths added, changed (content, mode, mtime, owner, link target) and removed.

    A directory's mtime is recorded and restored but not compared: it moves whenever a
    file inside is added or removed, which the file entries already say."""
    before, after = entry_map(old), entry_map(new)
    return {
        "added": sorted(p for p in after if p not in before),
        "changed": sorted(p for p in after if p in before and before[p] != after[p]),
        "removed": sorted(p for p in before if p not in after),
    }


def diff_text(changes, limit=DIFF_LINES):
    lines = ["+ %s" % p for p in changes["added"]] + ["~ %s" % p for p in changes["changed"]] + \
        ["- %s" % p for p in changes["removed"]]
    if len(lines) > limit:
        lines = lines[:limit] + ["... and %d more" % (len(lines) - limit)]
    return "\n".join(lines) + ("\n" if lines else "")


def totals(files):
    unique = {}
    for entry in files:
        unique[entry["sha256"]] = entry["size"]
    return {"files": len(files), "bytes": sum(e["size"] for e in files),
            "unique_objects": len(unique), "unique_bytes": sum(unique.values())}


def id_time(snapshot_id):
    match = ID_TIME_RE.match(snapshot_id or "")
    if not match:
        return None
    return datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def snapshot_time(manifest):
    return ledger.parse_iso(manifest.get("stop_time")) or id_time(manifest.get("id"))


def before_candidates(ids, before):
    """Ids that may have stopped before ``before``, newest first (ids start with their stop
    second, so the manifest confirms the exact time)."""
    timed = [(id_time(i), i) for i in ids]
    return [i for t, i in sorted(((t, i) for t, i in timed if t is not None), reverse=True) if t < before]


# ---------------------------------------------------------------- retention (pure)

def plan_retention(snapshots, keep_last=None, keep_within=None, keep_hourly=None,
                   keep_daily=None, keep_weekly=None):
    """restic's ``forget`` policy over ``[{'id', 'time'}]`` (aware datetimes).

    Returns ``(keep, remove)``: ``keep`` maps each kept id to its reasons, ``remove`` lists
    the others newest first. ``keep_within`` counts back from the newest snapshot (not from
    now), and ``keep_hourly/daily/weekly: N`` keeps the newest snapshot of each of the last
    N hours/days/ISO weeks (UTC) that have a snapshot, so a pause in backups never makes
    retention eat the last good ones. No policy keeps everything; the newest is always kept.
    """
    ordered = sorted(snapshots, key=lambda s: (s["time"], s["id"]), reverse=True)
    keep = {}
    if not ordered:
        return keep, []

    def mark(snap, reason):
        keep.setdefault(snap["id"], []).append(reason)

    if keep_last is None and keep_within is None and not (keep_hourly or keep_daily or keep_weekly):
        return {s["id"]: ["no retention policy"] for s in ordered}, []
    newest = ordered[0]["time"]
    for index, snap in enumerate(ordered):
        if keep_last is not None and index < keep_last:
            mark(snap, "last %d" % keep_last)
        if keep_within is not None and snap["time"] >= newest - keep_within:
            mark(snap, "within %s of the newest" % keep_within)
    buckets = (
        (keep_hourly, "hourly", lambda t: t.strftime("%Y-%m-%d %H:00")),
        (keep_daily, "daily", lambda t: t.strftime("%Y-%m-%d")),
        (keep_weekly, "weekly", lambda t: "%04d-W%02d" % tuple(t.isocalendar())[:2]),
    )
    for count, name, bucket_of in buckets:
        if not count:
            continue
        seen = set()
        for snap in ordered:
            bucket = bucket_of(snap["time"].astimezone(UTC))
            if bucket in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(bucket)
            mark(snap, "%s %s" % (name, bucket))
    if ordered[0]["id"] not in keep:
        mark(ordered[0], "newest")
    return keep, [s["id"] for s in ordered if s["id"] not in keep]


def unreferenced(objects, manifests):
    """Object digests no manifest references (the garbage)."""
    referenced = set()
    for manifest in manifests:
        referenced.update(e["sha256"] for e in manifest.get("files", []))
    return sorted(set(objects) - referenced)


def lock_is_stale(lock, now, host, pid_alive):
    """A lock of a process gone from this host, or older than a day, no longer counts."""
    if lock.get("host") == host and lock.get("pid") and not pid_alive(lock["pid"]):
        return True
    taken = ledger.parse_iso(lock.get("time"))
    return taken is None or (now - taken).total_seconds() > LOCK_STALE_S


def pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


# ---------------------------------------------------------------- the local tree

def _owner(entry, info):
    entry["uid"] = info.st_uid
    entry["gid"] = info.st_gid
    return entry


def file_entry(rel, info):
    return _owner({"path": rel, "size": info.st_size, "mode": "%04o" % st.S_IMODE(info.st_mode),
                   "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns, "ino": info.st_ino}, info)


def dir_entry(rel, info):
    return _owner({"path": rel, "mode": "%04o" % st.S_IMODE(info.st_mode), "mtime_ns": info.st_mtime_ns}, info)


def _kind(mode):
    for test, name in ((st.S_ISFIFO, "fifo"), (st.S_ISSOCK, "socket"), (st.S_ISCHR, "char device"),
                       (st.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "other"


def scan_tree(root, exclude=(), label="src"):
    """Walk ``root`` without following symlinks: files (with stat), dirs (empty ones too, '.'
    is the root), symlinks (target only) and skipped special files, each sorted by path."""
    files, dirs, links, skipped = [], [dir_entry(".", os.lstat(root))], [], []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        full_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            with os.scandir(full_dir) as listing:
                items = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            raise FediflowError("cannot read directory %s under %s: %s" % (full_dir, label, exc.strerror))
        for item in items:
            rel = "%s/%s" % (rel_dir, item.name) if rel_dir else item.name
            if excluded(rel, exclude):
                continue
            try:
                info = item.stat(follow_symlinks=False)
                if st.S_ISDIR(info.st_mode):
                    dirs.append(dir_entry(rel, info))
                    stack.append(rel)
                elif st.S_ISREG(info.st_mode):
                    files.append(file_entry(rel, info))
                elif st.S_ISLNK(info.st_mode):
                    links.append(_owner({"path": rel, "target": os.readlink(item.path)}, info))
                else:
                    skipped.append({"path": rel, "type": _kind(info.st_mode)})
            except FileNotFoundError:
                continue  # removed while we walked: not part of this snapshot
            except OSError as exc:
                raise FediflowError("cannot read %s under %s: %s" % (item.path, label, exc.strerror))
    for entries in (files, dirs, links):
        entries.sort(key=lambda e: e["path"])
    return files, dirs, links, skipped


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def _read_file(full):
    """All bytes of a regular file, never through a symlink swapped in after the scan."""
    try:
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise FediflowError("cannot read %s: %s" % (full, exc.strerror))
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _hash_file(full):
    try:
        return ledger.sha256_file(full)
    except OSError as exc:
        raise FediflowError("cannot read %s: %s" % (full, exc.strerror))


def parallel_map(func, items, workers):
    """Run ``func`` over ``items`` on ``workers`` threads; the first failure stops the rest and
    is raised (in submission order, so the message names the first bad item)."""
    stop = threading.Event()
    results = []

    def guarded(item):
        if stop.is_set():
            return None
        try:
            return func(item)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(guarded, item) for item in items]
    error = None
    for future in futures:
        try:
            results.append(future.result())
        except FediflowError as exc:
            error = error or exc
    if error is not None:
        raise error
    return results


# ---------------------------------------------------------------- the S3 repository

class SnapshotRepo(S3Backups):
    """The content-addressed layout on top of the backups store's client and error handling."""

    def __init__(self, p, bucket=None, prefix=None):
        super().__init__(p, bucket or p["s3_bucket"], p["s3_prefix"] if prefix is None else prefix)
        self.skipped = {}   # where -> why: snapshot names and manifests that failed their check (untrusted)
        from boto3.s3.transfer import TransferConfig  # pylint: disable=import-outside-toplevel
        threshold = p["multipart_threshold_mb"] * 1024 * 1024
        self.threshold = threshold
        self.transfer = TransferConfig(multipart_threshold=threshold, multipart_chunksize=threshold,
                                       max_concurrency=min(p["parallel"], 10))
        self.sse = {"ServerSideEncryption": p.get("s3_sse") or "AES256"}
        if p.get("s3_kms_key_id"):
            self.sse["SSEKMSKeyId"] = p["s3_kms_key_id"]
        self.extra = dict(self.sse)   # objects; manifests and locks stay STANDARD, always readable
        if p.get("s3_storage_class"):
            self.extra["StorageClass"] = p["s3_storage_class"]

    def path(self, *parts):
        return "/".join(x for x in (self.prefix,) + parts if x)

    def object_key(self, digest):
        return self.path("objects", digest[:2], digest)

    def manifest_key(self, snapshot_id):
        return self.path("snapshots", snapshot_id + ".json")

    def url(self, key):
        return "s3://%s/%s" % (self.bucket, key)

    def listing(self, sub):
        """(name below ``<prefix>/<sub>/``, size, last modified) of every object, paginated."""
        prefix = self.path(sub) + "/"
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(prefix):], obj["Size"], obj.get("LastModified")
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            if code == "NoSuchBucket":
                raise FediflowError("s3_bucket '%s' does not exist" % self.bucket)
            raise FediflowError("listing %s failed: %s: %s" % (self.url(prefix), code, message))

    def objects(self):
        return {name.rsplit("/", 1)[-1]: size for name, size, _t in self.listing("objects")}

    def snapshot_ids(self):
        """The ids of the snapshot manifests listed; a name that is no id (``..``, empty) is left out and
        recorded in ``skipped``: it never names a key or a ledger directory to delete."""
        ids = []
        for name, size, _t in self.listing("snapshots"):
            if not name.endswith(".json") or "/" in name:
                continue
            where = self.url(self.path("snapshots", name))
            if not untrusted.is_id(name[:-5]):
                self.skip(where, "snapshot id %r is not an id (%s)" % (name[:-5], untrusted.ID_RULE))
                continue
            if size > untrusted.MAX_SNAPSHOT_MANIFEST_BYTES:
                self.skip(where, "%d bytes, more than a snapshot manifest may have" % size)
                continue
            ids.append(name[:-5])
        return sorted(ids)

    def skip(self, where, why):
        self.skipped.setdefault(where, getattr(why, "message", None) or str(why))

    def get_json(self, key, limit=untrusted.MAX_SMALL_JSON_BYTES):
        got = self._call("GET", self.client.get_object, Bucket=self.bucket, Key=key)
        body = untrusted.read_body(got["Body"], self.url(key), limit, got.get("ContentLength"))
        return untrusted.load_json(body, self.url(key), limit)

    def manifest(self, snapshot_id):
        """A snapshot's manifest, checked as untrusted input (``untrusted.snapshot_manifest``): raises
        ``untrusted.Untrusted`` naming the key when it is malformed."""
        key = self.manifest_key(untrusted.check_id(snapshot_id, self.url(self.path("snapshots")), "snapshot id"))
        data = self.get_json(key, untrusted.MAX_SNAPSHOT_MANIFEST_BYTES)
        return untrusted.snapshot_manifest(data, self.url(key), snapshot_id)

    def good_manifest(self, snapshot_id):
        """``manifest`` or None when it is malformed (then recorded in ``skipped``)."""
        try:
            return self.manifest(snapshot_id)
        except untrusted.Untrusted as exc:
            self.skip(self.url(self.manifest_key(snapshot_id)), exc)
            return None

    def put_json(self, key, data):
        body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
        self._call("PUT", self.client.put_object, Bucket=self.bucket, Key=key, Body=body,
                   ContentType="application/json", ChecksumAlgorithm="SHA256", **self.sse)

    def head_key(self, key):
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise FediflowError("S3 HEAD failed for %s: %s: %s" % (self.url(key), code, message))

    def head(self, digest):
        return self.head_key(self.object_key(digest))

    def put_small(self, digest, data):
        checksum = base64.b64encode(bytes.fromhex(digest)).decode("ascii")
        resp = self._call("PUT", self.client.put_object, Bucket=self.bucket, Key=self.object_key(digest),
                          Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum, Metadata={"sha256": digest}, **self.extra)
        if resp.get("ChecksumSHA256") not in (None, checksum):
            raise FediflowError("S3 stored %s with another SHA-256 than was sent" % self.url(self.object_key(digest)))

    def upload_large(self, full, digest):
        args = dict(self.extra, Metadata={"sha256": digest}, ChecksumAlgorithm="SHA256")
        try:
            self.client.upload_file(full, self.bucket, self.object_key(digest), ExtraArgs=args, Config=self.transfer)
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            raise FediflowError("upload of %s to %s failed: %s: %s"
                                % (full, self.url(self.object_key(digest)), code, message))

    def stream(self, digest, label):
        key = self.object_key(digest)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            yield from iter(lambda: body.read(CHUNK), b"")
        except FediflowError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            raise FediflowError("download of %s from %s failed: %s: %s" % (label, self.url(key), code, message))

    def delete_keys(self, keys):
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            resp = self._call("DELETE", self.client.delete_objects, Bucket=self.bucket,
                              Delete={"Objects": batch, "Quiet": True})
            if resp.get("Errors"):
                err = resp["Errors"][0]
                raise FediflowError("S3 DELETE of %s failed: %s: %s"
                                    % (self.url(err.get("Key", "")), err.get("Code"), err.get("Message")))

    # locks: snapshots share the repository; garbage collection needs it alone
    def take_lock(self, run_id, exclusive):
        lock = {"run": run_id, "exclusive": exclusive, "host": socket.gethostname(), "pid": os.getpid(),
                "time": ledger.iso(ledger.utcnow())}
        self.put_json(self.path("locks", run_id + ".json"), lock)
        return lock

    def other_locks(self, run_ids):
        """(fresh, stale) locks of other runs."""
        fresh, stale = [], []
        now, host = ledger.utcnow(), socket.gethostname()
        for name, _size, _t in self.listing("locks"):
            run = name[:-5]
            if not name.endswith(".json") or run in run_ids or "/" in name:
                continue
            try:
                lock = self.get_json(self.path("locks", name))
            except untrusted.Untrusted:
                lock = {"time": None}   # unreadable: stale, removed by the name it was listed under
            except FediflowError:
                continue  # released while we looked
            lock["run"] = run   # the key listed, never a name read from the lock (it could name another key)
            (stale if lock_is_stale(lock, now, host, pid_alive) else fresh).append(lock)
        return fresh, stale

    def release(self, run_ids):
        self.delete_keys(self.path("locks", r + ".json") for r in run_ids)


# ---------------------------------------------------------------- state=present

class _Uploader:
    """Hash files and store each distinct content once (thread-safe bookkeeping)."""

    def __init__(self, repo, src, known, check_mode):
        self.repo, self.src, self.check_mode = repo, src, check_mode
        self.known = known          # {digest: size} from a listing, or None (HEAD on demand)
        self.claimed = {}           # digest -> 'exists' | 'upload'
        self.sizes = {}
        self.lock = threading.Lock()

    def _claim(self, digest, size):
        with self.lock:
            if digest in self.claimed:
                return None
            self.claimed[digest] = None
            self.sizes[digest] = size
        if self.known is not None:
            exists = digest in self.known
        else:
            exists = self.repo.head(digest) is not None
        with self.lock:
            self.claimed[digest] = "exists" if exists else "upload"
        return not exists

    def store(self, entry):
        full = os.path.join(self.src, entry["path"])
        if entry["size"] < self.repo.threshold:
            data = _read_file(full)
            entry["size"] = len(data)
            entry["sha256"] = sha256_bytes(data)
            if self._claim(entry["sha256"], entry["size"]) and not self.check_mode:
                self.repo.put_small(entry["sha256"], data)
            return
        entry["sha256"] = _hash_file(full)
        if self._claim(entry["sha256"], entry["size"]) and not self.check_mode:
            self.repo.upload_large(full, entry["sha256"])
            try:
                now = file_entry(entry["path"], os.lstat(full))
            except OSError:
                now = {}
            if stat_key(now) != stat_key(entry):
                self.repo.delete_keys([self.repo.object_key(entry["sha256"])])
                raise FediflowError("%s changed while it was being snapshotted; run again" % full)

    def uploaded(self):
        return {d: self.sizes[d] for d, how in self.claimed.items() if how == "upload"}

    def confirm(self, needed):
        """Every object the snapshot needs beyond its parent's (uploaded now or reused) is there
        with its size and sha256 (S3 checked single-part bodies against the SHA-256 sent with
        them; multipart ones carry it as metadata). One listing when there are many."""
        if len(needed) > HEAD_LIMIT:
            listed = self.repo.objects()
            bad = sorted(d for d, size in needed.items() if listed.get(d) != size)
        else:
            bad = []
            for digest, size in sorted(needed.items()):
                head = self.repo.head(digest) or {}
                if head.get("ContentLength") != size or (head.get("Metadata") or {}).get("sha256") != digest:
                    bad.append(digest)
        if bad:
            raise FediflowError("%d object(s) of this snapshot are missing or have the wrong size (e.g. %s); "
                                "nothing was written, run again" % (len(bad), self.repo.url(self.repo.object_key(bad[0]))))


def find_parent(repo, ids, host, src):
    """The newest snapshot of the same host and directory (its stats say what is unchanged)."""
    for snapshot_id in reversed(ids):
        manifest = repo.good_manifest(snapshot_id)
        if manifest is None:
            continue
        source = manifest.get("source") or {}
        if source.get("host") == host and source.get("path") == src:
            return manifest
    return None


def take_snapshot(repo, p, check_mode, timer, result, run_ids):
    host, src = socket.gethostname(), os.path.normpath(p["src"])
    start, scan_start_ns = ledger.utcnow(), time.time_ns()
    with timer.phase("parent"):
        ids = repo.snapshot_ids()
        parent = find_parent(repo, ids, host, src)
    with timer.phase("scan"):
        files, dirs, links, skipped = scan_tree(src, p["exclude"])
    previous = {e["path"]: e for e in (parent or {}).get("files", [])}
    parent_scan = (parent or {}).get("scan_start_ns")
    todo = []
    for entry in files:
        old = previous.get(entry["path"])
        if needs_hash(entry, old, parent_scan, p.get("force_hash")):
            todo.append(entry)
        else:
            entry["sha256"] = old["sha256"]
    with timer.phase("hash_upload"):
        known = repo.objects() if parent is None or len(todo) > HEAD_LIMIT else None
        uploader = _Uploader(repo, src, known, check_mode)
        parallel_map(uploader.store, todo, p["parallel"])
    uploaded = uploader.uploaded()
    sums = totals(files)
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "kind": "snapshot",
        "region": (p.get("tags") or {}).get("region") or p.get("region"), "tags": p.get("tags") or {},
        "source": {"host": host, "path": src}, "exclude": p["exclude"], "parent": (parent or {}).get("id"),
        "start_time": ledger.iso(start), "scan_start_ns": scan_start_ns,
        "files": files, "dirs": dirs, "symlinks": links, "skipped": skipped,
        "totals": dict(sums, dirs=len(dirs), symlinks=len(links)),
    }
    changes = diff_manifests(parent, manifest)
    write = parent is None or any(changes.values())
    result.update({
        "changed": write or bool(uploaded), "snapshot_written": write and not check_mode,
        "snapshot_id": None if write else parent["id"], "parent_id": (parent or {}).get("id"),
        "files_total": sums["files"], "bytes_total": sums["bytes"], "dirs_total": len(dirs),
        "symlinks_total": len(links), "skipped": skipped[:100],
        "files_hashed": len(todo), "files_unchanged": len(files) - len(todo),
        "objects_uploaded": len(uploaded), "bytes_uploaded": sum(uploaded.values()),
        "objects_reused": sums["unique_objects"] - len(uploaded),
        "bytes_reused": sums["unique_bytes"] - sum(uploaded.values()),
        "unique_objects": sums["unique_objects"], "unique_bytes": sums["unique_bytes"],
        "changes": {k: len(v) for k, v in changes.items()},
        "manifest_key": None if write else repo.manifest_key(parent["id"]),
        "diff": {"before_header": (parent or {}).get("id") or "(no snapshot)",
                 "after_header": "new snapshot" if write else "(unchanged)", "prepared": diff_text(changes)},
    })
    if check_mode:
        # what retention would see in a real run: the new snapshot, newest of all
        return (dict(manifest, id="(new snapshot)", stop_time=ledger.iso(ledger.utcnow())) if write else None), parent
    if not (write or uploaded):
        return None, parent  # unchanged: nothing to write, no lock needed
    with timer.phase("lock"):
        run_ids.append(secrets.token_hex(8))
        repo.take_lock(run_ids[-1], exclusive=False)
        busy = [lock for lock in repo.other_locks(run_ids)[0] if lock.get("exclusive")]
    if busy:
        raise FediflowError("garbage collection is running on %s (host %s, pid %s); nothing was written, "
                            "run again when it ends" % (repo.url(repo.path()), busy[0].get("host"), busy[0].get("pid")))
    with timer.phase("verify"):
        # From here on garbage collection sees our lock and deletes nothing. What it may have
        # deleted before: the parent (then its objects may be gone) or objects no manifest
        # referenced (our uploads, leftovers we reused). Check both before the manifest.
        if parent is not None and repo.head_key(repo.manifest_key(parent["id"])) is None:
            raise FediflowError("snapshot %s was removed while this one was taken; nothing was written, run again"
                                % parent["id"])
        inherited = {e["sha256"] for e in parent["files"]} if parent else set()
        uploader.confirm({e["sha256"]: e["size"] for e in files if e["sha256"] not in inherited})
    if not write:
        return None, parent
    stop = ledger.utcnow()
    manifest.update({"id": ledger.new_backup_id("snapshot", stop), "stop_time": ledger.iso(stop),
                     "verification": {"ok": True, "objects_uploaded": len(uploaded),
                                      "method": "sha256 of every file read; S3 x-amz-checksum-sha256 on upload; "
                                                "size and sha256 of every object not inherited from the parent "
                                                "checked before the manifest"}})
    with timer.phase("manifest"):
        repo.put_json(repo.manifest_key(manifest["id"]), manifest)   # last: now the snapshot exists
        if p.get("ledger_dir"):
            os.makedirs(os.path.join(p["ledger_dir"], manifest["id"]), mode=0o700, exist_ok=True)
            ledger.write_manifest(os.path.join(p["ledger_dir"], manifest["id"]), manifest)
            result["ledger_path"] = os.path.join(p["ledger_dir"], manifest["id"], ledger.MANIFEST)
    result.update(snapshot_id=manifest["id"], manifest_key=repo.manifest_key(manifest["id"]),
                  start_time=manifest["start_time"], stop_time=manifest["stop_time"])
    return None, manifest


def _fetch_object(source, digest, size, label):
    """One object's content from another repository, checked against its digest: bytes, or a temporary file."""
    hasher = hashlib.sha256()
    if size < source.threshold:
        data = b"".join(source.stream(digest, label))
        hasher.update(data)
        spool = data
    else:
        import tempfile  # pylint: disable=import-outside-toplevel
        fd, spool = tempfile.mkstemp(prefix=".fediflow-copy-")
        with os.fdopen(fd, "wb") as handle:
            for block in source.stream(digest, label):
                hasher.update(block)
                handle.write(block)
    if hasher.hexdigest() != digest:
        if not isinstance(spool, bytes):
            os.unlink(spool)
        raise FediflowError("%s read back from %s does not match its sha256" % (label, source.url(source.path())))
    return spool


def replicate(repo, source, src, manifest, p, run_ids):
    """Make ``repo`` hold the snapshot ``manifest`` (taken, or found unchanged, in ``source``): the objects
    it lacks - from the local file when it still has the content, else copied from ``source`` - each checked,
    then the same manifest. A repository that already holds it costs one HEAD. Returns the objects copied."""
    if repo.head_key(repo.manifest_key(manifest["id"])) is not None:
        return 0
    run_ids.append(secrets.token_hex(8))
    repo.take_lock(run_ids[-1], exclusive=False)
    busy = [lock for lock in repo.other_locks(run_ids)[0] if lock.get("exclusive")]
    if busy:
        raise FediflowError("garbage collection is running on %s (host %s); this copy is left for the next run"
                            % (repo.url(repo.path()), busy[0].get("host")))
    listed = repo.objects()
    needed = {}
    for entry in manifest.get("files", []):
        needed.setdefault(entry["sha256"], entry)
    missing = [entry for digest, entry in sorted(needed.items()) if listed.get(digest) != entry["size"]]

    def copy(entry):
        digest, full = entry["sha256"], os.path.join(src, entry["path"]) if src else None
        data = None
        if full and entry["size"] < repo.threshold:
            try:
                data = _read_file(full)
            except (OSError, FediflowError):
                data = None
            if data is not None and sha256_bytes(data) == digest:
                repo.put_small(digest, data)
                return
        spool = _fetch_object(source, digest, entry["size"], entry["path"])
        if isinstance(spool, bytes):
            repo.put_small(digest, spool)
            return
        try:
            repo.upload_large(spool, digest)
        finally:
            os.unlink(spool)

    parallel_map(copy, missing, p["parallel"])
    if missing:
        now = repo.objects()
        bad = [e["path"] for d, e in needed.items() if now.get(d) != e["size"]]
        if bad:
            raise FediflowError("%d object(s) missing or of the wrong size after the copy (e.g. %s); no manifest "
                                "written" % (len(bad), bad[0]))
    # last: now the copy exists; copied_at says when this repository had it (a region-loss RPO counts to there)
    repo.put_json(repo.manifest_key(manifest["id"]), dict(manifest, copied_at=ledger.iso(ledger.utcnow())))
    return len(missing)


# ---------------------------------------------------------------- selection

def resolve(repo, p):
    ids = repo.snapshot_ids()
    sid = p.get("snapshot_id") or "latest"
    where = repo.url(repo.path("snapshots"))
    if p.get("before_dt") is not None:
        for candidate in before_candidates(ids, p["before_dt"]):
            manifest = repo.good_manifest(candidate)
            if manifest is not None and snapshot_time(manifest) < p["before_dt"]:
                return manifest
        raise FediflowError("no snapshot in %s finished before %s" % (where, p["before"]))
    if sid == "latest":
        if not ids:
            raise FediflowError("no snapshot in %s" % where)
        for newest_id in reversed(ids):   # a malformed newest one is skipped (and reported), never trusted
            newest = [m for m in (repo.good_manifest(i) for i in ids if id_time(i) == id_time(newest_id)) if m] or \
                [m for m in [repo.good_manifest(newest_id)] if m]
            if newest:
                return max(newest, key=lambda m: (m.get("stop_time") or "", m["id"]))
        raise FediflowError("no readable snapshot in %s (%s)" % (where, "; ".join(repo.skipped.values())))
    if sid not in ids:
        raise FediflowError("snapshot_id '%s' is not in %s" % (sid, where))
    return repo.manifest(sid)


def check_manifest(manifest):
    """A manifest of this format (its paths and shape were checked when it was read: ``SnapshotRepo.manifest``)."""
    if manifest.get("format") != FORMAT:
        raise FediflowError("%s is not a fediflow.dr snapshot manifest" % manifest.get("id"))
    untrusted.snapshot_manifest(manifest, "snapshot %s" % manifest.get("id"))


# ---------------------------------------------------------------- state=restored

def _existing(dest):
    """{rel: lstat} of everything under dest (not following symlinks); our temp files aside."""
    found = {}
    for root, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            full = os.path.join(root, name)
            if atomic.TEMP_RE.match(name):
                continue
            found[os.path.relpath(full, dest)] = os.lstat(full)
    return found


def _mode(entry):
    return int(entry["mode"], 8)


def _where(dest):
    return "restore into %s" % dest


def _write_file(repo, dest, entry, as_root):
    """Download to a temp file beside the target, hashing while writing; rename only when the
    sha256 matches. A bad object leaves nothing behind. The directory is entered without following
    a symlink (``untrusted.open_dir_under``): nothing is written outside ``dest``."""
    target = untrusted.contained(dest, entry["path"], _where(dest))
    parent, name = os.path.split(entry["path"])
    dfd = untrusted.open_dir_under(dest, parent, _where(dest))
    try:
        _write_in(repo, dfd, target, name, entry, as_root)
    finally:
        os.close(dfd)
    return entry["size"]


def _write_in(repo, dfd, target, name, entry, as_root):
    """atomic.replacing's steps (its temp file, fsync of the file and of the directory, removal on failure), not
    atomic.replacing itself: the directory is a descriptor (entered without following symlinks: the path comes from
    an untrusted manifest), the bytes are checked against the manifest before the rename, the file takes the
    snapshot's owner, mode and mtime, and it may replace a directory of that name."""
    fd, tmp = atomic.create_temp(dir_fd=dfd)
    done = False
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            for block in repo.stream(entry["sha256"], entry["path"]):
                digest.update(block)
                size += len(block)
                out.write(block)
            if digest.hexdigest() != entry["sha256"] or size != entry["size"]:
                raise FediflowError("%s: the object %s does not match the snapshot (sha256 %s..., %d bytes; "
                                    "expected %s..., %d bytes); the file was not written"
                                    % (entry["path"], repo.url(repo.object_key(entry["sha256"])),
                                       digest.hexdigest()[:12], size, entry["sha256"][:12], entry["size"]))
            out.flush()
            os.fsync(out.fileno())
            _set_meta(out.fileno(), entry, as_root)
        if os.path.isdir(target) and not os.path.islink(target):
            _remove(target)   # only reached with delete_extra (checked before writing)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        done = True
    finally:
        if not done:
            atomic.discard(tmp, dir_fd=dfd)
    os.fsync(dfd)


def _set_meta(fd_or_path, entry, as_root):
    if as_root and entry.get("uid") is not None:
        os.chown(fd_or_path, entry["uid"], entry["gid"])
    os.chmod(fd_or_path, _mode(entry))
    os.utime(fd_or_path, ns=(entry["mtime_ns"], entry["mtime_ns"]))


def _same_file(full, info, entry):
    if info is None or not st.S_ISREG(info.st_mode) or info.st_size != entry["size"]:
        return False
    return _hash_file(full) == entry["sha256"]


def _meta_ok(info, entry, as_root):
    owner = not as_root or entry.get("uid") is None or (info.st_uid, info.st_gid) == (entry["uid"], entry["gid"])
    return owner and "%04o" % st.S_IMODE(info.st_mode) == entry["mode"] and info.st_mtime_ns == entry["mtime_ns"]


def restore(repo, p, check_mode, timer, result):
    dest = os.path.normpath(p["dest"])
    existing = _existing(dest) if os.path.isdir(dest) else {}
    if existing and not p.get("force"):
        raise FediflowError("dest '%s' is not empty (%d entries); set force: true to restore into it "
                            "(files outside the snapshot are kept unless delete_extra: true)" % (dest, len(existing)))
    manifest = resolve(repo, p)
    check_manifest(manifest)
    as_root = os.geteuid() == 0
    wanted = {e["path"] for g in ("files", "dirs", "symlinks") for e in manifest.get(g, [])}
    protect = manifest.get("exclude") or []
    extra = sorted((r for r in existing if r not in wanted and not excluded(r, protect)), reverse=True)
    with timer.phase("compare"):
        def differs(entry):
            return not _same_file(os.path.join(dest, entry["path"]), existing.get(entry["path"]), entry)
        flags = parallel_map(differs, manifest.get("files", []), p["parallel"])
    to_write = [e for e, bad in zip(manifest.get("files", []), flags) if bad]
    meta_fix = [e for e, bad in zip(manifest.get("files", []), flags)
                if not bad and not _meta_ok(existing[e["path"]], e, as_root)]
    links = [e for e in manifest.get("symlinks", []) if not (
        e["path"] in existing and st.S_ISLNK(existing[e["path"]].st_mode)
        and os.readlink(os.path.join(dest, e["path"])) == e["target"])]
    new_dirs = [d for d in manifest.get("dirs", []) if d["path"] != "." and not (
        d["path"] in existing and st.S_ISDIR(existing[d["path"]].st_mode))]
    blocking = [r for r in existing if r in wanted and st.S_ISDIR(existing[r].st_mode) and r not in
                {d["path"] for d in manifest.get("dirs", [])}]
    if blocking and not p.get("delete_extra"):
        raise FediflowError("%s is a directory in dest but not in snapshot %s; set delete_extra: true to replace it"
                            % (os.path.join(dest, blocking[0]), manifest["id"]))
    if os.path.isdir(dest):
        existing["."] = os.lstat(dest)
    dir_fix = [d for d in manifest.get("dirs", []) if d in new_dirs or d["path"] not in existing
               or not _meta_ok(existing[d["path"]], d, as_root)]
    deleted = extra if p.get("delete_extra") else []
    overwritten = [e["path"] for e in to_write + links if e["path"] in existing]
    changes = {"added": sorted([e["path"] for e in to_write + links if e["path"] not in existing] +
                               [d["path"] + "/" for d in new_dirs]),
               "changed": sorted(overwritten + [e["path"] for e in meta_fix]), "removed": sorted(deleted)}
    result.update({
        "changed": bool(to_write or links or new_dirs or deleted or meta_fix or dir_fix),
        "snapshot_id": manifest["id"], "dest": dest, "stop_time": manifest.get("stop_time"),
        "files_total": len(manifest.get("files", [])), "files_written": len(to_write),
        "bytes_written": sum(e["size"] for e in to_write), "files_unchanged": len(flags) - len(to_write),
        "symlinks_written": len(links), "dirs_created": len(new_dirs), "deleted": deleted[:DIFF_LINES],
        "extra_kept": 0 if p.get("delete_extra") else len(extra),
        "changes": {k: len(v) for k, v in changes.items()},
        "diff": {"before_header": dest, "after_header": "snapshot %s" % manifest["id"],
                 "prepared": diff_text(changes)},
    })
    if check_mode or not result["changed"]:
        return
    with timer.phase("dirs"):
        if not os.path.isdir(dest):
            os.makedirs(dest, mode=0o700)
        for d in new_dirs:
            full = untrusted.contained(dest, d["path"], _where(dest), "directory")
            if os.path.lexists(full):
                _remove(full)
            os.mkdir(full, 0o700)
    with timer.phase("download"):
        parallel_map(lambda e: _write_file(repo, dest, e, as_root), to_write, p["parallel"])
        for entry in meta_fix:
            _set_meta(untrusted.contained(dest, entry["path"], _where(dest)), entry, as_root)
        for entry in links:
            full = untrusted.contained(dest, entry["path"], _where(dest), "symlink")
            tmp = os.path.join(os.path.dirname(full), atomic.temp_name())
            os.symlink(entry["target"], tmp)
            if as_root and entry.get("uid") is not None:
                os.lchown(tmp, entry["uid"], entry["gid"])
            if os.path.isdir(full) and not os.path.islink(full):
                _remove(full)
            os.replace(tmp, full)
    with timer.phase("delete_extra"):
        for rel in deleted:
            _remove(os.path.join(dest, rel), keep_nonempty=True)
    for d in sorted(manifest.get("dirs", []), key=lambda e: e["path"].count("/") + (e["path"] != "."),
                    reverse=True):
        _set_meta(os.path.join(dest, d["path"]) if d["path"] != "." else dest, d, as_root)


def _remove(full, keep_nonempty=False):
    """Remove a file, a symlink (never what it points to) or a directory."""
    if os.path.isdir(full) and not os.path.islink(full):
        if keep_nonempty:
            try:
                os.rmdir(full)
            except OSError:
                pass  # still holds excluded files: kept
        else:
            for root, dirnames, filenames in os.walk(full, topdown=False):
                for name in filenames + [n for n in dirnames if os.path.islink(os.path.join(root, n))]:
                    os.unlink(os.path.join(root, name))
                for name in dirnames:
                    if not os.path.islink(os.path.join(root, name)):
                        os.rmdir(os.path.join(root, name))
            os.rmdir(full)
    elif os.path.lexists(full):
        os.unlink(full)


# ---------------------------------------------------------------- state=verified

def verify(repo, p, timer, result):
    manifest = resolve(repo, p)
    check_manifest(manifest)
    objects = {}
    for entry in manifest.get("files", []):
        objects.setdefault(entry["sha256"], (entry["size"], entry["path"]))
    with timer.phase("list"):
        listed = repo.objects()
    missing = sorted(path for d, (size, path) in objects.items() if d not in listed)
    wrong_size = sorted(path for d, (size, path) in objects.items() if d in listed and listed[d] != size)
    found = [d for d in objects if d in listed and listed[d] == objects[d][0]]

    def check(digest):
        if p.get("deep"):
            hasher = hashlib.sha256()
            for block in repo.stream(digest, objects[digest][1]):
                hasher.update(block)
            return hasher.hexdigest() == digest
        head = repo.head(digest) or {}
        checksum = head.get("ChecksumSHA256") or ""
        if checksum and "-" not in checksum:
            return checksum == base64.b64encode(bytes.fromhex(digest)).decode("ascii")
        return (head.get("Metadata") or {}).get("sha256") == digest

    with timer.phase("deep" if p.get("deep") else "checksum"):
        oks = parallel_map(check, found, p["parallel"])
    mismatched = sorted(objects[d][1] for d, ok in zip(found, oks) if not ok)
    result.update({
        "changed": False, "snapshot_id": manifest["id"], "stop_time": manifest.get("stop_time"),
        "ok": not (missing or wrong_size or mismatched), "method": "download and sha256" if p.get("deep") else
        "listing (size) and stored SHA-256 checksum or sha256 metadata", "objects_checked": len(objects),
        "files_total": len(manifest.get("files", [])), "missing": missing[:DIFF_LINES],
        "wrong_size": wrong_size[:DIFF_LINES], "mismatched": mismatched[:DIFF_LINES],
    })
    if not result["ok"]:
        bad = (missing + wrong_size + mismatched)[0]
        raise FediflowError("snapshot %s failed verification: %d missing, %d wrong size, %d bad checksum "
                            "(first: %s)" % (manifest["id"], len(missing), len(wrong_size), len(mismatched), bad),
                            result=result)


# ---------------------------------------------------------------- retention and garbage collection

def prune(repo, p, check_mode, timer, result, run_ids, pending=None):
    """Remove snapshots (``snapshot_id`` or the retention policy), manifests first, then the
    objects no remaining manifest references, under an exclusive lock. ``pending`` is the
    snapshot a check-mode run would have written (so the prediction is exact)."""
    if not check_mode:
        run_ids.append(secrets.token_hex(8))
        repo.take_lock(run_ids[-1], exclusive=True)
    fresh, stale = repo.other_locks(run_ids)
    with timer.phase("ledger"):
        manifests, malformed = {}, set()
        for snapshot_id in repo.snapshot_ids():
            manifest = repo.good_manifest(snapshot_id)
            if manifest is None:
                malformed.add(snapshot_id)   # never counted, never removed by the policy, its objects kept
            else:
                manifests[snapshot_id] = manifest
        if pending is not None:
            manifests[pending["id"]] = pending
    if p.get("snapshot_id"):
        # the one named may be a malformed one: removing its manifest is how an operator clears it
        remove = [p["snapshot_id"]] if p["snapshot_id"] in manifests or p["snapshot_id"] in malformed else []
        keep = {i: ["not selected"] for i in manifests if i not in remove}
    else:
        keep, remove = plan_retention(
            [{"id": i, "time": snapshot_time(m)} for i, m in manifests.items()], p.get("keep_last"),
            p.get("keep_within_td"), p.get("keep_hourly"), p.get("keep_daily"), p.get("keep_weekly"))
    if not check_mode and remove:
        with timer.phase("remove"):
            repo.delete_keys(repo.manifest_key(i) for i in remove)
            for snapshot_id in remove:
                if p.get("ledger_dir"):
                    ledger.remove_local(p["ledger_dir"], snapshot_id)
    with timer.phase("gc"):
        if not check_mode:   # snapshots written meanwhile count too
            for snapshot_id in repo.snapshot_ids():
                if snapshot_id not in manifests and snapshot_id not in malformed:
                    manifest = repo.good_manifest(snapshot_id)
                    if manifest is None:
                        malformed.add(snapshot_id)
                    else:
                        manifests[snapshot_id] = manifest
        listed = repo.objects()
        garbage = unreferenced(listed, [m for i, m in manifests.items() if i not in remove])
        gc_skipped = None
        unreadable = sorted(malformed - set(remove))
        if unreadable:
            gc_skipped = ("%d malformed snapshot manifest(s) (e.g. %s): the objects they may reference are unknown, "
                          "objects kept" % (len(unreadable), unreadable[0]))
            garbage = []
        if fresh:
            gc_skipped = "%d other run(s) in progress (e.g. host %s pid %s): objects kept" % (
                len(fresh), fresh[0].get("host"), fresh[0].get("pid"))
            garbage = []
        if not check_mode:
            repo.delete_keys(repo.object_key(d) for d in garbage)
            repo.delete_keys(repo.path("locks", lock["run"] + ".json") for lock in stale if lock.get("run"))
    removed = [{"id": i, "stop_time": (manifests.get(i) or {}).get("stop_time")} for i in remove]
    lines = ["- snapshot %s (%s)" % (r["id"], r["stop_time"]) for r in removed]
    lines += ["- %d unreferenced object(s), %d bytes" % (len(garbage), sum(listed[d] for d in garbage))] \
        if garbage else []
    result.update({
        "changed": bool(remove or garbage or stale) or result.get("changed", False),
        "removed": removed, "kept": [{"id": i, "reasons": r} for i, r in sorted(keep.items())],
        "objects_deleted": len(garbage), "bytes_deleted": sum(listed[d] for d in garbage),
        "gc_skipped": gc_skipped, "stale_locks_removed": len(stale),
    })
    old = (result.get("diff") or {}).get("prepared", "")
    result["diff"] = dict(result.get("diff") or {"before_header": repo.url(repo.path()), "after_header": "pruned"},
                          prepared=old + "\n".join(lines) + ("\n" if lines else ""))


# ---------------------------------------------------------------- entry point

def _locations(repos, p, result):
    """The repositories that answer, in order; refuses when none does."""
    if not repos.stores:
        raise FediflowError("no repository answers (%s)" % "; ".join("%s: %s" % kv for kv in repos.down.items()),
                            result=result)
    return list(repos.stores.items())


def _select(live, p, timer, result, action):
    """restored / verified: the first repository (the host's own region first) that holds the selection."""
    errors = []
    for name, repo in live:
        try:
            with timer.phase("ledger"):
                resolve(repo, p)
        except FediflowError as exc:
            errors.append("%s: %s" % (name, exc.message))
            continue
        result["repository"] = name
        action(repo)
        return
    raise FediflowError("; ".join(errors), result=result)


def _present(repos, live, p, check_mode, timer, result, run_ids):
    """Snapshot into the first repository that answers, then make every other one hold the same snapshot."""
    (first_name, first), others = live[0], live[1:]
    pending, manifest = take_snapshot(first, p, check_mode, timer, result, run_ids.setdefault(first_name, []))
    result["repository"] = first_name
    copies = [{"repository": first_name, "ok": True, "error": None, "objects_copied": result["objects_uploaded"]}]
    if check_mode or manifest is None:
        return pending, copies + [{"repository": n, "ok": None, "error": None, "objects_copied": None}
                                  for n, _r in others]
    with timer.phase("copies"):
        src = os.path.normpath(p["src"])
        done = repositories.parallel(repositories.guard(
            lambda item: replicate(item[1], first, src, manifest, p, run_ids.setdefault(item[0], []))), others)
        copies += [{"repository": name, "ok": error is None, "error": error, "objects_copied": count}
                   for (name, _repo), (count, error) in zip(others, done)]
    return pending, copies


def _record_copies(repos, p, copies, result):
    by_name = {c["repository"]: c for c in copies}
    full = []
    for repo in repos.repos:
        copy = by_name.get(repo["name"]) or {"repository": repo["name"], "ok": False, "objects_copied": None,
                                             "error": "repository down: %s" % repos.down.get(repo["name"], "?")}
        full.append(dict(copy, bucket=repo["bucket"], prefix=repo["prefix"], region=repo["region"]))
    if any(c["ok"] is None for c in full):   # check mode: what would be copied is not known
        result["copies"] = full
        return True
    complete = repositories.record_copies(result, repos, full, "snapshot %s" % result.get("snapshot_id"))
    if p.get("ledger_dir") and result.get("snapshot_id"):
        local = os.path.join(p["ledger_dir"], result["snapshot_id"])
        manifest = ledger.read_manifest(local) if os.path.isdir(local) else None
        listed = [{k: v for k, v in c.items() if k != "objects_copied"} for c in full]
        if manifest is not None and manifest.get("copies") != listed:
            manifest["copies"] = listed
            ledger.write_manifest(local, manifest)   # the ledger entry says where every copy lives
    return complete


def run(params, check_mode=False):
    """The whole module as plain data in, plain dict out."""
    timer = Timer()
    p = validate(params)
    result = {"changed": False, "state": p["state"], "s3_bucket": p["repos"][0]["bucket"],
              "s3_prefix": p["repos"][0]["prefix"]}
    with timer.phase("connect"):
        repos = repositories.Repositories(
            p, factory=lambda params, repo: SnapshotRepo(params, repo["bucket"], repo["prefix"]))
    result["repositories_down"] = dict(repos.down)
    if len(p["repos"]) == 1 and repos.down:   # one repository: its outage is the failure, as before
        raise FediflowError(next(iter(repos.down.values())), result=dict(result, duration_s=timer.elapsed()))
    run_ids = {}
    complete = True
    try:
        live = _locations(repos, p, result)
        pending = None
        if p["state"] == "present":
            pending, copies = _present(repos, live, p, check_mode, timer, result, run_ids)
            complete = _record_copies(repos, p, copies, result)
        elif p["state"] == "restored":
            _select(live, p, timer, result, lambda repo: restore(repo, p, check_mode, timer, result))
        elif p["state"] == "verified":
            _select(live, p, timer, result, lambda repo: verify(repo, p, timer, result))
        if complete and (p["state"] == "absent" or (p["state"] == "present" and p["retention"])):
            retention = {}
            for name, repo in live:
                if p["state"] == "present" and not _holds(result, name):
                    continue   # a copy that failed: this repository keeps what it has
                mine = result if name == live[0][0] else {"changed": False}
                prune(repo, p, check_mode, timer, mine, run_ids.setdefault(name, []), pending)
                retention[name] = {k: mine.get(k) for k in ("removed", "objects_deleted", "bytes_deleted",
                                                            "gc_skipped")}
                result["changed"] = result["changed"] or mine["changed"]
            result["retention"] = retention
        if not complete:
            raise FediflowError("snapshot %s: %s" % (result.get("snapshot_id"), repositories.copies_error(
                "it", repos, result["copies"])), result=result)
    except FediflowError as exc:
        exc.details.setdefault("result", result)
        result["duration_s"] = timer.elapsed()
        raise
    finally:
        repositories.report_skipped(result, [{"where": where, "error": why} for store in repos.stores.values()
                                             for where, why in sorted(store.skipped.items())])
        for name, ids in run_ids.items():
            if ids and name in repos.stores:
                try:
                    with timer.phase("lock"):
                        repos.stores[name].release(ids)
                except FediflowError:
                    pass  # a lock left behind turns stale once this process is gone
    result["phases"] = timer.phases
    result["duration_s"] = timer.elapsed()
    return result


def _holds(result, name):
    return any(c["repository"] == name and c["ok"] is not False for c in result.get("copies") or [])
