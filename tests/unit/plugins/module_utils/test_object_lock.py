# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Immutable copies and per-job identities, the pure parts: the WAL archive's version listing and versioned
DeleteObjects request, the expiry's own identity, and validate's immutability verdict. The round trips against
S3 with Object Lock run in tests/integration/test_storage_iam.py."""

from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import integrity, walarchive, walexpire
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

VERSIONS = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <IsTruncated>true</IsTruncated>
  <NextKeyMarker>wal/us-east-1/000000010000000000000002</NextKeyMarker>
  <NextVersionIdMarker>v3</NextVersionIdMarker>
  <Version><Key>wal/us-east-1/000000010000000000000001</Key><VersionId>v1</VersionId></Version>
  <Version><Key>wal/us-east-1/000000010000000000000002</Key><VersionId>v2</VersionId></Version>
  <DeleteMarker><Key>wal/us-east-1/000000010000000000000002</Key><VersionId>v3</VersionId></DeleteMarker>
  <Version><Key>wal/us-east-1/000000010000000000000003</Key><VersionId>null</VersionId></Version>
</ListVersionsResult>"""


def test_versions_page_lists_versions_and_delete_markers_with_the_next_markers():
    entries, markers = walarchive.parse_versions_page(VERSIONS, "wal/us-east-1/")
    assert sorted(entries) == [("000000010000000000000001", "v1"), ("000000010000000000000002", "v2"),
                               ("000000010000000000000002", "v3"), ("000000010000000000000003", "null")]
    assert markers == ("wal/us-east-1/000000010000000000000002", "v3")
    last, done = walarchive.parse_versions_page(VERSIONS.replace(b"<IsTruncated>true", b"<IsTruncated>false"), "wal/")
    assert done is None and len(last) == 4


def test_delete_request_names_each_version_and_sends_the_unversioned_object_without_one():
    body = walarchive.delete_request_body([("wal/a&b/1", "v1"), ("wal/x/2", "null"), "wal/x/3"]).decode()
    assert "<Object><Key>wal/a&amp;b/1</Key><VersionId>v1</VersionId></Object>" in body
    assert "<Object><Key>wal/x/2</Key></Object>" in body and "<Object><Key>wal/x/3</Key></Object>" in body


def _cfg():
    s3 = {"backend": "s3", "bucket": "b-us", "region": "us-east-1", "prefix": "wal/us-east-1",
          "access_key": "AKIAWAL", "secret_key": "wal-secret", "session_token": "tok"}
    return {"repositories": [s3, {"backend": "dir", "repo": "/srv/wal"}], "names": ["us-east-1", "nfs"],
            "required_copies": 1}


def test_the_expiry_runs_as_its_own_identity_in_every_s3_repository():
    cfg = walexpire.with_identity(_cfg(), "AKIAEXPIRE", "expire-secret")
    s3, local = cfg["repositories"]
    assert (s3["access_key"], s3["secret_key"]) == ("AKIAEXPIRE", "expire-secret") and "session_token" not in s3
    assert local == {"backend": "dir", "repo": "/srv/wal"}
    assert walexpire.with_identity(_cfg(), None, None) == _cfg()


def test_the_expiry_identity_needs_both_keys():
    with pytest.raises(FediflowError, match="access_key and secret_key"):
        walexpire.with_identity(_cfg(), "AKIAEXPIRE", "")


LOCK = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 14}}}


@pytest.mark.parametrize("versioning, lock, problems", [
    ("Enabled", LOCK, []),
    ("Suspended", LOCK, ["versioning suspended"]),
    (None, None, ["versioning never enabled", "no Object Lock"]),
    ("Enabled", {"ObjectLockEnabled": "Enabled"}, ["Object Lock without a default retention"]),
    ("Enabled", {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Years": 1}}}, []),
])
def test_immutability_verdict(versioning, lock, problems):
    assert integrity.immutability_verdict(versioning, lock) == problems
