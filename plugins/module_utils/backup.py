# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups proven restorable (the logic of ``pg_backup_verify``).

take (pg_dump / pg_basebackup) -> verify (list | checksum | restore) -> ledger manifest
(written last) -> optional S3 upload (files, then manifest) -> retention (ordered by the
ledger, never after a failure, never the newest verified backup).
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile

from ansible_collections.fediflow.dr.plugins.module_utils import ledger, pgctl, pitr, postgres, scratch, untrusted
from ansible_collections.fediflow.dr.plugins.module_utils.walarchive import CHUNK
from ansible_collections.fediflow.dr.plugins.module_utils.common import (
    FediflowError, Timer, last_lines, run)

MODES = ("logical", "physical")
VERIFY = ("none", "list", "checksum", "restore")
LOGICAL_FORMATS = ("custom", "directory")
PHYSICAL_FORMATS = ("tar", "plain")
COMPRESSIONS = ("none", "gzip", "lz4", "zstd")
DECOMPRESS = {".gz": ["gzip", "-dc"], ".lz4": ["lz4", "-dc"], ".zst": ["zstd", "-dc", "-q"]}


def validate(p):
    """Refuse bad input before anything is touched; messages name the option."""
    if p["mode"] not in MODES:
        raise FediflowError("mode must be one of %s, got '%s'" % (", ".join(MODES), p["mode"]))
    if p["verify"] not in VERIFY:
        raise FediflowError("verify must be one of %s, got '%s'" % (", ".join(VERIFY), p["verify"]))
    if p["mode"] == "logical" and p["format"] not in LOGICAL_FORMATS:
        raise FediflowError("format must be custom or directory for mode=logical, got '%s'" % p["format"])
    if p["mode"] == "physical" and p["format"] not in PHYSICAL_FORMATS:
        raise FediflowError("format must be tar or plain for mode=physical, got '%s'" % p["format"])
    if p["compression"] not in COMPRESSIONS:
        raise FediflowError("compression must be one of %s, got '%s'" % (", ".join(COMPRESSIONS), p["compression"]))
    if p["mode"] == "logical" and p["compression"] not in ("none", "gzip"):
        raise FediflowError("compression for mode=logical (pg_dump 15) must be none or gzip, got '%s'" % p["compression"])
    if p["mode"] == "physical" and p["format"] == "plain" and p["compression"] != "none":
        raise FediflowError("compression needs format=tar for mode=physical")
    if p["mode"] == "physical" and p["compression"] in ("lz4", "zstd") and p["verify"] != "none":
        tool = {"lz4": "lz4", "zstd": "zstd"}[p["compression"]]
        if not shutil.which(tool):
            raise FediflowError("compression=%s needs the %s program on this host to verify the backup "
                                "(install it, or choose compression gzip)" % (p["compression"], tool))
    level = p.get("compression_level")
    if level is not None and not 0 <= int(level) <= 22:
        raise FediflowError("compression_level must be between 0 and 22, got %s" % level)
    if p.get("jobs") is not None and int(p["jobs"]) < 1:
        raise FediflowError("jobs must be at least 1, got %s" % p.get("jobs"))
    for opt in ("retention_count", "retention_days"):
        if p.get(opt) is not None and p[opt] < 1:
            raise FediflowError("%s must be at least 1 (0 would delete every backup), got %s" % (opt, p[opt]))
    if not p.get("dest") or not os.path.isabs(p["dest"]):
        raise FediflowError("dest must be an absolute directory path, got '%s'" % p.get("dest"))
    if p.get("s3_sse") not in (None, "AES256", "aws:kms"):
        raise FediflowError("s3_sse must be AES256 or aws:kms, got '%s'" % p["s3_sse"])
    if p.get("scratch_port") is not None and not 1024 <= int(p["scratch_port"]) < 65536:
        raise FediflowError("scratch_port must be between 1024 and 65535, got %s" % p["scratch_port"])
    if p.get("backup_id") and ("/" in p["backup_id"] or p["backup_id"].startswith(".")):
        raise FediflowError("backup_id '%s' is not a backup id" % p["backup_id"])
    postgres.validate_conn(p)


# --------------------------------------------------------------------------- source side

def user_tables(conn):
    with conn.cursor() as cur:
        cur.execute("""SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                         AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
                       ORDER BY 1""")
        return [row[0] for row in cur.fetchall()]


def row_counts(conn):
    counts = {}
    with conn.cursor() as cur:
        for table in user_tables(conn):
            cur.execute("SELECT count(*) FROM %s" % table)  # names quoted by quote_ident above
            counts[table] = cur.fetchone()[0]
    return counts


def change_counters(conn):
    """Inserts + deletes per table so far (pg_stat_user_tables): bounds what can change."""
    with conn.cursor() as cur:
        cur.execute("""SELECT quote_ident(schemaname) || '.' || quote_ident(relname),
                              n_tup_ins + n_tup_del FROM pg_stat_user_tables""")
        return dict(cur.fetchall())


def count_slack(before, after):
    """Rows each table may differ by between the source's counts and a restore of a physical backup: the inserts and
    deletes (change_counters) made while the backup ran."""
    return {t: max(0, after.get(t, 0) - before.get(t, 0)) for t in after}


def compare_counts(expected, actual, slack=None):
    """Per-table comparison; ``slack`` (table -> rows that may have changed) allows for
    writes during a physical backup. Returns (ok, rows)."""
    rows = []
    ok = True
    for table in sorted(set(expected) | set(actual)):
        exp, got = expected.get(table), actual.get(table)
        allowed = (slack or {}).get(table, 0)
        good = exp is not None and got is not None and abs(exp - got) <= allowed
        ok = ok and good
        rows.append({"table": table, "source": exp, "restored": got, "allowed_delta": allowed, "ok": good})
    return ok, rows


# --------------------------------------------------------------------------- taking

def _bindir(p):
    return pgctl.find_bindir(p.get("bin_dir"))


def take_logical(p, backup_dir, commands, want_counts):
    bindir = _bindir(p)
    conn = postgres.connect(p, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT pg_export_snapshot(), pg_current_wal_lsn()::text, now()")
            snapshot, start_lsn, start = cur.fetchone()
        counts = row_counts(conn) if want_counts else None
        target = os.path.join(backup_dir, "dump" if p["format"] == "directory" else "db.dump")
        argv = [os.path.join(bindir, "pg_dump"), "--snapshot=%s" % snapshot, "--no-password",
                "--format=%s" % p["format"], "--file=%s" % target]
        level = p.get("compression_level")
        if p["compression"] == "none":
            argv.append("--compress=0")
        elif level is not None:
            argv.append("--compress=%d" % min(int(level), 9))
        if p["format"] == "directory":
            argv.append("--jobs=%d" % int(p.get("jobs") or 1))
        with postgres.passfile(p) as env:
            res = run(argv, env=env, timeout=p.get("command_timeout"))
        commands.append(res.as_dict())
        if res.rc != 0:
            raise FediflowError("pg_dump failed (rc=%s): %s" % (res.rc, last_lines(res.stderr)))
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()::text")
            stop_lsn = cur.fetchone()[0]
    finally:
        conn.rollback()
        conn.close()
    return {"snapshot": snapshot, "start_lsn": start_lsn, "stop_lsn": stop_lsn,
            "source_start": ledger.iso(start), "row_counts": counts,
            "database": p.get("db"), "format": p["format"]}


def _read_pg_manifest(backup_dir):
    import json  # pylint: disable=import-outside-toplevel
    with open(os.path.join(backup_dir, "backup_manifest"), "r", encoding="utf-8") as handle:
        return json.load(handle)


def take_physical(p, backup_dir, commands, want_counts):
    bindir = _bindir(p)
    conn = postgres.connect(p)
    try:
        before = change_counters(conn) if want_counts else None
        argv = [os.path.join(bindir, "pg_basebackup"), "--pgdata=%s" % backup_dir, "--no-password",
                "--format=%s" % ("t" if p["format"] == "tar" else "p"), "--wal-method=stream",
                "--checkpoint=fast", "--manifest-checksums=SHA256", "--label=fediflow.dr"]
        if p["compression"] != "none":
            level = p.get("compression_level")
            spec = "%s-%s" % (p.get("compress_at") or "server", p["compression"])
            argv.append("--compress=%s%s" % (spec, ":%d" % int(level) if level is not None else ""))
        with postgres.passfile(p) as env:
            res = run(argv, env=env, timeout=p.get("command_timeout"))
        commands.append(res.as_dict())
        if res.rc != 0:
            raise FediflowError("pg_basebackup failed (rc=%s): %s" % (res.rc, last_lines(res.stderr)))
        counts = after = None
        if want_counts:
            counts = row_counts(conn)
            after = change_counters(conn)
    finally:
        conn.close()
    wal = _read_pg_manifest(backup_dir).get("WAL-Ranges") or [{}]
    slack = count_slack(before, after) if want_counts else None
    return {"start_lsn": wal[0].get("Start-LSN"), "stop_lsn": wal[-1].get("End-LSN"),
            "timeline": wal[-1].get("Timeline"), "row_counts": counts, "count_slack": slack,
            "database": p.get("db"), "format": p["format"], "compression": p["compression"]}


# --------------------------------------------------------------------------- verifying

def verify_checksums(backup_dir, manifest):
    """Every file against the ledger's sha256 (catches any flipped byte, names the file)."""
    bad = []
    for entry in manifest["files"]:
        path = os.path.join(backup_dir, entry["path"])
        if not os.path.exists(path):
            bad.append("%s (missing)" % entry["path"])
        elif os.path.getsize(path) != entry["size"] or ledger.sha256_file(path) != entry["sha256"]:
            bad.append(entry["path"])
    if bad:
        raise FediflowError("checksum mismatch in backup %s: %s" % (manifest["id"], ", ".join(bad)))
    return {"method": "checksum", "files_checked": len(manifest["files"])}


def _decompressor_name(name):  # pylint: disable=invalid-name
    for ext, cmd in DECOMPRESS.items():
        if name.endswith(".tar" + ext):
            return cmd[0]
    return "tar"


def _open_tar_stream(path):
    for ext, cmd in DECOMPRESS.items():
        if path.endswith(".tar" + ext):
            import subprocess  # pylint: disable=import-outside-toplevel
            proc = subprocess.Popen(cmd + [path], stdout=subprocess.PIPE)  # pylint: disable=consider-using-with
            return proc, tarfile.open(fileobj=proc.stdout, mode="r|")
    return None, tarfile.open(path, mode="r|")


def verify_pg_manifest_tar(backup_dir):
    """pg_verifybackup (PostgreSQL 15) cannot read tar backups: check every file inside the
    tars against PostgreSQL's own backup_manifest (SHA256 per file) by streaming them."""
    import hashlib  # pylint: disable=import-outside-toplevel
    pg_manifest = _read_pg_manifest(backup_dir)
    wanted = {f["Path"]: f for f in pg_manifest["Files"]}
    seen = set()
    bad = []
    for name in sorted(os.listdir(backup_dir)):
        if not name.startswith("base.tar") or name.startswith("pg_wal"):
            continue
        proc, tar = _open_tar_stream(os.path.join(backup_dir, name))
        with tar:
            for member in tar:
                if not member.isfile() or member.name not in wanted:
                    continue
                digest = hashlib.sha256()
                handle = tar.extractfile(member)
                for block in iter(lambda: handle.read(CHUNK), b""):
                    digest.update(block)
                entry = wanted[member.name]
                if member.size != entry["Size"] or digest.hexdigest() != entry.get("Checksum"):
                    bad.append(member.name)
                seen.add(member.name)
        if proc and proc.wait() != 0:
            raise FediflowError("%s could not be decompressed (%s exited %s)" % (name, _decompressor_name(name), proc.returncode))
    missing = sorted(set(wanted) - seen)
    if bad or missing:
        raise FediflowError("backup does not match its backup_manifest: bad %s, missing %s"
                            % (bad[:10], missing[:10]))
    return {"method": "backup_manifest", "files_checked": len(seen)}


def wal_needed(pg_manifest, segment_size):
    """The WAL segment names a backup cannot be restored without: from its start to its end LSN (backup_manifest's
    WAL-Ranges), each range on its timeline. ``[(timeline, start_lsn, end_lsn, [names])]``."""
    out = []
    for rng in pg_manifest.get("WAL-Ranges") or []:
        tli = int(rng["Timeline"])
        start, end = pitr.parse_lsn(rng["Start-LSN"], "Start-LSN"), pitr.parse_lsn(rng["End-LSN"], "End-LSN")
        last = max(start, end - 1) // segment_size  # End-LSN is where the WAL ends: on a boundary, the segment before
        names = [pitr.segment_name(tli, segno * segment_size, segment_size) for segno in range(start // segment_size, last + 1)]
        out.append((tli, rng["Start-LSN"], rng["End-LSN"], names))
    return out


def _segment_size(sizes):
    """The cluster's WAL segment size, from the WAL files' sizes (a power of two from 1 MB to 1 GB, all equal)."""
    found = set(sizes)
    if len(found) != 1:
        raise FediflowError("pg_wal.tar holds WAL files of different sizes %s: a truncated segment" % sorted(found))
    size = found.pop()
    if size < 1024 * 1024 or size > 1024 ** 3 or size & (size - 1):
        raise FediflowError("pg_wal.tar holds WAL files of %d bytes: not a WAL segment size (truncated?)" % size)
    return size


def _extract_member(tar, member, path):
    """One WAL file of a tar stream written whole to ``path`` (its size, or an error when the archive ends early)."""
    handle = tar.extractfile(member)
    got = 0
    with open(path, "wb") as out:
        for block in iter(lambda: handle.read(CHUNK), b""):
            out.write(block)
            got += len(block)
    if got != member.size:
        raise FediflowError("%s is truncated (%d of %d bytes)" % (member.name, got, member.size))
    return member.size


def verify_pg_wal_tar(p, backup_dir, commands):
    """A tar backup holds the WAL it needs in pg_wal.tar (``--wal-method=stream``): without every segment from its
    start to its end LSN it cannot even reach consistency. Check that pg_wal.tar is there and readable, holds those
    segments whole, and that pg_waldump reads every record from the start to the end LSN (what pg_verifybackup does
    for a plain backup). The segments are extracted into a held work directory beside the backup, then removed."""
    import re  # pylint: disable=import-outside-toplevel
    names = [n for n in sorted(os.listdir(backup_dir)) if re.match(r"^pg_wal\.tar(\.[a-z0-9]+)?$", n)]
    if not names:
        raise FediflowError("pg_wal.tar is missing: the backup cannot be restored without its WAL")
    pg_manifest = _read_pg_manifest(backup_dir)
    if not pg_manifest.get("WAL-Ranges"):
        raise FediflowError("backup_manifest names no WAL-Ranges: the WAL this backup needs is unknown")
    dest = os.path.dirname(os.path.abspath(backup_dir))
    with ledger.WorkDir(dest, ".verify-wal-" + os.path.basename(os.path.abspath(backup_dir))) as held:
        sizes = {}
        proc, tar = None, None
        try:
            proc, tar = _open_tar_stream(os.path.join(backup_dir, names[0]))
            with tar:
                for member in tar:
                    base = os.path.basename(member.name)
                    if member.isfile() and os.path.dirname(member.name) in ("", ".") and re.match(r"^[0-9A-F]{24}$", base):
                        sizes[base] = _extract_member(tar, member, os.path.join(held.path, base))
        except (tarfile.TarError, EOFError, OSError) as exc:  # truncated, corrupt, unreadable
            raise FediflowError("%s cannot be read (%s: %s): the backup's WAL is damaged" % (names[0], type(exc).__name__, exc))
        if proc and proc.wait() != 0:
            raise FediflowError("%s could not be decompressed (%s exited %s)"
                                % (names[0], _decompressor_name(names[0]), proc.returncode))
        if not sizes:
            raise FediflowError("%s holds no WAL segment" % names[0])
        segment_size = _segment_size(sizes.values())
        ranges = wal_needed(pg_manifest, segment_size)
        missing = [n for _t, _s, _e, want in ranges for n in want if n not in sizes]
        if missing:
            raise FediflowError("%s lacks WAL the backup needs: %s" % (names[0], ", ".join(missing[:10])))
        for tli, start, end, want in ranges:
            res = run([os.path.join(_bindir(p), "pg_waldump"), "--quiet", "--path=" + held.path, "--timeline=%d" % tli,
                       "--start=" + start, "--end=" + end], timeout=p.get("command_timeout"))
            commands.append(res.as_dict())
            if res.rc != 0:
                raise FediflowError("pg_waldump cannot read the WAL of %s from %s to %s: %s" % (
                    names[0], start, end, last_lines(res.stderr or res.stdout)))
    return {"method": "pg_wal.tar", "wal_segments": sum(len(r[3]) for r in ranges),
            "wal_ranges": [{"timeline": r[0], "start_lsn": r[1], "end_lsn": r[2]} for r in ranges]}


def verify_list(p, backup_dir, manifest, commands):
    bindir = _bindir(p)
    if manifest["kind"] == "logical":
        target = os.path.join(backup_dir, "dump" if manifest["source"]["format"] == "directory" else "db.dump")
        res = run([os.path.join(bindir, "pg_restore"), "--list", target], timeout=p.get("command_timeout"))
        commands.append(res.as_dict())
        if res.rc != 0:
            raise FediflowError("pg_restore --list rejects the dump: %s" % last_lines(res.stderr))
        entries = [line for line in res.stdout.splitlines() if line and not line.startswith(";")]
        return {"method": "pg_restore --list", "toc_entries": len(entries)}
    if manifest["source"]["format"] == "plain":
        res = run([os.path.join(bindir, "pg_verifybackup"), backup_dir], timeout=p.get("command_timeout"))
        commands.append(res.as_dict())
        if res.rc != 0:
            raise FediflowError("pg_verifybackup failed: %s" % last_lines(res.stderr or res.stdout))
        return {"method": "pg_verifybackup"}
    record = verify_pg_manifest_tar(backup_dir)
    record["wal"] = verify_pg_wal_tar(p, backup_dir, commands)  # the base without its WAL restores nothing
    return record


def _counts_verdict(manifest, restored):
    """Compare restored counts with the source's; a backup taken without counts (verify below
    restore at backup time) proves it restores, but has nothing to compare against."""
    expected = manifest["source"].get("row_counts")
    if expected is None:
        return {"ok": True, "tables": [{"table": t, "source": None, "restored": n, "ok": True}
                                       for t, n in sorted(restored.items())],
                "tables_compared": 0,
                "note": "row counts were not recorded when this backup was taken: it restored, counts not compared"}
    ok, rows = compare_counts(expected, restored, manifest["source"].get("count_slack"))
    return {"ok": ok, "tables": rows, "tables_compared": len(rows)}


SCRATCH_DB = "fediflow_verify"


def restore_logical(p, backup_dir, manifest, commands, cluster):
    """pg_restore into a database of a fresh scratch cluster (initdb) on this host - never the source server
    (a scratch database there would load production: its disk, its WAL to every standby and the archive).
    Roles, grants and tablespaces are globals the scratch cluster does not have: not restored."""
    bindir = _bindir(p)
    cluster.init_empty(p.get("login_user") or "postgres")
    cluster.start()
    conn = postgres.connect(cluster.conn_params(p, "postgres"))
    try:
        with conn.cursor() as cur:
            cur.execute('CREATE DATABASE "%s"' % SCRATCH_DB)
    finally:
        conn.close()
    target = os.path.join(backup_dir, "dump" if manifest["source"]["format"] == "directory" else "db.dump")
    argv = [os.path.join(bindir, "pg_restore"), "--no-password", "--exit-on-error", "--no-owner", "--no-privileges",
            "--no-tablespaces", "--jobs=%d" % int(p.get("jobs") or 2), "--dbname=%s" % SCRATCH_DB, target]
    res = run(argv, env=cluster.libpq_env(p, SCRATCH_DB), timeout=p.get("command_timeout"))
    commands.append(res.as_dict())
    if res.rc != 0:
        raise FediflowError("pg_restore into the scratch cluster failed: %s" % last_lines(res.stderr))
    sconn = postgres.connect(cluster.conn_params(p, SCRATCH_DB))
    try:
        restored = row_counts(sconn)
    finally:
        sconn.close()
    return {"method": "restore"}, restored


def _backup_tars(backup_dir):
    """``(name, where it is extracted relative to the data directory)`` of a tar-format backup's archives."""
    for name in sorted(os.listdir(backup_dir)):
        if name.startswith("base.tar"):
            yield name, ""
        elif name.startswith("pg_wal.tar"):
            yield name, "pg_wal"


def check_tars(backup_dir):
    """Every member of every archive of a tar-format backup checked as untrusted input (``untrusted.check_tar``:
    no absolute name or '..', no link out of the target, no device) before anything is extracted."""
    for name, _sub in _backup_tars(backup_dir):
        path = os.path.join(backup_dir, name)
        proc, tar = _open_tar_stream(path)
        try:
            with tar:
                untrusted.check_tar(tar, path)
        except BaseException:
            if proc:
                proc.kill()
                proc.wait()
            raise
        if proc and proc.wait() != 0:
            raise FediflowError("%s could not be decompressed (exit %s)" % (name, proc.returncode))


def check_plain(backup_dir):
    """A plain-format backup holds directories and regular files only (a symlink would be copied as what it
    points to, anywhere on this host; a device is no data): checked before it is copied."""
    for root, dirnames, filenames in os.walk(backup_dir):
        for name in dirnames + filenames:
            full = os.path.join(root, name)
            mode = os.lstat(full).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise untrusted.Untrusted("%s: not a directory or regular file (a symlink or special file) in a "
                                          "plain-format backup; refused (nothing copied)" % full)


def extract_with_tarfile(backup_dir, data_dir):
    """Python's tarfile (no GNU tar here): the members checked first, then extracted with the ``data`` filter
    (``untrusted.tar_filter``)."""
    check_tars(backup_dir)
    for name, sub in _backup_tars(backup_dir):
        dest = os.path.join(data_dir, sub) if sub else data_dir
        os.makedirs(dest, exist_ok=True)
        path = os.path.join(backup_dir, name)
        proc, tar = _open_tar_stream(path)
        with tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter=untrusted.tar_filter(path))
            else:  # Python without extraction filters (< 3.9.17 / 3.10.12 / 3.11.4): the same member checks
                tar.extractall(dest, members=untrusted.checked_members(tar, path))
        if proc and proc.wait() != 0:
            raise FediflowError("%s could not be decompressed (exit %s)" % (name, proc.returncode))


def restore_physical(p, backup_dir, manifest, cluster):
    """The base backup becomes the scratch cluster's data directory; it recovers to consistency (archiving
    off), then rows are counted."""
    def fill(data_dir):
        if manifest["source"]["format"] == "plain":
            check_plain(backup_dir)
            shutil.copytree(backup_dir, data_dir, ignore=shutil.ignore_patterns(ledger.MANIFEST))
        else:
            os.makedirs(data_dir)
            extract_with_tarfile(backup_dir, data_dir)
        if os.path.exists(os.path.join(data_dir, ledger.MANIFEST)):
            os.unlink(os.path.join(data_dir, ledger.MANIFEST))

    waited, restored = recover_and_count(p, cluster, fill, 120)
    return {"method": "restore", "recovery_s": waited}, restored


def recover_and_count(p, cluster, fill, timeout):
    """A base backup restored by ``fill(data_dir)`` becomes the scratch cluster's data directory, recovers to
    consistency, and its rows are counted: ``(seconds recovery took, {table: rows})``."""
    cluster.adopt(fill)
    cluster.start()
    waited = cluster.wait_writable(p, timeout)
    sconn = postgres.connect(cluster.conn_params(p))
    try:
        return waited, row_counts(sconn)
    finally:
        sconn.close()


def restore(p, backup_dir, manifest, commands, where):
    """Restore ``manifest``'s backup into a scratch cluster on this host (``scratch.ScratchCluster``), compare
    row counts with the source's, stop and remove the cluster (also on failure). ``where`` gets where it ran
    (host, port, data_dir, removed)."""
    cluster = scratch.ScratchCluster(p, commands, p.get("verify_host_name"))
    try:
        with cluster:
            if manifest["kind"] == "logical":
                result, restored = restore_logical(p, backup_dir, manifest, commands, cluster)
            else:
                result, restored = restore_physical(p, backup_dir, manifest, cluster)
    finally:
        where.update(cluster.where)
    result.update(target="scratch cluster on %s port %s, %s (%s)" % (
        where["host"], where["port"], where["data_dir"], "removed" if where["removed"] else "NOT removed"),
        where=dict(where))
    result.update(_counts_verdict(manifest, restored))
    return result


def verify(p, backup_dir, manifest, level, commands):
    """Verify up to ``level`` (list < checksum < restore); returns the record (``ok`` inside).

    list: pg_restore --list / pg_verifybackup (tar: every file against backup_manifest);
    checksum: also every file against the ledger's sha256; restore: also a real restore with
    per-table row counts compared to the source.
    """
    timer = Timer()
    steps = []
    # "integrity": whether a failure says something about the backup itself (checksums,
    # manifest, decompression, row counts) rather than about the host verifying it
    record = {"level": level, "ok": True, "steps": steps}
    try:
        if level in ("checksum", "restore"):
            with timer.phase("checksum"):
                steps.append(verify_checksums(backup_dir, manifest))
        if level != "none":
            with timer.phase("list"):
                steps.append(verify_list(p, backup_dir, manifest, commands))
        if level == "restore":
            record["integrity"] = False  # a restore that cannot run may be the host's fault
            record["where"] = {}
            with timer.phase("restore"):
                result = restore(p, backup_dir, manifest, commands, record["where"])
            steps.append(result)
            if not result["ok"]:
                bad = [r["table"] for r in result["tables"] if not r["ok"]]
                record.update(ok=False, integrity=True,
                              error="restored row counts differ from the source in: %s" % ", ".join(bad[:10]))
    except FediflowError as exc:
        record.update(ok=False, error=exc.message)
    except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
        # a truncated or corrupt archive, an unreadable file: the backup failed verification
        record.update(ok=False, error="%s: %s" % (type(exc).__name__, exc))
    record.setdefault("integrity", True)
    if record["ok"] is not False:
        record.pop("integrity")
    if level == "none":
        record["ok"] = None
    record.update(at=ledger.iso(ledger.utcnow()), duration_s=timer.elapsed(), phases=timer.phases)
    return record
