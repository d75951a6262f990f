# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Critical Redis cache keys: backup (SCAN + DUMP + PTTL) and warm-up restore (RESTORE).

Backup: the keys matching the critical patterns are found with SCAN and read in batches of
``TYPE``/``PTTL``/``DUMP`` inside MULTI/EXEC (each batch is atomic; the whole set is not a
point-in-time snapshot: keys written during the scan may or may not be in it). Every batch
records the wall-clock millisecond before it ran, so a key's remaining TTL is known at that
instant. The records are written gzip-compressed as JSON lines (key and DUMP payload in base64)
into a hidden work directory (held by the run's lock, ledger.WorkDir), mode 0600, verified by reading them
back, fsynced, renamed into place, the rename fsynced, and the ledger manifest is written last
(ledger.publish): a half-written backup is never visible, even after a crash of the host.

Restore: each key is written with RESTORE and the TTL it has left *now*: its TTL at backup time
minus the time elapsed since its batch was read. A key whose TTL ran out in between is not
written (``expired``). A key that is present in the target is newer than the backup and left
alone (``already_present``) unless ``overwrite``; with ``overwrite`` a present key whose DUMP
equals the backup's is left alone too, so a second run writes nothing.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import time

from ansible_collections.fediflow.dr.plugins.module_utils import ledger, redisconn, repos as repositories
from ansible_collections.fediflow.dr.plugins.module_utils.backup_run import chmod_tree
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer
from ansible_collections.fediflow.dr.plugins.module_utils.walarchive import sha256_file

KIND = "cache"
DATA_FILE = "keys.jsonl.gz"
FORMAT_VERSION = 1
OUTCOMES = ("restored", "replaced", "already_present", "expired", "failed")
DIFF_KEY_LIMIT = 200


def now_ms():
    return int(time.time() * 1000)


def key_text(key):
    """A key for people (results, messages): bytes decoded, undecodable bytes escaped."""
    if isinstance(key, bytes):
        return key.decode("utf-8", "backslashreplace")
    return str(key)


# --------------------------------------------------------------------------- pure parts

def validate(p):
    """Refuse bad input before anything is touched; messages name the option."""
    if p["state"] not in ("backup", "restore"):
        raise FediflowError("state must be backup or restore, got '%s'" % p["state"])
    if not p.get("dest") or not os.path.isabs(p["dest"]):
        raise FediflowError("dest must be an absolute directory path, got '%s'" % p.get("dest"))
    if p["state"] == "backup":
        patterns = p.get("patterns") or []
        if not patterns:
            raise FediflowError("patterns must list at least one key pattern for state=backup")
        for pattern in patterns:
            if not pattern or not pattern.strip():
                raise FediflowError("patterns must not contain an empty pattern")
    share = p.get("max_failed_share")
    if share is not None and not 0.0 <= float(share) <= 1.0:
        raise FediflowError("max_failed_share must be between 0 and 1, got %s" % share)
    for opt in ("batch_size", "scan_count"):
        if p.get(opt) is not None and int(p[opt]) < 1:
            raise FediflowError("%s must be at least 1, got %s" % (opt, p[opt]))
    for opt in ("retention_count", "retention_days"):
        if p.get(opt) is not None and int(p[opt]) < 1:
            raise FediflowError("%s must be at least 1 (0 would delete every backup), got %s" % (opt, p[opt]))
    if p.get("backup_id") and ("/" in p["backup_id"] or p["backup_id"].startswith(".")):
        raise FediflowError("backup_id '%s' is not a backup id" % p["backup_id"])
    if p.get("s3_sse") not in (None, "AES256", "aws:kms"):
        raise FediflowError("s3_sse must be AES256 or aws:kms, got '%s'" % p["s3_sse"])
    redisconn.validate_conn(p)


def value_digest(rtype, value):
    """sha256 of a hash's or set's content in a canonical order.

    DUMP serializes a hash table in its iteration order, which differs between two servers
    holding the same hash or set; this digest tells an identical value for O(overwrite)."""
    if rtype == "hash":
        items = sorted((base64.b64encode(k).decode("ascii"), base64.b64encode(v).decode("ascii"))
                       for k, v in value.items())
    elif rtype == "set":
        items = sorted(base64.b64encode(m).decode("ascii") for m in value)
    else:
        return None
    return hashlib.sha256(json.dumps([rtype, items]).encode("ascii")).hexdigest()


def encode_record(key, rtype, pttl, at_ms, payload, pattern_index, digest=None):
    raw = {"k": base64.b64encode(key).decode("ascii"), "t": rtype, "p": int(pttl),
           "a": int(at_ms), "d": base64.b64encode(payload).decode("ascii"), "i": pattern_index}
    if digest:
        raw["c"] = digest
    return json.dumps(raw, sort_keys=True)


def decode_record(line):
    raw = json.loads(line)
    return {"key": base64.b64decode(raw["k"]), "type": raw["t"], "pttl": int(raw["p"]),
            "at_ms": int(raw["a"]), "dump": base64.b64decode(raw["d"]), "pattern": raw.get("i"),
            "digest": raw.get("c")}


def same_value(record, here):
    """Whether the present value ``{'dump', 'digest'}`` equals the backup's."""
    return here["dump"] == record["dump"] or bool(record.get("digest") and here.get("digest") == record["digest"])


def remaining_ttl(record, at_now_ms):
    """TTL in ms to RESTORE with: 0 = no expiry, None = already expired."""
    if record["pttl"] < 0:
        return 0
    left = record["pttl"] - max(0, at_now_ms - record["at_ms"])
    return left if left > 0 else None


def plan_restore(records, current, at_now_ms, overwrite=False):
    """What a restore does to each key, as plain data: ``[{'record', 'action', 'ttl_ms'}]``.

    ``current`` maps a key to None (absent in the target), True (present) or
    ``{'dump', 'digest'}`` (present, fetched for ``overwrite`` to tell an identical value). Actions: ``restored``
    (absent, written), ``replaced`` (present and different, overwrite), ``already_present``,
    ``expired`` (its TTL ran out since the backup)."""
    plan = []
    for record in records:
        ttl = remaining_ttl(record, at_now_ms)
        here = current.get(record["key"])
        if ttl is None:
            action = "expired"
        elif here is None:
            action = "restored"
        elif overwrite and here is not True and not same_value(record, here):
            action = "replaced"
        else:
            action = "already_present"
        plan.append({"record": record, "action": action, "ttl_ms": ttl})
    return plan


def summarize(outcomes):
    """Counts per outcome (every outcome named, zero included) and the total."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome in outcomes:
        counts[outcome] += 1
    counts["total"] = len(outcomes)
    return counts


def failed_share(counts):
    return counts["failed"] / counts["total"] if counts["total"] else 0.0


def restore_diff(keys, promote):
    """--diff: the counts, which keys get written (the first DIFF_KEY_LIMIT of them), the role change."""
    written = [k["key"] for k in keys if k["outcome"] in ("restored", "replaced")]
    before = {"keys_written": [], "role": "replica" if promote else "unchanged"}
    after = {"keys_written": written[:DIFF_KEY_LIMIT], "role": "primary" if promote else "unchanged",
             "counts": summarize([k["outcome"] for k in keys])}
    if len(written) > DIFF_KEY_LIMIT:
        after["keys_written"].append("... and %d more" % (len(written) - DIFF_KEY_LIMIT))
    return {"before": before, "after": after}


def chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def newest_backup(manifests, backup_id=None):
    """The ledger entry to restore: ``backup_id``, else the newest verified cache backup."""
    pool = [m for m in manifests if m.get("kind") == KIND]
    if backup_id:
        found = [m for m in pool if m.get("id") == backup_id]
        if not found:
            raise FediflowError("backup_id '%s' is not a cache backup in the ledger" % backup_id)
        return found[0]
    verified = sorted((m for m in pool if ledger.is_verified(m)), key=ledger.sort_key, reverse=True)
    if not verified:
        raise FediflowError("no verified cache backup in the ledger (take one with state=backup)")
    return verified[0]


# --------------------------------------------------------------------------- backup

def scan_keys(client, patterns, scan_count):
    """Keys matching each pattern, each key once (in the first pattern that matched)."""
    seen = set()
    ordered = []
    per_pattern = {}
    for index, pattern in enumerate(patterns):
        matched = 0
        for key in client.scan_iter(match=pattern, count=scan_count):
            matched += 1
            if key not in seen:
                seen.add(key)
                ordered.append((key, index))
        per_pattern[pattern] = matched
    return ordered, per_pattern


def _check_patterns(per_pattern, allow_empty):
    empty = [pat for pat, count in per_pattern.items() if count == 0]
    if empty and not allow_empty:
        raise FediflowError("patterns: %s matched no key in Redis; fix the pattern, or set "
                            "allow_empty_patterns=true if an empty match is expected" % ", ".join(
                                "'%s'" % pat for pat in empty))
    return empty


def _digests(client, typed):
    """{key: value_digest} of the hashes and sets among ``typed`` ([(key, type)])."""
    wanted = [(key, rtype) for key, rtype in typed if rtype in ("hash", "set")]
    if not wanted:
        return {}
    pipe = client.pipeline(transaction=False)
    for key, rtype in wanted:
        if rtype == "hash":
            pipe.hgetall(key)
        else:
            pipe.smembers(key)
    replies = pipe.execute()
    return {key: value_digest(rtype, value) for (key, rtype), value in zip(wanted, replies)}


def dump_batches(client, keyed, batch_size, handle):
    """TYPE/PTTL/DUMP per batch inside MULTI/EXEC; writes records; returns (written, vanished, types)."""
    written = 0
    vanished = 0
    types = {}
    for batch in chunks(keyed, batch_size):
        pipe = client.pipeline(transaction=True)
        for key, _index in batch:
            pipe.type(key)
            pipe.pttl(key)
            pipe.dump(key)
        at_ms = now_ms()
        replies = pipe.execute()
        found = []
        for pos, (key, index) in enumerate(batch):
            rtype, pttl, payload = replies[3 * pos:3 * pos + 3]
            if payload is None:  # deleted or expired between SCAN and DUMP
                vanished += 1
                continue
            found.append((key, index, key_text(rtype), pttl, payload))
        digests = _digests(client, [(f[0], f[2]) for f in found])
        for key, index, rtype, pttl, payload in found:
            types[rtype] = types.get(rtype, 0) + 1
            handle.write((encode_record(key, rtype, pttl, at_ms, payload, index, digests.get(key)) + "\n").encode("ascii"))
            written += 1
    return written, vanished, types


def read_records(path):
    with gzip.open(path, "rb") as handle:
        return [decode_record(line) for line in handle if line.strip()]


def verify_files(backup_dir, manifest):
    """Every file of the manifest is there with its size and sha256 (a corrupt backup is refused)."""
    for entry in manifest.get("files") or []:
        full = os.path.join(backup_dir, entry["path"])
        if not os.path.isfile(full):
            raise FediflowError("cache backup %s: file %s is missing" % (manifest["id"], entry["path"]))
        if os.path.getsize(full) != entry["size"] or sha256_file(full) != entry["sha256"]:
            raise FediflowError("cache backup %s: file %s does not match its manifest checksum" % (
                manifest["id"], entry["path"]))


def _same_source(manifest, p):
    return manifest.get("cluster") == p.get("source_name") and manifest.get("region") == p.get("region_name")


def backup(p, check_mode=False):
    timer = Timer()
    validate(p)
    result = {"changed": False, "backup_id": None, "pruned": [], "s3_keys": []}
    with timer.phase("connect"):
        client = redisconn.connect(p)
    try:
        with timer.phase("preflight"):
            repos = repositories.Repositories(p)
        result["repositories_down"] = dict(repos.down)
        role = redisconn.replication(client)["role"]
        with timer.phase("scan"):
            keyed, per_pattern = scan_keys(client, p["patterns"], p["scan_count"])
        empty = _check_patterns(per_pattern, p.get("allow_empty_patterns"))
        result.update(keys_matched=per_pattern, empty_patterns=empty, key_count=len(keyed), source_role=role)
        if check_mode:
            result.update(changed=True, diff={"before": {"backup": None},
                                              "after": {"backup": "(new cache backup of %d keys)" % len(keyed)}},
                          duration_s=timer.elapsed())
            return result
        os.makedirs(p["dest"], mode=0o700, exist_ok=True)
        ledger.clean_leftovers(p["dest"])
        backup_id = ledger.new_backup_id(KIND)
        final = os.path.join(p["dest"], backup_id)
        start = ledger.utcnow()
        with ledger.WorkDir(p["dest"], ".partial-" + backup_id) as held:  # removed if anything below fails
            work = held.path
            fd = os.open(os.path.join(work, DATA_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with timer.phase("dump"):
                with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
                    written, vanished, types = dump_batches(client, keyed, p["batch_size"], handle)
                    raw.flush()
            stop = ledger.utcnow()
            with timer.phase("verify"):
                chmod_tree(work)
                files = ledger.file_entries(work)
                reread = read_records(os.path.join(work, DATA_FILE))
                ok = len(reread) == written
            record = {"method": "reread", "ok": ok, "time": ledger.iso(ledger.utcnow()),
                      "keys": len(reread), "error": None if ok else "read back %d of %d keys" % (len(reread), written)}
            manifest = {
                "ledger_version": ledger.LEDGER_VERSION, "id": backup_id, "kind": KIND,
                "region": p.get("region_name"), "cluster": p.get("source_name"),
                "start_time": ledger.iso(start), "stop_time": ledger.iso(stop),
                "start_lsn": None, "stop_lsn": None,
                "source": {"redis": redisconn.describe(p), "role": role, "patterns": list(p["patterns"]),
                           "keys_matched": per_pattern, "keys": written, "vanished": vanished, "types": types,
                           "format": FORMAT_VERSION, "consistency": "per batch of %d keys (MULTI/EXEC), not "
                           "point-in-time across batches" % p["batch_size"]},
                "files": files, "size_bytes": sum(f["size"] for f in files),
                "verification": record, "verification_history": [record], "tags": p.get("tags") or {},
            }
            if not ok:
                raise FediflowError("cache backup %s failed verification: %s" % (backup_id, record["error"]))
            ledger.publish(work, final, manifest)  # fsynced, renamed, fsynced: then the manifest says it exists
        result.update(changed=True, backup_id=backup_id, backup_path=final, keys_saved=written, vanished=vanished,
                      types=types, files=files, size_bytes=manifest["size_bytes"], manifest=manifest,
                      start_time=manifest["start_time"], stop_time=manifest["stop_time"])
        with timer.phase("ledger"):
            skipped = []
            entries = repositories.ledger_union(p["dest"], repos, skipped)
            repositories.report_skipped(result, skipped)
        before_ids = sorted(i for i in entries if i != backup_id)
        where = repositories.copy_local_backup(repos, final, manifest, result, timer, "cache backup " + backup_id,
                                               p.get("s3_sse"), p.get("s3_kms_key_id"))
        entries[backup_id] = (manifest, where)
        with timer.phase("retention"):
            plan, result["pruned"] = repositories.prune_each(
                p["dest"], repos, entries, lambda held: ledger.plan_retention(
                    [m for m in held if _same_source(m, p)], ledger.utcnow(), p.get("retention_count"),
                    p.get("retention_days"), kind=KIND), ledger.remove_local)
        result["diff"] = {"before": {"backups": before_ids},
                          "after": {"backups": sorted(set(entries) - set(plan))}}
    finally:
        client.close()
    result.update(duration_s=timer.elapsed(), phases=timer.phases)
    return result


# --------------------------------------------------------------------------- restore

def _load_backup(p, repos, timer, skipped=None):
    """(manifest, records) of the backup to restore: the local copy, else the first repository holding it
    that answers (downloaded, checked, removed). A repository that is down (a lost region) is skipped."""
    with timer.phase("ledger"):
        entries = repositories.ledger_union(p["dest"], repos, skipped)
    down = "; ".join("%s: %s" % kv for kv in sorted(repos.down.items())) or None
    if not any(m.get("kind") == KIND for m, _where in entries.values()) and down:
        raise FediflowError("no cache backup in the local ledger and repositories that answer (down: %s)" % down)
    manifest = newest_backup([m for m, _where in entries.values()], p.get("backup_id"))
    where = entries[manifest["id"]][1]
    local_dir = os.path.join(p["dest"], manifest["id"])
    temp, errors = None, []
    if repositories.LOCAL not in where:
        temp = os.path.join(p["dest"], ".restore-" + manifest["id"])
        os.makedirs(p["dest"], mode=0o700, exist_ok=True)
        for name, store in repositories.first_holding(repos, where):
            try:
                with timer.phase("download"):
                    store.download_backup(manifest, temp)
                    verify_files(temp, manifest)
                break
            except FediflowError as exc:
                shutil.rmtree(temp, ignore_errors=True)
                errors.append("%s: %s" % (name, exc.message))
        else:
            raise FediflowError("cache backup %s could not be read from any repository holding it (%s)"
                                % (manifest["id"], "; ".join(errors)))
    try:
        with timer.phase("read"):
            verify_files(temp or local_dir, manifest)
            records = read_records(os.path.join(temp or local_dir, DATA_FILE))
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    return manifest, records, sorted(where), "; ".join(filter(None, [down] + errors)) or None


def _current(client, batch, overwrite):
    """What the target holds for each key of ``batch`` (see plan_restore)."""
    pipe = client.pipeline(transaction=False)
    for record in batch:
        if overwrite:
            pipe.dump(record["key"])
            pipe.type(record["key"])
        else:
            pipe.exists(record["key"])
    replies = pipe.execute()
    if not overwrite:
        return {r["key"]: (True if reply else None) for r, reply in zip(batch, replies)}
    current = {}
    differing = []
    for pos, record in enumerate(batch):
        dump, rtype = replies[2 * pos:2 * pos + 2]
        current[record["key"]] = None if dump is None else {"dump": dump, "digest": None}
        if dump is not None and dump != record["dump"] and record.get("digest"):
            differing.append((record["key"], key_text(rtype)))
    for key, digest in _digests(client, differing).items():
        current[key]["digest"] = digest
    return current


def _apply(client, steps):
    """RESTORE the keys of ``steps``; returns {key: (outcome, error)} for each written step."""
    writes = [s for s in steps if s["action"] in ("restored", "replaced")]
    if not writes:
        return {}
    pipe = client.pipeline(transaction=False)
    for step in writes:
        pipe.restore(step["record"]["key"], step["ttl_ms"], step["record"]["dump"],
                     replace=step["action"] == "replaced")
    replies = pipe.execute(raise_on_error=False)
    done = {}
    for step, reply in zip(writes, replies):
        if isinstance(reply, Exception):
            text = str(reply).strip().splitlines()[0] if str(reply).strip() else type(reply).__name__
            # written by the application between our check and RESTORE: it is newer, leave it
            done[step["record"]["key"]] = ("already_present", None) if text.startswith("BUSYKEY") else ("failed", text)
        else:
            done[step["record"]["key"]] = (step["action"], None)
    return done


def restore(p, check_mode=False):
    timer = Timer()
    validate(p)
    result = {"changed": False, "promoted": False}
    with timer.phase("connect"):
        client = redisconn.connect(p)
    try:
        repl = redisconn.replication(client)
        if repl["role"] != "master" and not p.get("promote_replica"):
            raise FediflowError(
                "target Redis %s is a read-only replica of %s:%s; restore into the primary, or set "
                "promote_replica=true to make it a writable primary first (REPLICAOF NO ONE), as after a "
                "region failover" % (redisconn.describe(p), repl["master_host"], repl["master_port"]))
        promote = repl["role"] != "master"
        with timer.phase("preflight"):
            repos = repositories.Repositories(p, strict=False)
        skipped = []
        try:
            manifest, records, where, s3_error = _load_backup(p, repos, timer, skipped)
        finally:
            repositories.report_skipped(result, skipped)
        result.update(backup_id=manifest["id"], backup_stop_time=manifest.get("stop_time"), backup_where=where,
                      role_before="replica" if promote else "primary", s3_error=s3_error)
        if promote and not check_mode:
            with timer.phase("promote"):
                client.replicaof("NO", "ONE")
            result.update(promoted=True, changed=True)
        elif promote:
            result["promoted"] = True
        keys = []
        with timer.phase("restore"):
            for batch in chunks(records, p["batch_size"]):
                at_now = now_ms()
                steps = plan_restore(batch, _current(client, batch, p.get("overwrite")), at_now, p.get("overwrite"))
                done = {} if check_mode else _apply(client, steps)
                for step in steps:
                    outcome, error = done.get(step["record"]["key"], (step["action"], None))
                    entry = {"key": key_text(step["record"]["key"]), "outcome": outcome}
                    if error:
                        entry["error"] = error
                    keys.append(entry)
    finally:
        client.close()
    counts = summarize([k["outcome"] for k in keys])
    share = failed_share(counts)
    result.update(counts=counts, keys=keys, failed_share=round(share, 4),
                  diff=restore_diff(keys, promote))
    result["changed"] = bool(result["changed"] or promote or counts["restored"] or counts["replaced"])
    result.update(duration_s=timer.elapsed(), phases=timer.phases)
    if share > float(p["max_failed_share"]):
        raise FediflowError("cache restore of %s into %s: %s of %s keys failed (%.1f %% > max_failed_share %s); "
                            "see keys in the result for each error" % (
                                manifest["id"], redisconn.describe(p), counts["failed"], counts["total"],
                                100.0 * share, p["max_failed_share"]), result=result)
    return result


def ensure(p, check_mode=False):
    return backup(p, check_mode) if p["state"] == "backup" else restore(p, check_mode)
