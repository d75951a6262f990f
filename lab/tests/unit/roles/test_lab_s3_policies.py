# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The S3 identities' policies grant what docs/storage-security.md says, judged by the lab's IAM evaluation
(lab/roles/lab/files/lab_s3.py, the one its S3 enforces): the production example's IAM JSON and the lab's own
(lab/roles/lab/vars/main.yml, rendered for a bucket) give the same answers to the same calls."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import jinja2
import pytest
import yaml

COLLECTION_ROOT = Path(__file__).resolve().parents[3]
# the production example's IAM JSON is fediflow.dr's (a dependency of this collection, beside it on the path)
PRODUCT_ROOT = Path(next(iter(importlib.import_module("ansible_collections.fediflow.dr").__path__)))
IAM_DIR = PRODUCT_ROOT / "inventories" / "production.example" / "iam"
BUCKET = "fediflow-backups-us-east-1"
ARN = "arn:aws:s3:::" + BUCKET


def _lab_s3():
    spec = importlib.util.spec_from_file_location("lab_s3", COLLECTION_ROOT / "roles" / "lab" / "files" / "lab_s3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAB_S3 = _lab_s3()


def _production():
    return {p.stem.replace("-", "_"): json.loads(p.read_text(encoding="utf-8")) for p in IAM_DIR.glob("*.json")}


def _lab():
    raw = yaml.safe_load((COLLECTION_ROOT / "roles" / "lab" / "vars" / "main.yml").read_text(encoding="utf-8"))
    arn = jinja2.Template(raw["_lab_s3_bucket_arn"]).render(lab_backup_bucket=BUCKET)
    text = json.dumps(raw["_lab_s3_policies"])
    return json.loads(jinja2.Template(text).render(_lab_s3_bucket_arn=arn))


def _list(prefix):
    return ("s3:ListBucket", ARN, "GET", "/%s?list-type=2&prefix=%s" % (BUCKET, prefix.replace("/", "%2F")), b"")


def _obj(action, key, method="GET"):
    return (action, "%s/%s" % (ARN, key), method, "/%s/%s" % (BUCKET, key), b"")


def _delete_objects(*keys):
    body = "<Delete>%s</Delete>" % "".join("<Object><Key>%s</Key></Object>" % k for k in keys)
    return ("s3:DeleteObject", ARN, "POST", "/%s?delete=" % BUCKET, body.encode())


BACKUP = "postgres/us-east-1/physical/20261207T010000Z/manifest.json"
WAL = "wal/us-east-1/000000010000000000000003"
# the pgBackRest engine's repository (<prefix>/pgbackrest): its WAL archive and its backups side by side
PGBR_WAL = "pgbackrest/archive/fediflow/15-1/0000000100000000/000000010000000000000003-3c6d8f0e.lz4"
PGBR_ARCHIVE_INFO = "pgbackrest/archive/fediflow/archive.info"
PGBR_BACKUP = "pgbackrest/backup/fediflow/20261207-173553F/backup.manifest"
PGBR_BACKUP_INFO = "pgbackrest/backup/fediflow/backup.info"
# (identity, call, allowed)
MATRIX = [
    ("wal", _obj("s3:PutObject", WAL, "PUT"), True),
    ("wal", _obj("s3:GetObject", WAL), True),
    ("wal", _list("wal/us-east-1/"), True),
    ("wal", _list("postgres/"), False),
    ("wal", _list(""), False),
    ("wal", _obj("s3:DeleteObject", BACKUP, "DELETE"), False),
    ("wal", _obj("s3:DeleteObject", WAL, "DELETE"), False),
    ("wal", _obj("s3:GetObject", BACKUP), False),
    ("wal", _obj("s3:PutObject", BACKUP, "PUT"), False),
    ("wal", _delete_objects(WAL), False),
    ("wal_expire", _list("wal/us-east-1/"), True),
    ("wal_expire", _list("postgres/us-east-1/physical/"), True),
    ("wal_expire", _list("postgres/us-east-1/logical/"), False),
    ("wal_expire", _obj("s3:GetObject", BACKUP), True),
    ("wal_expire", _delete_objects(WAL), True),
    ("wal_expire", _delete_objects(WAL, BACKUP), False),
    ("wal_expire", _obj("s3:PutObject", WAL, "PUT"), False),
    ("backup", _obj("s3:PutObject", BACKUP, "PUT"), True),
    ("backup", _obj("s3:DeleteObject", BACKUP, "DELETE"), True),
    ("backup", _list("postgres/us-east-1/"), True),
    ("backup", _obj("s3:GetObject", WAL), False),
    ("backup", _obj("s3:PutObject", WAL, "PUT"), False),
    ("backup", _delete_objects(WAL), False),
    ("wal", _obj("s3:PutObject", PGBR_WAL, "PUT"), True),
    ("wal", _obj("s3:GetObject", PGBR_ARCHIVE_INFO), True),
    ("wal", _list("pgbackrest/archive/fediflow/15-1/0000000100000000/"), True),
    ("wal", _obj("s3:DeleteObject", PGBR_WAL, "DELETE"), False),
    ("wal", _obj("s3:GetObject", PGBR_BACKUP), False),
    ("wal", _list("pgbackrest/backup/fediflow/"), False),
    ("backup", _obj("s3:PutObject", PGBR_BACKUP, "PUT"), True),
    ("backup", _obj("s3:DeleteObject", PGBR_BACKUP, "DELETE"), True),
    ("backup", _obj("s3:GetObject", PGBR_WAL), True),
    ("backup", _obj("s3:PutObject", PGBR_ARCHIVE_INFO, "PUT"), True),
    ("backup", _obj("s3:PutObject", PGBR_WAL, "PUT"), False),
    ("backup", _obj("s3:DeleteObject", PGBR_WAL, "DELETE"), False),
    ("backup", _delete_objects(PGBR_WAL), False),
    ("wal_expire", _list("pgbackrest/backup/fediflow/"), True),
    ("wal_expire", _obj("s3:GetObject", PGBR_BACKUP_INFO), True),
    ("wal_expire", _obj("s3:PutObject", PGBR_BACKUP_INFO, "PUT"), True),
    ("wal_expire", _obj("s3:DeleteObject", PGBR_BACKUP, "DELETE"), True),
    ("wal_expire", _obj("s3:DeleteObject", PGBR_WAL, "DELETE"), True),
    ("wal_expire", _obj("s3:PutObject", PGBR_BACKUP, "PUT"), False),
    ("wal_expire", _obj("s3:PutObject", PGBR_WAL, "PUT"), False),
    ("readonly", _obj("s3:GetObject", PGBR_BACKUP), True),
    ("readonly", _obj("s3:PutObject", PGBR_BACKUP, "PUT"), False),
    ("readonly", _obj("s3:GetObject", BACKUP), True),
    ("readonly", _list("postgres/"), True),
    ("readonly", _obj("s3:PutObject", BACKUP, "PUT"), False),
    ("readonly", _obj("s3:DeleteObject", BACKUP, "DELETE"), False),
    ("readonly", ("s3:GetBucketObjectLockConfiguration", ARN, "GET", "/%s?object-lock=" % BUCKET, b""), True),
]


@pytest.mark.parametrize("source", ["production", "lab"])
@pytest.mark.parametrize("identity, call, allowed", MATRIX)
def test_policy_matrix(source, identity, call, allowed):
    docs = (_production if source == "production" else _lab)()
    action, resource, method, path, body = call
    requests = LAB_S3.s3_requests(action, resource, method, path, body, {})
    assert LAB_S3.decide([docs[identity]], requests) is allowed


def test_bypass_of_governance_needs_its_own_permission():
    doc = {"Statement": [{"Effect": "Allow", "Action": "s3:DeleteObjectVersion", "Resource": ARN + "/*"}]}
    call = LAB_S3.s3_requests("s3:DeleteObjectVersion", ARN + "/" + BACKUP, "DELETE", "/x?versionId=1", b"",
                              {"x-amz-bypass-governance-retention": "true"})
    assert LAB_S3.decide([doc], call) is False


def test_unknown_condition_operator_is_refused():
    doc = {"Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": ARN,
                          "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]}
    with pytest.raises(SystemExit, match="IpAddress"):
        LAB_S3.check_policy(doc, "test")


def test_every_policy_is_accepted_by_the_lab():
    for name, doc in dict(_production(), **_lab()).items():
        LAB_S3.check_policy(doc, name)
