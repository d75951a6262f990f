# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the pgBackRest modules do on a host (pgbackrest.py holds the plain logic they use)."""

from __future__ import annotations

import configparser
import datetime
import os
import pwd
import socket
import time

from ansible_collections.fediflow.dr.plugins.module_utils import atomic, backup as native, pgbackrest, postgres, repos, scratch
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer, last_lines, run

DIR_MODE = 0o750
DEFAULT_PROBE_S = 3

CONFIG_SPEC = {
    "path": {"type": "path", "required": True},
    "owner": {"type": "str", "default": "postgres"},
    "stanza": {"type": "str", "required": True},
    "pg": {"type": "dict", "required": True, "options": {
        "data_dir": {"type": "path", "required": True},
        "port": {"type": "int"},
        "socket_dir": {"type": "path"},
        "user": {"type": "str"},
    }},
    "repositories": dict(repos.argument_spec(write=False)["repositories"], required=True),
    "access_key": {"type": "str", "no_log": True},
    "secret_key": {"type": "str", "no_log": True},
    "ca_file": {"type": "path"},
    "archive_async": {"type": "bool", "default": True},
    "spool_path": {"type": "path", "default": "/var/spool/pgbackrest"},
    "log_path": {"type": "path", "default": "/var/log/pgbackrest"},
    "lock_path": {"type": "path", "default": "/tmp/pgbackrest"},
    "process_max": {"type": "int", "default": 2},
    "compress_type": {"type": "str", "default": "lz4", "choices": list(pgbackrest.COMPRESS_TYPES)},
    "compress_level": {"type": "int"},
    "cipher_pass": {"type": "str", "no_log": True},
    "archive_push_queue_max": {"type": "str"},
    "archive_get_timeout": {"type": "int", "default": pgbackrest.DEFAULT_ARCHIVE_GET_TIMEOUT_S},
}


def _owner(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise FediflowError("owner '%s' is no user of this host" % name) from None


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def configure(p, check_mode):
    """pgbackrest_config: render, compare, write (0600, the owner's), make the directories."""
    timer = Timer()
    user = _owner(p["owner"])
    repo_list = repos.normalize({"repositories": p["repositories"], "s3_prefix": ""})
    settings = {k: p[k] for k in ("spool_path", "log_path", "lock_path", "archive_async", "process_max",
                                  "compress_type", "compress_level", "ca_file", "cipher_pass",
                                  "archive_push_queue_max", "archive_get_timeout")}
    text = pgbackrest.render_config(p["stanza"], p["pg"], repo_list,
                                    {"access_key": p.get("access_key"), "secret_key": p.get("secret_key")}, settings)
    path = pgbackrest.absolute_path(p["path"], "path")
    if p.get("ca_file") and not os.path.isfile(p["ca_file"]):
        raise FediflowError("ca_file %s is not a file" % p["ca_file"])
    if os.path.islink(path):
        raise FediflowError("path %s is a symbolic link: refused (the file holds a secret)" % path)
    before = _read(path)
    try:
        st = os.lstat(path)
        right_owner = st.st_uid == user.pw_uid and (st.st_mode & 0o777) == 0o600
    except FileNotFoundError:
        right_owner = False
    wanted_dirs = [os.path.dirname(path), p["log_path"], p["lock_path"]] + ([p["spool_path"]] if p["archive_async"] else [])
    missing = [d for d in wanted_dirs if not os.path.isdir(d)]
    changed = before != text or not right_owner or bool(missing)
    if changed and not check_mode:
        for directory in missing:
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
            if directory != os.path.dirname(path):
                os.chown(directory, user.pw_uid, user.pw_gid)
            else:  # the configuration's directory: root's, the owner's group may enter
                os.chown(directory, 0, user.pw_gid)
            os.chmod(directory, DIR_MODE)
        with atomic.replacing(path, 0o600) as handle:
            handle.write(text.encode("utf-8"))
            os.fchown(handle.fileno(), user.pw_uid, user.pw_gid)
    binary = pgbackrest.binary()
    return {
        "changed": changed, "path": path, "stanza": p["stanza"],
        "repositories": [{"key": i, "name": r["name"], "bucket": r["bucket"], "path": pgbackrest.repo_path(r.get("prefix"))}
                         for i, r in enumerate(repo_list, start=1)],
        "archive_command": pgbackrest.archive_command(binary, path, p["stanza"]),
        "restore_command": pgbackrest.restore_command(binary, path, p["stanza"]),
        "directories": missing,
        "diff": {"before": pgbackrest.redact(before or ""), "after": pgbackrest.redact(text),
                 "before_header": path, "after_header": path},
        "duration_s": timer.elapsed(),
    }


BACKUP_SPEC = dict(postgres.postgres_common_argument_spec(), **{
    "verify": {"type": "str", "default": "list", "choices": ["none", "list", "restore"]},
    "bin_dir": {"type": "path"},
    "scratch_dir": {"type": "path", "default": "/var/tmp"},
    "scratch_port": {"type": "int"},
    "verify_host_name": {"type": "str"},
    "config": {"type": "path", "required": True},
    "stanza": {"type": "str", "required": True},
    "type": {"type": "str", "default": "auto", "choices": ["auto"] + list(pgbackrest.BACKUP_TYPES)},
    "full_interval_s": {"type": "int", "default": pgbackrest.DEFAULT_FULL_INTERVAL_S},
    "diff_interval_s": {"type": "int", "default": pgbackrest.DEFAULT_DIFF_INTERVAL_S},
    "repositories": {"type": "list", "elements": "str", "required": True},
    "required_copies": {"type": "int", "default": 0},
    "os_user": {"type": "str", "default": "postgres"},
    "binary": {"type": "path"},
    "timeout": {"type": "int", "default": 86400},
    "retention_full": {"type": "int"},
    "retention_days": {"type": "int"},
    "expire_config": {"type": "path"},
    "probe_timeout": {"type": "int", "default": DEFAULT_PROBE_S},
})


def _types(p, names, info):
    """``{repository: (type, why)}``: the type asked for, or with ``auto`` the schedule's (pgbackrest.choose_type)."""
    if p.get("type", "auto") != "auto":
        return {n: (p["type"], "asked for") for n in names}
    now = time.time()
    return {n: pgbackrest.choose_type(info["backups"], n, now, p["full_interval_s"], p["diff_interval_s"])
            if info["repositories"][n]["ok"] else ("full", "its backups could not be read: a full is the safe choice")
            for n in names}


INFO_SPEC = {
    "config": {"type": "path", "required": True},
    "stanza": {"type": "str", "required": True},
    "repositories": {"type": "list", "elements": "str", "required": True},
    "os_user": {"type": "str", "default": "postgres"},
    "binary": {"type": "path"},
    "timeout": {"type": "int", "default": 120},
    "probe_timeout": {"type": "int", "default": DEFAULT_PROBE_S},
}


def info(p, check_mode=False):
    """pgbackrest_info: the engine's ledger and each repository's state, as ``pgbackrest info`` says (read as
    untrusted input). Reads only: the same in check mode."""
    timer = Timer()
    names = _check_names(p)
    if p["timeout"] < 1:
        raise FediflowError("timeout must be 1 s or more")
    binary = pgbackrest.binary(p.get("binary"))
    found = read_info(p, binary, names, timeout=p["timeout"], down=unreachable(p, names))
    verified = [b for b in found["backups"] if b["verification"]["ok"]]
    return {"changed": False, "stanza": p["stanza"], "backups": found["backups"], "repositories": found["repositories"],
            "answering": [n for n in names if found["repositories"][n]["ok"]],
            "down": [n for n in names if not found["repositories"][n]["ok"]],
            "newest_verified": verified[-1] if verified else None, "duration_s": timer.elapsed()}


def _record(result, name, res):
    result["repositories"][name] = {"ok": res.rc == 0, "rc": res.rc, "duration_s": res.duration_s,
                                    "detail": "" if res.rc == 0 else last_lines(res.stderr or res.stdout)}


def unreachable(p, names):
    """``{name: why}`` of the repositories whose S3 endpoint (as the configuration names it) takes no TCP connection
    within ``probe_timeout`` seconds. pgBackRest retries a repository that does not answer for minutes (8 per WAL file
    were measured with a lab region down) before it moves on, so a lost region's repository is left out of every
    command - reported, degraded - instead of holding the run."""
    timeout = p.get("probe_timeout") or DEFAULT_PROBE_S
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(p["config"], encoding="utf-8")
        options = parser["global"] if parser.has_section("global") else {}
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise FediflowError("config %s cannot be read as pgBackRest's: %s" % (p["config"], exc))
    down = {}
    for key, name in enumerate(names, start=1):
        host = options.get("repo%d-s3-endpoint" % key)
        if not host:
            continue   # not an S3 repository (a posix one is the host's own disk)
        try:
            port = int(options.get("repo%d-storage-port" % key) or 443)
        except ValueError:
            raise FediflowError("config %s: repo%d-storage-port is not a number" % (p["config"], key))
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            down[name] = "its endpoint %s:%d took no connection within %g s (%s)" % (host, port, timeout, exc)
    return down


def read_info(p, binary, names, timeout=600, down=None, texts=None):
    """What ``info`` says of the repositories that answer (each alone when one does not: ``--repo``); a down one is
    reported with why, its backups unknown. ``texts``: a list that gets each answer as printed, as ``(repo_names,
    text)``, for what else a reader takes from it (PITR: the archive id)."""
    down = down or {}
    keys = [(k, n) for k, n in enumerate(names, start=1) if n not in down]
    found = {"backups": [], "repositories": {n: {"ok": False, "code": None, "message": "not reachable: " + why}
                                             for n, why in down.items()}}
    # all at once ([]), or each answering repository alone (["--repo=K"]) when one is down
    calls = [([], dict(keys))] if not down else [(["--repo=%d" % k], {k: n}) for k, n in keys]
    merged = {}
    for only, repo_names in calls:
        argv = pgbackrest.command(binary, p["config"], p["stanza"], "info", "--output=json", *only)
        res = run(argv, user=p["os_user"], timeout=timeout)
        if res.rc != 0:
            raise FediflowError("pgbackrest info failed (rc=%d): %s" % (res.rc, last_lines(res.stderr or res.stdout)))
        part = pgbackrest.parse_info(res.stdout, p["stanza"], repo_names)
        if texts is not None:
            texts.append((repo_names, res.stdout))
        found["repositories"].update({n: part["repositories"][n] for n in repo_names.values()})
        for entry in part["backups"]:
            pgbackrest.merge_entry(merged, entry)
    found["backups"] = pgbackrest.oldest_first(merged)
    return found


def _check_names(p):
    pgbackrest.check_stanza(p["stanza"])
    config = pgbackrest.absolute_path(p["config"], "config")
    if os.path.islink(config) or not os.path.isfile(config):
        raise FediflowError("config %s is not a file (pgbackrest_config writes it)" % config)
    names = p["repositories"]
    if not names or len(set(names)) != len(names) or not all(repos.NAME_RE.match(n or "") for n in names):
        raise FediflowError("repositories must name each repository of the configuration once, in its order")
    return names


def _check_backup_params(p):
    names = _check_names(p)
    if not 0 <= p["required_copies"] <= len(names):
        raise FediflowError("required_copies must be 0 (every repository) to %d" % len(names))
    if p["timeout"] < 1:
        raise FediflowError("timeout must be 1 s or more")
    if p.get("type", "auto") == "auto" and not 0 < p.get("diff_interval_s", 1) <= p.get("full_interval_s", 1):
        raise FediflowError("diff_interval_s must be 1 s or more and at most full_interval_s")
    for option in ("retention_full", "retention_days"):
        if p.get(option) is not None and p[option] < 1:
            raise FediflowError("%s must be 1 or more (unset: no expiry)" % option)
    if p.get("expire_config"):
        expire_config = pgbackrest.absolute_path(p["expire_config"], "expire_config")
        if os.path.islink(expire_config) or not os.path.isfile(expire_config):
            raise FediflowError("expire_config %s is not a file (pgbackrest_config writes it)" % expire_config)
    if p.get("verify") == "restore":
        postgres.validate_conn(p)
    return names


def backup(p, check_mode):
    """pgbackrest_backup: stanza-create (idempotent), a backup of the wanted type into every repository in turn
    (a repository that fails is degraded, the others still get theirs), then what info says of the new ones."""
    timer = Timer()
    names = _check_backup_params(p)
    binary = pgbackrest.binary(p.get("binary"))
    required = p["required_copies"] or len(names)
    down = unreachable(p, names)
    before = read_info(p, binary, names, down=down)
    known = {b["id"] for b in before["backups"]}
    result = {"changed": not check_mode, "stanza": p["stanza"], "type": p["type"], "required_copies": required,
              "repositories": {}, "backups": [], "duration_s": 0.0}
    types = _types(p, names, before)
    if check_mode:
        result["repositories"] = {n: {"would_back_up": True, "readable": before["repositories"][n]["ok"],
                                      "type": types[n][0], "why": types[n][1]} for n in names}
        result["changed"] = True
        # what retention would expire of what is there now (the new backup would be newer than all of it)
        result["would_expire"] = _expiry_plans(p, names, before)
        result["unreachable"] = down
        result["duration_s"] = timer.elapsed()
        return result
    missing = [n for n in names if before["repositories"][n]["code"] in pgbackrest.MISSING_STANZA_CODES]
    if missing and down:
        # stanza-create works on every repository at once: with one not answering it would wait it out
        result["stanza_created"] = {"repositories": missing, "ok": False,
                                    "detail": "not run while %s does not answer" % ", ".join(sorted(down))}
    elif missing:
        # a repository that cannot get its stanza fails its backup below and is degraded like any other
        with timer.phase("stanza_create"):
            created = run(pgbackrest.command(binary, p["config"], p["stanza"], "stanza-create"), user=p["os_user"],
                          timeout=600)
        result["stanza_created"] = {"repositories": missing, "ok": created.rc == 0,
                                    "detail": "" if created.rc == 0 else last_lines(created.stderr or created.stdout)}
    conn = postgres.connect(p) if p["verify"] == "restore" else None
    counts = slack = None
    try:
        before_counters = native.change_counters(conn) if conn else None
        for key, name in enumerate(names, start=1):
            if name in down:
                result["repositories"][name] = {"ok": False, "rc": None, "duration_s": 0.0, "type": types[name][0],
                                                "why": types[name][1], "detail": "not reachable: " + down[name]}
                continue
            with timer.phase("backup_" + name):
                res = run(pgbackrest.command(binary, p["config"], p["stanza"], "backup", "--type=" + types[name][0],
                                             "--repo=%d" % key), user=p["os_user"], timeout=p["timeout"])
            if conn and counts is None:
                # the source's rows once the first repository's backup ended; what changed while it ran is the
                # slack the restored counts may differ by (as the native physical backup counts)
                counts = native.row_counts(conn)
                slack = native.count_slack(before_counters, native.change_counters(conn))
            _record(result, name, res)
            result["repositories"][name].update(type=types[name][0], why=types[name][1])
    finally:
        if conn:
            conn.close()
    after = read_info(p, binary, names, down=down)
    new = [b for b in after["backups"] if b["id"] not in known]
    for name, state in result["repositories"].items():
        mine = [b for b in new if name in b["repositories"]]
        if state["ok"] and not mine:
            state.update(ok=False, detail="pgbackrest backup exited 0 but info shows no new backup in this repository")
        state["backup"] = mine[-1]["id"] if mine else None
    result["backups"] = new
    if p["verify"] != "none":
        with timer.phase("verify"):
            result["verification"] = verify_new(p, binary, names, result, counts, slack)
        for name, state in result["repositories"].items():
            checked = result["verification"]["repositories"].get(name)
            if state["ok"] and checked and not checked["ok"]:
                state.update(ok=False, detail="its new backup failed verification: %s" % checked["detail"])
        with timer.phase("annotate"):
            annotate(p, binary, names, result)
    result["copies"] = sum(1 for s in result["repositories"].values() if s["ok"])
    result["degraded"] = sorted(n for n, s in result["repositories"].items() if not s["ok"])
    if result["copies"] < required:
        result["phases"] = dict(timer.phases)
        result["duration_s"] = timer.elapsed()
        raise FediflowError("pgBackRest %s backup of stanza %s is in %d of %d repositories, %d required: %s"
                            % (p["type"], p["stanza"], result["copies"], len(names), required,
                               "; ".join("%s: %s" % (n, result["repositories"][n]["detail"]) for n in result["degraded"])),
                            result=result)
    if p.get("retention_full") or p.get("retention_days"):
        with timer.phase("expire"):
            result["expired"] = expire(p, binary, names, down)
    result["phases"] = dict(timer.phases)
    result["duration_s"] = timer.elapsed()
    return result


def annotate(p, binary, names, result):
    """Each new backup's proof recorded on it in its repository (``pgbackrest annotate``): the ledger PITR, validate,
    retention and reports read from any region. A backup whose proof cannot be recorded counts as no copy (no reader
    could tell it was proven)."""
    record = result["verification"]
    for name, state in result["repositories"].items():
        label = state.get("backup")
        checked = record["repositories"].get(name)
        if not label or not checked:
            continue
        restored = (record.get("restore") or {}).get("repository") == name
        level = "restore" if restored else "list"
        ok = checked["ok"] and (not restored or record["restore"]["ok"])
        res = run(pgbackrest.command(binary, p["config"], p["stanza"], "annotate", "--set=" + label,
                                     "--repo=%d" % (names.index(name) + 1),
                                     *pgbackrest.verification_annotations(level, ok, time.time())),
                  user=p["os_user"], timeout=600)
        state["verified"] = level if ok and res.rc == 0 else None
        if res.rc != 0 and state["ok"]:
            state.update(ok=False, detail="its proof could not be recorded on it (pgbackrest annotate, rc=%d): %s"
                         % (res.rc, last_lines(res.stderr or res.stdout)))


def _expiry_plans(p, names, info):
    """``{repository: {keep_full, expire: [{id, reason}]}}`` for every readable repository (ledger first)."""
    plans = {}
    now = datetime.datetime.now(datetime.timezone.utc)
    for name in names:
        if not info["repositories"][name]["ok"]:
            plans[name] = {"keep_full": None, "expire": [], "detail": "unreadable: %s" % info["repositories"][name]["message"]}
            continue
        keep, gone = pgbackrest.plan_expiry(info["backups"], name, now, p.get("retention_full"), p.get("retention_days"))
        plans[name] = {"keep_full": keep, "expire": [{"id": i, "reason": r} for i, r in gone], "detail": ""}
    return plans


def expire(p, binary, names, down):
    """Retention through ``pgbackrest expire`` (backups and the WAL only they needed, together), per repository,
    with the count ``plan_expiry`` derives from the ledger - the newest verified backup is never expired. ``down``:
    the repositories the run's probe left out. What info shows gone afterwards is reported, not what was planned; a
    repository whose expiry fails is reported and left as it was (the next run tries again)."""
    info = read_info(p, binary, names, down=down)
    plans = _expiry_plans(p, names, info)
    for name, plan in plans.items():
        if plan["keep_full"] is None:
            plan.update(ok=not plan["detail"], expired=[])
            continue
        key = names.index(name) + 1
        res = run(pgbackrest.command(binary, p.get("expire_config") or p["config"], p["stanza"], "expire", "--repo=%d" % key,
                                     "--repo%d-retention-full-type=count" % key,
                                     "--repo%d-retention-full=%d" % (key, plan["keep_full"])),
                  user=p["os_user"], timeout=p["timeout"])
        plan.update(ok=res.rc == 0, rc=res.rc, detail="" if res.rc == 0 else last_lines(res.stderr or res.stdout))
    after = read_info(p, binary, names, down=down)
    present = {(b["id"], r) for b in after["backups"] for r in b["repositories"]}
    for name, plan in plans.items():
        plan["expired"] = [e["id"] for e in plan["expire"] if (e["id"], name) not in present] \
            if after["repositories"][name]["ok"] else []
    return plans


def verify_new(p, binary, names, result, counts, slack):
    """The run's new backups proven: V(list) - ``pgbackrest verify --set`` in each repository that holds one (every
    file against the backup's own manifest and the WAL it needs); V(restore) - also the first repository's backup
    restored (``pgbackrest restore --set``) into a scratch cluster on this host, recovered to consistency and its
    rows counted against the source's."""
    record = {"level": p["verify"], "ok": True, "repositories": {}}
    for name, state in result["repositories"].items():
        if not state.get("backup"):
            continue
        key = names.index(name) + 1
        res = run(pgbackrest.command(binary, p["config"], p["stanza"], "verify", "--set=" + state["backup"],
                                     "--repo=%d" % key), user=p["os_user"], timeout=p["timeout"])
        record["repositories"][name] = {"ok": res.rc == 0, "method": "pgbackrest verify",
                                        "detail": "" if res.rc == 0 else last_lines(res.stderr or res.stdout)}
    if p["verify"] == "restore":
        first = next((n for n in names if result["repositories"][n].get("backup") and record["repositories"][n]["ok"]),
                     None)
        if first is None:
            record["restore"] = {"ok": False, "detail": "no repository holds a new backup that passed its list check"}
        else:
            record["restore"] = restore_into_scratch(p, binary, names.index(first) + 1,
                                                     result["repositories"][first]["backup"], counts, slack)
            record["restore"]["repository"] = first
            if not record["restore"]["ok"]:
                record["repositories"][first].update(ok=False, detail=record["restore"].get("detail")
                                                     or "restored row counts differ from the source's")
    record["ok"] = all(r["ok"] for r in record["repositories"].values()) and (record.get("restore") or {}).get("ok", True)
    return record


def restore_into_scratch(p, binary, repo_key, label, counts, slack):
    """``pgbackrest restore --set=label`` into the data directory of a scratch cluster (scratch.ScratchCluster: this
    host, a socket inside a 0700 directory, archiving off, removed afterwards), recovered to consistency from the
    WAL the backup holds (archive-copy), then the per-table row counts compared with the source's."""
    commands, where = [], {}
    cluster = scratch.ScratchCluster(p, commands, p.get("verify_host_name"))

    def fill(data_dir):
        os.makedirs(data_dir, mode=0o700)
        user = _owner(p["os_user"])
        os.chown(data_dir, user.pw_uid, user.pw_gid)
        res = run(pgbackrest.command(binary, p["config"], p["stanza"], "restore", "--set=" + label, "--repo=%d" % repo_key,
                                     "--pg1-path=" + data_dir, "--type=immediate", "--target-action=promote"),
                  user=p["os_user"], timeout=p["timeout"])
        commands.append(res.as_dict())
        if res.rc != 0:
            raise FediflowError("pgbackrest restore --set=%s failed (rc=%d): %s"
                                % (label, res.rc, last_lines(res.stderr or res.stdout)))

    timer = Timer()
    try:
        with cluster:
            waited, restored = native.recover_and_count(p, cluster, fill, 600)
    except FediflowError as exc:
        where.update(cluster.where)
        return {"ok": False, "backup": label, "detail": exc.message, "where": where, "duration_s": timer.elapsed()}
    where.update(cluster.where)
    ok, tables = native.compare_counts(counts or {}, restored, slack)
    return {"ok": ok, "backup": label, "method": "pgbackrest restore into a scratch cluster", "recovery_s": waited,
            "tables": tables, "tables_compared": len(tables), "where": where, "duration_s": timer.elapsed()}
