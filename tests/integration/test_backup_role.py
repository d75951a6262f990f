"""playbooks/backup.yml (the backup role) against the real lab, checked with boto3 and psycopg2."""
import boto3

from lab_fixtures import pg_connect, playbook, recap


def _manifests(lab):
    p = lab["primary"]
    s3 = boto3.client("s3", endpoint_url=p["fediflow_aws_endpoint_url"], region_name=p["fediflow_region"],
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
