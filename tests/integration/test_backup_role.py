"""playbooks/backup.yml (the backup role) against the real lab, checked with boto3 and psycopg2."""
import boto3
import pytest

from lab_fixtures import pg_connect, playbook, recap, s3_endpoint

pytestmark = pytest.mark.slow  # long role / playbook runs: not in `make test-quick`


def _manifests(lab):
    p = lab["primary"]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint(p), region_name=p["fediflow_region"],
                      aws_access_key_id=p["fediflow_aws_access_key"], aws_secret_access_key=p["fediflow_aws_secret_key"])
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=p["fediflow_backup_bucket"],
                                                             Prefix="postgres/%s/" % p["fediflow_region"]):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith("/manifest.json")]
    return keys


def test_backup_playbook_takes_verified_logical_and_physical_backups(lab):
    before = set(_manifests(lab))
    proc, _took = playbook("backup.yml")
    new = set(_manifests(lab)) - before
    assert {k.split("/")[2] for k in new} == {"logical", "physical"}, proc.stdout[-2000:]
    assert "WAL archiving healthy" in proc.stdout
    counters = recap(proc.stdout)
    assert counters["pg-eu-west-1"]["changed"] == 0  # the standby region is not backed up by default


def test_backup_playbook_check_mode_predicts_and_takes_nothing(lab):
    before = set(_manifests(lab))
    proc, _took = playbook("backup.yml", "--check")
    assert recap(proc.stdout)["pg-us-east-1"]["failed"] == 0
    assert set(_manifests(lab)) == before


def test_broken_wal_archiving_fails_the_backup_run_with_what_to_fix(lab):
    conn = pg_connect(lab["primary"])
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('archive_command')")
        good = cur.fetchone()[0]
    try:
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET archive_command = 'false'")
            cur.execute("SELECT pg_reload_conf()")
        before = set(_manifests(lab))
        proc, _took = playbook("backup.yml", "-e", "backup_wal_archive_timeout_s=5", check=False)
        assert proc.returncode != 0
        assert "WAL archiving on pg-us-east-1 is off or failing" in proc.stdout
        assert set(_manifests(lab)) == before  # no backup taken on a broken archive
    finally:
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET archive_command = %s", (good,))
            cur.execute("SELECT pg_reload_conf()")
        conn.close()


def test_retention_zero_is_refused_before_anything_runs(lab):
    before = set(_manifests(lab))
    proc, _took = playbook("backup.yml", "-e", "backup_retention_count=0", check=False)
    assert proc.returncode != 0
    assert "0 would delete every backup" in proc.stdout
    assert set(_manifests(lab)) == before


def test_backup_playbook_snapshots_the_media_store(lab, tmp_path):
    """The media snapshot holds every file of the store; a restore reproduces them byte for byte."""
    import hashlib
    import json
    import os
    from lab_fixtures import module
    p = lab["primary"]
    playbook("backup.yml")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint(p), region_name=p["fediflow_region"],
                      aws_access_key_id=p["fediflow_aws_access_key"], aws_secret_access_key=p["fediflow_aws_secret_key"])
    prefix = "media/%s/snapshots/" % p["fediflow_region"]
    listed = s3.list_objects_v2(Bucket=p["fediflow_backup_bucket"], Prefix=prefix).get("Contents", [])
    assert listed, "no media snapshot manifest in S3"
    newest = max(listed, key=lambda o: o["Key"])
    manifest = json.loads(s3.get_object(Bucket=p["fediflow_backup_bucket"], Key=newest["Key"])["Body"].read())
    media = p["fediflow_media_dir"]
    on_disk = {os.path.relpath(os.path.join(r, f), media) for r, _d, fs in os.walk(media) for f in fs}
    in_snapshot = {f["path"] for f in manifest["files"]}
    assert on_disk - {".seeded"} <= in_snapshot and len(in_snapshot) >= 3000
    restored = module("fediflow.dr.s3_snapshot", {
        "state": "restored", "s3_bucket": p["fediflow_backup_bucket"], "s3_prefix": "media/%s" % p["fediflow_region"],
        "dest": str(tmp_path / "restore"), "endpoint_url": s3_endpoint(p),
        "access_key": p["fediflow_aws_access_key"], "secret_key": p["fediflow_aws_secret_key"],
        "region": p["fediflow_region"]})
    assert not restored.get("failed"), restored.get("msg")
    for rel in sorted(on_disk - {".seeded"})[::97]:  # a spread sample, compared independently
        with open(os.path.join(media, rel), "rb") as a, open(str(tmp_path / "restore" / rel), "rb") as b:
            assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest()
