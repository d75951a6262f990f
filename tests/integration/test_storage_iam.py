"""Least privilege and immutable copies, enforced by the lab's S3 (docs/storage-security.md).

Each region's S3 is moto with IAM enforcement on (lab/roles/lab/files/lab_s3.py): every call is signed by one of the
inventory's identities and judged against its policy. These tests call S3 as each identity would, with boto3,
and check the outcome with the lab's admin identity: what a policy forbids is refused by the server, not by our
code. On a lab without enforcement (or main's code) every forbidden call here succeeds and the tests fail.
"""
import json
import os
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from lab_fixtures import lab_netns, module, s3_endpoint


def _client(hv, who):
    keys = {"admin": ("fediflow_aws_access_key", "fediflow_aws_secret_key")}.get(
        who, ("fediflow_s3_%s_access_key" % who, "fediflow_s3_%s_secret_key" % who))
    return _client_with(hv, hv[keys[0]], hv[keys[1]])


def _client_with(hv, access_key, secret_key):
    return boto3.client("s3", endpoint_url=s3_endpoint(hv), region_name=hv["fediflow_region"],
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key)


def _code(call):
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def primary(lab):
    return lab["primary"]


@pytest.fixture
def backup_object(primary):
    """A backup's manifest, written by the backup identity under the region's postgres/ prefix."""
    key = "postgres/%s/iam-test/%s/manifest.json" % (primary["fediflow_region"], uuid.uuid4().hex)
    _client(primary, "backup").put_object(Bucket=primary["fediflow_backup_bucket"], Key=key, Body=b"{}",
                                          ChecksumAlgorithm="SHA256")
    return key


def _wal_config_credentials(hv):
    """The credentials archive_command uses (the replication role's configuration file, as postgres reads it)."""
    path = os.path.join(os.path.dirname(hv["fediflow_pg_data_dir"]), "fediflow-wal.json")
    with open(path, encoding="utf-8") as handle:
        cfg = json.load(handle)
    repo = next(r for r in cfg["repositories"] if r["bucket"] == hv["fediflow_backup_bucket"])
    return repo["access_key"], repo["secret_key"], repo["prefix"]


def test_archive_command_runs_as_the_wal_identity(primary):
    access_key, _secret, prefix = _wal_config_credentials(primary)
    assert access_key == primary["fediflow_s3_wal_access_key"] != primary["fediflow_aws_access_key"]
    assert prefix.startswith("wal/")


def test_the_wal_identity_cannot_delete_a_backup(primary, backup_object):
    access_key, secret_key, _prefix = _wal_config_credentials(primary)
    wal = _client_with(primary, access_key, secret_key)
    bucket = primary["fediflow_backup_bucket"]
    assert _code(lambda: wal.delete_object(Bucket=bucket, Key=backup_object)) == "AccessDenied"
    answer = wal.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": backup_object}]})
    assert [e["Code"] for e in answer.get("Errors", [])] == ["AccessDenied"] and not answer.get("Deleted")
    assert _code(lambda: wal.put_object(Bucket=bucket, Key=backup_object, Body=b"overwritten")) == "AccessDenied"
    # still there, unchanged, and no delete marker hides it
    admin = _client(primary, "admin")
    assert admin.get_object(Bucket=bucket, Key=backup_object)["Body"].read() == b"{}"
    versions = admin.list_object_versions(Bucket=bucket, Prefix=backup_object)
    assert not versions.get("DeleteMarkers") and len(versions["Versions"]) == 1


def test_the_wal_identity_cannot_list_backups_only_its_wal(primary, backup_object):
    access_key, secret_key, prefix = _wal_config_credentials(primary)
    wal = _client_with(primary, access_key, secret_key)
    bucket = primary["fediflow_backup_bucket"]
    for forbidden in ("postgres/", "postgres/%s/" % primary["fediflow_region"], ""):
        assert _code(lambda p=forbidden: wal.list_objects_v2(Bucket=bucket, Prefix=p)) == "AccessDenied", forbidden
    assert _code(lambda: wal.get_object(Bucket=bucket, Key=backup_object)) == "AccessDenied"
    listed = wal.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    assert listed["KeyCount"] > 0 and all(o["Key"].startswith(prefix + "/") for o in listed["Contents"])


def test_the_backup_identity_cannot_touch_the_wal(primary):
    _access, _secret, prefix = _wal_config_credentials(primary)
    bucket = primary["fediflow_backup_bucket"]
    segment = next(o["Key"] for o in _client(primary, "admin").list_objects_v2(
        Bucket=bucket, Prefix=prefix + "/")["Contents"])
    backup = _client(primary, "backup")
    assert _code(lambda: backup.get_object(Bucket=bucket, Key=segment)) == "AccessDenied"
    assert _code(lambda: backup.delete_object(Bucket=bucket, Key=segment)) == "AccessDenied"
    assert _code(lambda: backup.put_object(Bucket=bucket, Key=prefix + "/000000FF0000000000000001", Body=b"x",
                                           ChecksumAlgorithm="SHA256")) == "AccessDenied"


def test_the_read_only_identity_reads_and_cannot_put_or_delete(primary, backup_object):
    ro = _client(primary, "readonly")
    bucket = primary["fediflow_backup_bucket"]
    assert ro.get_object(Bucket=bucket, Key=backup_object)["Body"].read() == b"{}"
    assert _code(lambda: ro.put_object(Bucket=bucket, Key=backup_object + ".new", Body=b"x",
                                       ChecksumAlgorithm="SHA256")) == "AccessDenied"
    assert _code(lambda: ro.delete_object(Bucket=bucket, Key=backup_object)) == "AccessDenied"


def test_a_list_with_a_slash_in_the_prefix_works_with_enforcement_on(primary, backup_object):
    """moto issue #5948 (SignatureDoesNotMatch for a signed ListObjectsV2 whose prefix holds a '/'), worked
    round by the lab; and the signature is really checked: a wrong secret is refused."""
    bucket = primary["fediflow_backup_bucket"]
    prefix = backup_object.rsplit("/", 1)[0] + "/"
    for who in ("admin", "backup", "readonly"):
        got = _client(primary, who).list_objects_v2(Bucket=bucket, Prefix=prefix)
        assert [o["Key"] for o in got["Contents"]] == [backup_object], who
    wrong = _client_with(primary, primary["fediflow_s3_backup_access_key"], "not-the-secret")
    assert _code(lambda: wrong.list_objects_v2(Bucket=bucket, Prefix=prefix)) == "SignatureDoesNotMatch"
    unknown = _client_with(primary, "AKIANOSUCHKEY0000000", "whatever")
    assert _code(lambda: unknown.list_objects_v2(Bucket=bucket, Prefix=prefix)) == "InvalidAccessKeyId"


def _logical(hv, dest, cluster):
    args = dict(access_key=hv["fediflow_s3_backup_access_key"], secret_key=hv["fediflow_s3_backup_secret_key"],
                mode="logical", verify="list", dest=dest, s3_bucket=hv["fediflow_backup_bucket"],
                endpoint_url=s3_endpoint(hv), region=hv["fediflow_region"],
                s3_prefix="postgres/%s/%s" % (hv["fediflow_region"], cluster), region_name=hv["fediflow_region"],
                cluster_name=cluster, retention_count=1, login_host=hv["fediflow_pg_host"],
                login_port=int(hv["fediflow_pg_port"]), login_user="postgres",
                login_password=hv["fediflow_pg_superuser_password"], db="fediflow",
                ssl_mode=hv["fediflow_pg_ssl_mode"], ca_cert=hv["fediflow_pg_ca_cert"])
    return module("fediflow.dr.pg_backup_verify", args, netns=lab_netns(hv))


def test_a_locked_backup_survives_a_retention_run_and_a_delete_attempt(primary, tmp_path):
    bucket = primary["fediflow_backup_bucket"]
    admin = _client(primary, "admin")
    lock = admin.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "GOVERNANCE"
    assert admin.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    cluster = "iam-lock-%s" % uuid.uuid4().hex[:8]
    first = _logical(primary, str(tmp_path / "b"), cluster)
    assert not first.get("failed"), first.get("msg")
    second = _logical(primary, str(tmp_path / "b"), cluster)
    assert not second.get("failed"), second.get("msg")
    # retention wanted the first backup gone: the local copy goes, the locked S3 copy is left and reported
    pruned = {p["id"]: p for p in second["pruned"]}
    assert first["backup_id"] in pruned
    locked = pruned[first["backup_id"]]["locked"]
    assert list(locked) and locked[next(iter(locked))]["until"]
    assert any("Object Lock" in w for w in second.get("warnings", []))
    mkey = "postgres/%s/%s/%s/manifest.json" % (primary["fediflow_region"], cluster, first["backup_id"])
    assert json.loads(admin.get_object(Bucket=bucket, Key=mkey)["Body"].read())["id"] == first["backup_id"]
    # a delete attempt of the version itself is refused, whoever asks (governance, nobody may bypass)
    version = admin.head_object(Bucket=bucket, Key=mkey)["VersionId"]
    for who in ("backup", "admin"):
        code = _code(lambda c=_client(primary, who): c.delete_object(Bucket=bucket, Key=mkey, VersionId=version))
        assert code == "AccessDenied", who
    # a plain delete only hides it behind a marker: the locked version is still there, whole
    _client(primary, "backup").delete_object(Bucket=bucket, Key=mkey)
    kept = admin.get_object(Bucket=bucket, Key=mkey, VersionId=version)["Body"].read()
    assert json.loads(kept)["id"] == first["backup_id"]


def test_validate_checks_versioning_and_object_lock_with_the_read_only_identity(primary, lab):
    buckets = [lab[r]["fediflow_backup_bucket"] for r in ("primary", "standby")]
    result = module("fediflow.dr.integrity_check", dict(
        target=primary["fediflow_region"], checks=["bucket_security"], fail_on_error=False, buckets=buckets,
        s3_endpoints={lab[r]["fediflow_backup_bucket"]: s3_endpoint(lab[r]) for r in ("primary", "standby")},
        region=primary["fediflow_region"], access_key=primary["fediflow_s3_readonly_access_key"],
        secret_key=primary["fediflow_s3_readonly_secret_key"]))
    check = next(c for c in result["checks"] if c["name"] == "bucket_security")
    assert check["ok"], check
    for verdict in check["details"]["buckets"]:
        assert verdict["versioning"] == "Enabled" and verdict["object_lock"]["ObjectLockEnabled"] == "Enabled"
