"""pg_backup_verify against the real lab: the primary PostgreSQL and moto's S3.
Outcomes are checked independently (hashlib on the files, psycopg2 row counts, boto3)."""
import hashlib
import json
import os
import re
import uuid

import boto3
import pytest

from lab_fixtures import module, pg_connect, s3_endpoint


@pytest.fixture
def bk(lab, tmp_path):
    p = lab["primary"]
    prefix = "test/%s" % uuid.uuid4().hex[:8]
    base = {"login_host": p["fediflow_pg_host"], "login_port": p["fediflow_pg_port"],
            "login_password": p["fediflow_pg_superuser_password"], "db": p["fediflow_app_db"],
            "dest": str(tmp_path / "repo"), "s3_bucket": p["fediflow_backup_bucket"], "s3_prefix": prefix,
            "endpoint_url": s3_endpoint(p), "access_key": p["fediflow_aws_access_key"],
            "secret_key": p["fediflow_aws_secret_key"], "region": p["fediflow_region"]}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint(p), region_name=p["fediflow_region"],
                      aws_access_key_id=p["fediflow_aws_access_key"], aws_secret_access_key=p["fediflow_aws_secret_key"])
    return {"args": base, "s3": s3, "bucket": p["fediflow_backup_bucket"], "prefix": prefix, "lab": lab}


def _keys(bk):
    pages = bk["s3"].get_paginator("list_objects_v2").paginate(Bucket=bk["bucket"], Prefix=bk["prefix"] + "/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _source_counts(lab):
    with pg_connect(lab["primary"], lab["primary"]["fediflow_app_db"]) as conn, conn.cursor() as cur:
        out = {}
        for table in ("accounts", "statuses", "follows", "media_attachments"):
            cur.execute("SELECT count(*) FROM %s" % table)
            out["public." + table] = cur.fetchone()[0]
        return out


def test_logical_backup_proven_by_restore_and_uploaded(bk):
    res = module("fediflow.dr.pg_backup_verify", dict(bk["args"], verify="restore"))
    assert res["changed"] and res["verified"] is True, res.get("msg")
    bdir = os.path.join(bk["args"]["dest"], res["backup_id"])
    manifest = json.load(open(os.path.join(bdir, "manifest.json"), encoding="utf-8"))
    for entry in manifest["files"]:  # the ledger's checksums are the files' real checksums
        data = open(os.path.join(bdir, entry["path"]), "rb").read()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"]
        assert oct(os.stat(os.path.join(bdir, entry["path"])).st_mode & 0o777) == "0o600"
    restore = [s for s in res["verification"]["steps"] if s["method"] == "restore"][0]
    restored = {r["table"]: r["restored"] for r in restore["tables"]}
    for table, count in _source_counts(bk["lab"]).items():  # quiescent source: exact
        assert restored[table] == count
    where = res["verification"]["where"]  # a scratch cluster here (the controller), removed; never the primary
    assert where["removed"] is True and not os.path.exists(where["data_dir"]) and "removed" in restore["target"]
    keys = _keys(bk)
    expected = ["%s/%s/%s" % (bk["prefix"], res["backup_id"], e["path"]) for e in manifest["files"]]
    assert keys == sorted(expected + ["%s/%s/manifest.json" % (bk["prefix"], res["backup_id"])])
    assert set(keys) == set(res["s3_keys"])
    assert res["s3_keys"][-1].endswith("/manifest.json")  # manifest uploaded last
    head = bk["s3"].head_object(Bucket=bk["bucket"], Key=res["s3_keys"][0])
    assert head["ServerSideEncryption"] == "AES256"
    assert "lab-superuser-not-secret" not in json.dumps(res)


def test_physical_zstd_backup_checked_against_its_manifest_and_restored(bk):
    import tempfile
    scratch = tempfile.mkdtemp(prefix="fediflow-test-scratch-", dir="/var/tmp")
    os.chmod(scratch, 0o755)  # the scratch cluster runs as postgres
    args = dict(bk["args"], mode="physical", compression="zstd", verify="restore", scratch_dir=scratch)
    args.pop("s3_bucket")
    res = module("fediflow.dr.pg_backup_verify", args)
    assert res["verified"] is True, res.get("msg")
    methods = [s["method"] for s in res["verification"]["steps"]]
    assert methods == ["checksum", "backup_manifest", "restore"]
    names = {f["path"] for f in res["files"]}
    assert {"backup_manifest", "base.tar.zst", "pg_wal.tar"} <= names
    assert res["start_lsn"] and res["stop_lsn"]
    assert os.listdir(scratch) == []  # the scratch cluster was stopped and removed
    where = res["verification"]["where"]
    assert where["removed"] is True and where["data_dir"].startswith(scratch + "/")
    os.rmdir(scratch)


def test_flipped_byte_is_caught_and_named(bk):
    args = dict(bk["args"], verify="list")
    args.pop("s3_bucket")
    res = module("fediflow.dr.pg_backup_verify", args)
    path = os.path.join(args["dest"], res["backup_id"], "db.dump")
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    bad = module("fediflow.dr.pg_backup_verify", dict(args, backup_id=res["backup_id"], verify="checksum"))
    assert bad.get("failed") and "checksum mismatch" in bad["msg"] and "db.dump" in bad["msg"]
    manifest = json.load(open(os.path.join(args["dest"], res["backup_id"], "manifest.json"), encoding="utf-8"))
    assert manifest["verification_history"][-1]["ok"] is False  # the ledger records the failure


def _unlocked_bucket(bk):
    """``bk`` on a bucket of its own without Object Lock: the lab's backup buckets keep every copy for a day
    (governance), so retention could not remove anything there within a test."""
    bucket = "fediflow-test-retention-%s" % uuid.uuid4().hex[:8]
    region = bk["args"]["region"]
    bk["s3"].create_bucket(Bucket=bucket, **({} if region == "us-east-1" else
                                             {"CreateBucketConfiguration": {"LocationConstraint": region}}))
    return dict(bk, bucket=bucket, args=dict(bk["args"], s3_bucket=bucket))


def test_retention_by_ledger_check_mode_predicts_exactly(bk):
    bk = _unlocked_bucket(bk)
    args = dict(bk["args"], verify="list", retention_count=2)
    ids = [module("fediflow.dr.pg_backup_verify", args)["backup_id"] for _attempt in range(3)]
    assert [k for k in _keys(bk) if k.endswith(ids[0] + "/manifest.json")] == []  # oldest pruned in S3
    assert sorted(os.listdir(args["dest"])) == sorted(ids[1:])
    predicted = module("fediflow.dr.pg_backup_verify", args, check_mode=True, diff=True)
    assert predicted["changed"] and [p["id"] for p in predicted["would_prune"]] == [ids[1]]
    assert sorted(os.listdir(args["dest"])) == sorted(ids[1:])  # check mode touched nothing
    real = module("fediflow.dr.pg_backup_verify", args)
    assert [p["id"] for p in real["pruned"]] == [ids[1]]
    assert sorted(p["where"] for p in real["pruned"]) == [["local", "s3"]]


def test_the_s3_api_region_is_not_the_backups_dr_region(bk):
    """A new user's sequence: a backup with S3 options (region: the bucket's AWS region), then two without S3 and
    retention_count 1. One source all along (no region_name given): the first backup is pruned, not kept forever
    as if it came from another region."""
    first = module("fediflow.dr.pg_backup_verify", dict(bk["args"], verify="list"))
    assert first["changed"] and first["verified"] is True, first.get("msg")
    local = {k: v for k, v in bk["args"].items()
             if k not in ("s3_bucket", "s3_prefix", "endpoint_url", "access_key", "secret_key", "region")}
    ids = [first["backup_id"]] + [module("fediflow.dr.pg_backup_verify", dict(local, verify="list", retention_count=1))
                                  ["backup_id"] for _attempt in range(2)]
    assert sorted(os.listdir(bk["args"]["dest"])) == [ids[2]]
    with open(os.path.join(bk["args"]["dest"], ids[2], "manifest.json"), encoding="utf-8") as handle:
        assert json.load(handle)["region"] is None  # no DR region was named


@pytest.mark.parametrize("change, message", [
    ({"login_password": "wrong"}, "password authentication failed"),
    ({"login_port": 1}, "cannot connect|Connection refused|connection to server"),
    ({"s3_bucket": "no-such-bucket-fediflow"}, "s3_bucket 'no-such-bucket-fediflow' does not exist"),
    ({"retention_count": 0}, "retention_count must be at least 1"),
    ({"mode": "incremental"}, "value of mode must be one of"),
])
def test_faults_fail_clearly_and_keep_the_last_good_backup(bk, change, message):
    good = module("fediflow.dr.pg_backup_verify", dict(bk["args"], verify="list", retention_count=1))
    assert good["verified"]
    local_before, s3_before = sorted(os.listdir(bk["args"]["dest"])), _keys(bk)
    args = dict(bk["args"], verify="list", retention_count=1)
    args.update(change)
    res = module("fediflow.dr.pg_backup_verify", args)
    assert res.get("failed"), res
    assert re.search(message, res["msg"]), res["msg"]
    assert bk["args"]["login_password"] not in json.dumps(res) and "'wrong'" not in res["msg"]
    assert sorted(os.listdir(bk["args"]["dest"])) == local_before  # nothing added, nothing pruned
    assert _keys(bk) == s3_before


@pytest.fixture
def small_disk(bk):
    """A real full disk: a tmpfs sized for one backup and a half (needs root, as the lab does)."""
    import subprocess
    probe_args = dict(bk["args"], verify="none", s3_bucket=None, dest=bk["args"]["dest"] + "-probe")
    probe = module("fediflow.dr.pg_backup_verify", probe_args)
    mountpoint = "/var/tmp/fediflow-small-disk-%s" % uuid.uuid4().hex[:6]
    os.makedirs(mountpoint)
    size_kb = int(probe["size_bytes"] * 1.5 / 1024) + 64
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk" % size_kb, "tmpfs", mountpoint],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        os.rmdir(mountpoint)
        pytest.skip("cannot mount a tmpfs here: %s" % mounted.stderr.strip())
    yield mountpoint
    subprocess.run(["umount", mountpoint], check=True)
    os.rmdir(mountpoint)


def test_disk_full_fails_clearly_and_keeps_the_previous_backup(bk, small_disk):
    args = dict(bk["args"], verify="list", dest=small_disk + "/repo", retention_count=1)
    args.pop("s3_bucket")
    good = module("fediflow.dr.pg_backup_verify", args)
    assert good["verified"], good.get("msg")
    res = module("fediflow.dr.pg_backup_verify", args)
    assert res.get("failed") and "No space left on device" in res["msg"], res.get("msg")
    assert os.listdir(args["dest"]) == [good["backup_id"]]  # no partial directory, nothing pruned
    again = module("fediflow.dr.pg_backup_verify", dict(args, backup_id=good["backup_id"], verify="checksum"))
    assert again["verified"] is True
