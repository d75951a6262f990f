# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's WAL archive / restore command (PostgreSQL ``archive_command`` and
``restore_command``), standard library only so it runs under the system Python as the
``postgres`` user: one short process per segment, no boto3 (its start-up alone costs more
than the whole push is allowed to take).

Backends: a directory repository and S3 (AWS Signature Version 4 signed here, with
``hmac``/``hashlib``, over one ``http.client`` connection per invocation). The contract is
the same for both:

* ``push PATH NAME``: archive a segment. Succeeds when an identical copy is already there,
  fails (exit 1, so PostgreSQL retries and alerts) when a *different* file has that name,
  never leaves a partial file visible (directory: temp file + fsync + link + fsync of the
  directory; S3: one PUT, which is atomic, sent with ``If-None-Match: *`` so a racing
  writer is never overwritten, and with Content-MD5 and a signed payload SHA-256 so S3
  verifies the bytes it stores).
* ``fetch NAME PATH``: restore a segment (S3: verified against its ``x-amz-meta-sha256``);
  exit 1 only when no repository has it (PostgreSQL treats that as "end of archive"). A hard error
  (a repository that fails, a checksum mismatch, a permission denied) exits EXIT_ABORT (> 125), which
  makes PostgreSQL abort recovery instead of ending it early and promoting without the rest of the
  archive - except in standby mode (see fetch_exit_code).
* ``status``: JSON with the newest archived segment and its age, for RPO checks.

The command-line entry point is ``roles/replication/files/fediflow_wal.py``, installed beside
this file on the database host::

    python3 fediflow_wal.py --config /etc/fediflow/wal.json push %p %f
    python3 fediflow_wal.py --repo DIR push %p %f        # directory backend shorthand

The configuration file is JSON (mode 0600: it may hold credentials, which never go in argv
because ``archive_command`` is visible in ``pg_settings`` and ``ps``); see CONFIG_KEYS. It names one
repository, or several (``{"repositories": [{"name": ..., <one repository's keys>}, ...],
"required_copies": N}``, e.g. a bucket in each region, so that losing a region does not lose the
archive): ``push`` writes to every repository at once and succeeds when N of them hold the segment
(default: all; the copies made are kept, so PostgreSQL's retry completes the rest), ``fetch`` reads
from the first repository that has the segment (list the host's own region first), ``status`` and
``list_objects`` read every repository that answers.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import threading
import time
from urllib.parse import quote, urlsplit

# segments (and their .partial / .backup companions) and timeline history files
SEGMENT_RE = re.compile(r"^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$")
WAL_RE = re.compile(r"^[0-9A-F]{24}$")
CHUNK = 1024 * 1024
IN_MEMORY_MAX = 64 * 1024 * 1024
DELETE_BATCH = 1000  # S3's DeleteObjects limit
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# The configuration file's keys (anything else is refused, so a typo cannot go unnoticed).
CONFIG_KEYS = {
    "backend": "'s3' or 'dir'",
    "repo": "dir backend: absolute path of the archive directory",
    "bucket": "s3 backend: bucket name (required)",
    "prefix": "s3 backend: key prefix, e.g. wal/us-east-1",
    "endpoint_url": "s3 backend: e.g. http://127.0.0.1:15000 (path-style requests); default AWS",
    "region": "s3 backend: AWS region of the bucket (required)",
    "access_key": "s3 backend: AWS access key id (else AWS_ACCESS_KEY_ID, else the EC2 role)",
    "secret_key": "s3 backend: AWS secret access key",
    "session_token": "s3 backend: AWS session token (temporary credentials)",
    "sse": "s3 backend: null, 'AES256' or 'aws:kms'",
    "kms_key_id": "s3 backend: KMS key for sse 'aws:kms' (default: the AWS managed key)",
    "storage_class": "s3 backend: e.g. STANDARD, STANDARD_IA (default: the bucket's)",
}
SECRET_KEYS = ("secret_key", "session_token")
# several repositories: these keys at the top, each repository's own keys (CONFIG_KEYS + "name") in the list
MULTI_KEYS = {
    "repositories": "list of repositories, each an object of the keys above plus 'name' (unique)",
    "required_copies": "how many repositories must hold a segment for push to succeed (1..count, default all)",
}
SSE_CHOICES = (None, "AES256", "aws:kms")

# Retries of transient S3 failures (5xx, throttling, connection reset/refused, timeouts):
# RETRIES more attempts after the first, jittered exponential back-off from RETRY_BASE_S,
# never starting a retry later than RETRY_BUDGET_S after the first attempt.
RETRIES = 3
RETRY_BASE_S = 0.2
RETRY_BUDGET_S = 20.0
SOCKET_TIMEOUT_S = 15.0
IMDS_ENDPOINT = "http://169.254.169.254"
IMDS_TIMEOUT_S = 1.0


# restore_command exit statuses: 1 = "not in the archive" (PostgreSQL: end of archive, recovery may end there);
# above 125 PostgreSQL aborts recovery (FATAL) instead, as for a command killed by a signal
EXIT_NOT_FOUND = 1
EXIT_ABORT = 255
STANDBY_SIGNAL = "standby.signal"


class ArchiveError(Exception):
    pass


class NotInArchive(ArchiveError):
    pass


class TransientError(ArchiveError):
    """A failure worth retrying (5xx, throttling, connection reset, timeout)."""


class CorruptObject(ArchiveError):
    """A repository answered with a file whose bytes do not match its recorded sha256: it exists, damaged."""


# ---------------------------------------------------------------------------------------------
# shared by both backends


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class SegmentDigests:
    """``(size, sha256 hex, md5 hex)`` of a file, computed in a background thread so the hashing
    overlaps the imports and the HEAD request of a push. A file of at most IN_MEMORY_MAX bytes
    (a default 16 MiB segment) is read once and kept as ``data`` to be sent from memory; its two
    digests run in parallel (hashlib releases the GIL), so the MD5 costs no extra wall time."""

    def __init__(self, path):
        self.path = path
        self.data = None
        self._result = None
        self._error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            md5 = hashlib.md5(usedforsecurity=False)  # S3's Content-MD5, not a security use
            with open(self.path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size <= IN_MEMORY_MAX:
                    data = handle.read()
                    worker = threading.Thread(target=md5.update, args=(data,))
                    worker.start()
                    sha = hashlib.sha256(data)
                    worker.join()
                    self.data, size = data, len(data)
                else:
                    sha, size = hashlib.sha256(), 0
                    for block in iter(lambda: handle.read(CHUNK), b""):
                        sha.update(block)
                        md5.update(block)
                        size += len(block)
            self._result = (size, sha.hexdigest(), md5.hexdigest())
        except OSError as exc:
            self._error = exc

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def file_digests(path):
    """``(size, sha256 hex, md5 hex)`` of a file."""
    return SegmentDigests(path).result()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_name(name):
    if not SEGMENT_RE.match(name or ""):
        raise ArchiveError("not a WAL file name: %r" % name)


def _temp_beside(dest):
    return "%s.fediflow-tmp" % dest


def summarize(entries, now):
    """Status from ``(name, archived_at_epoch)`` pairs: only whole segments count (history,
    .backup and .partial files are not "the last segment")."""
    segments = [(name, at) for name, at in entries if WAL_RE.match(name)]
    if not segments:
        return {"segments": 0, "last_segment": None, "last_archived_at": None, "age_s": None}
    last, at = max(segments)
    return {"segments": len(segments), "last_segment": last,
            "last_archived_at": at, "age_s": round(max(0.0, now - at), 3)}


# ---------------------------------------------------------------------------------------------
# directory backend


def push(repo, src, name):
    """Archive ``src`` as ``name``. Returns 'archived' or 'already-archived'."""
    import shutil  # pylint: disable=import-outside-toplevel
    _check_name(name)
    if not os.path.isdir(repo):
        raise ArchiveError("archive repository %s does not exist" % repo)
    dest = os.path.join(repo, name)
    src_sum = sha256_file(src)
    if os.path.exists(dest):
        if sha256_file(dest) == src_sum:
            return "already-archived"
        raise ArchiveError("%s is already archived with different contents: refusing to overwrite" % name)
    tmp = os.path.join(repo, ".%s.tmp.%d" % (name, os.getpid()))
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
        if sha256_file(tmp) != src_sum:
            raise ArchiveError("%s changed while it was copied" % name)
        os.link(tmp, dest)  # fails if someone archived the same name meanwhile
    except FileExistsError:
        raise ArchiveError("%s appeared in the archive while pushing: retry" % name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(repo)
    return "archived"


def fetch(repo, name, dest):
    import shutil  # pylint: disable=import-outside-toplevel
    _check_name(name)
    src = os.path.join(repo, name)
    if not os.path.exists(src):
        raise NotInArchive("%s is not in the archive" % name)
    tmp = _temp_beside(dest)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return "fetched"


def status(repo, now=None):
    now = time.time() if now is None else now
    entries = []
    for name in os.listdir(repo):
        if WAL_RE.match(name):
            entries.append((name, os.stat(os.path.join(repo, name)).st_mtime))
    return summarize(entries, now)


class DirArchive:
    """The directory backend behind the same interface as S3Archive."""

    def __init__(self, repo):
        self.repo = repo

    def push(self, src, name):
        return push(self.repo, src, name)

    def fetch(self, name, dest):
        return fetch(self.repo, name, dest)

    def status(self, now=None):
        return status(self.repo, now)

    def list_objects(self):
        """``(name, archived_at_epoch)`` of every WAL file in the repository."""
        return [(name, at) for name, at, _size in self.list_entries()]

    def list_entries(self):
        """``(name, archived_at_epoch, size)`` of every WAL file in the repository."""
        out = []
        for name in os.listdir(self.repo):
            if SEGMENT_RE.match(name):
                try:
                    st = os.stat(os.path.join(self.repo, name))
                except FileNotFoundError:  # removed meanwhile
                    continue
                out.append((name, st.st_mtime, st.st_size))
        return out

    def delete(self, names):
        """Remove WAL files (a name already gone counts as removed: a rerun finishes the job).
        ``{"deleted": [names], "errors": [(name, message)]}``; the directory is fsynced once."""
        deleted, errors = [], []
        for name in names:
            _check_name(name)
            try:
                os.unlink(os.path.join(self.repo, name))
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append((name, exc.strerror or str(exc)))
                continue
            deleted.append(name)
        if deleted:
            fsync_dir(self.repo)
        return {"deleted": deleted, "errors": errors}


class MultiArchive:
    """Several repositories behind the same interface (see the module's docstring)."""

    def __init__(self, archives, names, required):
        self.archives = archives
        self.names = names
        self.required = required
        self.failed = []  # (name, error) of the last push's repositories that failed

    def _each(self, call):
        """``call(archive)`` on every repository at once (one thread each: the slowest bounds the wait);
        ``[(name, result, error)]`` in the configuration's order."""
        out = [None] * len(self.archives)

        def worker(index, archive):
            try:
                out[index] = (self.names[index], call(archive), None)
            except (ArchiveError, OSError) as exc:
                out[index] = (self.names[index], None, exc)
        threads = [threading.Thread(target=worker, args=(i, a)) for i, a in enumerate(self.archives)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return out

    def push(self, src, name):
        results = self._each(lambda archive: archive.push(src, name))
        held = [n for n, _r, err in results if err is None]
        self.failed = [(n, err) for n, _r, err in results if err is not None]
        if len(held) < self.required:
            raise ArchiveError("%s is in %d of %d repositories, %d required (%s); the copies made are kept" % (
                name, len(held), len(results), self.required, _errors(self.failed)))
        return "archived"

    def fetch(self, name, dest):
        """From the first repository (in the configuration's order) that has it."""
        errors = []
        for repo_name, archive in zip(self.names, self.archives):
            try:
                return archive.fetch(name, dest)
            except NotInArchive:
                continue
            except (ArchiveError, OSError) as exc:
                errors.append((repo_name, exc))
        if errors:
            kind = CorruptObject if any(isinstance(exc, CorruptObject) for _n, exc in errors) else ArchiveError
            raise kind("%s: not found where asked, and %s" % (name, _errors(errors)))
        raise NotInArchive("%s is in none of the %d repositories" % (name, len(self.archives)))

    def status(self, now=None):
        """Each repository's status; at the top the newest segment every answering repository holds (the
        archive's position with ``required_copies`` all), ``answering`` and ``degraded``."""
        now = time.time() if now is None else now
        results = self._each(lambda archive: archive.status(now))
        per = {n: (r if err is None else {"error": " ".join(str(err).split())}) for n, r, err in results}
        ok = [r for _n, r, err in results if err is None]
        top = (min(ok, key=lambda r: r["last_segment"] or "") if ok
               else {"segments": 0, "last_segment": None, "last_archived_at": None, "age_s": None})
        out = dict(top, repositories=per, required_copies=self.required, answering=len(ok))
        out["degraded"] = len(ok) < len(results)
        return out

    def list_objects(self):
        """The WAL files of every repository that answers (each name once, its earliest time); fails only
        when none answers."""
        results = self._each(lambda archive: archive.list_objects())
        seen = {}
        for _n, entries, err in results:
            for name, at in entries if err is None else []:
                seen[name] = min(at, seen.get(name, at))
        if all(err is not None for _n, _e, err in results):
            raise ArchiveError("no repository answered: %s" % _errors([(n, e) for n, _r, e in results]))
        return sorted(seen.items())

    def list_each(self):
        """Every repository's own listing: ``[(name, [(file, at, size)] or None, error or None)]``
        (expiry is planned per repository: each holds what it holds)."""
        return self._each(lambda archive: archive.list_entries())

    def delete_each(self, names_by_repo):
        """``{repository name: [files]}`` deleted in each repository at once, independently (one that is
        down is reported, the others go on): ``[(name, {"deleted", "errors"} or None, error or None)]``."""
        by_name = dict(zip(self.names, self.archives))
        out = [None] * len(self.names)
        todo = [(i, n) for i, n in enumerate(self.names) if names_by_repo.get(n)]
        for index, name in enumerate(self.names):
            if not names_by_repo.get(name):
                out[index] = (name, {"deleted": [], "errors": []}, None)

        def worker(index, name):
            try:
                out[index] = (name, by_name[name].delete(names_by_repo[name]), None)
            except (ArchiveError, OSError) as exc:
                out[index] = (name, None, exc)
        threads = [threading.Thread(target=worker, args=item) for item in todo]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return out

    def close(self):
        for archive in self.archives:
            if hasattr(archive, "close"):
                archive.close()


def _errors(failed):
    return "; ".join("%s: %s" % (name, " ".join(str(err).split())) for name, err in failed)


# ---------------------------------------------------------------------------------------------
# configuration and credentials


def validate_config(cfg, source="config"):
    """Check a configuration dict; returns a normalized copy or raises ArchiveError naming the
    key and what is wrong."""
    if not isinstance(cfg, dict):
        raise ArchiveError("%s: expected a JSON object" % source)
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ArchiveError("%s: unknown key(s) %s (known: %s)" % (source, ", ".join(unknown), ", ".join(sorted(CONFIG_KEYS))))
    for key, value in cfg.items():
        if value is not None and not isinstance(value, str):
            raise ArchiveError("%s: '%s' must be a string" % (source, key))
    out = {k: (v.strip() if isinstance(v, str) else v) for k, v in cfg.items()}
    out = {k: v for k, v in out.items() if v not in (None, "") or k == "sse"}
    backend = out.get("backend")
    if backend not in ("s3", "dir"):
        raise ArchiveError("%s: 'backend' must be 's3' or 'dir' (got %r)" % (source, backend))
    if backend == "dir":
        if not os.path.isabs(out.get("repo", "")):
            raise ArchiveError("%s: 'repo' (an absolute directory path) is required for the dir backend" % source)
        return out
    for key in ("bucket", "region"):
        if not out.get(key):
            raise ArchiveError("%s: '%s' is required for the s3 backend (%s)" % (source, key, CONFIG_KEYS[key]))
    if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", out["bucket"]):
        raise ArchiveError("%s: 'bucket' %r is not a valid S3 bucket name" % (source, out["bucket"]))
    if not re.match(r"^[a-z0-9-]+$", out["region"]):
        raise ArchiveError("%s: 'region' %r is not an AWS region name" % (source, out["region"]))
    out["prefix"] = out.get("prefix", "").strip("/")
    if out.get("endpoint_url"):
        parts = urlsplit(out["endpoint_url"])
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ArchiveError("%s: 'endpoint_url' must be http(s)://host[:port][/path] (got %r)"
                               % (source, out["endpoint_url"]))
    if out.get("sse") not in SSE_CHOICES:
        raise ArchiveError("%s: 'sse' must be null, 'AES256' or 'aws:kms' (got %r)" % (source, out["sse"]))
    if out.get("kms_key_id") and out.get("sse") != "aws:kms":
        raise ArchiveError("%s: 'kms_key_id' needs 'sse': 'aws:kms'" % source)
    if out.get("storage_class") and not re.match(r"^[A-Z_]+$", out["storage_class"]):
        raise ArchiveError("%s: 'storage_class' %r is not an S3 storage class" % (source, out["storage_class"]))
    if bool(out.get("access_key")) != bool(out.get("secret_key")):
        missing = "secret_key" if out.get("access_key") else "access_key"
        raise ArchiveError("%s: '%s' is missing: give both access_key and secret_key, or neither "
                           "(then the environment or the EC2 instance role is used)" % (source, missing))
    if out.get("session_token") and not out.get("access_key"):
        raise ArchiveError("%s: 'session_token' needs access_key and secret_key" % source)
    return out


def validate_multi(cfg, source="config"):
    """A configuration of several repositories (see MULTI_KEYS); a normalized copy, or ArchiveError naming
    the key and the repository."""
    unknown = sorted(set(cfg) - set(MULTI_KEYS))
    if unknown:
        raise ArchiveError("%s: unknown key(s) %s beside 'repositories' (known: %s)"
                           % (source, ", ".join(unknown), ", ".join(sorted(MULTI_KEYS))))
    repos = cfg.get("repositories")
    if not isinstance(repos, list) or not repos:
        raise ArchiveError("%s: 'repositories' must be a non-empty list" % source)
    out, names = [], []
    for index, repo in enumerate(repos):
        if not isinstance(repo, dict):
            raise ArchiveError("%s: repositories[%d] must be an object" % (source, index))
        name = repo.get("name")
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]{1,64}$", name) or name in names:
            raise ArchiveError("%s: repositories[%d] needs a unique 'name' of letters, digits, '_', '.', '-' (got %r)"
                               % (source, index, name))
        names.append(name)
        out.append(validate_config({k: v for k, v in repo.items() if k != "name"},
                                   "%s: repository '%s'" % (source, name)))
    required = cfg.get("required_copies", len(out))
    if isinstance(required, bool) or not isinstance(required, int) or not 1 <= required <= len(out):
        raise ArchiveError("%s: 'required_copies' must be a whole number from 1 to %d (the repositories), got %r"
                           % (source, len(out), required))
    return {"repositories": out, "names": names, "required_copies": required}


def _has_secret(cfg):
    repos = cfg.get("repositories") if isinstance(cfg.get("repositories"), list) else [cfg]
    return any(isinstance(r, dict) and any(r.get(k) for k in SECRET_KEYS) for r in repos)


def load_config(path):
    """Read and validate the JSON configuration file. A file holding a secret must not be
    readable by group or others (as libpq treats ~/.pgpass)."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read()
    except OSError as exc:
        raise ArchiveError("cannot read config %s: %s" % (path, exc.strerror or exc))
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise ArchiveError("config %s is not valid JSON: %s" % (path, exc))
    if isinstance(cfg, dict) and _has_secret(cfg) and mode & 0o077:
        raise ArchiveError("config %s holds credentials but is readable by group/others (mode %04o): "
                           "make it 0600, owned by the PostgreSQL OS user" % (path, mode & 0o7777))
    if isinstance(cfg, dict) and "repositories" in cfg:
        return validate_multi(cfg, "config %s" % path)
    return validate_config(cfg, "config %s" % path)


def imds_credentials(endpoint=None, timeout=IMDS_TIMEOUT_S, environ=None):
    """Temporary credentials of the EC2 instance role through IMDSv2 (token PUT, then the
    role's credentials GET); None when there is no metadata service or no role."""
    import http.client  # pylint: disable=import-outside-toplevel
    environ = os.environ if environ is None else environ
    if environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return None
    parts = urlsplit(endpoint or environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or IMDS_ENDPOINT)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    base = "/latest/meta-data/iam/security-credentials/"
    try:
        conn.request("PUT", "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        resp = conn.getresponse()
        token = resp.read().decode("ascii", "replace").strip()
        if resp.status != 200 or not token:
            return None
        hdrs = {"X-aws-ec2-metadata-token": token}
        conn.request("GET", base, headers=hdrs)
        resp = conn.getresponse()
        roles = resp.read().decode("utf-8", "replace").split()
        if resp.status != 200 or not roles:
            return None
        conn.request("GET", base + quote(roles[0]), headers=hdrs)
        resp = conn.getresponse()
        data = json.loads(resp.read().decode("utf-8"))
        if resp.status != 200 or not data.get("AccessKeyId"):
            return None
        return {"access_key": data["AccessKeyId"], "secret_key": data["SecretAccessKey"],
                "session_token": data.get("Token"), "source": "ec2-instance-role"}
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def resolve_credentials(cfg, environ=None, imds=imds_credentials):
    """The first of: the config's access_key/secret_key, the AWS_* environment, the EC2
    instance role (``imds()``, only called when the others are absent)."""
    environ = os.environ if environ is None else environ
    if cfg.get("access_key") and cfg.get("secret_key"):
        return {"access_key": cfg["access_key"], "secret_key": cfg["secret_key"],
                "session_token": cfg.get("session_token"), "source": "config"}
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        return {"access_key": environ["AWS_ACCESS_KEY_ID"], "secret_key": environ["AWS_SECRET_ACCESS_KEY"],
                "session_token": environ.get("AWS_SESSION_TOKEN") or None, "source": "environment"}
    creds = imds()
    if creds:
        return creds
    raise ArchiveError("no AWS credentials: set access_key/secret_key in the config file, or "
                       "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in PostgreSQL's environment, or give the "
                       "EC2 instance a role (IMDSv2 did not answer with credentials)")


# ---------------------------------------------------------------------------------------------
# AWS Signature Version 4 (S3 flavour: the canonical URI is not double-encoded)


def uri_encode(text, safe="-_.~"):
    return quote(text, safe=safe)


def canonical_query(params):
    """Sorted, RFC 3986-encoded query string from a dict or a list of pairs."""
    items = params.items() if isinstance(params, dict) else params or []
    return "&".join("%s=%s" % (uri_encode(str(k)), uri_encode(str(v))) for k, v in sorted(items))


def canonical_request(method, path, params, headers, payload_hash):
    """``(canonical request text, signed headers)``; every header given is signed."""
    canon = {}
    for name, value in headers.items():
        canon[name.lower().strip()] = " ".join(str(value).split())
    signed = ";".join(sorted(canon))
    lines = [method, uri_encode(path, safe="/-_.~"), canonical_query(params)]
    lines += ["%s:%s" % (name, canon[name]) for name in sorted(canon)]
    lines += ["", signed, payload_hash]
    return "\n".join(lines), signed


def signing_key(secret_key, datestamp, region, service="s3"):
    key = ("AWS4" + secret_key).encode("utf-8")
    for part in (datestamp, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def sign(method, path, params, headers, payload_hash, creds, region, amz_date, service="s3"):
    """Headers to send: ``headers`` plus x-amz-date, x-amz-content-sha256, the session token
    and the ``Authorization`` header (AWS4-HMAC-SHA256). ``headers`` must include Host."""
    out = dict(headers)
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_hash
    if creds.get("session_token"):
        out["x-amz-security-token"] = creds["session_token"]
    creq, signed = canonical_request(method, path, params, out, payload_hash)
    scope = "%s/%s/%s/aws4_request" % (amz_date[:8], region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode("utf-8")).hexdigest()])
    signature = hmac.new(signing_key(creds["secret_key"], amz_date[:8], region, service),
                         to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["Authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        creds["access_key"], scope, signed, signature)
    return out


# ---------------------------------------------------------------------------------------------
# retries


def backoff_delays(retries=RETRIES, base=RETRY_BASE_S, rng=None):
    """Jittered exponential back-off: retry i waits between base*2**i/2 and base*2**i."""
    if rng is None:
        import random  # pylint: disable=import-outside-toplevel
        rng = random.Random()
    return [rng.uniform(base * 2 ** i / 2, base * 2 ** i) for i in range(retries)]


def with_retries(attempt, delays=None, budget_s=RETRY_BUDGET_S, sleep=time.sleep, clock=time.monotonic):
    """Call ``attempt()``; on TransientError wait the next delay and try again, unless the delays
    are used up or the retry would start later than ``budget_s`` after the first attempt."""
    delays = backoff_delays() if delays is None else list(delays)
    start = clock()
    tries = 0
    while True:
        tries += 1
        try:
            return attempt()
        except TransientError as exc:
            elapsed = clock() - start
            if not delays or elapsed + delays[0] > budget_s:
                raise ArchiveError("%s (gave up after %d attempt%s in %.1fs)"
                                   % (exc, tries, "" if tries == 1 else "s", elapsed))
            sleep(delays.pop(0))


# ---------------------------------------------------------------------------------------------
# S3 backend


def plan_push(existing, size, sha256, md5_hex, what):
    """What to do with a segment given the HEAD of its key (None: not there).

    Returns 'put' or 'already-archived'; raises ArchiveError when a different object has the
    name. An object without x-amz-meta-sha256 (written by another tool) is compared by its ETag
    when that is a plain MD5 (single-part, not SSE-KMS)."""
    if existing is None:
        return "put"
    theirs = existing.get("x-amz-meta-sha256")
    etag = (existing.get("etag") or "").strip('"')
    if existing.get("content-length") is not None and int(existing["content-length"]) != size:
        why = "size %s, not %d" % (existing["content-length"], size)
    elif theirs:
        if theirs == sha256:
            return "already-archived"
        why = "sha256 %s..., not %s..." % (theirs[:12], sha256[:12])
    elif re.match(r"^[0-9a-f]{32}$", etag):
        if etag == md5_hex:
            return "already-archived"
        why = "md5 %s, not %s" % (etag, md5_hex)
    else:
        why = "it has no x-amz-meta-sha256 to compare"
    raise ArchiveError("%s is already archived with different contents (%s): refusing to overwrite" % (what, why))


def _error_code(body):
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body or ""
    code = re.search(r"<Code>([^<]*)</Code>", text)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    return (code.group(1) if code else ""), (message.group(1) if message else "")


HINTS = {
    "SignatureDoesNotMatch": "check secret_key in the config (or AWS_SECRET_ACCESS_KEY)",
    "InvalidAccessKeyId": "check access_key in the config (or AWS_ACCESS_KEY_ID)",
    "ExpiredToken": "the session token expired: refresh the credentials",
    "RequestTimeTooSkewed": "this host's clock is off: fix NTP",
    "NoSuchBucket": "the bucket does not exist in this region/endpoint",
    "AccessDenied": "the credentials lack s3:PutObject/GetObject/ListBucket (wal_expire: DeleteObject) on this bucket/prefix",
    "PermanentRedirect": "the bucket is in another region: fix 'region' in the config",
    "AuthorizationHeaderMalformed": "the bucket is in another region: fix 'region' in the config",
}
TRANSIENT_CODES = ("RequestTimeout", "SlowDown", "InternalError", "ConditionalRequestConflict",
                   "OperationAborted", "ServiceUnavailable")


class S3Archive:
    """S3 backend: one HTTP(S) connection per invocation, every request SigV4-signed."""

    def __init__(self, cfg, creds, clock=time.time):
        self.cfg = cfg
        self.creds = creds
        self.clock = clock
        self.bucket = cfg["bucket"]
        self.prefix = cfg.get("prefix", "")
        self.region = cfg["region"]
        endpoint = cfg.get("endpoint_url")
        # path style with an explicit endpoint (moto, MinIO...) and for dotted bucket names
        # (TLS wildcard certificates do not cover them); virtual-hosted style on AWS otherwise
        if endpoint:
            parts = urlsplit(endpoint)
            self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
            self.base = parts.path.rstrip("/") + "/" + self.bucket
        elif "." in self.bucket:
            self.scheme, self.host, self.port = "https", "s3.%s.amazonaws.com" % self.region, None
            self.base = "/" + self.bucket
        else:
            self.scheme, self.host, self.port = "https", "%s.s3.%s.amazonaws.com" % (self.bucket, self.region), None
            self.base = ""
        self.endpoint = "%s://%s%s" % (self.scheme, self.host, ":%d" % self.port if self.port else "")
        self.host_header = self.host + (":%d" % self.port if self.port else "")
        self.conn = None

    # -- plumbing

    def key(self, name):
        return "%s/%s" % (self.prefix, name) if self.prefix else name

    def url(self, key):
        return "s3://%s/%s" % (self.bucket, key)

    def path(self, key=None):
        return (self.base + "/" + key) if key is not None else (self.base or "/")

    def _connection(self):
        if self.conn is None:
            import http.client  # pylint: disable=import-outside-toplevel
            if self.scheme == "https":
                import ssl  # pylint: disable=import-outside-toplevel
                self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=SOCKET_TIMEOUT_S,
                                                        context=ssl.create_default_context(), blocksize=CHUNK)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=SOCKET_TIMEOUT_S,
                                                       blocksize=CHUNK)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _describe(self, method, key, status, body):
        code, message = _error_code(body)
        if not code and status == 403:  # HEAD answers carry no error body
            code = "Forbidden"
            message = "access denied or credentials rejected (wrong access_key/secret_key, or missing permissions)"
        elif not code and status == 301:
            code = "PermanentRedirect"
        text = "S3 %s %s: HTTP %d" % (method, self.url(key if key is not None else self.prefix), status)
        if code:
            text += " %s" % code
        if message:
            text += ": %s" % " ".join(message.split()).rstrip(".")
        if code in HINTS:
            text += " (%s)" % HINTS[code]
        return text

    def request(self, method, key=None, params=None, headers=None, body=None, payload_hash=EMPTY_SHA256,
                on_body=None):
        """One S3 call, transient failures retried. Returns ``(status, headers, body)``; with
        ``on_body(response)``, a 200 response is streamed to it and its result replaces the body."""
        import http.client  # pylint: disable=import-outside-toplevel
        path = self.path(key)
        query = canonical_query(params)
        target = uri_encode(path, safe="/-_.~") + ("?" + query if query else "")

        def attempt():
            hdrs = {"Host": self.host_header}
            hdrs.update(headers or {})
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
            signed = sign(method, path, params, hdrs, payload_hash, self.creds, self.region, amz_date)
            if body is not None and hasattr(body, "seek"):
                body.seek(0)
            conn = self._connection()
            send_error = None
            try:
                try:
                    conn.request(method, target, body=body, headers=signed)
                except OSError as exc:
                    # the server may have answered (and closed) before taking the whole body
                    send_error = exc
                    if conn.sock is None:
                        raise
                resp = conn.getresponse()
                status = resp.status
                rhdrs = {k.lower(): v for k, v in resp.getheaders()}
                if status == 200 and on_body is not None:
                    return status, rhdrs, on_body(resp)
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                exc = send_error or exc
                raise TransientError("cannot talk to S3 at %s (%s %s): %s" % (
                    self.endpoint, method, self.url(key if key is not None else self.prefix),
                    str(exc) or type(exc).__name__))
            except TransientError:
                self.close()
                raise
            if status >= 500 or status == 429 or (status in (400, 409) and _error_code(data)[0] in TRANSIENT_CODES):
                self.close()
                raise TransientError(self._describe(method, key, status, data))
            return status, rhdrs, data

        return with_retries(attempt)

    def head(self, key):
        status, hdrs, data = self.request("HEAD", key)
        if status == 404:
            return None
        if status != 200:
            raise ArchiveError(self._describe("HEAD", key, status, data))
        return hdrs

    # -- the contract

    def push(self, src, name):
        _check_name(name)
        digests = SegmentDigests(src)  # hashing runs while we ask S3 about the key
        key = self.key(name)
        what = "%s (%s)" % (name, self.url(key))
        existing = self.head(key)
        size, sha, md5_hex = digests.result()
        if plan_push(existing, size, sha, md5_hex, what) == "already-archived":
            return "already-archived"
        headers = {
            "Content-Length": str(size),
            "Content-MD5": base64.b64encode(bytes.fromhex(md5_hex)).decode("ascii"),
            "Content-Type": "application/octet-stream",
            "If-None-Match": "*",
            "x-amz-meta-sha256": sha,
        }
        if self.cfg.get("sse"):
            headers["x-amz-server-side-encryption"] = self.cfg["sse"]
            if self.cfg.get("kms_key_id"):
                headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.cfg["kms_key_id"]
        if self.cfg.get("storage_class"):
            headers["x-amz-storage-class"] = self.cfg["storage_class"]
        if digests.data is not None:
            status, _hdrs, data = self.request("PUT", key, headers=headers, body=digests.data,
                                               payload_hash=sha)
        else:
            with open(src, "rb") as body:
                status, _hdrs, data = self.request("PUT", key, headers=headers, body=body, payload_hash=sha)
        if status == 412:  # someone created it first (or our retried PUT had landed): compare
            verdict = plan_push(self.head(key), size, sha, md5_hex, what)
            if verdict == "put":
                raise ArchiveError("%s: conditional create refused (412) but the object is not there: retry" % what)
            return verdict
        if status != 200:
            raise ArchiveError(self._describe("PUT", key, status, data))
        return "archived"

    def fetch(self, name, dest):
        _check_name(name)
        key = self.key(name)
        tmp = _temp_beside(dest)

        def receive(resp):
            digest = hashlib.sha256()
            got = 0
            try:
                out = open(tmp, "wb")
            except OSError as exc:  # a local fault, not a network one: no retry
                raise ArchiveError("cannot write %s: %s" % (tmp, exc.strerror or exc))
            with out:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    digest.update(block)
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise ArchiveError("cannot write %s: %s" % (tmp, exc.strerror or exc))
                    got += len(block)
            length = resp.getheader("Content-Length")
            if length is not None and int(length) != got:
                raise TransientError("S3 GET %s: got %d of %s bytes" % (self.url(key), got, length))
            return digest.hexdigest()

        try:
            status, hdrs, result = self.request("GET", key, on_body=receive)
            if status == 404:
                raise NotInArchive("%s is not in the archive" % name)
            if status != 200:
                raise ArchiveError(self._describe("GET", key, status, result))
            expected = hdrs.get("x-amz-meta-sha256")
            if expected and expected != result:
                raise CorruptObject("%s (%s) is corrupt: sha256 %s..., expected %s..."
                                    % (name, self.url(key), result[:12], expected[:12]))
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return "fetched"

    def list_objects(self, page_size=None):
        """``(name, last_modified_epoch)`` of every object under the prefix (ListObjectsV2, paged;
        S3 answers at most 1000 keys a page)."""
        return [(name, at) for name, at, _size in self.list_entries(page_size)]

    def list_entries(self, page_size=None):
        """``(name, last_modified_epoch, size)`` of every object under the prefix."""
        prefix = self.prefix + "/" if self.prefix else ""
        params = {"list-type": "2", "prefix": prefix}
        if page_size:
            params["max-keys"] = str(page_size)
        entries = []
        while True:
            status, _hdrs, data = self.request("GET", None, params=params)
            if status != 200:
                raise ArchiveError(self._describe("GET (list)", None, status, data))
            page, token = parse_list_page(data, prefix, sizes=True)
            entries.extend(page)
            if not token:
                return entries
            params["continuation-token"] = token

    def read(self, name, limit=IN_MEMORY_MAX):
        """A small object under the prefix (a ledger manifest) as bytes; NotInArchive when absent."""
        key = self.key(name)
        status, hdrs, data = self.request("GET", key)
        if status == 404:
            raise NotInArchive("%s is not there" % self.url(key))
        if status != 200:
            raise ArchiveError(self._describe("GET", key, status, data))
        if len(data) > limit or int(hdrs.get("content-length") or 0) > limit:
            raise ArchiveError("%s is larger than %d bytes: not a manifest" % (self.url(key), limit))
        return data

    def list_versions(self):
        """``{name under the prefix: [version ids]}``: every version and delete marker (ListObjectVersions, paged);
        an unversioned bucket answers one version ``null`` a key."""
        prefix = self.prefix + "/" if self.prefix else ""
        params = {"versions": "", "prefix": prefix}
        out = {}
        while True:
            status, _hdrs, data = self.request("GET", None, params=params)
            if status != 200:
                raise ArchiveError(self._describe("GET (versions)", None, status, data))
            page, markers = parse_versions_page(data, prefix)
            for name, version in page:
                out.setdefault(name, []).append(version)
            if not markers:
                return out
            params["key-marker"], params["version-id-marker"] = markers

    def lock_until(self, name):
        """When the Object Lock retention of ``name`` ends (its retain-until date, text), or None: not locked."""
        hdrs = self.head(self.key(name)) or {}
        return hdrs.get("x-amz-object-lock-retain-until-date") or (
            "legal hold" if hdrs.get("x-amz-object-lock-legal-hold") == "ON" else None)

    def delete(self, names, batch=DELETE_BATCH):
        """Remove WAL files for good: every version (and delete marker) of each, by DeleteObjects (up to ``batch``
        a request, quiet mode: S3 answers only what it could not delete), so a versioned bucket keeps nothing
        behind a delete marker; an absent key counts as deleted, so a rerun finishes an interrupted expiry. A file
        S3 refuses because Object Lock still holds it is left and reported, not an error.
        ``{"deleted": [names], "errors": [(name, message)], "locked": [(name, until)]}``."""
        for name in names:
            _check_name(name)
        versions = self.list_versions()
        pairs = [(self.key(name), v) for name in names for v in versions.get(name, [])]
        failed = {}
        for start in range(0, len(pairs), batch):
            body = delete_request_body(pairs[start:start + batch])
            headers = {"Content-Type": "application/xml", "Content-Length": str(len(body)),
                       "Content-MD5": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")}
            status, _hdrs, data = self.request("POST", None, params={"delete": ""}, headers=headers, body=body,
                                               payload_hash=hashlib.sha256(body).hexdigest())
            if status != 200:
                raise ArchiveError(self._describe("POST (DeleteObjects)", None, status, data))
            failed.update(parse_delete_errors(data, self.prefix + "/" if self.prefix else ""))
        errors, locked = [], []
        for name, message in sorted(failed.items()):
            until = self.lock_until(name) if message.startswith("AccessDenied") else None
            (locked if until else errors).append((name, until or message))
        deleted = [name for name in names if name not in failed]
        return {"deleted": deleted, "errors": errors, "locked": locked}

    def status(self, now=None):
        entries = self.list_objects()
        return summarize(entries, time.time() if now is None else now)


def _xml(data, what):
    """An S3 XML answer's root element and its namespace prefix (``{...}`` or empty)."""
    import xml.etree.ElementTree as ET  # pylint: disable=import-outside-toplevel
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ArchiveError("unexpected %s answer from S3: %s" % (what, exc))
    return root, (root.tag.split("}")[0] + "}" if root.tag.startswith("{") else "")


def parse_list_page(data, prefix, sizes=False):
    """One ListObjectsV2 response: ``([(name under prefix, last_modified_epoch)], next token or None)``
    (with ``sizes``: ``(name, last_modified_epoch, size)``)."""
    root, ns = _xml(data, "ListObjectsV2")
    entries = []
    for item in root.iter(ns + "Contents"):
        key = item.findtext(ns + "Key") or ""
        entry = (key[len(prefix):], parse_s3_time(item.findtext(ns + "LastModified") or ""))
        if sizes:
            size = (item.findtext(ns + "Size") or "0").strip()
            entry += (int(size) if size.isdigit() else 0,)
        entries.append(entry)
    token = root.findtext(ns + "NextContinuationToken")
    truncated = (root.findtext(ns + "IsTruncated") or "").lower() == "true"
    return entries, (token if truncated and token else None)


def delete_request_body(keys):
    """The XML of a quiet DeleteObjects request: each a key, or ``(key, version id)`` (version ``null``: the
    unversioned object, sent without a version id)."""
    from xml.sax.saxutils import escape  # pylint: disable=import-outside-toplevel
    objects = ""
    for item in keys:
        key, version = item if isinstance(item, tuple) else (item, None)
        objects += "<Object><Key>%s</Key>%s</Object>" % (
            escape(key), "<VersionId>%s</VersionId>" % escape(version) if version and version != "null" else "")
    return ('<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            "<Quiet>true</Quiet>%s</Delete>" % objects).encode("utf-8")


def parse_versions_page(data, prefix):
    """One ListObjectVersions response: ``([(name under prefix, version id)], (next key marker, next version
    marker) or None)``; delete markers count as versions (they too must go)."""
    root, ns = _xml(data, "ListObjectVersions")
    entries = []
    for tag in ("Version", "DeleteMarker"):
        for item in root.iter(ns + tag):
            key = item.findtext(ns + "Key") or ""
            if key.startswith(prefix):
                entries.append((key[len(prefix):], item.findtext(ns + "VersionId") or "null"))
    truncated = (root.findtext(ns + "IsTruncated") or "").lower() == "true"
    markers = (root.findtext(ns + "NextKeyMarker") or "", root.findtext(ns + "NextVersionIdMarker") or "")
    return entries, (markers if truncated and markers[0] else None)


def parse_delete_errors(data, prefix):
    """The keys a DeleteObjects answer says it could not delete: ``[(name under prefix, "Code: message")]``."""
    root, ns = _xml(data, "DeleteObjects")
    out = []
    for item in root.iter(ns + "Error"):
        key = item.findtext(ns + "Key") or ""
        out.append((key[len(prefix):] if key.startswith(prefix) else key,
                    "%s: %s" % (item.findtext(ns + "Code") or "?", " ".join((item.findtext(ns + "Message") or "").split()))))
    return out


def parse_s3_time(text):
    """'2024-05-01T12:00:00.123Z' -> epoch seconds."""
    import calendar  # pylint: disable=import-outside-toplevel
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z?$", text.strip())
    if not match:
        raise ArchiveError("unexpected LastModified %r from S3" % text)
    return calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")) + float(match.group(2) or 0)


def open_archive(cfg, environ=None, imds=imds_credentials):
    if "repositories" in cfg:
        return MultiArchive([open_archive(repo, environ, imds) for repo in cfg["repositories"]], cfg["names"],
                            cfg["required_copies"])
    if cfg["backend"] == "dir":
        return DirArchive(cfg["repo"])
    return S3Archive(cfg, resolve_credentials(cfg, environ, imds))


# ---------------------------------------------------------------------------------------------
# command line


def fetch_exit_code(exc, cwd=".", name=None):
    """The exit status of a ``fetch`` that failed with ``exc``. Not in any repository: 1. A hard error: EXIT_ABORT,
    so that an archive recovery stops (FATAL) instead of taking the error for the end of the archive and promoting
    without the WAL after it (silent data loss). In standby mode (PostgreSQL runs restore_command in the data
    directory, and standby.signal there means standby mode) a standby never ends recovery at the end of the archive:
    1 makes it try pg_wal and streaming and ask the archive again 5 s later, which is the retry a repository outage
    needs, whereas EXIT_ABORT would shut every standby down while a region's S3 is unreachable."""
    if isinstance(exc, NotInArchive) or os.path.exists(os.path.join(cwd, STANDBY_SIGNAL)):
        return EXIT_NOT_FOUND
    if name is not None and name.endswith(".history") and not isinstance(exc, CorruptObject):
        # PostgreSQL probes for timeline history files that do not exist at every promotion (the next free
        # timeline), after the standby.signal is gone: an abort there shuts down the server being promoted - a
        # failover while a region's repository is down would kill its own new primary. A history file no answering
        # repository holds is "not there"; the lease and the fence keep a second timeline from being made meanwhile.
        # One a repository holds damaged exists: taking it for absent could reuse its timeline number - a hard error.
        return EXIT_NOT_FOUND
    return EXIT_ABORT


def main(argv=None, environ=None):
    """Run one command; returns ``(exit_code, stdout_text, stderr_text)``."""
    parser = argparse.ArgumentParser(prog="fediflow-wal", description=__doc__.split("\n", maxsplit=1)[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="JSON configuration file (backend, bucket, credentials...)")
    where.add_argument("--repo", help="archive repository directory (shorthand for the dir backend)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_push = sub.add_parser("push")
    p_push.add_argument("path")
    p_push.add_argument("name")
    p_fetch = sub.add_parser("fetch")
    p_fetch.add_argument("name")
    p_fetch.add_argument("path")
    sub.add_parser("status")
    args = parser.parse_args(argv)
    archive = None
    try:
        if args.repo:
            cfg = validate_config({"backend": "dir", "repo": os.path.abspath(args.repo)}, "--repo")
        else:
            cfg = load_config(args.config)
        archive = open_archive(cfg, environ)
        if args.cmd == "push":
            archive.push(args.path, args.name)
            if getattr(archive, "failed", None):  # enough copies, not every one: said in the server log
                held = len(archive.archives) - len(archive.failed)
                return 0, "", "fediflow-wal push: %s archived in %d of %d repositories (required_copies %d); " \
                    "missing in %s\n" % (args.name, held, len(archive.archives), archive.required, _errors(archive.failed))
            return 0, "", ""
        if args.cmd == "fetch":
            archive.fetch(args.name, args.path)
            return 0, "", ""
        return 0, json.dumps(archive.status()) + "\n", ""
    except (ArchiveError, OSError) as exc:
        code = fetch_exit_code(exc, name=args.name) if args.cmd == "fetch" else 1
        return code, "", "fediflow-wal %s: %s\n" % (args.cmd, " ".join(str(exc).split()))
    finally:
        if hasattr(archive, "close"):
            archive.close()
