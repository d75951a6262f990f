# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pitr_restore`` end to end: preflight (nothing touched), restore a base backup into a **new**
data directory, recover it to the target on a side port (paused, read-only), verify it, then
switch it in (old data directory stopped and kept, renamed with a timestamp) and promote or leave
it paused. Failure rules: a refusal touches nothing; a restore or verification that fails leaves
the old cluster in place and running; a switch that fails is rolled back."""

from __future__ import annotations

import datetime
import json
import os
import pwd
import shutil
import socket
import tempfile

from ansible_collections.fediflow.dr.plugins.module_utils import (
    atomic, backup, ledger, pgconf, pgctl, pitr, pitr_pgbackrest, postgres, repos as repositories, walarchive)
from ansible_collections.fediflow.dr.plugins.module_utils.common import (
    FediflowError, Timer, current_user, last_lines, run, wait_until)

MARKER = "fediflow_pitr.json"
LEFTOVERS = ("postmaster.pid", "postmaster.opts", "standby.signal", "recovery.signal", "backup_label.old",
             ledger.MANIFEST)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def validate(p):
    """Refuse bad input before anything is touched; returns (target, timeline request, the pgBackRest engine's
    options or None for the native engine)."""
    target = pitr.parse_target(p)
    timeline = pitr.parse_timeline(p.get("timeline"))
    engine = pitr_pgbackrest.validate(p)
    native = ("wal_config", "wal_tool") if engine is None else ()
    for opt in ("data_dir",) + native:
        if not p.get(opt) or not os.path.isabs(p[opt]):
            raise FediflowError("%s must be an absolute path, got '%s'" % (opt, p.get(opt)))
    for opt in native:
        if not os.path.isfile(p[opt]):
            raise FediflowError("%s '%s' does not exist on this host" % (opt, p[opt]))
    if p.get("config_dir") and not os.path.isabs(p["config_dir"]):
        raise FediflowError("config_dir must be an absolute path, got '%s'" % p["config_dir"])
    if p.get("cluster"):
        pgctl.split_cluster(p["cluster"])
    if engine is None:
        if not p.get("backup_dest") and not p.get("s3_bucket") and not p.get("repositories"):
            raise FediflowError("give backup_dest (the local ledger of physical backups), or repositories (or "
                                "s3_bucket), or both")
        repositories.normalize(p)
    if p.get("backup_dest") and not os.path.isabs(p["backup_dest"]):
        raise FediflowError("backup_dest must be an absolute path, got '%s'" % p["backup_dest"])
    port = p.get("restore_port")
    if port is not None and not 0 < int(port) < 65536:
        raise FediflowError("restore_port must be between 1 and 65535, got %s" % port)
    if int(p.get("timeout") or 0) < 1:
        raise FediflowError("timeout must be at least 1 second, got %s" % p.get("timeout"))
    if p.get("verify_jobs") is not None and int(p["verify_jobs"]) < 1:
        raise FediflowError("verify_jobs must be at least 1, got %s" % p["verify_jobs"])
    if int(p.get("amcheck_max_indexes") or 0) < 0:
        raise FediflowError("amcheck_max_indexes must be >= 0, got %s" % p.get("amcheck_max_indexes"))
    postgres.validate_conn(p)
    return target, timeline, engine


# --------------------------------------------------------------------------- reading (preflight)

def read_ledger(p, skipped=None):
    """``([(manifest, where)], repos)`` from the local ledger and every repository that answers (the local copy
    preferred, else the first repository holding it: the host's own region's, the survivor's after a region is
    lost). ``where``: ``local`` or that repository's name."""
    repos = repositories.Repositories(p, strict=False)
    if repos.any and not repos.stores and not p.get("backup_dest"):
        raise FediflowError("no repository answers (%s)" % "; ".join("%s: %s" % kv for kv in repos.down.items()))
    found = repositories.ledger_union(p.get("backup_dest"), repos, skipped)
    order = [r["name"] for r in repos.repos]
    entries = []
    for manifest, where in found.values():
        entries.append((manifest, repositories.LOCAL if repositories.LOCAL in where
                        else next(n for n in order if n in where)))
    if p.get("backup_cluster"):
        entries = [(m, w) for m, w in entries if m.get("cluster") == p["backup_cluster"]]
    return entries, repos, {m["id"]: w for m, w in found.values()}


def read_archive(p):
    """The WAL archive as data (``pitr.archive_index``) through the collection's own backend."""
    try:
        cfg = walarchive.load_config(p["wal_config"])
        archive = walarchive.open_archive(cfg)
    except walarchive.ArchiveError as exc:
        raise FediflowError("wal_config: %s" % exc)
    try:
        # several repositories: every one that answers (the surviving region's, when a region is lost)
        entries = archive.list_objects()
        histories = {}
        work = tempfile.mkdtemp(prefix="fediflow-pitr-hist-")
        try:
            for name, _at in entries:
                match = pitr.HISTORY_NAME_RE.match(name)
                if match:
                    dest = os.path.join(work, name)
                    archive.fetch(name, dest)
                    with open(dest, "r", encoding="utf-8") as handle:
                        histories[int(match.group(1), 16)] = handle.read()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except (walarchive.ArchiveError, OSError) as exc:
        raise FediflowError("cannot read the WAL archive (%s): %s" % (_archive_kind(cfg)["backend"], exc))
    finally:
        if hasattr(archive, "close"):
            archive.close()
    return pitr.archive_index(entries, histories, p.get("wal_segment_size") or pitr.DEFAULT_SEGMENT_SIZE), cfg


def _archive_kind(cfg):
    """``backend`` (s3, dir) of the WAL archive, and its ``repositories`` when it has several."""
    if "repositories" not in cfg:
        return {"backend": cfg["backend"]}
    return {"backend": "+".join(sorted({repo["backend"] for repo in cfg["repositories"]})),
            "repositories": cfg["names"], "required_copies": cfg["required_copies"]}


def xid_hint(p, target):
    """For an xid target, ask the running cluster (when it answers) whether it committed and when."""
    if target["kind"] != "xid":
        return None, {}
    try:
        conn = postgres.connect(p)
    except FediflowError as exc:
        return None, {"checked": False, "detail": exc.message}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_xact_status(%s::text::xid8)", (str(target["value"]),))
            status = cur.fetchone()[0]
            if status in ("aborted", "in progress"):
                raise FediflowError("target_xid %s is %s on the running cluster: recovery would never stop at it"
                                    % (target["value"], status))
            when = None
            cur.execute("SELECT current_setting('track_commit_timestamp') = 'on'")
            if cur.fetchone()[0]:
                cur.execute("SELECT pg_xact_commit_timestamp(%s::text::xid)", (str(target["value"]),))
                when = cur.fetchone()[0]
        return when, {"checked": True, "status": status, "commit_time": ledger.iso(when) if when else None}
    except FediflowError:
        raise
    except Exception as exc:  # pylint: disable=broad-except
        return None, {"checked": False, "detail": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}
    finally:
        conn.close()


def read_marker(data_dir):
    try:
        with open(os.path.join(data_dir, MARKER), "r", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


# the timeline of the WAL being written now (a primary's)
TIMELINE_SQL = "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"


def refuse_standby(p, result):
    """Refuse an in-place restore of a standby (running, or stopped with standby.signal): it would become a
    second primary on a forked history."""
    data_dir = p["data_dir"]
    if not os.path.isfile(os.path.join(data_dir, "PG_VERSION")):
        return
    current = pgctl.status(pgctl.find_bindir(p.get("bin_dir")), data_dir, p["os_user"])
    in_recovery = upstream = None
    if current["state"] == "running":
        try:
            conn = postgres.connect(p)
        except FediflowError:
            conn = None  # standby.signal decides
        if conn is not None:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery(), (SELECT sender_host || ':' || sender_port "
                                "FROM pg_stat_wal_receiver WHERE status = 'streaming')")
                    in_recovery, upstream = cur.fetchone()
            except Exception:  # pylint: disable=broad-except
                pass
            finally:
                conn.close()
    if pitr.is_standby(os.path.exists(os.path.join(data_dir, "standby.signal")), current["state"] == "running",
                       in_recovery, os.path.exists(os.path.join(data_dir, "recovery.signal"))):
        result["cluster_before"] = dict(current, standby=True, upstream=upstream)
        raise FediflowError(pitr.standby_refusal(data_dir, current["state"], upstream), result=result)


def replication_before(p):
    """``(rows, why not)``: the WAL receivers streaming from the running cluster (pg_stat_replication), which an
    in-place restore leaves on the old history."""
    try:
        conn = postgres.connect(p)
    except FediflowError as exc:
        return [], exc.message
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT application_name, host(client_addr), state, sync_state, replay_lsn::text "
                        "FROM pg_stat_replication ORDER BY application_name")
            cols = ("application_name", "client_addr", "state", "sync_state", "replay_lsn")
            return [dict(zip(cols, row)) for row in cur.fetchall()], None
    except Exception as exc:  # pylint: disable=broad-except
        return [], _first_line(exc)
    finally:
        conn.close()


def fork_lsn(data_dir, tli):
    """Where ``tli`` branched off its parent (its history file's last switchpoint), or None."""
    try:
        with open(os.path.join(data_dir, "pg_wal", "%08X.history" % int(tli)), "r", encoding="utf-8") as handle:
            entries = pitr.parse_history(handle.read())
    except (OSError, FediflowError, ValueError):
        return None
    return pitr.format_lsn(entries[-1][1]) if entries else None


def _read_sources(p, engine, result):
    """The ledger and the WAL archive of the engine: ``(entries [(manifest, where)], index, archive description,
    engine-specific plan entries)``. Native: the collection's manifests and fediflow_wal's archive; pgBackRest: its
    repositories (``pitr_pgbackrest``)."""
    if engine is not None:
        entries, holders, down, ident = pitr_pgbackrest.read_ledger(p, engine, result)
        index, kind = pitr_pgbackrest.read_archive(p, engine, ident, down)
        if down:
            result["repositories_down"] = dict(down)
        return entries, index, kind, {"pgbackrest": engine, "all_holders": holders, "repos": None}
    skipped = []
    manifests, repos, holders = read_ledger(p, skipped)
    repositories.report_skipped(result, skipped)
    index, cfg = read_archive(p)
    if repos.down:
        result["repositories_down"] = dict(repos.down)
    return manifests, index, _archive_kind(cfg), {"pgbackrest": None, "all_holders": holders, "repos": repos}


def preflight(p, target, timeline_req, result, engine=None):
    bindir = pgctl.find_bindir(p.get("bin_dir"))
    current = pgctl.status(bindir, p["data_dir"], p["os_user"])
    if p["switch"] and current["state"] == "absent" and os.path.isdir(p["data_dir"]) and os.listdir(p["data_dir"]):
        raise FediflowError("data_dir '%s' is not empty but holds no cluster (no PG_VERSION): move it away first, "
                            "the restore takes its place" % p["data_dir"])
    manifests, index, archive_kind, source = _read_sources(p, engine, result)
    hint_time, xid_info = xid_hint(p, target)
    tli = pitr.choose_timeline(index, target, timeline_req, hint_time=hint_time)
    lineage = index["lineage"][tli]
    base, why = pitr.choose_base([m for m, _w in manifests], target, lineage, p.get("backup_id"), hint_time=hint_time)
    bounds = pitr.check_archive(index, base, target, lineage)
    where = dict((m["id"], w) for m, w in manifests)[base["id"]]
    timeline_option = tli if timeline_req != "latest" else "latest"
    if engine is not None:
        restore_cmd = pitr_pgbackrest.restore_command(engine, p["data_dir"])
    else:
        restore_cmd = pitr.restore_command(p["wal_python"], p["wal_tool"], p["wal_config"])
    settings = pitr.recovery_settings(target, timeline_option, restore_cmd)
    result.update(
        target={"kind": target["kind"], "value": target["display"], "inclusive": target["inclusive"],
                "action": target["action"], "timeline": tli, "lineage": [t for t, _e in lineage]},
        base_backup={"id": base["id"], "stop_time": ledger.iso(base["stop_time"]) if base["stop_time"] else None,
                     "start_lsn": pitr.format_lsn(base["start_lsn"]) if base["start_lsn"] is not None else None,
                     "stop_lsn": pitr.format_lsn(base["stop_lsn"]), "timeline": base["timeline"],
                     "where": where, "why": why},
        archive=dict(bounds, **archive_kind), recovery_settings=settings,
        cluster_before={"state": current["state"], "pid": current["pid"]})
    replication = []
    if p["switch"] and current["state"] == "running":
        replication, why = replication_before(p)
        result["standbys_before"] = replication
        if why:
            result["standbys_before_unknown"] = why
    if xid_info:
        result["xid_check"] = xid_info
    return {"bindir": bindir, "current": current, "base": base, "where": where, "settings": settings,
            "repos": source["repos"], "pgbackrest": source["pgbackrest"], "timeline_option": timeline_option,
            "holders": source["all_holders"].get(base["id"], set()),
            "tli": tli, "segment_size": index["segment_size"], "replication": replication,
            "next_tli": pitr.next_timeline(index["timelines"], tli),
            "last_segment_lsn": pitr.parse_lsn(bounds["end_lsn"]) - index["segment_size"]}


# --------------------------------------------------------------------------- doing

def _chown(path, user):
    if user and user != current_user():
        res = run(["chown", "-R", "%s:" % user, path], timeout=600)
        if res.rc != 0:
            raise FediflowError("chown -R %s %s failed: %s" % (user, path, last_lines(res.stderr)))


def _write_text(path, text, user):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    _chown(path, user)


def _set_block(data_dir, settings, user):
    path = os.path.join(data_dir, "postgresql.auto.conf")
    text = ""
    if os.path.exists(path):
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
    _write_text(path, pitr.replace_block(text, settings), user)


def fetch_base(p, plan, new_dir, result, timer, target):
    """The base backup's files into ``new_dir`` (native: tar extracted or plain copied; pgBackRest: ``pgbackrest
    restore``), then what every restore gets: no leftover of the source's server, the running cluster's
    configuration (or a minimal one)."""
    if plan["pgbackrest"] is not None:
        pitr_pgbackrest.restore_base(p, plan, new_dir, result, target, timer)
    else:
        _native_files(p, plan, new_dir, result, timer)
    for name in LEFTOVERS:
        path = os.path.join(new_dir, name)
        if os.path.exists(path):
            os.unlink(path)
    # the running cluster's configuration is the current one (pg_hba, ALTER SYSTEM since the backup); a
    # separate configuration directory (Debian's) outlives a lost data directory
    copied = []
    config_dir = p.get("config_dir") or p["data_dir"]
    if p["keep_config"] and (plan["current"]["state"] != "absent" or
                             (pgconf.separate(config_dir, p["data_dir"]) and os.path.isdir(config_dir))):
        copied = pgconf.copy_config(config_dir, p["data_dir"], new_dir)
    result["config_from_current"] = copied
    # a base backup of a Debian cluster holds no configuration: enough for the restore to start and be probed
    result["config_written"] = pgconf.ensure_minimal(new_dir, pgconf.minimal_hba(p.get("login_host")))


def _native_files(p, plan, new_dir, result, timer):
    """A native base backup's files into ``new_dir``: from the local ledger, else downloaded from the first
    repository holding it (checked against its manifest), then extracted or copied."""
    manifest = plan["base"]["manifest"]
    src = os.path.join(p["backup_dest"], manifest["id"]) if plan["where"] == "local" else None
    download = None
    if src is None:
        download = new_dir + ".download"
        errors = []
        for name, store in repositories.first_holding(plan["repos"], plan["holders"]):
            try:
                with timer.phase("download"):
                    store.download_backup(manifest, download)
                    backup.verify_checksums(download, manifest)  # what came back is what was verified
                result["base_backup"]["read_from"] = name
                break
            except FediflowError as exc:
                shutil.rmtree(download, ignore_errors=True)
                errors.append("%s: %s" % (name, exc.message))
        else:
            raise FediflowError("base backup %s could not be read from any repository holding it (%s)"
                                % (manifest["id"], "; ".join(errors) or "none answers"))
        src = download
    try:
        with timer.phase("extract"):
            os.makedirs(new_dir, mode=0o700)
            if (manifest.get("source") or {}).get("format") == "plain":
                backup.check_plain(src)
                shutil.rmtree(new_dir)
                shutil.copytree(src, new_dir, ignore=shutil.ignore_patterns(ledger.MANIFEST))
            else:
                extract_tars(src, new_dir)
    finally:
        if download:
            shutil.rmtree(download, ignore_errors=True)


TAR_FLAGS = {".tar": [], ".tar.gz": ["--gzip"], ".tar.zst": ["--zstd"], ".tar.lz4": ["--use-compress-program=lz4"]}


def extract_tars(backup_dir, data_dir):
    """base.tar* into the data directory and pg_wal.tar* into its pg_wal, by GNU tar (one process
    each, at once: the decompression runs beside the extraction); Python's tarfile without tar. Every
    member is checked first (``backup.check_tars``: the archives are untrusted input), before any extraction."""
    import subprocess  # pylint: disable=import-outside-toplevel
    if not shutil.which("tar"):
        backup.extract_with_tarfile(backup_dir, data_dir)
        return
    backup.check_tars(backup_dir)
    procs = []
    for name in sorted(os.listdir(backup_dir)):
        kind = "base" if name.startswith("base.tar") else "pg_wal" if name.startswith("pg_wal.tar") else None
        suffix = name[len(kind):] if kind else None
        if suffix not in TAR_FLAGS:
            continue
        dest = data_dir if kind == "base" else os.path.join(data_dir, "pg_wal")
        os.makedirs(dest, mode=0o700, exist_ok=True)
        argv = ["tar", "--extract", "--no-same-owner", "--file", os.path.join(backup_dir, name), "--directory", dest]
        procs.append((name, subprocess.Popen(argv + TAR_FLAGS[suffix], stdout=subprocess.DEVNULL,  # pylint: disable=consider-using-with
                                             stderr=subprocess.PIPE, text=True)))
    failed = []
    for name, proc in procs:
        err = proc.communicate()[1]
        if proc.returncode != 0:
            failed.append("%s: %s" % (name, last_lines(err, 2)))
    if not procs:
        raise FediflowError("no base.tar in %s: not a tar-format physical backup" % backup_dir)
    if failed:
        raise FediflowError("extracting the base backup failed: %s" % "; ".join(failed))


def _log_tail(log):
    try:
        with open(log, "r", encoding="utf-8", errors="replace") as handle:
            handle.seek(max(0, os.path.getsize(log) - 8192))
            lines = [ln for ln in handle.read().splitlines() if "FATAL" in ln or "PANIC" in ln or "ERROR" in ln]
            return " | ".join(lines[-3:]) or "(no error in the log)"
    except OSError:
        return "(no log)"


def pg_ctl(plan, action, data_dir, user, log=None, timeout=120, commands=None, mode="fast", cluster=None):
    """``action`` on the cluster in ``data_dir`` (pg_ctl -D, or pg_ctlcluster for a Debian ``cluster``)."""
    try:
        res = pgctl.control(plan["bindir"], action, data_dir, user, log, mode, timeout, cluster)
    except FediflowError as exc:
        if commands is not None and exc.details.get("command"):
            commands.append(exc.details["command"])
        raise
    if commands is not None:
        commands.append(res.as_dict())
    return res


class Probe:
    """Asks a recovering cluster where it is; notices a server that died (its log says why)."""

    def __init__(self, p, port, data_dir, log):
        self.params = dict(p, login_port=port, login_host=p.get("login_host") or "127.0.0.1")
        self.data_dir = data_dir
        self.log = log
        self.last = None

    def ask(self, sql):
        conn = postgres.connect(self.params)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()
        finally:
            conn.close()

    def state(self):
        """``(in_recovery, pause_state, replay_lsn, replay_time, archive_exhausted)``, or None while not answering."""
        if not os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            raise FediflowError("the restored cluster stopped during recovery: %s" % _log_tail(self.log))
        try:
            # the startup process waiting to retry the archive = it has replayed everything there
            row = self.ask("SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN "
                           "pg_get_wal_replay_pause_state() END, pg_last_wal_replay_lsn()::text, "
                           "pg_last_xact_replay_timestamp(), EXISTS (SELECT 1 FROM pg_stat_activity WHERE "
                           "backend_type = 'startup' AND wait_event = 'RecoveryRetrieveRetryInterval')")
        except FediflowError:
            return None
        self.last = row
        return row

    def wait(self, what, timeout, lsn=0):
        def check():
            row = self.state()
            if row is None:
                return None
            in_recovery, pause, replay, _when, exhausted = row
            if what == "paused":
                return in_recovery and pause == "paused"
            if what == "writable":
                return not in_recovery
            if what == "caught_up":  # a standby replaying the archive: past the last archived segment's
                # start, and the startup process found nothing more to fetch
                return in_recovery and exhausted and replay is not None and pitr.parse_lsn(replay) >= lsn
            return None
        ok, waited = wait_until(check, timeout, interval=0.05, max_interval=0.2)
        if not ok:
            raise FediflowError("the restored cluster did not get %s within %ss (last: %s); its log: %s"
                                % (what, timeout, self.last, _log_tail(self.log)))
        return waited


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_checks(params, tasks, jobs):
    """Run ``[(kind, name, sql, args)]`` on ``jobs`` connections at once (the big tables and
    indexes are scanned in parallel); returns ``{(kind, name): (ok, value or error)}``."""
    import queue  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel
    pending = queue.Queue()
    for task in tasks:
        pending.put(task)
    results = {}
    failures = []

    def worker():
        try:
            conn = postgres.connect(params)
        except FediflowError as exc:
            failures.append(exc)
            return
        try:
            while True:
                try:
                    kind, name, sql, args = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql, args)
                        results[(kind, name)] = (True, cur.fetchone()[0] if cur.description else None)
                except Exception as exc:  # pylint: disable=broad-except
                    results[(kind, name)] = (False, _first_line(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _i in range(max(1, min(jobs, len(tasks))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures and len(results) < len(tasks):
        raise failures[0]
    return results


def verify(p, port, result):
    """Integrity checks on the restored cluster (read-only: it is paused in recovery): every table
    of ``db`` counted and the largest B-tree indexes checked with amcheck, in parallel, then the
    sentinel query."""
    params = dict(p, login_port=port, login_host=p.get("login_host") or "127.0.0.1")
    checks = {"ok": True}
    conn = postgres.connect(params)
    try:
        tables = backup.user_tables(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'")
            has_amcheck = cur.fetchone()[0] > 0
            indexes = []
            if has_amcheck and p["amcheck"] and p["amcheck_max_indexes"]:
                cur.execute("""SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                               JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE a.amname = 'btree' AND i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                                 AND n.nspname NOT LIKE 'pg_toast%%'
                               ORDER BY pg_relation_size(c.oid) DESC LIMIT %s""", (int(p["amcheck_max_indexes"]),))
                indexes = [row[0] for row in cur.fetchall()]
        # names come quoted from quote_ident (user_tables); indexes are passed as parameters
        tasks = [("count", t, "SELECT count(*) FROM %s" % t, None) for t in tables]
        tasks += [("amcheck", i, "SELECT bt_index_check(%s::regclass)", (i,)) for i in indexes]
        done = run_checks(params, tasks, int(p.get("verify_jobs") or 4))
        checks["row_counts"] = {t: done[("count", t)][1] for t in tables if done[("count", t)][0]}
        unreadable = ["%s (%s)" % (t, done[("count", t)][1]) for t in tables if not done[("count", t)][0]]
        if unreadable:
            checks.update(ok=False, unreadable_tables=unreadable)
        amcheck = {"available": has_amcheck, "indexes": []}
        for index in indexes:
            ok, value = done[("amcheck", index)]
            amcheck["indexes"].append({"index": index, "ok": True} if ok else {"index": index, "ok": False, "error": value})
            checks["ok"] = checks["ok"] and ok
        checks["amcheck"] = amcheck
        if p.get("sentinel_query"):
            with conn.cursor() as cur:
                try:
                    cur.execute(p["sentinel_query"])
                    row = cur.fetchone() if cur.description else None
                    checks["sentinel"] = {"ok": bool(row and row[0]), "value": str(row[0]) if row else None}
                except Exception as exc:  # pylint: disable=broad-except
                    checks["sentinel"] = {"ok": False, "error": _first_line(exc)}
            checks["ok"] = checks["ok"] and checks["sentinel"]["ok"]
    finally:
        conn.close()
    result["verification"] = checks
    return checks


def _reached(probe, plan, result):
    row = probe.state() or probe.last or (None, None, None, None, None)
    lsn = row[2]
    result["reached"] = {"lsn": lsn, "time": ledger.iso(row[3]) if row[3] else None, "timeline": plan["tli"]}
    start = plan["base"]["start_lsn"]
    result["wal_segments_replayed"] = pitr.segments_between(start, pitr.parse_lsn(lsn) if lsn else None,
                                                            plan["segment_size"])


def _log_path(p, data_dir):
    return p.get("log_file") or os.path.join(os.path.dirname(data_dir.rstrip("/")),
                                             os.path.basename(data_dir.rstrip("/")) + ".log")


def ensure(p, check_mode=False, warn=None):
    timer = Timer()
    target, timeline_req, engine = validate(p)
    p = dict(p, data_dir=p["data_dir"].rstrip("/"))
    result = {"changed": False, "commands": [], "switched": False, "data_dir": p["data_dir"]}
    if p["switch"]:
        refuse_standby(p, result)  # before anything is read or touched, the marker included
    # idempotence next: a data directory already restored to this target is left alone (its newer
    # writes are not rolled back again), before the archive - which now forks there - is even read
    marker = read_marker(p["data_dir"])
    if p["switch"] and marker and not p["force"] and marker.get("kind") == target["kind"] \
            and marker.get("target") == target["display"]:
        result.update(msg="data_dir was already restored to %s %s from %s at %s: nothing done (force=true restores again)"
                      % (target["kind"], target["display"], marker.get("base_backup"), marker.get("at")),
                      state="already_restored", marker=marker, duration_s=timer.elapsed(), phases=timer.phases)
        return result
    with timer.phase("preflight"):
        plan = preflight(p, target, timeline_req, result, engine)
    now = datetime.datetime.now(datetime.timezone.utc)
    names = pitr.dir_names(p["data_dir"], now)
    port = p.get("restore_port") or _free_port()
    result["diff"] = {"before": {"data_dir": p["data_dir"], "state": plan["current"]["state"]},
                      "after": {"data_dir": p["data_dir"] if p["switch"] else names["new"],
                                "restored_to": "%s %s" % (target["kind"], result["target"]["value"]),
                                "base_backup": plan["base"]["id"],
                                "kept_data_dir": names["kept"] if p["switch"] and plan["current"]["state"] != "absent" else None}}
    result.update(changed=True, new_data_dir=names["new"], restore_port=port)
    if p["switch"]:
        result["new_timeline"] = plan["next_tli"]
        _left_behind(p, plan, result)
    if check_mode:
        result.update(msg="would restore %s into %s and recover to %s %s%s" % (
            plan["base"]["id"], names["new"], target["kind"], result["target"]["value"], _behind_msg(result)),
            duration_s=timer.elapsed(), phases=timer.phases)
        return result
    new_dir = names["new"]
    if os.path.exists(new_dir):
        raise FediflowError("%s already exists (a restore in progress?): remove it or wait" % new_dir)
    user = p["os_user"]
    log = new_dir + ".log"
    side = dict(plan["settings"], port=str(port), hot_standby="on", primary_conninfo="", primary_slot_name="")
    if not p["switch"]:
        side["archive_mode"] = "off"  # a side-by-side copy never writes into the shared archive
    if engine is not None:  # archive-get writes the WAL it fetches under the directory the cluster runs in
        side["restore_command"] = pitr_pgbackrest.restore_command(engine, new_dir)
    latest = target["kind"] == "latest"
    try:
        fetch_base(p, plan, new_dir, result, timer, target)
        if "postgresql.conf" in result["config_written"]:
            # no configuration came with it: listen where it is probed (PostgreSQL's default is localhost)
            side["listen_addresses"] = ", ".join(sorted({"localhost", p.get("login_host") or "localhost"}))
        _set_block(new_dir, side, user)
        _write_text(os.path.join(new_dir, "standby.signal" if latest else "recovery.signal"), "", user)
        _chown(new_dir, user)
        os.chmod(new_dir, 0o700)
        probe = Probe(p, port, new_dir, log)
        with timer.phase("recovery"):
            pg_ctl(plan, "start", new_dir, user, log, p["timeout"], result["commands"])
            if latest:
                probe.wait("caught_up", p["timeout"], plan["last_segment_lsn"])
            else:
                probe.wait("paused", p["timeout"])
        _reached(probe, plan, result)
        with timer.phase("verify"):
            checks = verify(p, port, result)
        if not checks["ok"]:
            bad = ["amcheck %s" % i["index"] for i in checks["amcheck"]["indexes"] if not i["ok"]]
            bad += ["row count of %s" % t for t in checks.get("unreadable_tables", [])]
            if not checks.get("sentinel", {"ok": True})["ok"]:
                bad.append("sentinel_query")
            raise FediflowError("the restored cluster failed its integrity checks (%s): the old cluster stays in place"
                                % ", ".join(bad))
    except Exception as exc:
        _discard(p, plan, new_dir, log, result)
        if isinstance(exc, FediflowError):
            result["duration_s"] = timer.elapsed()
            result["phases"] = timer.phases
            raise FediflowError(exc.message, result=result)
        raise
    if not p["switch"]:
        with timer.phase("open"):
            if target["action"] == "promote":
                _promote(probe, p, result, target)
                _set_block(new_dir, {"port": str(port), "archive_mode": "off"}, user)
        result.update(state="promoted" if target["action"] == "promote" else "paused", port=port,
                      msg="restored side by side in %s on port %d (%s); the cluster in %s was not touched"
                      % (new_dir, port, target["action"], p["data_dir"]))
    else:
        with timer.phase("switch"):
            try:
                _switch(p, plan, names, target, result)
            except FediflowError as exc:
                result.update(duration_s=timer.elapsed(), phases=timer.phases)
                if result.get("rolled_back"):
                    raise FediflowError("the switch failed and was rolled back - %s is the old cluster again, "
                                        "running; the restore is kept in %s: %s"
                                        % (p["data_dir"], result.get("failed_data_dir"), exc.message), result=result)
                raise FediflowError(exc.message, result=result)
        _left_behind(p, plan, result)
        result["msg"] += _behind_msg(result)
    result.update(duration_s=timer.elapsed(), phases=timer.phases)
    return result


def _left_behind(p, plan, result):
    """The standbys this restore in place leaves on the old history (they streamed from it, or the caller
    names them), each with how to re-seed it."""
    result["left_behind"] = pitr.left_behind(
        plan["replication"], p.get("standbys"), {"host": p.get("login_host") or "127.0.0.1", "port": p["login_port"],
                                                 "user": p.get("login_user")}, result["new_timeline"])
    result["diff"]["after"]["left_behind"] = [entry["name"] for entry in result["left_behind"]]


def _behind_msg(result):
    names = [s["name"] for s in result.get("left_behind", [])]
    if not names:
        return ""
    return "; standbys left on the old history (re-seed them before any failover): %s" % ", ".join(names)


def _promote(probe, p, result, target):
    """Paused at a target: resuming ends recovery. latest (a standby on the archive): promote."""
    probe.ask("SELECT pg_promote(wait => false)" if target["kind"] == "latest" else "SELECT pg_wal_replay_resume()")
    result["time_to_writable_s"] = probe.wait("writable", p["timeout"])


def _discard(p, plan, new_dir, log, result):
    """A failed restore: stop the new cluster; remove it unless keep_failed (the old one is untouched)."""
    if os.path.exists(os.path.join(new_dir, "postmaster.pid")):
        try:
            pg_ctl(plan, "stop", new_dir, p["os_user"], mode="immediate", timeout=60)
        except FediflowError:
            pass
    if p.get("keep_failed"):
        result["failed_data_dir"] = new_dir
    else:
        shutil.rmtree(new_dir, ignore_errors=True)
    result["log_file"] = log


def _first_pageaddr(path):
    """The page address in the first page header of a WAL file (XLogPageHeaderData: magic, info, timeline, then
    the 64-bit address at offset 8), or None when it is too short to hold one."""
    import struct  # pylint: disable=import-outside-toplevel
    with open(path, "rb") as handle:
        head = handle.read(16)
    return struct.unpack_from("<Q", head, 8)[0] if len(head) == 16 else None


def carry_unarchived_wal(plan, old_dir, new_dir, user):
    """A ``latest`` restore replays the archive; the old cluster (stopped cleanly just before, or crashed) may hold
    WAL the archive does not have yet: the segment it was writing (archived only once full or at archive_timeout)
    and any segment whose archiving had not finished. Without it the commits of up to archive_timeout are lost.

    Why this way, not pg_switch_wal() and a wait for the archiver before the stop: commits between the switch and
    the stop would still be lost, it needs the old cluster running (not the crashed one a disaster leaves) and a
    working archive at that moment. Copying the old pg_wal's remaining segments into the restore's pg_wal (the
    standby-mode restore reads pg_wal when the archive has nothing) loses nothing that was committed before the
    stop, and PostgreSQL checks every record it replays from them (CRC, page addresses), stopping at the first bad
    one as crash recovery would. Only when the old cluster is on the timeline being restored (its WAL continues that
    history); segments are copied whole, fsynced, owned by the cluster's user. Returns what was carried."""
    bindir, tli, seg = plan["bindir"], plan["tli"], plan["segment_size"]
    control = pgctl.controldata(bindir, old_dir, user)
    info = {"source": os.path.join(old_dir, "pg_wal"), "segments": [], "old_cluster_state": control.get("cluster_state"),
            "old_checkpoint_lsn": control.get("checkpoint_lsn")}
    if control.get("timeline") != tli:
        info["skipped"] = "the old cluster is on timeline %s, the restore follows timeline %s" % (control.get("timeline"), tli)
        return info
    src_dir = os.path.join(old_dir, "pg_wal")
    files = []
    for name in os.listdir(src_dir):
        if walarchive.WAL_RE.match(name):
            files.append((name, _first_pageaddr(os.path.join(src_dir, name))))
    archive_end = plan["last_segment_lsn"] + seg
    names = pitr.unarchived_wal(files, tli, archive_end, seg)
    dest_dir = os.path.join(new_dir, "pg_wal")
    owner = pwd.getpwnam(user) if names and user and user != current_user() else None
    for name in names:
        # replacing: over a recycled file of that name the restore may hold
        with open(os.path.join(src_dir, name), "rb") as src, atomic.replacing(os.path.join(dest_dir, name)) as out:
            shutil.copyfileobj(src, out, walarchive.CHUNK)
            if owner:
                os.fchown(out.fileno(), owner.pw_uid, owner.pw_gid)
    info["segments"] = names
    return info


def _switch(p, plan, names, target, result):
    """Stop the old cluster, keep its data directory under a timestamped name, put the verified
    restore in its place, start it there, and promote (or leave it paused). Rolled back on failure."""
    user = p["os_user"]
    data_dir, new_dir, kept = p["data_dir"], names["new"], names["kept"]
    log = _log_path(p, data_dir)
    old_present = plan["current"]["state"] != "absent"
    cluster = p.get("cluster")
    pg_ctl(plan, "stop", new_dir, user, timeout=p["timeout"], commands=result["commands"])
    if plan["current"]["state"] == "running":
        pg_ctl(plan, "stop", data_dir, user, timeout=p["timeout"], commands=result["commands"], cluster=cluster)
    placed = False  # the restore is in data_dir
    try:
        if old_present:
            os.rename(data_dir, kept)
        os.rename(new_dir, data_dir)
        placed = True
        if pgconf.separate(p.get("config_dir"), data_dir):
            # in place, the cluster reads its own configuration directory: the copies made for the side
            # start go (a copy of postgresql.conf in a Debian data directory only misleads)
            for name in result["config_from_current"] + result["config_written"]:
                path = os.path.join(data_dir, name)
                if name != pgconf.AUTO_CONF and os.path.isfile(path):
                    os.unlink(path)
                elif name == "conf.d":
                    shutil.rmtree(path, ignore_errors=True)
        _set_block(data_dir, plan["settings"], user)
        until = plan["last_segment_lsn"]
        if target["kind"] == "latest" and old_present:
            try:
                carried = carry_unarchived_wal(plan, kept, data_dir, user)
            except (FediflowError, OSError) as exc:  # a damaged old data directory must not block the disaster restore
                carried = {"source": os.path.join(kept, "pg_wal"), "segments": [],
                           "skipped": "the old data directory could not be read: %s" % _first_line(exc)}
            result["unarchived_wal"] = carried
            if carried["segments"] and carried.get("old_checkpoint_lsn"):
                # its last checkpoint (a clean stop: the shutdown checkpoint, the end of its WAL) must be replayed
                until = max(until, pitr.parse_lsn(carried["old_checkpoint_lsn"], "checkpoint"))
        probe = Probe(p, p["login_port"], data_dir, log)
        pg_ctl(plan, "start", data_dir, user, log, p["timeout"], result["commands"], cluster=cluster)
        probe.wait("paused" if target["kind"] != "latest" else "caught_up", p["timeout"], until)
    except Exception:
        if placed:
            if os.path.exists(os.path.join(data_dir, "postmaster.pid")):
                try:
                    pg_ctl(plan, "stop", data_dir, user, mode="immediate", timeout=60, cluster=cluster)
                except FediflowError:
                    pass
            os.rename(data_dir, new_dir)
            result["failed_data_dir"] = new_dir
        if old_present and os.path.exists(kept) and not os.path.exists(data_dir):
            os.rename(kept, data_dir)
        if plan["current"]["state"] == "running":
            # its log beside it (DATA_DIR.log, as pg_ctl does here), whatever log_file says
            pg_ctl(plan, "start", data_dir, user, _log_path({}, data_dir), p["timeout"], result["commands"], cluster=cluster)
        result["rolled_back"] = True
        raise
    if target["action"] == "promote":
        _promote(probe, p, result, target)
        _set_block(data_dir, {}, user)  # recovery settings are inert now; never let them surprise a rejoin
        result["new_timeline"] = probe.ask(TIMELINE_SQL)[0]
        result["fork_lsn"] = fork_lsn(data_dir, result["new_timeline"])
    _write_text(os.path.join(data_dir, MARKER), json.dumps({
        "target": result["target"]["value"], "kind": target["kind"], "base_backup": plan["base"]["id"],
        "at": ledger.iso(ledger.utcnow()), "kept_data_dir": kept if old_present else None}, indent=2), user)
    result.update(switched=True, kept_data_dir=kept if old_present else None, port=p["login_port"],
                  state="promoted" if target["action"] == "promote" else "paused",
                  msg="%s restored to %s %s from %s (%s); the old data directory is kept in %s" % (
                      data_dir, target["kind"], result["target"]["value"], plan["base"]["id"],
                      "promoted" if target["action"] == "promote" else "paused at the target, read-only",
                      kept if old_present else "(there was none)"))
