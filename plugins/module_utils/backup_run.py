# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pg_backup_verify`` end to end: take or pick a backup, verify it, write the ledger,
upload, prune. Failure rules: nothing half-visible (work happens in a hidden directory and
the manifest is written last), a failed backup never prunes and never replaces the last
good one, and retention never removes the newest verified backup."""

from __future__ import annotations

import os
import shutil

from ansible_collections.fediflow.dr.plugins.module_utils import backup, ledger
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer
from ansible_collections.fediflow.dr.plugins.module_utils.s3store import S3Backups


def _ledger(dest, s3):
    """Union of the local and S3 ledgers: {id: (manifest, where)}."""
    entries = {}
    for manifest in ledger.list_local(dest):
        entries[manifest["id"]] = (manifest, {"local"})
    if s3 is not None:
        for manifest in s3.list_manifests():
            if manifest["id"] in entries:
                entries[manifest["id"]][1].add("s3")
            else:
                entries[manifest["id"]] = (manifest, {"s3"})
    return entries


def same_source(manifest, p):
    """Retention only ever weighs backups of the same source: cluster, region and (logical)
    database. Two databases sharing a dest never prune each other's backups. The region is the DR region
    (region_name), never the AWS API region of the S3 options (region): the same source backed up with and
    without S3 options is one source."""
    source = manifest.get("source") or {}
    return (manifest.get("cluster") == p.get("cluster_name")
            and manifest.get("region") == p.get("region_name")
            and (p["mode"] != "logical" or source.get("database") == p.get("db")))


def _retention(p, entries, extra=None):
    manifests = [m for m, _where in entries.values() if same_source(m, p)] + ([extra] if extra else [])
    return ledger.plan_retention(manifests, ledger.utcnow(), p.get("retention_count"),
                                 p.get("retention_days"), kind=p["mode"])


def _prune(p, entries, plan, s3):
    pruned = []
    for backup_id, reason in plan:
        where = entries[backup_id][1] if backup_id in entries else set()
        if "local" in where:
            ledger.remove_local(p["dest"], backup_id)
        if "s3" in where and s3 is not None:
            s3.delete_backup(backup_id)
        pruned.append({"id": backup_id, "reason": reason, "where": sorted(where)})
    return pruned


def _clean_leftovers(dest, older_than_s):
    """Remove work directories of runs that were killed (``.partial-*``, ``.verify-*``): a
    leftover is never a backup (no manifest), and one is left alone while a run could still own it."""
    import time  # pylint: disable=import-outside-toplevel
    cleaned = []
    for name in os.listdir(dest):
        if name.startswith((".partial-", ".verify-")):
            path = os.path.join(dest, name)
            if time.time() - os.stat(path).st_mtime > older_than_s:
                shutil.rmtree(path, ignore_errors=True)
                cleaned.append(name)
    return cleaned


def _chmod_tree(path):
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)
    os.chmod(path, 0o700)


def verify_existing(p, s3, result, timer):
    backup_id = p["backup_id"]
    local_dir = os.path.join(p["dest"], backup_id)
    manifest = ledger.read_manifest(local_dir)
    source = "local"
    temp = None
    if manifest is None and s3 is not None:
        found = [m for m in s3.list_manifests() if m["id"] == backup_id]
        if found:
            manifest = found[0]
            source = "s3"
            temp = os.path.join(p["dest"], ".verify-" + backup_id)
            with timer.phase("download"):
                s3.download_backup(manifest, temp)
    if manifest is None:
        raise FediflowError("backup_id '%s' is not in the ledger (%s%s)" % (
            backup_id, p["dest"], " or s3://%s/%s" % (s3.bucket, s3.prefix) if s3 else ""))
    try:
        with timer.phase("verify"):
            record = backup.verify(p, temp or local_dir, manifest, p["verify"], result["commands"])
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    manifest.setdefault("verification_history", []).append(record)
    # a pass refreshes the verdict; a failure replaces it only when it is about the backup itself
    # (not e.g. a scratch port in use), so a good backup does not lose its verified status
    if record["ok"] or (record["ok"] is False and record.get("integrity")):
        manifest["verification"] = record
    if source == "local":
        ledger.write_manifest(local_dir, manifest)
        result["changed"] = True  # the ledger entry was rewritten
    result.update(backup_id=backup_id, verified=bool(record["ok"]), verification=record, source=source,
                  files=manifest["files"], manifest=manifest)
    return record


def ensure(p, check_mode=False):
    timer = Timer()
    backup.validate(p)
    result = {"changed": False, "commands": [], "pruned": [], "s3_keys": [], "verified": False}
    s3 = S3Backups(p, p["s3_bucket"], p.get("s3_prefix")) if p.get("s3_bucket") else None
    if s3 is not None:
        with timer.phase("preflight"):
            s3.check_bucket()

    if p.get("backup_id") and check_mode:
        known = ledger.read_manifest(os.path.join(p["dest"], p["backup_id"])) is not None or (
            s3 is not None and any(m["id"] == p["backup_id"] for m in s3.list_manifests()))
        if not known:
            raise FediflowError("backup_id '%s' is not in the ledger" % p["backup_id"])
        result.update(changed=True, backup_id=p["backup_id"], would_verify=p["verify"],
                      duration_s=timer.elapsed())
        return result
    if p.get("backup_id"):
        record = verify_existing(p, s3, result, timer)
        result.update(duration_s=timer.elapsed(), phases=timer.phases)
        if not record["ok"] and record["ok"] is not None:
            raise FediflowError("backup %s failed verification (%s): %s" % (
                p["backup_id"], p["verify"], record.get("error")), result=result)
        return result

    entries = _ledger(p["dest"], s3)
    before_ids = sorted(entries)
    if check_mode:
        placeholder = {"id": "(new)", "kind": p["mode"], "stop_time": ledger.iso(ledger.utcnow()),
                       "verification": {"ok": True}, "cluster": p.get("cluster_name"),
                       "region": p.get("region_name"), "source": {"database": p.get("db")}}
        plan = [(i, r) for i, r in _retention(p, entries, placeholder) if i != "(new)"]
        result.update(changed=True, backup_id=None, would_prune=[{"id": i, "reason": r} for i, r in plan],
                      diff={"before": {"backups": before_ids},
                            "after": {"backups": sorted(set(before_ids) - {item[0] for item in plan}) + ["(new backup)"]}},
                      duration_s=timer.elapsed())
        return result

    os.makedirs(p["dest"], mode=0o700, exist_ok=True)
    result["cleaned"] = _clean_leftovers(p["dest"], p.get("command_timeout") or 7200)
    backup_id = ledger.new_backup_id(p["mode"])
    work = os.path.join(p["dest"], ".partial-" + backup_id)
    final = os.path.join(p["dest"], backup_id)
    start = ledger.utcnow()
    want_counts = p["verify"] == "restore"
    try:
        os.makedirs(work, mode=0o700)
        with timer.phase("backup"):
            take = backup.take_logical if p["mode"] == "logical" else backup.take_physical
            source = take(p, work, result["commands"], want_counts)
        stop = ledger.utcnow()
        with timer.phase("manifest"):
            _chmod_tree(work)
            files = ledger.file_entries(work)
        manifest = {
            "ledger_version": ledger.LEDGER_VERSION, "id": backup_id, "kind": p["mode"],
            "region": p.get("region_name"), "cluster": p.get("cluster_name"),
            "start_time": ledger.iso(start), "stop_time": ledger.iso(stop),
            "start_lsn": source.get("start_lsn"), "stop_lsn": source.get("stop_lsn"), "source": source,
            "files": files, "size_bytes": sum(f["size"] for f in files),
            "tags": p.get("tags") or {},
        }
        record = backup.verify(p, work, manifest, p["verify"], result["commands"])
        manifest["verification"] = record
        manifest["verification_history"] = [record]
        os.rename(work, final)
        ledger.write_manifest(final, manifest)  # the backup exists from here on
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for phase, took in (record.get("phases") or {}).items():
        timer.phases["verify_" + phase] = took
    result.update(changed=True, backup_id=backup_id, backup_path=final, files=files,
                  size_bytes=manifest["size_bytes"], verification=record, verified=bool(record["ok"]),
                  start_lsn=manifest["start_lsn"], stop_lsn=manifest["stop_lsn"], manifest=manifest)
    if record["ok"] is False:
        result["duration_s"] = timer.elapsed()
        raise FediflowError("backup %s failed verification (%s): %s — kept as failed in the ledger, "
                            "nothing uploaded or pruned" % (backup_id, p["verify"], record.get("error")),
                            result=result)
    if s3 is not None:
        with timer.phase("upload"):
            try:
                result["s3_keys"] = s3.upload_backup(final, manifest, p.get("s3_sse"), p.get("s3_kms_key_id"),
                                                     p.get("s3_storage_class"))
            except FediflowError as exc:
                result["duration_s"] = timer.elapsed()
                raise FediflowError("backup %s is verified and kept locally in %s, but its S3 copy failed (no "
                                    "manifest was uploaded, so S3 does not list it): %s" % (backup_id, final, exc.message),
                                    result=result)
        entries[backup_id] = (manifest, {"local", "s3"})
    else:
        entries[backup_id] = (manifest, {"local"})
    with timer.phase("retention"):
        plan = _retention(p, entries)
        result["pruned"] = _prune(p, entries, plan, s3)
    result["diff"] = {"before": {"backups": before_ids},
                      "after": {"backups": sorted(set(entries) - {item[0] for item in plan})}}
    result.update(duration_s=timer.elapsed(), phases=timer.phases)
    return result
