# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups in S3: upload a backup directory (files first, manifest last), verify each
upload, list the ledger's manifests, delete a backup (manifest first)."""

from __future__ import annotations

import datetime
import json
import os

from ansible_collections.fediflow.dr.plugins.module_utils import aws, untrusted
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError
from ansible_collections.fediflow.dr.plugins.module_utils.ledger import MANIFEST

MULTIPART_THRESHOLD = 64 * 1024 * 1024


class MissingBucket(FediflowError):
    """The bucket does not exist (or these credentials cannot see it): bad input, never an outage."""


class Locked(FediflowError):
    """A copy under Object Lock (retention not over, or a legal hold): left as it is, never an error - retention
    tries again at its next run. ``until``: when the retention ends (ISO 8601), None for a legal hold."""

    def __init__(self, message, until=None):
        super().__init__(message)
        self.until = until


DELETE_BATCH = 1000  # S3's DeleteObjects limit


class S3Backups:
    def __init__(self, params, bucket, prefix):
        self.bucket = bucket
        self.prefix = (prefix or "").strip("/")
        self.params = params
        self.client = aws.client("s3", params)
        try:
            from boto3.s3.transfer import TransferConfig  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise FediflowError("boto3 is required for S3 uploads")
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                       multipart_chunksize=MULTIPART_THRESHOLD, max_concurrency=4)

    def key(self, backup_id, rel=""):
        parts = [p for p in (self.prefix, backup_id, rel) if p]
        return "/".join(parts)

    def _call(self, what, func, **kwargs):
        try:
            return func(**kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            if code in ("NoSuchBucket", "404") and "Bucket" in kwargs and "Key" not in kwargs:
                raise FediflowError("s3_bucket '%s' does not exist" % self.bucket)
            raise FediflowError("S3 %s failed for s3://%s/%s: %s: %s" % (
                what, self.bucket, kwargs.get("Key") or kwargs.get("Prefix") or "", code, message))

    def check_bucket(self, quick=False):
        """The bucket answers. ``quick``: two attempts (a repository of a lost region costs seconds, not
        the minutes of the full retry policy) - for probing which of several repositories are up."""
        client = aws.client("s3", self.params, max_attempts=2) if quick else self.client
        try:
            client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise MissingBucket("s3_bucket '%s' does not exist (or is not visible with these credentials)"
                                    % self.bucket)
            raise FediflowError("cannot reach s3_bucket '%s': %s: %s" % (self.bucket, code, message))

    @staticmethod
    def _extra(sse, kms_key_id, storage_class=None):
        # A checksum with every upload: S3 refuses an upload without one (or Content-MD5) into a bucket whose
        # Object Lock has a default retention, and checks the bytes it stores against it.
        extra = {"ChecksumAlgorithm": "SHA256"}
        if sse:
            extra["ServerSideEncryption"] = sse
        if sse == "aws:kms" and kms_key_id:
            extra["SSEKMSKeyId"] = kms_key_id
        if storage_class:
            extra["StorageClass"] = storage_class
        return extra

    def upload_backup(self, backup_dir, manifest, sse=None, kms_key_id=None, storage_class=None):
        """Upload every file of the manifest, check each landed intact, then the manifest."""
        keys = self.upload_files(backup_dir, manifest, sse, kms_key_id, storage_class)
        keys.append(self.put_manifest(manifest, sse, kms_key_id))
        return keys

    def upload_files(self, backup_dir, manifest, sse=None, kms_key_id=None, storage_class=None):
        """Every file of the manifest, each checked where it landed (size and sha256); no manifest."""
        extra = self._extra(sse, kms_key_id, storage_class)
        keys = []
        for entry in manifest["files"]:
            key = self.key(manifest["id"], entry["path"])
            args = dict(extra, Metadata={"sha256": entry["sha256"]})
            try:
                self.client.upload_file(os.path.join(backup_dir, entry["path"]), self.bucket, key,
                                        ExtraArgs=args, Config=self.transfer)
            except Exception as exc:  # pylint: disable=broad-except
                code, message = aws.error_text(exc)
                raise FediflowError("upload of %s to s3://%s/%s failed: %s: %s" % (
                    entry["path"], self.bucket, key, code, message))
            head = self._call("HEAD", self.client.head_object, Bucket=self.bucket, Key=key)
            if head.get("ContentLength") != entry["size"] or (head.get("Metadata") or {}).get("sha256") != entry["sha256"]:
                raise FediflowError("uploaded s3://%s/%s does not match the local file (size %s vs %s)" % (
                    self.bucket, key, head.get("ContentLength"), entry["size"]))
            if sse and head.get("ServerSideEncryption") != sse:
                raise FediflowError("s3://%s/%s is not encrypted with %s" % (self.bucket, key, sse))
            keys.append(key)
        return keys

    def put_manifest(self, manifest, sse=None, kms_key_id=None):
        """The manifest, last: from here on the backup exists in this bucket."""
        body = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
        mkey = self.key(manifest["id"], MANIFEST)
        self._call("PUT", self.client.put_object, Bucket=self.bucket, Key=mkey, Body=body,
                   ContentType="application/json", **self._extra(sse, kms_key_id))
        return mkey

    def list_manifests(self, skipped=None):
        """Every manifest of the ledger (``<prefix>/<id>/manifest.json``), each checked as untrusted input
        (``untrusted.backup_manifest``, its id the name it is stored under); a malformed one is left out and
        recorded in ``skipped``, never trusted, never failing the others."""
        manifests = []
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = self.prefix + "/" if self.prefix else ""
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    rest = obj["Key"][len(prefix):]
                    if rest.count("/") == 1 and rest.endswith("/" + MANIFEST):
                        where = "s3://%s/%s" % (self.bucket, obj["Key"])
                        try:
                            manifests.append(self.get_manifest(obj["Key"], rest.split("/")[0], obj.get("Size")))
                        except untrusted.Untrusted as exc:
                            untrusted.skip(skipped, where, exc)
        except FediflowError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            if code == "NoSuchBucket":
                raise FediflowError("s3_bucket '%s' does not exist" % self.bucket)
            raise FediflowError("listing s3://%s/%s failed: %s: %s" % (self.bucket, prefix, code, message))
        return manifests

    def get_manifest(self, key, backup_id, size=None):
        """One ledger manifest, read up to the size bound and checked (``untrusted.backup_manifest``)."""
        where = "s3://%s/%s" % (self.bucket, key)
        untrusted.check_id(backup_id, where)
        untrusted.check_size(size, where)   # too large: refused before the GET
        got = self._call("GET", self.client.get_object, Bucket=self.bucket, Key=key)
        body = untrusted.read_body(got["Body"], where, length=got.get("ContentLength"))
        return untrusted.backup_manifest(untrusted.load_json(body, where), where, backup_id)

    def download_backup(self, manifest, backup_dir):
        """Every file of ``manifest`` into ``backup_dir``. The manifest is checked first (ids, paths inside
        ``backup_dir``, no file twice) and each object's size against it before its download: a hostile
        manifest is refused before anything is written."""
        backup_id = manifest.get("id") if isinstance(manifest, dict) else None
        where = "manifest of backup %r in s3://%s/%s" % (backup_id, self.bucket, self.prefix)
        untrusted.backup_manifest(manifest, where)
        os.makedirs(backup_dir, mode=0o700, exist_ok=True)
        for entry in manifest["files"]:
            target = untrusted.contained(backup_dir, entry["path"], where, "file path")
            key = self.key(manifest["id"], entry["path"])
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            untrusted.contained(backup_dir, entry["path"], where, "file path")   # no symlink slipped in since
            head = self._call("HEAD", self.client.head_object, Bucket=self.bucket, Key=key)
            if head.get("ContentLength") != entry["size"]:
                raise FediflowError("s3://%s/%s has %s bytes, its manifest says %s: not downloaded" % (
                    self.bucket, key, head.get("ContentLength"), entry["size"]))
            try:
                self.client.download_file(self.bucket, key, target, Config=self.transfer)
            except Exception as exc:  # pylint: disable=broad-except
                code, message = aws.error_text(exc)
                raise FediflowError("download of %s failed: %s: %s" % (entry["path"], code, message))

    def lock_of(self, key, now=None):
        """Why ``key`` cannot be removed yet (its current version under Object Lock retention until a later time,
        or a legal hold), as ``(reason, until ISO 8601 or None)``; None when nothing holds it (or it is gone)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise FediflowError("S3 HEAD failed for s3://%s/%s: %s: %s" % (self.bucket, key, code, message))
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return "under an Object Lock legal hold", None
        until = head.get("ObjectLockRetainUntilDate")
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if isinstance(until, datetime.datetime) and until > now:
            return ("under Object Lock (%s) until %s" % (head.get("ObjectLockMode") or "?", until.isoformat()),
                    until.isoformat())
        return None

    def versions(self, prefix):
        """``[(key, version id)]`` of every version and delete marker under ``prefix`` (an unversioned bucket
        answers one version ``null`` a key)."""
        out = []
        paginator = self.client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    out.append((item["Key"], item["VersionId"]))
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            raise FediflowError("listing the versions of s3://%s/%s failed: %s: %s" % (self.bucket, prefix, code, message))
        return out

    def _delete_versions(self, pairs):
        """Every ``(key, version id)`` removed for good; the keys S3 refused (a lock), with its message."""
        refused = []
        for start in range(0, len(pairs), DELETE_BATCH):
            objs = [{"Key": k, "VersionId": v} for k, v in pairs[start:start + DELETE_BATCH]]
            answer = self._call("DELETE", self.client.delete_objects, Bucket=self.bucket,
                                Delete={"Objects": objs, "Quiet": True})
            refused.extend("%s: %s" % (e.get("Key"), e.get("Code")) for e in answer.get("Errors", []))
        return refused

    def delete_backup(self, backup_id):
        """Every version of the backup's objects, the manifest's first (the backup stops existing), so nothing is
        left behind a delete marker. A backup under Object Lock is left whole: ``Locked``. An id that is no id
        (empty, ``..``, a path: it came from a manifest) is refused before anything is deleted - an empty one would
        delete every object under the prefix."""
        untrusted.check_id(backup_id, "deletion in s3://%s/%s" % (self.bucket, self.prefix))
        mkey = self.key(backup_id, MANIFEST)
        lock = self.lock_of(mkey)
        if lock:
            raise Locked("s3://%s/%s is %s: left as it is" % (self.bucket, self.key(backup_id), lock[0]), lock[1])
        pairs = self.versions(self.key(backup_id) + "/")
        refused = self._delete_versions([p for p in pairs if p[0] == mkey])
        refused += self._delete_versions([p for p in pairs if p[0] != mkey])
        if refused:
            raise Locked("s3://%s/%s: %d object version(s) S3 refused to remove (Object Lock), e.g. %s: left as they are"
                         % (self.bucket, self.key(backup_id), len(refused), refused[0]))
