# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup repositories: every backup (database, media, configuration, cache) is written to each
repository of the inventory's list - one S3 bucket per region, the host's own region first - and
checked there, so losing a region loses one copy, not the backups.

A repository that does not answer is *down*: reported, its copy missing, the backup degraded. A
bucket that does not exist is bad input: refused before anything is touched. A backup has as many
copies as repositories that hold its files *and* its manifest (written last, per repository), and
counts as complete with ``required_copies`` of them (0: every repository), as pgBackRest counts a
backup of several repositories. Retention runs per location (the local ledger and each
repository), so a copy that failed never makes another location lose its last good backup.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.fediflow.dr.plugins.module_utils import ledger, untrusted
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError
from ansible_collections.fediflow.dr.plugins.module_utils.s3store import Locked, MissingBucket, S3Backups

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
LOCAL = "local"
SINGLE = "s3"   # the name of the one repository the s3_bucket option gives


def argument_spec(write=True):
    """The options of a module that reads (``repositories``) or writes backups (``required_copies`` too),
    documented by the ``repositories`` fragment (and its ``COPIES`` part)."""
    spec = {
        "repositories": {"type": "list", "elements": "dict", "options": {
            "name": {"type": "str", "required": True},
            "bucket": {"type": "str", "required": True},
            "prefix": {"type": "str", "default": ""},
            "region": {"type": "str"},
            "endpoint_url": {"type": "str"},
        }},
    }
    if write:
        spec["required_copies"] = {"type": "int", "default": 0}
    return spec


def _join(*parts):
    return "/".join(x.strip("/") for x in parts if x and x.strip("/"))


def _check_prefix(prefix, option):
    if ".." in prefix.split("/") or "//" in prefix:
        raise FediflowError("%s '%s' must not hold '..' or empty parts" % (option, prefix))


def normalize(p):
    """The run's repositories, in order, as ``[{name, bucket, prefix, region, endpoint_url}]``:
    ``repositories`` (each one's prefix joined with ``s3_prefix``, the kind's place in it), else the one
    ``s3_bucket``, else none (local only). Refuses bad input naming the option."""
    given = p.get("repositories") or []
    prefix = (p.get("s3_prefix") or "").strip("/")
    _check_prefix(prefix, "s3_prefix")
    if given and p.get("s3_bucket"):
        raise FediflowError("repositories and s3_bucket are mutually exclusive (s3_bucket is the one-repository "
                            "shorthand)")
    if not given:
        if not p.get("s3_bucket"):
            return []
        return [{"name": SINGLE, "bucket": p["s3_bucket"], "prefix": prefix, "region": p.get("region"),
                 "endpoint_url": p.get("endpoint_url")}]
    out, names, places = [], set(), set()
    for index, repo in enumerate(given):
        if not isinstance(repo, dict):
            raise FediflowError("repositories[%d] must be a dictionary (name, bucket, prefix, region, endpoint_url)"
                                % index)
        name = repo.get("name") or ""
        if not NAME_RE.match(str(name)) or name == LOCAL:
            raise FediflowError("repositories[%d].name '%s' must be letters, digits, '.', '_' or '-' (and not '%s')"
                                % (index, name, LOCAL))
        if name in names:
            raise FediflowError("repositories: the name '%s' is given twice" % name)
        if not repo.get("bucket"):
            raise FediflowError("repositories[%d] (%s): bucket is required" % (index, name))
        _check_prefix((repo.get("prefix") or "").strip("/"), "repositories[%d].prefix" % index)
        entry = {"name": name, "bucket": repo["bucket"], "prefix": _join(repo.get("prefix") or "", prefix),
                 "region": repo.get("region") or p.get("region"),
                 "endpoint_url": repo.get("endpoint_url") or p.get("endpoint_url")}
        place = (entry["endpoint_url"] or "", entry["region"] or "", entry["bucket"], entry["prefix"])
        if place in places:
            raise FediflowError("repositories: '%s' is the same bucket and prefix as another repository (one place, "
                                "one copy)" % name)
        names.add(name)
        places.add(place)
        out.append(entry)
    return out


def required(p, repos):
    """How many copies make a backup complete (``required_copies``; 0 = every repository)."""
    wanted = p.get("required_copies") or 0
    if wanted < 0 or wanted > max(len(repos), 1) or (wanted and not repos):
        raise FediflowError("required_copies must be 0 (every repository) to %d, got %s" % (len(repos), wanted))
    return wanted or len(repos)


def repo_params(p, repo):
    """The module's AWS options with this repository's endpoint and region."""
    return dict(p, endpoint_url=repo["endpoint_url"], region=repo["region"])


class Repositories:
    """The repositories of one run: ``stores`` (name -> store, in order) that answered, ``down``
    (name -> why) that did not. ``factory(params, repo)`` makes a store (S3Backups by default).
    ``strict`` (writers): a bucket that does not exist is bad input, refused; a reader (a restore after
    a region is lost, when its bucket may be gone) counts it as down."""

    def __init__(self, p, factory=None, probe=True, strict=True):
        self.p = p
        self.strict = strict
        self.repos = normalize(p)
        self.required = required(p, self.repos)
        self.by_name = {r["name"]: r for r in self.repos}
        self.stores, self.down = {}, {}
        factory = factory or (lambda params, repo: S3Backups(params, repo["bucket"], repo["prefix"]))
        for repo in self.repos:
            self.stores[repo["name"]] = factory(repo_params(p, repo), repo)
        if probe:
            self.probe()

    def probe(self):
        """Which repositories answer. A missing bucket is refused (bad input) before anything is touched."""
        def check(name):
            try:
                self.stores[name].check_bucket(quick=True)
                return None
            except MissingBucket as exc:
                return exc
            except FediflowError as exc:
                return exc.message
        names = list(self.stores)
        answers = parallel(check, names)
        for name, answer in zip(names, answers):
            if isinstance(answer, MissingBucket) and self.strict:
                raise FediflowError("repository '%s': %s" % (name, answer.message))
            if isinstance(answer, MissingBucket):
                answer = answer.message
            if answer:
                self.mark_down(name, answer)

    def mark_down(self, name, why):
        self.stores.pop(name, None)
        self.down.setdefault(name, why)

    @property
    def any(self):
        return bool(self.repos)

    def describe(self):
        return ", ".join("%s (s3://%s/%s)" % (r["name"], r["bucket"], r["prefix"]) for r in self.repos)


def parallel(func, items):
    if len(items) <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(func, items))


def guard(func):
    """``func(item)`` as ``(result, None)``, or ``(None, why)`` when it failed: one repository's failure is its own."""
    def run(item):
        try:
            return func(item), None
        except FediflowError as exc:
            return None, exc.message
        except Exception as exc:  # pylint: disable=broad-except
            return None, "%s: %s" % (type(exc).__name__, exc)
    return run


def ledger_union(dest, repos, skipped=None):
    """``{id: (manifest, where)}`` of the local ledger and every repository that answers (``where``:
    ``local`` and repository names). The local manifest is preferred (it holds the copies' outcome);
    a repository whose listing fails is marked down. A malformed manifest (anywhere) is left out and
    recorded in ``skipped`` (``{where, error}``): it never blocks the others and is never trusted."""
    entries = {}
    for manifest in ledger.list_local(dest, skipped) if dest else []:
        entries[manifest["id"]] = (manifest, {LOCAL})
    if repos is None:
        return entries
    names = list(repos.stores)
    listed = parallel(guard(lambda name: repos.stores[name].list_manifests(skipped)), names)
    for name, (manifests, error) in zip(names, listed):
        if error:
            repos.mark_down(name, error)
            continue
        for manifest in manifests:
            if not isinstance(manifest, dict) or not manifest.get("id"):
                continue
            entries.setdefault(manifest["id"], (manifest, set()))[1].add(name)
    return entries


def report_skipped(result, skipped):
    """Malformed manifests into a module result: ``skipped_manifests`` and one warning each."""
    if skipped:
        result["skipped_manifests"] = list(skipped)
        result.setdefault("warnings", []).extend(untrusted.warnings_for(skipped))


def copy_backup(repos, backup_dir, manifest, sse=None, kms_key_id=None, storage_class=None):
    """Write one backup to every repository that answers, at once: its files, each checked there (size and
    sha256), then - once every repository has had its try - the manifest, which records where the copies
    are. A repository whose files fail gets no manifest (nothing half-visible). Returns the copies
    (one per repository of the list, down ones included) and the keys written."""
    names = list(repos.stores)
    uploaded = parallel(guard(lambda name: repos.stores[name].upload_files(
        backup_dir, manifest, sse, kms_key_id, storage_class)), names)
    copies = {}
    for name, (keys, error) in zip(names, uploaded):
        copies[name] = {"ok": error is None, "error": error, "keys": keys or []}
    good = [n for n in names if copies[n]["ok"]]
    manifest["copies"] = [_copy_record(repos.by_name[n], n in good) for n in names] + \
        [_copy_record(repos.by_name[n], False) for n in repos.down]
    written = parallel(guard(lambda name: repos.stores[name].put_manifest(manifest, sse, kms_key_id)), good)
    for name, (key, error) in zip(good, written):
        if error:
            copies[name].update(ok=False, error="manifest: " + error)
        else:
            copies[name]["keys"].append(key)
    for name, why in repos.down.items():
        copies.setdefault(name, {"ok": False, "error": "repository down: %s" % why, "keys": []})
    result = []
    for repo in repos.repos:
        state = copies.get(repo["name"])
        if state is None:
            continue
        result.append(dict(_copy_record(repo, state["ok"]), error=state["error"], keys=len(state["keys"])))
    manifest["copies"] = [{k: v for k, v in c.items() if k != "keys"} for c in result]
    keys = [k for name in names for k in copies[name]["keys"]]
    return result, keys


def _copy_record(repo, ok):
    return {"repository": repo["name"], "bucket": repo["bucket"], "prefix": repo["prefix"],
            "region": repo["region"], "ok": ok}


def outcome(repos, copies):
    """``{copies_ok, copies_required, degraded, complete, down}`` of a backup's copies."""
    good = sum(1 for c in copies if c["ok"])
    return {"copies_ok": good, "copies_required": repos.required, "degraded": good < len(repos.repos),
            "complete": good >= repos.required, "down": sorted(repos.down)}


def copy_local_backup(repos, final, manifest, result, timer, what, sse=None, kms_key_id=None, storage_class=None):
    """A ledger backup kept in ``final`` written to every repository (``copy_backup``), its local manifest
    rewritten with the copies, the outcome in ``result``; returns where it now lives. Short of the required
    copies: fails naming each failed copy (the copies made stay, complete and listed)."""
    where = {LOCAL}
    if not repos.any:
        return where
    with timer.phase("upload"):
        copies, result["s3_keys"] = copy_backup(repos, final, manifest, sse, kms_key_id, storage_class)
    ledger.write_manifest(final, manifest)   # the local entry says where every copy lives
    where.update(c["repository"] for c in copies if c["ok"])
    if not record_copies(result, repos, copies, what):
        result["duration_s"] = timer.elapsed()
        raise FediflowError("%s is kept locally in %s, but %s" % (what, final, copies_error("it", repos, copies)),
                            result=result)
    return where


def record_copies(result, repos, copies, what):
    """The copies and their outcome into a module result; a degraded backup (complete, but not in every
    repository) gets a warning. Returns whether the backup is complete."""
    result.update(copies=copies, **outcome(repos, copies))
    if result["degraded"] and result["complete"]:
        result.setdefault("warnings", []).append(
            "%s is degraded: %d of %d repositories hold it (%s)" % (
                what, result["copies_ok"], len(repos.repos),
                "; ".join("%s: %s" % (c["repository"], c["error"]) for c in copies if not c["ok"])))
    return result["complete"]


def copies_error(what, repos, copies):
    """The failure of a backup short of its required copies, naming each failed one."""
    failed = ["%s: %s" % (c["repository"], c["error"]) for c in copies if not c["ok"]]
    return ("%s has %d of the %d copies it needs (%s); the copies made are complete and listed in the ledger. "
            "During a region outage run with required_copies lowered (fediflow_backup_required_copies) to "
            "accept fewer" % (what, sum(1 for c in copies if c["ok"]), repos.required, "; ".join(failed)))


def prune_each(dest, repos, entries, plan_for, remove_local):
    """Retention per location: ``plan_for(manifests)`` -> ``[(id, reason)]`` over what each location
    (the local ledger, every repository that answers) holds; removals from there only. Returns
    ``(plan, pruned)``: the ids leaving every location, and ``[{id, reason, where}]``."""
    locations = [LOCAL] + (list(repos.stores) if repos is not None else [])
    removed, locked = {}, {}
    for location in locations:
        held = [m for m, where in entries.values() if location in where]
        for backup_id, reason in plan_for(held):
            if location == LOCAL:
                remove_local(dest, backup_id)
            else:
                try:
                    repos.stores[location].delete_backup(backup_id)
                except Locked as exc:  # immutable copy: left, reported, tried again next run
                    removed.setdefault(backup_id, (reason, set()))
                    locked.setdefault(backup_id, {})[location] = {"until": exc.until, "why": str(exc)}
                    continue
            removed.setdefault(backup_id, (reason, set()))[1].add(location)
    pruned = [dict({"id": i, "reason": r, "where": sorted(w)}, **({"locked": locked[i]} if i in locked else {}))
              for i, (r, w) in sorted(removed.items())]
    gone = {i for i, (_r, w) in removed.items() if w >= entries.get(i, (None, set()))[1]}
    return sorted(gone), pruned


def first_holding(repos, where, order=None):
    """The stores holding a backup (``where``), the host's own region first (list order)."""
    names = [n for n in (order or list(repos.stores)) if n in where and n in repos.stores]
    return [(n, repos.stores[n]) for n in names]
