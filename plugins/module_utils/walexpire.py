# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL expiry (``wal_expire``): remove from each repository of the WAL archive what no retained base
backup and no PITR window needs.

The pure part (plain data in, plain data out, unit-tested without a server):

* ``expiry_bound(manifests)``: from the backup ledger(s) (every ledger that uses the archive: both
  regions' hosts back up into it after a failover), the **start** of the oldest retained *verified*
  physical backup, in WAL positions (segment numbers), minus ``margin_segments``; None, with the reason,
  when nothing may expire (fewer verified physical backups than ``min_verified_backups``, or one whose
  start cannot be read: guessing would delete WAL it needs).
* ``plan_repository(listing, bound)``: which files of one repository go. Only WAL segments and their
  ``.partial`` / ``.backup`` companions whose **position** is before the bound - compared by segment
  number, never by file name: names sort by timeline first, so timeline 1's WAL after a fork at
  0/20000000 sorts before timeline 2's at 0/18000000 and a name comparison would pick the wrong files.
  Every ``.history`` file is kept (recovery follows timelines through them, and they are tiny), and so is
  every file archived within ``keep_days`` (the PITR window promised, whatever the ledger says) and the
  ``.backup`` label of every retained backup.

The run (``expire``) reads the archive's configuration (the replication role's JSON file, or the
repositories given), the ledgers, each repository's listing, plans, and deletes in each repository
independently: one that does not answer is reported and left as it is; the run fails only when none
answers. Nothing is deleted when a ledger cannot be read anywhere.
"""

from __future__ import annotations

import datetime
import os
import re
import time

from ansible_collections.fediflow.dr.plugins.module_utils import ledger, pitr, untrusted, walarchive
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer

DEFAULT_SEGMENT_SIZE = pitr.DEFAULT_SEGMENT_SIZE
FILE_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial|\.([0-9A-F]{8})\.backup)?$")
HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
PREVIEW = 5  # names listed per repository in the result (first and last removed)
# the module's defaults, for callers that give fewer options
DEFAULTS = {"keep_days": 1.0, "margin_segments": 0, "min_verified_backups": 1, "wal_segment_size": DEFAULT_SEGMENT_SIZE,
            "backup_clusters": []}


# --------------------------------------------------------------------------- the pure part

def check_segment_size(size):
    if not isinstance(size, int) or size < 1024 * 1024 or size > 1024 ** 3 or size & (size - 1):
        raise FediflowError("wal_segment_size must be a power of two from 1 MiB to 1 GiB (initdb --wal-segsize), got %r"
                            % (size,))
    return size


def position(name, segment_size=DEFAULT_SEGMENT_SIZE):
    """``(kind, timeline, segno)`` of an archive file: kind ``segment``, ``partial``, ``backup``,
    ``history`` or ``other`` (segno None for the last two). A segment number impossible for the segment
    size (the archive was written with another ``--wal-segsize``) raises: positions would be wrong."""
    if HISTORY_RE.match(name):
        return "history", int(name[:8], 16), None
    match = FILE_RE.match(name)
    if not match:
        return "other", None, None
    per = 0x100000000 // segment_size
    low = int(match.group(3), 16)
    if low >= per:
        raise FediflowError("archive file %s cannot exist with wal_segment_size %d (segment %d of at most %d a "
                            "log file): set wal_segment_size to the cluster's (SHOW wal_segment_size)"
                            % (name, segment_size, low, per))
    kind = "segment" if not match.group(4) else ("partial" if match.group(4) == ".partial" else "backup")
    return kind, int(match.group(1), 16), int(match.group(2), 16) * per + low


def backup_label_name(timeline, lsn, segment_size=DEFAULT_SEGMENT_SIZE):
    """The ``.backup`` file PostgreSQL archives for a backup starting at ``lsn``."""
    return "%s.%08X.backup" % (pitr.segment_name(timeline, lsn, segment_size), lsn % segment_size)


def expiry_bound(manifests, segment_size=DEFAULT_SEGMENT_SIZE, margin_segments=0, min_verified_backups=1,
                 clusters=None):
    """``(bound, reason)``: the bound is a dict (``segno``: files before it may go; ``segment``; the backup
    that sets it; the retained backups' ``.backup`` labels), or None with the reason nothing may expire."""
    physical = [m for m in manifests if isinstance(m, dict) and m.get("kind") == "physical"
                and (not clusters or m.get("cluster") in clusters)]
    verified = [m for m in physical if ledger.is_verified(m)]
    if len(verified) < max(1, min_verified_backups):
        return None, ("%d verified physical backup%s in the ledgers (%d physical in all), %d required "
                      "(min_verified_backups): nothing expires" % (
                          len(verified), "" if len(verified) == 1 else "s", len(physical), max(1, min_verified_backups)))
    starts = []
    for manifest in verified:
        try:
            lsn = pitr.parse_lsn(manifest.get("start_lsn"), "start_lsn")
        except FediflowError:
            return None, ("verified backup %s has no readable start_lsn (%r): cannot tell which WAL it needs, "
                          "nothing expires" % (manifest.get("id"), manifest.get("start_lsn")))
        timeline = int((manifest.get("source") or {}).get("timeline") or 1)
        starts.append((lsn, manifest.get("id") or "?", timeline, manifest))
    starts.sort(key=lambda s: (s[0], s[1]))
    lsn, backup_id, timeline, manifest = starts[0]
    start_segno = lsn // segment_size
    segno = max(0, start_segno - max(0, margin_segments))
    return {"segno": segno, "segment": pitr.segment_name(timeline, segno * segment_size, segment_size),
            "start_segment": pitr.segment_name(timeline, lsn, segment_size),
            "backup_id": backup_id, "start_lsn": pitr.format_lsn(lsn), "timeline": timeline,
            "stop_time": manifest.get("stop_time"), "margin_segments": max(0, margin_segments),
            "verified_backups": len(verified),
            "labels": sorted({backup_label_name(t, l, segment_size) for l, _i, t, _m in starts})}, None


def plan_repository(listing, bound, now, keep_days=0.0, segment_size=DEFAULT_SEGMENT_SIZE):
    """What one repository loses. ``listing``: ``[(name, archived_at_epoch, size)]``. Returns ``remove``
    (names, in WAL order), ``before`` / ``after`` (``segments`` = whole segments, ``files``, ``bytes``),
    ``removed_bytes``, ``oldest_kept_segment`` and ``kept_in_window`` (files before the bound kept by
    ``keep_days``)."""
    horizon = now - keep_days * 86400.0 if keep_days and keep_days > 0 else None
    labels = set(bound["labels"]) if bound else set()
    remove, kept, window = [], [], 0
    for name, at, size in listing:
        kind, _tli, segno = position(name, segment_size)
        if kind == "other":
            continue  # not a WAL file: never counted, never touched
        entry = (segno if segno is not None else -1, name, at, int(size or 0), kind)
        expired = (bound is not None and kind != "history" and segno < bound["segno"] and name not in labels)
        if expired and horizon is not None and at > horizon:
            window += 1
            expired = False
        (remove if expired else kept).append(entry)
    remove.sort()
    whole = [e for e in kept if e[4] == "segment"]
    oldest = min(whole, key=lambda e: (e[0], e[1]))[1] if whole else None

    def stats(entries):
        return {"segments": sum(1 for e in entries if e[4] == "segment"), "files": len(entries),
                "bytes": sum(e[3] for e in entries)}
    return {"remove": [e[1] for e in remove], "before": stats(kept + remove), "after": stats(kept),
            "removed_bytes": sum(e[3] for e in remove), "oldest_kept_segment": oldest, "kept_in_window": window}


def pitr_window(bound, now):
    """How far back PITR reaches: from the end of the oldest verified backup (its stop_time)."""
    if not bound or not bound.get("stop_time"):
        return None
    stop = ledger.parse_iso(bound["stop_time"])
    return {"from": bound["stop_time"], "days": round((now - stop.timestamp()) / 86400.0, 3),
            "backup_id": bound["backup_id"]}


# --------------------------------------------------------------------------- input

def validate(p):
    """Refuse bad input before anything is read or deleted."""
    if bool(p.get("wal_config")) == bool(p.get("repositories")):
        raise FediflowError("give exactly one of wal_config (the replication role's WAL configuration file) "
                            "and repositories")
    if p.get("wal_config") and not os.path.isabs(p["wal_config"]):
        raise FediflowError("wal_config must be an absolute path, got '%s'" % p["wal_config"])
    check_segment_size(p.get("wal_segment_size") or DEFAULT_SEGMENT_SIZE)
    if float(p.get("keep_days") or 0) < 0:
        raise FediflowError("keep_days must be >= 0, got %s" % p.get("keep_days"))
    if int(p.get("margin_segments") or 0) < 0:
        raise FediflowError("margin_segments must be >= 0, got %s" % p.get("margin_segments"))
    if int(p.get("min_verified_backups") or 0) < 1:
        raise FediflowError("min_verified_backups must be >= 1, got %s" % p.get("min_verified_backups"))
    ledgers = p.get("ledgers") or []
    if not ledgers:
        raise FediflowError("ledgers must name at least one backup ledger (path or s3_prefix): without the "
                            "backups nothing can say which WAL is needed")
    for index, item in enumerate(ledgers):
        if bool(item.get("path")) == bool(item.get("s3_prefix")):
            raise FediflowError("ledgers[%d] needs exactly one of path and s3_prefix" % index)
        if item.get("path") and not os.path.isabs(item["path"]):
            raise FediflowError("ledgers[%d].path must be an absolute path, got '%s'" % (index, item["path"]))
    if p.get("wal_config"):
        try:
            cfg = walarchive.load_config(p["wal_config"])
        except walarchive.ArchiveError as exc:
            raise FediflowError("wal_config: %s" % exc)
    else:
        try:
            cfg = walarchive.validate_multi({"repositories": p["repositories"], "required_copies": 1}, "repositories")
        except walarchive.ArchiveError as exc:
            raise FediflowError(str(exc))
    if "repositories" not in cfg:  # one repository: named after its region (S3) or "dir"
        cfg = {"repositories": [cfg], "names": [cfg.get("region") or cfg["backend"]], "required_copies": 1}
    cfg = with_identity(cfg, p.get("access_key"), p.get("secret_key"))
    if any(item.get("s3_prefix") for item in ledgers) and not any(r["backend"] == "s3" for r in cfg["repositories"]):
        raise FediflowError("ledgers: an s3_prefix ledger is read in the archive's S3 repositories, and this archive "
                            "has none (give the ledger's path instead)")
    return cfg


def with_identity(cfg, access_key, secret_key):
    """The configuration with the expiry's own S3 identity in every S3 repository (the WAL archive's identity
    may not delete: docs/storage-security.md); unchanged when none is given."""
    if bool(access_key) != bool(secret_key):
        raise FediflowError("access_key and secret_key (the WAL expiry's S3 identity) go together: give both or neither")
    if not access_key:
        return cfg
    repos = [dict({k: v for k, v in repo.items() if k != "session_token"}, access_key=access_key, secret_key=secret_key)
             if repo["backend"] == "s3" else repo for repo in cfg["repositories"]]
    return dict(cfg, repositories=repos)


# --------------------------------------------------------------------------- reading

def _one_line(exc):
    return " ".join(str(exc).split())


def _s3_manifests(archive, prefix, skipped=None):
    """The ledger manifests under ``prefix`` of an S3 repository (``<prefix>/<id>/manifest.json``), each checked
    as untrusted input; a malformed one is left out and recorded in ``skipped``."""
    view = walarchive.S3Archive(dict(archive.cfg, prefix=prefix.strip("/")), archive.creds)
    try:
        found = []
        for name, _at, size in view.list_entries():
            parts = name.split("/")
            if len(parts) == 2 and parts[1] == ledger.MANIFEST:
                where = view.url(view.key(name))
                try:
                    untrusted.check_id(parts[0], where)
                    untrusted.check_size(size, where)
                    data = untrusted.load_json(view.read(name, untrusted.MAX_MANIFEST_BYTES), where)
                    found.append(untrusted.backup_manifest(data, where, parts[0]))
                except untrusted.Untrusted as exc:
                    untrusted.skip(skipped, where, exc)
        return found
    finally:
        view.close()


def read_ledgers(ledgers, archive, skipped=None):
    """Every manifest of every ledger (an S3 prefix: the union of every S3 repository that answers).
    ``(manifests, report)``; a ledger that cannot be read anywhere fails the run before anything is deleted.
    A malformed manifest is left out (its backup cannot serve a restore: PITR skips it too) and recorded in
    ``skipped``."""
    manifests, report = {}, []
    for item in ledgers:
        if item.get("path"):
            if not os.path.isdir(item["path"]):
                raise FediflowError("ledgers: backup ledger directory %s does not exist: nothing expired (a ledger that "
                                    "cannot be read would let WAL its backups need expire); take a physical backup "
                                    "there first, or fix the path" % item["path"])
            found = ledger.list_local(item["path"], skipped)
            report.append({"ledger": item["path"], "backups": len(found), "read_from": ["local"], "errors": {}})
        else:
            found, read_from, errors = [], [], {}
            for name, repo in zip(archive.names, archive.archives):
                if not isinstance(repo, walarchive.S3Archive):
                    continue
                try:
                    got = _s3_manifests(repo, item["s3_prefix"], skipped)
                except (walarchive.ArchiveError, OSError, FediflowError) as exc:
                    errors[name] = _one_line(exc)
                    continue
                read_from.append(name)
                found.extend(got)
            if not read_from:
                raise FediflowError("ledgers: s3_prefix %s could not be read in any repository (%s): nothing expired"
                                    % (item["s3_prefix"], "; ".join("%s: %s" % e for e in errors.items())))
            report.append({"ledger": item["s3_prefix"], "backups": len({m.get("id") for m in found}),
                           "read_from": read_from, "errors": errors})
        for manifest in found:
            if isinstance(manifest, dict) and manifest.get("id"):
                manifests.setdefault(manifest["id"], manifest)
    return list(manifests.values()), report


# --------------------------------------------------------------------------- the run

def _open(cfg):
    try:
        archives = [walarchive.open_archive(repo) for repo in cfg["repositories"]]
    except walarchive.ArchiveError as exc:
        raise FediflowError("repositories: %s" % exc)
    return walarchive.MultiArchive(archives, cfg["names"], 1)


def _repo_result(name, plan, error=None):
    out = {"name": name, "answered": error is None, "error": error, "locked": 0, "locked_until": None}
    if plan is not None:
        out.update(before=plan["before"], after=plan["after"], removed=len(plan["remove"]),
                   removed_bytes=plan["removed_bytes"], oldest_kept_segment=plan["oldest_kept_segment"],
                   kept_in_window=plan["kept_in_window"],
                   first_removed=plan["remove"][:PREVIEW], last_removed=plan["remove"][-PREVIEW:])
    return out


def _diff_line(repo):
    if not repo["answered"]:
        return "%s: did not answer\n" % repo["name"]
    size = repo["before"]
    return "%s: %d segments, %d files, %d bytes\n" % (repo["name"], size["segments"], size["files"], size["bytes"])


def expire(p, check_mode=False, now=None, warn=None):
    timer = Timer()
    p = dict(DEFAULTS, **{k: v for k, v in p.items() if v is not None})
    cfg = validate(p)
    segment_size = p.get("wal_segment_size") or DEFAULT_SEGMENT_SIZE
    now = time.time() if now is None else now
    archive = _open(cfg)
    try:
        skipped = []
        manifests, ledgers = read_ledgers(p["ledgers"], archive, skipped)
        bound, reason = expiry_bound(manifests, segment_size, int(p.get("margin_segments") or 0),
                                     int(p.get("min_verified_backups") or 1), p.get("backup_clusters") or None)
        if skipped:
            # a manifest that cannot be trusted may be a backup that still needs old WAL (its start is unknown):
            # keep every file until it is repaired or removed - WAL lost for good is worse than WAL kept too long
            bound, reason = None, ("%d manifest(s) in the ledgers could not be trusted (%s); nothing expires until "
                                   "they are repaired or removed" % (len(skipped), skipped[0]["where"]))
        listings = archive.list_each()
        if all(err is not None for _n, _l, err in listings):
            raise FediflowError("no repository of the WAL archive answered: %s"
                                % "; ".join("%s: %s" % (n, _one_line(e)) for n, _l, e in listings))
        plans, repos = {}, []
        for name, listing, err in listings:
            if err is not None:
                repos.append(_repo_result(name, None, _one_line(err)))
                continue
            plans[name] = plan_repository(listing, bound, now, float(p.get("keep_days") or 0), segment_size)
        to_delete = {n: plan["remove"] for n, plan in plans.items() if plan["remove"]}
        done = {}
        if to_delete and not check_mode:
            for name, res, err in archive.delete_each(to_delete):
                done[name] = (res, err)
        for name, plan in plans.items():
            res, err = done.get(name, (None, None))
            repo = _repo_result(name, plan)
            if err is not None:  # the listing answered, the deletion did not: nothing known removed
                repo.update(error=_one_line(err), removed=0, removed_bytes=0, after=repo["before"])
            elif res is not None and (res["errors"] or res.get("locked")):
                gone = set(res["deleted"])
                sizes = {n: s for n, _a, s in dict((l[0], l) for l in listings)[name][1]}
                repo.update(removed=len(gone), removed_bytes=sum(int(sizes.get(n) or 0) for n in gone))
                if res.get("locked"):  # immutable copies: left, reported, expired by a later run
                    repo.update(locked=len(res["locked"]), locked_until=max(u for _n, u in res["locked"]))
                if res["errors"]:
                    repo.update(error="%d of %d files not deleted, e.g. %s: %s" % (
                        len(res["errors"]), len(plan["remove"]), res["errors"][0][0], res["errors"][0][1]))
            repos.append(repo)
        order = {n: i for i, n in enumerate(cfg["names"])}
        repos.sort(key=lambda r: order[r["name"]])
    finally:
        archive.close()
    removed = sum(r.get("removed", 0) for r in repos)
    failed = [r["name"] for r in repos if r["error"]]
    window = pitr_window(bound, now)
    keep_days = float(p.get("keep_days") or 0)
    if warn is not None:
        for line in untrusted.warnings_for(skipped):
            warn("WAL expiry: " + line)
        for repo in repos:
            if repo["error"]:
                warn("WAL expiry: repository %s: %s (left as it is)" % (repo["name"], repo["error"]))
            if repo["locked"]:
                warn("WAL expiry: repository %s: %d file(s) under Object Lock until %s left (a later run expires them)"
                     % (repo["name"], repo["locked"], repo["locked_until"]))
        if window is not None and keep_days and window["days"] < keep_days:
            warn("PITR reaches back %.2f days (the oldest verified base backup, %s, ended then), less than keep_days "
                 "%s: older targets cannot be restored whatever WAL is kept"
                 % (window["days"], window["backup_id"], keep_days))
    diff = {"before": "".join(_diff_line(r) for r in repos),
            "after": "".join(_diff_line(dict(r, before=r["after"])) if r["answered"] else _diff_line(r) for r in repos)}
    return {"changed": removed > 0, "removed": removed,
            "removed_bytes": sum(r.get("removed_bytes", 0) for r in repos),
            "repositories": repos, "degraded": bool(failed), "not_answered": failed,
            "bound": dict((k, v) for k, v in bound.items() if k != "labels") if bound else None,
            "reason": reason, "pitr_window": window, "ledgers": ledgers, "backups_weighed": len(manifests),
            "keep_days": keep_days, "check_mode": check_mode, "skipped_manifests": skipped,
            "checked_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "diff": diff, "duration_s": round(timer.elapsed(), 3)}
