# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One S3 object changed only by compare-and-swap, with S3's conditional writes: ``If-None-Match: *``
creates it (only when it does not exist), ``If-Match: <ETag>`` replaces or deletes it (only when it is
still the version read). A 412 (or a 409, a concurrent conditional write) means another writer got there
first: ``Conflict``. The incident record and the DR lease are such objects.

Every answer also carries the server's time (its ``Date`` header), for callers that judge time by the
store rather than by their own clock (the lease's expiry).

On AWS the condition is checked and the object written atomically. moto (the lab's S3) checks, then
writes: two writers racing within that window can both succeed there.
"""

from __future__ import annotations

from collections import namedtuple
from email.utils import parsedate_to_datetime

from ansible_collections.fediflow.dr.plugins.module_utils import aws
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError
from ansible_collections.fediflow.dr.plugins.module_utils.s3store import MissingBucket

# body: bytes (None when the object does not exist); etag: its ETag (None likewise); server_time: an
# aware datetime from the answer's Date header (None when the server sent none)
Version = namedtuple("Version", "body etag server_time")


class Conflict(Exception):
    """The object changed since it was read (another writer wrote it first)."""


def server_time(answer):
    """The Date header of a boto3 answer (a response dict, or an error carrying one) as an aware datetime."""
    resp = answer if isinstance(answer, dict) else (getattr(answer, "response", None) or {})
    headers = ((resp.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}) if isinstance(resp, dict) else {}
    raw = headers.get("date") or headers.get("Date")
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else None


class CasObject:
    """``s3://bucket/key`` read with its ETag, written only on the version read. ``what`` names it in
    messages ("the incident record", "the lease")."""

    def __init__(self, client, bucket, key, what="the object", sse="AES256"):
        self.client, self.bucket, self.key, self.what, self.sse = client, bucket, key, what, sse
        self.where = "s3://%s/%s" % (bucket, key)

    def _missing_bucket(self):
        return MissingBucket("s3_bucket '%s' does not exist (%s's bucket)" % (self.bucket, self.what))

    def load(self):
        """The current version; ``Version(None, None, time)`` when the object does not exist."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            if code in ("NoSuchKey", "404"):
                return Version(None, None, server_time(exc))
            if code == "NoSuchBucket":
                raise self._missing_bucket()
            raise FediflowError("cannot read %s %s: %s: %s" % (self.what, self.where, code, message))
        return Version(got["Body"].read(), got["ETag"], server_time(got))

    def save(self, body, expected):
        """Write ``body`` over version ``expected`` (an ETag; None: only if the object does not exist)."""
        cond = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
        extra = {"ServerSideEncryption": self.sse} if self.sse else {}
        try:
            put = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json",
                                         ChecksumAlgorithm="SHA256", **dict(extra, **cond))
        except Exception as exc:  # pylint: disable=broad-except
            code, message = aws.error_text(exc)
            if aws.error_status(exc) in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise Conflict(self.where)
            if code == "NoSuchBucket":
                raise self._missing_bucket()
            raise FediflowError("cannot write %s %s: %s: %s" % (self.what, self.where, code, message))
        return Version(body, put["ETag"], server_time(put))
