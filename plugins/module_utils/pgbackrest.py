# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest as the physical backup and WAL engine (issue 21): its configuration, built from the same
repository list the native engine writes to (one S3 bucket per region), and what its ``info`` says, read as
untrusted input and turned into the collection's ledger entries.

One configuration file per identity (docs/storage-security.md): pgBackRest keeps a repository's WAL
(``<repo path>/archive/<stanza>``) and backups (``<repo path>/backup/<stanza>``) side by side, so the split
of the native engine (the WAL identity can only put and get WAL, the backup identity never touches it)
becomes two files naming the same repositories with different keys: ``archive_command`` reads the WAL
identity's, the backup jobs the backup identity's. A secret lives in a file of mode 0600 only, never in
argv, ``archive_command`` or the environment.

pgBackRest speaks only HTTPS to S3: an ``http://`` endpoint is refused naming the option.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
from urllib.parse import urlsplit

from ansible_collections.fediflow.dr.plugins.module_utils import ledger
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError
from ansible_collections.fediflow.dr.plugins.module_utils.untrusted import Untrusted, check_size

STANZA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
LABEL_RE = re.compile(r"^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$")
WAL_RE = re.compile(r"^[0-9A-F]{24}$")
LSN_RE = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
BACKUP_TYPES = ("full", "diff", "incr")
DEFAULT_FULL_INTERVAL_S = 7 * 86400   # a full weekly, a differential daily (the schedule's defaults)
DEFAULT_DIFF_INTERVAL_S = 86400
COMPRESS_TYPES = ("none", "gz", "lz4", "zst", "bz2")
MAX_INFO_BYTES = 64 * 1024 * 1024   # `info --output=json` of thousands of backups stays far below
DEFAULT_BINARY = "/usr/bin/pgbackrest"


def binary(path=None):
    """The pgbackrest program: ``path`` when given, else the one on PATH, else Debian's."""
    found = path or shutil.which("pgbackrest") or DEFAULT_BINARY
    return found


# ---------------------------------------------------------------- configuration

def _value(value, option):
    """A value pgBackRest's INI reader takes as written: no line break (a second option), nothing empty."""
    text = str(value)
    if not text or any(c in text for c in "\r\n\0"):
        raise FediflowError("%s must be a non-empty single line" % option)
    return text


def absolute_path(path, option):
    text = _value(path, option)
    if not text.startswith("/") or "/../" in text + "/" or "//" in text:
        raise FediflowError("%s '%s' must be an absolute path without '..' or empty parts" % (option, text))
    return text


def check_stanza(stanza, option="stanza"):
    if not isinstance(stanza, str) or not STANZA_RE.match(stanza):
        raise FediflowError("%s '%s' must be letters, digits, '_' or '-' (at most 63, a letter or digit first)"
                            % (option, stanza))
    return stanza


def repo_path(prefix):
    """A repository's path inside its bucket: ``/<prefix>/pgbackrest`` (``/pgbackrest`` without a prefix)."""
    parts = [x for x in (prefix or "").strip("/").split("/") if x]
    if ".." in parts:
        raise FediflowError("repository prefix '%s' must not hold '..'" % prefix)
    return "/" + "/".join(parts + ["pgbackrest"])


# pgBackRest expires after every backup by the configured retention; the collection's retention runs ``expire`` itself
# once the new backup is proven (plan_expiry), so the configuration keeps everything: an automatic expiry at the end
# of ``backup`` would run before the new backup's verification and could remove the newest verified one.
KEEP_ALL_FULL = "9999999"   # pgBackRest's maximum for repoN-retention-full
DEFAULT_ARCHIVE_GET_TIMEOUT_S = 5


def repo_options(index, repo, identity, ca_file=None, cipher_pass=None):
    """The ``repo<index>-*`` options of one repository of the list (``{name, bucket, prefix, region,
    endpoint_url}``, as repos.normalize gives it) with an identity (``{access_key, secret_key}``; empty keys:
    the instance's role, ``s3-key-type=auto``)."""
    where = "repositories[%d]" % (index - 1)
    key = "repo%d-" % index
    out = [(key + "type", "s3"),
           (key + "path", repo_path(repo.get("prefix"))),
           (key + "s3-bucket", _value(repo.get("bucket") or "", where + ".bucket"))]
    region = repo.get("region")
    if not region:
        raise FediflowError("%s.region is required by pgBackRest (its S3 signature names the region)" % where)
    out.append((key + "s3-region", _value(region, where + ".region")))
    endpoint = repo.get("endpoint_url")
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise FediflowError("%s.endpoint_url '%s' must be an https:// URL: pgBackRest speaks only HTTPS to S3 "
                                "(give the lab's S3 its TLS front, fediflow_s3_tls_endpoint_url)" % (where, endpoint))
        if parts.path not in ("", "/") or parts.query:
            raise FediflowError("%s.endpoint_url '%s' must be scheme://host[:port] only" % (where, endpoint))
        out.append((key + "s3-endpoint", _value(parts.hostname, where + ".endpoint_url")))
        if parts.port:
            out.append((key + "storage-port", str(parts.port)))
        # a private endpoint (the lab's, a MinIO, a VPC endpoint by IP) serves buckets by path, not by host name
        out.append((key + "s3-uri-style", "path"))
    else:
        out.append((key + "s3-endpoint", "s3.%s.amazonaws.com" % region))
    if identity.get("access_key"):
        if not identity.get("secret_key"):
            raise FediflowError("%s: an access key needs its secret key" % where)
        out.append((key + "s3-key", _value(identity["access_key"], "access_key")))
        out.append((key + "s3-key-secret", _value(identity["secret_key"], "secret_key")))
    else:
        out.append((key + "s3-key-type", "auto"))   # the instance's role (IMDS)
    # small files (most of a cluster's) bundled into larger objects: one S3 request each instead of one per file
    out.append((key + "bundle", "y"))
    if ca_file:
        out.append((key + "storage-ca-file", absolute_path(ca_file, "ca_file")))
    out.append((key + "retention-full", KEEP_ALL_FULL))
    if cipher_pass:
        out.append((key + "cipher-type", "aes-256-cbc"))
        out.append((key + "cipher-pass", _value(cipher_pass, "cipher_pass")))
    return out


def render_config(stanza, pg, repos, identity, settings):
    """The whole configuration file (INI text) for ``stanza``: ``pg`` = ``{data_dir, port, socket_dir, user}``,
    ``repos`` = the repository list (repos.normalize), ``identity`` = ``{access_key, secret_key}``,
    ``settings`` = ``{spool_path, log_path, lock_path, archive_async, process_max, compress_type,
    compress_level, ca_file, cipher_pass, archive_push_queue_max, archive_get_timeout}``."""
    check_stanza(stanza)
    if not repos:
        raise FediflowError("repositories: pgBackRest needs at least one (the inventory's repository list)")
    if len(repos) > 4:
        raise FediflowError("repositories: pgBackRest 2.45 takes at most 4 repositories, not %d" % len(repos))
    compress = settings.get("compress_type") or "lz4"
    if compress not in COMPRESS_TYPES:
        raise FediflowError("compress_type '%s' must be one of %s" % (compress, ", ".join(COMPRESS_TYPES)))
    process_max = int(1 if settings.get("process_max") is None else settings["process_max"])
    if not 1 <= process_max <= 64:
        raise FediflowError("process_max must be 1-64, not %d" % process_max)
    glob = [("log-path", absolute_path(settings["log_path"], "log_path")),
            ("lock-path", absolute_path(settings["lock_path"], "lock_path")),
            ("log-level-console", "warn"), ("log-level-file", "info"),
            ("compress-type", compress), ("process-max", str(process_max)),
            ("start-fast", "y"), ("delta", "y"),
            # every backup self-contained: the WAL that makes it consistent is copied into it, so it restores (and
            # its verification restores it) even without the archive
            ("archive-copy", "y")]
    if settings.get("compress_level") is not None:
        glob.append(("compress-level", str(int(settings["compress_level"]))))
    if settings.get("archive_async", True):
        glob += [("archive-async", "y"), ("spool-path", absolute_path(settings["spool_path"], "spool_path"))]
        if settings.get("archive_push_queue_max"):
            glob.append(("archive-push-queue-max", _value(settings["archive_push_queue_max"], "archive_push_queue_max")))
    for index, repo in enumerate(repos, start=1):
        glob += repo_options(index, repo, identity, settings.get("ca_file"),
                             settings.get("cipher_pass"))
    section = [("pg1-path", absolute_path(pg["data_dir"], "pg.data_dir"))]
    if pg.get("port"):
        section.append(("pg1-port", str(int(pg["port"]))))
    if pg.get("socket_dir"):
        section.append(("pg1-socket-path", absolute_path(pg["socket_dir"], "pg.socket_dir")))
    if pg.get("user"):
        section.append(("pg1-user", _value(pg["user"], "pg.user")))
    lines = ["# Managed by fediflow.dr (pgbackrest_config): edits are replaced at the next run.", "[global]"]
    lines += ["%s=%s" % kv for kv in glob]
    if settings.get("archive_async", True):
        # restore_command returns within this when the asynchronous fetch has no answer yet (pgBackRest's default,
        # archive-timeout 60 s, held a standby's promotion a whole minute while a lost region's repository did not
        # answer: the startup process finishes its restore_command call before it promotes)
        wait = settings.get("archive_get_timeout")
        wait = int(DEFAULT_ARCHIVE_GET_TIMEOUT_S if wait is None else wait)
        if not 1 <= wait <= 600:
            raise FediflowError("archive_get_timeout must be 1-600 s, not %d" % wait)
        lines += ["", "[global:archive-get]", "archive-timeout=%d" % wait]
    lines += ["", "[%s]" % stanza]
    lines += ["%s=%s" % kv for kv in section]
    return "\n".join(lines) + "\n"


SECRET_KEYS = re.compile(r"^(repo\d+-(s3-key|s3-key-secret|s3-token|cipher-pass))=.*$", re.M)


def redact(text):
    """The configuration with every secret value replaced (for --diff and results)."""
    return SECRET_KEYS.sub(r"\1=********", text or "")


ENGINES = ("native", "pgbackrest")
DEFAULT_STANZA = "fediflow"


def host_setup(hostvars):
    """Where a database host keeps the pgBackRest engine and what it names, from its inventory variables - one home
    for what the replication, backup, PITR and failover roles must agree on: ``{engine, stanza, dir, configs: {wal,
    backup, expire}, spool_path, log_path, lock_path, repositories, repository_names, ca_file, restore}``
    (``restore``: pitr_restore's ``pgbackrest`` option for this host).

    ``fediflow_backup_engine`` (native | pgbackrest); ``fediflow_pgbackrest_stanza`` (default fediflow);
    ``fediflow_pgbackrest_dir`` (default ``<the data directory's parent>/pgbackrest``: per cluster, so two clusters
    of one machine - the lab's regions - never share a lock or a spool); ``fediflow_backup_repositories`` (the
    native engine's list: one bucket per region), this host's region first, each endpoint replaced by its https one
    from ``fediflow_pgbackrest_endpoints`` (``{repository name: https URL}``, for private endpoints such as the lab's
    TLS fronts; AWS's regional ones need none); ``fediflow_s3_ca_file`` (the CA of a private endpoint)."""
    engine = hostvars.get("fediflow_backup_engine") or "native"
    if engine not in ENGINES:
        raise FediflowError("fediflow_backup_engine must be native or pgbackrest, not %r" % engine)
    stanza = hostvars.get("fediflow_pgbackrest_stanza") or DEFAULT_STANZA
    check_stanza(stanza, "fediflow_pgbackrest_stanza")
    data_dir = hostvars.get("fediflow_pg_data_dir")
    base = hostvars.get("fediflow_pgbackrest_dir") or (
        (str(data_dir).rstrip("/").rsplit("/", 1)[0] + "/pgbackrest") if data_dir else None)
    if not base:
        raise FediflowError("fediflow_pgbackrest_dir (or fediflow_pg_data_dir) is needed to place pgBackRest's files")
    base = absolute_path(str(base).rstrip("/"), "fediflow_pgbackrest_dir")
    endpoints = hostvars.get("fediflow_pgbackrest_endpoints") or {}
    if not isinstance(endpoints, dict):
        raise FediflowError("fediflow_pgbackrest_endpoints must map repository names to https URLs")
    listed = list(hostvars.get("fediflow_backup_repositories") or [])
    region = hostvars.get("fediflow_region")
    ordered = [r for r in listed if r.get("name") == region] + [r for r in listed if r.get("name") != region]
    repositories = []
    for repo in ordered:
        entry = {k: v for k, v in repo.items() if k in ("name", "bucket", "region", "endpoint_url")}
        entry["endpoint_url"] = endpoints.get(repo.get("name")) or (
            repo.get("endpoint_url") if str(repo.get("endpoint_url") or "").startswith("https://") else None)
        repositories.append(entry)
    return {
        "engine": engine, "stanza": stanza, "dir": base,
        "configs": {"wal": base + "/wal.conf", "backup": base + "/backup.conf", "expire": base + "/expire.conf"},
        "spool_path": base + "/spool", "log_path": base + "/log", "lock_path": base + "/lock",
        "repositories": repositories, "repository_names": [r.get("name") for r in repositories],
        "ca_file": hostvars.get("fediflow_s3_ca_file") or None,
        # pitr_restore's pgbackrest option for this host: the backup identity reads, the WAL identity's restore_command
        "restore": {"config": base + "/backup.conf", "archive_config": base + "/wal.conf", "stanza": stanza,
                    "repositories": [r.get("name") for r in repositories]},
    }


def archive_command(binary_path, config, stanza):
    """``archive_command``: the WAL identity's file by path, no secret in the command."""
    check_stanza(stanza)
    program, path = absolute_path(binary_path, "binary"), absolute_path(config, "config")
    return "%s --config=%s --stanza=%s archive-push %%p" % (program, path, stanza)


def restore_command(binary_path, config, stanza):
    check_stanza(stanza)
    program, path = absolute_path(binary_path, "binary"), absolute_path(config, "config")
    return "%s --config=%s --stanza=%s archive-get %%f \"%%p\"" % (program, path, stanza)


def command(binary_path, config, stanza, name, *options):
    """argv of a pgBackRest command (no shell)."""
    check_stanza(stanza)
    return [binary_path, "--config=%s" % absolute_path(config, "config"), "--stanza=%s" % stanza] + list(options) + [name]


# ---------------------------------------------------------------- info (untrusted)

def _refuse(where, what):
    raise Untrusted("%s: %s; refused" % (where, what))


def _int(value, where, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _refuse(where, "%s is not a non-negative integer" % what)
    return value


def _match(regex, value, where, what, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not regex.match(value):
        _refuse(where, "%s %r is not valid" % (what, value if isinstance(value, str) else type(value).__name__))
    return value


# pgBackRest's per-repository status codes that still let its backups be read (0 ok, 2 no valid backup yet); any
# other (a missing stanza, a cipher or database mismatch, 99 "other" = the repository could not be read: down,
# denied, TLS) means the repository's backups are unknown, never "none"
READABLE_REPO_CODES = (0, 2)
MISSING_STANZA_CODES = (1, 3)   # missing stanza path, missing stanza data: stanza-create makes them


def parse_info(text, stanza, repo_names):
    """What ``pgbackrest info --output=json`` says of ``stanza`` (everything checked: pgBackRest's repository
    is storage like any other): ``{"backups": [...], "repositories": {name: {ok, code, message}}}``. A backup is
    ``{id, engine, type, prior, references, repositories, start_wal, stop_wal, start_lsn, stop_lsn, size, delta,
    repo_size, repo_delta, started_at, finished_at, error}`` and the ledger's fields (``kind: physical, start_time,
    stop_time, source.timeline, verification: {ok, level, at, detail}`` - the proof read from the backup's
    annotations), one per label, oldest first. ``repo_names`` maps
    pgBackRest's repo key (1, 2, ...) to the repository's name in the inventory's list. ``info`` exits 0 even when
    it could read no repository: a repository whose status is not ``ok`` is reported ``ok: false`` with
    pgBackRest's message (an HTTP 403, a TLS error), and its backups are unknown - never taken for none."""
    where = "pgbackrest info"
    data = text.encode("utf-8") if isinstance(text, str) else text
    check_size(len(data), where, MAX_INFO_BYTES)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        _refuse(where, "not valid JSON (%s)" % str(exc).splitlines()[0][:200])
    if not isinstance(doc, list):
        _refuse(where, "not a list of stanzas")
    entries, repositories = {}, {}
    for item in doc:
        if not isinstance(item, dict) or item.get("name") != stanza:
            continue
        repositories.update(_repo_status(item, where, repo_names))
        backups = item.get("backup") or []
        if not isinstance(backups, list):
            _refuse(where, "backup is not a list")
        for raw in backups:
            merge_entry(entries, _backup(raw, where, repo_names), where)
    for name in repo_names.values():
        repositories.setdefault(name, {"ok": False, "code": None, "message": "not in pgbackrest info's answer"})
    return {"backups": oldest_first(entries), "repositories": repositories}


def merge_entry(entries, entry, where="pgbackrest info"):
    """``entry`` into ``entries`` (``{label: entry}``): one label held by several repositories is one backup with
    their names; one label naming two different backups is refused."""
    known = entries.get(entry["id"])
    if known is None:
        entries[entry["id"]] = entry
        return
    if (known["type"], known["stop_lsn"]) != (entry["type"], entry["stop_lsn"]):
        _refuse(where, "label %s names two different backups" % entry["id"])
    known["repositories"] = sorted(set(known["repositories"]) | set(entry["repositories"]))


def oldest_first(entries):
    return sorted(entries.values(), key=lambda e: (e["started_at"], e["id"]))


def _repo_status(item, where, repo_names):
    repos = item.get("repo") or []
    if not isinstance(repos, list):
        _refuse(where, "repo is not a list")
    out = {}
    for repo in repos:
        if not isinstance(repo, dict):
            _refuse(where, "a repo is not an object")
        key = _int(repo.get("key"), where, "repo.key")
        if key not in repo_names:
            _refuse(where, "repository key %d is none of this configuration's" % key)
        status = _object(repo, "status", where)
        code = _int(status.get("code"), where, "repo.status.code")
        message = status.get("message")
        message = message[:2000] if isinstance(message, str) else ""
        out[repo_names[key]] = {"ok": code in READABLE_REPO_CODES, "code": code, "message": message}
    return out


def _object(parent, key, where):
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        _refuse(where, "%s must be an object" % key)
    return value


# The collection's proof of a backup, kept in the repository itself as pgBackRest annotations (``pgbackrest annotate``):
# the repository is the ledger of this engine - every region's hosts read it with ``info``, nothing beside it can
# disagree with it, and ``expire`` takes a backup's record with the backup.
VERIFIED_KEY = "fediflow-verified"          # list | restore | failed
VERIFIED_AT_KEY = "fediflow-verified-at"    # YYYY-MM-DDTHH:MM:SSZ
VERIFY_LEVELS = ("list", "restore")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def verification_annotations(level, ok, at_epoch):
    """The ``--annotation`` options recording a verification's outcome on a backup."""
    if level not in VERIFY_LEVELS:
        raise FediflowError("verification level %r is not one of %s" % (level, ", ".join(VERIFY_LEVELS)))
    return ["--annotation=%s=%s" % (VERIFIED_KEY, level if ok else "failed"),
            "--annotation=%s=%s" % (VERIFIED_AT_KEY, iso(at_epoch))]


def _verification(raw, error):
    """What the annotations say of the collection's proof: ``{ok, level, at}``; none, or any value that is not
    exactly what ``verification_annotations`` writes (annotations are anyone's to set), is not a proof."""
    notes = raw.get("annotation") if isinstance(raw.get("annotation"), dict) else {}
    level, at = notes.get(VERIFIED_KEY), notes.get(VERIFIED_AT_KEY)
    if level is None:
        return {"ok": False, "level": None, "at": None, "detail": "not verified by fediflow.dr"}
    if level not in VERIFY_LEVELS + ("failed",) or not isinstance(at, str) or not ISO_RE.match(at):
        return {"ok": False, "level": None, "at": None,
                "detail": "its %s annotation is malformed: not taken as a proof" % VERIFIED_KEY}
    if level == "failed":
        return {"ok": False, "level": None, "at": at, "detail": "its verification failed"}
    if error:
        return {"ok": False, "level": level, "at": at, "detail": "pgBackRest found page checksum errors in it"}
    return {"ok": True, "level": level, "at": at, "detail": ""}


def _backup(raw, where, repo_names):
    if not isinstance(raw, dict):
        _refuse(where, "a backup is not an object")
    label = _match(LABEL_RE, raw.get("label"), where, "label")
    where = "%s: backup %s" % (where, label)
    kind = raw.get("type")
    if kind not in BACKUP_TYPES:
        _refuse(where, "type %r is not one of %s" % (kind, ", ".join(BACKUP_TYPES)))
    if (kind == "full") != label.endswith("F"):
        _refuse(where, "type %s does not match its label" % kind)
    prior = _match(LABEL_RE, raw.get("prior"), where, "prior", optional=True)
    if kind != "full" and not prior:
        _refuse(where, "a %s backup without a prior backup" % kind)
    references = raw.get("reference") or []
    if not isinstance(references, list):
        _refuse(where, "reference is not a list")
    references = [_match(LABEL_RE, r, where, "reference") for r in references]
    parts = ("archive", "lsn", "timestamp", "info", "database")
    archive, lsn, stamp, info, database = (_object(raw, key, where) for key in parts)
    repository = _object(info, "repository", where)
    repo_key = _int(database.get("repo-key"), where, "database.repo-key")
    if repo_key not in repo_names:
        _refuse(where, "repository key %d is none of this configuration's (%s)"
                % (repo_key, ", ".join(str(k) for k in sorted(repo_names))))
    started, finished = _int(stamp.get("start"), where, "timestamp.start"), _int(stamp.get("stop"), where, "timestamp.stop")
    if finished < started:
        _refuse(where, "it stopped before it started")
    error = raw.get("error", False)
    if not isinstance(error, bool):
        _refuse(where, "error is not true or false")
    return {
        "id": label, "engine": "pgbackrest", "type": kind, "prior": prior, "references": references,
        "repositories": [repo_names[repo_key]],
        "start_wal": _match(WAL_RE, archive.get("start"), where, "archive.start"),
        "stop_wal": _match(WAL_RE, archive.get("stop"), where, "archive.stop"),
        "start_lsn": _match(LSN_RE, lsn.get("start"), where, "lsn.start"),
        "stop_lsn": _match(LSN_RE, lsn.get("stop"), where, "lsn.stop"),
        "size": _int(info.get("size"), where, "info.size"), "delta": _int(info.get("delta"), where, "info.delta"),
        "repo_size": _int(repository.get("size"), where, "info.repository.size"),
        "repo_delta": _int(repository.get("delta"), where, "info.repository.delta"),
        "started_at": started, "finished_at": finished, "error": error,
        # what the ledger's readers (PITR base selection, validate, retention, reports) read of any physical backup
        "kind": "physical", "start_time": iso(started), "stop_time": iso(finished),
        "source": {"timeline": int(archive["start"][:8], 16)},
        "verification": _verification(raw, error),
    }


def chain_root(label):
    """The full backup a label depends on (itself for a full): ``20261207-173553F_20261207-180102I`` -> its F part."""
    return label.split("_", 1)[0]


def plan_expiry(entries, repository, now, retention_full=None, retention_days=None):
    """The collection's retention for one repository, as pgBackRest can carry it out: ``(keep_full, expired)`` -
    ``keep_full`` the ``repoN-retention-full`` (count) for ``expire`` (None: expire nothing), ``expired`` the
    ``[(label, reason)]`` that expiry removes (each full and every backup depending on it).

    A full backup and the differentials and incrementals that depend on it form a chain, judged as one
    (ledger.plan_retention: the newest ``retention_full`` chains and those younger than ``retention_days`` are
    kept; the chain holding the newest *verified* backup is never removed, nor any newer one up to the count; with
    nothing verified nothing goes). pgBackRest's count expiry removes the oldest chains only, so every chain newer
    than the oldest kept one stays too: the newest verified backup can never be among the expired."""
    held = [e for e in entries if repository in e["repositories"]]
    fulls = sorted((e for e in held if e["type"] == "full"), key=lambda e: (e["started_at"], e["id"]))
    chains = []
    for full in fulls:
        members = [e for e in held if chain_root(e["id"]) == full["id"]]
        verified = any(m["verification"]["ok"] for m in members)
        chains.append({"id": full["id"], "stop_time": full["stop_time"],
                       "verification": {"ok": verified}, "members": members})
    orphans = [e for e in held if chain_root(e["id"]) not in {f["id"] for f in fulls}]
    if orphans or not chains:   # a backup whose full is not listed: keep everything rather than guess
        return None, []
    removals = dict(ledger.plan_retention(chains, now, retention_full, retention_days))
    kept = [i for i, c in enumerate(chains) if c["id"] not in removals]
    if not kept or kept[0] == 0:
        return None, []
    oldest_kept = kept[0]
    expired = []
    for chain in chains[:oldest_kept]:
        reason = removals.get(chain["id"]) or "older than the oldest chain retention keeps"
        expired += [(m["id"], reason) for m in sorted(chain["members"], key=lambda e: (e["started_at"], e["id"]))]
    return len(chains) - oldest_kept, expired


def choose_type(entries, repository, now_epoch, full_interval_s, diff_interval_s):
    """The type a scheduled run takes into one repository (``type: auto``), from the schedule and what the repository
    holds: ``(type, why)``. A full when its newest good full ended ``full_interval_s`` ago or more (or it has none: a
    repository back after its region's outage starts a fresh chain); a differential when its newest good full or
    differential ended ``diff_interval_s`` ago or more; else an incremental. A missed run is made up by the next one."""
    held = [e for e in entries if repository in e["repositories"] and not e["error"]]
    fulls = [e for e in held if e["type"] == "full"]
    if not fulls:
        return "full", "no full backup in this repository"
    full = max(fulls, key=lambda e: (e["finished_at"], e["id"]))
    age = now_epoch - full["finished_at"]
    if age >= full_interval_s:
        return "full", "its newest full backup ended %.1f h ago (a full every %.1f h)" % (age / 3600.0, full_interval_s / 3600.0)
    base = max([full] + [e for e in held if e["type"] == "diff" and chain_root(e["id"]) == full["id"]],
               key=lambda e: (e["finished_at"], e["id"]))
    age = now_epoch - base["finished_at"]
    if age >= diff_interval_s:
        return "diff", "its newest full or differential ended %.1f h ago (a differential every %.1f h)" % (
            age / 3600.0, diff_interval_s / 3600.0)
    return "incr", "its newest full or differential ended %.1f h ago" % (age / 3600.0)


def newest(entries, kind=None):
    """The newest entry (of ``kind`` when given) without an error, or None."""
    good = [e for e in entries if not e["error"] and (kind is None or e["type"] == kind)]
    return good[-1] if good else None
