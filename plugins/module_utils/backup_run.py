# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pg_backup_verify`` end to end: take or pick a backup, verify it, write the ledger,
upload, prune. Failure rules: nothing half-visible (work happens in a hidden directory and
the manifest is written last), a failed backup never prunes and never replaces the last
good one, and retention never removes the newest verified backup."""

from __future__ import annotations

import contextlib
import os
import shutil

from ansible_collections.fediflow.dr.plugins.module_utils import backup, ledger, repos as repositories
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer


def same_source(manifest, p):
    """Retention only ever weighs backups of the same source: cluster, region and (logical)
    database. Two databases sharing a dest never prune each other's backups. The region is the DR region
    (region_name), never the AWS API region of the S3 options (region): the same source backed up with and
    without S3 options is one source."""
    source = manifest.get("source") or {}
    return (manifest.get("cluster") == p.get("cluster_name")
            and manifest.get("region") == p.get("region_name")
            and (p["mode"] != "logical" or source.get("database") == p.get("db")))


def _retention(p, manifests, extra=None):
    manifests = [m for m in manifests if same_source(m, p)] + ([extra] if extra else [])
    return ledger.plan_retention(manifests, ledger.utcnow(), p.get("retention_count"),
                                 p.get("retention_days"), kind=p["mode"])


def chmod_tree(path):
    """A tree made private to its owner: directories 0700, files 0600."""
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)
    os.chmod(path, 0o700)


def _write_back(p, repos, manifest, where):
    """The updated manifest into every repository of ``where`` that answers; returns their names. A repository
    that refuses is named in the failure (the verification result would be lost there)."""
    names = [name for name, _store in repositories.first_holding(repos, where)]
    written = repositories.parallel(repositories.guard(
        lambda name: repos.stores[name].put_manifest(manifest, p.get("s3_sse"), p.get("s3_kms_key_id"))), names)
    failed = ["%s: %s" % (name, error) for name, (_key, error) in zip(names, written) if error]
    if failed:
        raise FediflowError("the verification result of %s could not be written to its ledger in %s"
                            % (manifest["id"], "; ".join(failed)))
    return names


def verify_existing(p, repos, result, timer):
    """Verify a backup of the ledger again: the local copy, else the first repository holding it
    (downloaded into a held work directory and checked against its manifest)."""
    backup_id = p["backup_id"]
    local_dir = os.path.join(p["dest"], backup_id)
    manifest = ledger.read_manifest(local_dir)
    source = "local"
    temp = None
    with contextlib.ExitStack() as stack:
        if manifest is None and repos.any:
            skipped = []
            entries = repositories.ledger_union(None, repos, skipped)
            repositories.report_skipped(result, skipped)
            if backup_id in entries:
                manifest, where = entries[backup_id]
                temp = stack.enter_context(ledger.WorkDir(p["dest"], ".verify-" + backup_id)).path
                errors = []
                for name, store in repositories.first_holding(repos, where):
                    try:
                        with timer.phase("download"):
                            store.download_backup(manifest, temp)
                            backup.verify_checksums(temp, manifest)
                        source = name
                        break
                    except FediflowError as exc:
                        shutil.rmtree(temp, ignore_errors=True)
                        errors.append("%s: %s" % (name, exc.message))
                else:
                    raise FediflowError("backup %s could not be read from any repository holding it (%s)"
                                        % (backup_id, "; ".join(errors) or "none answers"))
        if manifest is None:
            raise FediflowError("backup_id '%s' is not in the ledger (%s%s)" % (
                backup_id, p["dest"], " or the repositories " + repos.describe() if repos.any else ""))
        with timer.phase("verify"):
            record = backup.verify(p, temp or local_dir, manifest, p["verify"], result["commands"])
    manifest.setdefault("verification_history", []).append(record)
    # a pass refreshes the verdict; a failure replaces it only when it is about the backup itself
    # (not e.g. a scratch port in use), so a good backup does not lose its verified status
    if record["ok"] or (record["ok"] is False and record.get("integrity")):
        manifest["verification"] = record
    if source == "local":
        ledger.write_manifest(local_dir, manifest)
        result["changed"] = True  # the ledger entry was rewritten
    else:
        # verified away from the backup's own host (a verify host): the entry in every repository holding it
        result["ledger_written"] = _write_back(p, repos, manifest, where)
        result["changed"] = bool(result["ledger_written"])
    result.update(backup_id=backup_id, verified=bool(record["ok"]), verification=record, source=source,
                  files=manifest["files"], manifest=manifest)
    return record


def ensure(p, check_mode=False):
    timer = Timer()
    backup.validate(p)
    result = {"changed": False, "commands": [], "pruned": [], "s3_keys": [], "verified": False}
    with timer.phase("preflight"):
        repos = repositories.Repositories(p)
    result["repositories_down"] = dict(repos.down)

    skipped = []
    if p.get("backup_id") and check_mode:
        known = ledger.read_manifest(os.path.join(p["dest"], p["backup_id"])) is not None or (
            p["backup_id"] in repositories.ledger_union(None, repos, skipped))
        repositories.report_skipped(result, skipped)
        if not known:
            raise FediflowError("backup_id '%s' is not in the ledger" % p["backup_id"])
        result.update(changed=True, backup_id=p["backup_id"], would_verify=p["verify"],
                      duration_s=timer.elapsed())
        return result
    if p.get("backup_id"):
        record = verify_existing(p, repos, result, timer)
        result.update(duration_s=timer.elapsed(), phases=timer.phases)
        if not record["ok"] and record["ok"] is not None:
            raise FediflowError("backup %s failed verification (%s): %s" % (
                p["backup_id"], p["verify"], record.get("error")), result=result)
        return result

    entries = repositories.ledger_union(p["dest"], repos, skipped)
    repositories.report_skipped(result, skipped)
    before_ids = sorted(entries)
    if check_mode:
        placeholder = {"id": "(new)", "kind": p["mode"], "stop_time": ledger.iso(ledger.utcnow()),
                       "verification": {"ok": True}, "cluster": p.get("cluster_name"),
                       "region": p.get("region_name"), "source": {"database": p.get("db")}}
        plan = [(i, r) for i, r in _retention(p, [m for m, _w in entries.values()], placeholder) if i != "(new)"]
        result.update(changed=True, backup_id=None, would_prune=[{"id": i, "reason": r} for i, r in plan],
                      diff={"before": {"backups": before_ids},
                            "after": {"backups": sorted(set(before_ids) - {item[0] for item in plan}) + ["(new backup)"]}},
                      duration_s=timer.elapsed())
        return result

    os.makedirs(p["dest"], mode=0o700, exist_ok=True)
    result["cleaned"] = ledger.clean_leftovers(p["dest"])
    backup_id = ledger.new_backup_id(p["mode"])
    final = os.path.join(p["dest"], backup_id)
    start = ledger.utcnow()
    want_counts = p["verify"] == "restore" if p.get("record_row_counts") is None else bool(p["record_row_counts"])
    with ledger.WorkDir(p["dest"], ".partial-" + backup_id) as held:  # removed if anything below fails
        work = held.path
        with timer.phase("backup"):
            take = backup.take_logical if p["mode"] == "logical" else backup.take_physical
            source = take(p, work, result["commands"], want_counts)
        stop = ledger.utcnow()
        with timer.phase("manifest"):
            chmod_tree(work)
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
        ledger.publish(work, final, manifest)  # the backup exists from here on
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
    where = repositories.copy_local_backup(repos, final, manifest, result, timer, "verified backup " + backup_id,
                                           p.get("s3_sse"), p.get("s3_kms_key_id"), p.get("s3_storage_class"))
    entries[backup_id] = (manifest, where)
    with timer.phase("retention"):
        plan, result["pruned"] = repositories.prune_each(p["dest"], repos, entries, lambda held: _retention(p, held),
                                                         ledger.remove_local)
    for item in result["pruned"]:
        for where, lock in sorted(item.get("locked", {}).items()):
            result.setdefault("warnings", []).append("retention left backup %s in %s: %s" % (item["id"], where, lock["why"]))
    result["diff"] = {"before": {"backups": before_ids},
                      "after": {"backups": sorted(set(entries) - set(plan))}}
    result.update(duration_s=timer.elapsed(), phases=timer.phases)
    return result
