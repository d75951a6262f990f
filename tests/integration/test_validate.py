"""playbooks/validate.yml (the validate role, fediflow.dr.integrity_check) against the real lab.

Real: PostgreSQL (pg_hba, sequences, row counts, amcheck), moto S3 (buckets, the media snapshot,
the backup ledger) and Route53. Faked: Kubernetes - the lab's API double, whose configmap is
patched over its HTTP API (no API server can run here). Each test breaks one thing behind the
collection's back with psycopg2 / boto3 / HTTP / chmod, checks that exactly that check fails
(the report's JSON, and the play fails naming it), repairs it and checks that everything passes
again, so the lab is left healthy.
"""
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import boto3
import pytest

from lab_fixtures import BIN, INVENTORY, ROOT, ansible_env, lab_netns, module, pg_connect, pg_streaming, playbook, poll, recap, s3_endpoint

pytestmark = pytest.mark.slow  # long role / playbook runs: not in `make test-quick`

EVERY_CHECK = {"db_amcheck", "db_sequences", "db_row_counts", "media_snapshot", "app_database_role", "app_dns_record",
               "pg_hba_trust", "backup_file_modes", "bucket_security", "report_secrets"}


@pytest.fixture(scope="module")
def backed_up(lab):
    """A fresh backup, so that the ledger holds today's row counts (other tests change the data)."""
    playbook("backup.yml", "--limit", "region_primary")
    return lab


def _report_dir(lab):
    return Path(lab["primary"]["fediflow_report_dir"]) / "validate"


def _validate(lab, *extra):
    """Run playbooks/validate.yml; returns (proc, {(check, region): step}) from the JSON report it wrote."""
    latest = _report_dir(lab) / "latest.json"
    before = latest.stat().st_mtime_ns if latest.exists() else None
    proc, _took = playbook("validate.yml", *extra, check=False)
    assert latest.exists() and latest.stat().st_mtime_ns != before, proc.stdout[-3000:]
    report = json.loads(latest.read_text())
    steps = {(s["name"].split(" ", 1)[1], s["region"]): s for s in report["steps"]}
    return proc, steps


def _only(*checks):
    return "-e", json.dumps({"validate_checks": list(checks)})


def _failed(steps):
    return sorted(key for key, step in steps.items() if step["status"] == "failed")


def _all_pass(lab):
    proc, steps = _validate(lab)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert _failed(steps) == []
    assert {name for name, _region in steps} == EVERY_CHECK
    return steps


def _fails_exactly(lab, check, region=None):
    """Every check but the slow media one (the healthy test runs it): only ``check`` fails."""
    region = region or lab["primary"]["fediflow_region"]
    proc, steps = _validate(lab, *_only(*sorted(EVERY_CHECK - {"media_snapshot"})))
    assert proc.returncode != 0
    assert _failed(steps) == [(check, region)], proc.stdout[-3000:]
    assert {name for name, _region in steps} == EVERY_CHECK - {"media_snapshot"}
    assert "%s (%s)" % (check, region) in proc.stdout  # the play fails naming it
    return steps[(check, region)], proc


def _passes_again(lab, check):
    proc, steps = _validate(lab, *_only(check))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert steps and _failed(steps) == [] and {name for name, _region in steps} == {check}


def _s3(lab):
    p = lab["primary"]
    return boto3.client("s3", endpoint_url=s3_endpoint(p), region_name=p["fediflow_region"],
                        aws_access_key_id=p["fediflow_aws_access_key"], aws_secret_access_key=p["fediflow_aws_secret_key"])


def test_healthy_lab_passes_every_check_and_reports_them(backed_up):
    steps = _all_pass(backed_up)
    regions = {region for _name, region in steps}
    assert regions == {backed_up["primary"]["fediflow_region"], backed_up["standby"]["fediflow_region"]}
    amcheck = steps[("db_amcheck", backed_up["primary"]["fediflow_region"])]["details"]["details"]
    assert amcheck["available"] and amcheck["indexes"]  # the lab installs amcheck: indexes really checked
    for ext in ("md", "html", "junit.xml"):
        assert (_report_dir(backed_up) / ("latest." + ext)).exists()


def test_check_mode_runs_every_check_and_writes_no_report(backed_up):
    latest = _report_dir(backed_up) / "latest.json"
    before = latest.read_bytes() if latest.exists() else None
    proc, _took = playbook("validate.yml", "--check")
    assert "all 12 integrity checks passed" in proc.stdout
    # validation only reads (its report is a record, not a change): changed=0, as in a real run
    assert recap(proc.stdout)["localhost"]["changed"] == 0
    assert (latest.read_bytes() if latest.exists() else None) == before


def test_a_trust_line_for_any_address_fails_pg_hba_trust(backed_up):
    primary = backed_up["primary"]  # its configuration: /etc/postgresql/... (Debian's layout), else the data directory
    hba = Path(primary.get("fediflow_pg_config_dir") or primary["fediflow_pg_data_dir"]) / "pg_hba.conf"
    good = hba.read_text()
    conn = pg_connect(backed_up["primary"])
    try:
        # the replication role's pg_hba.conf has no final newline
        hba.write_text(good.rstrip("\n") + "\nhost all all 0.0.0.0/0 trust\n")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_reload_conf()")
        step, _proc = _fails_exactly(backed_up, "pg_hba_trust")
        assert step["details"]["details"]["offending"][0]["address"] == "0.0.0.0"
    finally:
        hba.write_text(good)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_reload_conf()")
        conn.close()
    _passes_again(backed_up, "pg_hba_trust")


def test_a_public_bucket_fails_bucket_security(backed_up):
    s3, bucket = _s3(backed_up), backed_up["primary"]["fediflow_backup_bucket"]
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    try:
        s3.delete_public_access_block(Bucket=bucket)
        s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
        step, _proc = _fails_exactly(backed_up, "bucket_security")
        problems = [b for b in step["details"]["details"]["buckets"] if b["bucket"] == bucket][0]["problems"]
        assert "no public access block" in problems
        assert any(p.startswith("public ACL grant: AllUsers READ") for p in problems)
    finally:
        s3.put_bucket_acl(Bucket=bucket, ACL="private")
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
    _passes_again(backed_up, "bucket_security")


def _configmap_role(hv, value=None):
    url = "%s/api/v1/namespaces/%s/configmaps/%s" % (hv["fediflow_k8s_api_url"], hv["fediflow_k8s_namespace"],
                                                     hv["fediflow_app_configmap"])
    if value is not None:
        body = json.dumps({"data": {"DATABASE_ROLE": value}}).encode()
        req = urllib.request.Request(url, data=body, method="PATCH",
                                     headers={"Content-Type": "application/merge-patch+json"})
        urllib.request.urlopen(req, timeout=5).read()
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]["DATABASE_ROLE"]


def test_a_mismatched_database_role_fails_app_database_role(backed_up):
    primary = backed_up["primary"]
    assert _configmap_role(primary) == "primary"
    try:
        assert _configmap_role(primary, "standby") == "standby"
        step, _proc = _fails_exactly(backed_up, "app_database_role")
        assert step["details"]["compared"]["actual"][primary["fediflow_region"]] == "standby"
        assert step["details"]["compared"]["expected"][primary["fediflow_region"]] == "primary"
    finally:
        _configmap_role(primary, "primary")
    _passes_again(backed_up, "app_database_role")


def test_a_table_truncated_behind_the_ledgers_back_fails_db_row_counts(backed_up):
    conn = pg_connect(backed_up["primary"], db=backed_up["primary"]["fediflow_app_db"])
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM follows")
            rows = cur.fetchone()[0]
            assert rows > 0
            cur.execute("CREATE TEMP TABLE saved_follows AS SELECT * FROM follows")  # temp: not a user table
            cur.execute("TRUNCATE follows")
        conn.commit()
        step, _proc = _fails_exactly(backed_up, "db_row_counts")
        short = step["details"]["details"]["short"]
        assert [(r["table"], r["ledger"], r["actual"]) for r in short] == [("public.follows", rows, 0)]
    finally:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO follows SELECT * FROM saved_follows")
        conn.commit()
        conn.close()
    _passes_again(backed_up, "db_row_counts")


def test_a_sequence_behind_its_table_fails_db_sequences(backed_up):
    conn = pg_connect(backed_up["primary"], db=backed_up["primary"]["fediflow_app_db"])
    with conn.cursor() as cur:
        cur.execute("SELECT last_value, is_called FROM accounts_id_seq")
        last, called = cur.fetchone()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT setval('accounts_id_seq', 1)")
        step, _proc = _fails_exactly(backed_up, "db_sequences")
        assert [b["sequence"] for b in step["details"]["details"]["behind"]] == ["public.accounts_id_seq"]
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT setval('accounts_id_seq', %s, %s)", (last, called))
        conn.close()
    _passes_again(backed_up, "db_sequences")


def test_a_backup_file_readable_by_others_fails_backup_file_modes(backed_up):
    logical = Path(backed_up["primary"]["fediflow_backup_dir"]) / "logical"
    dump = sorted(logical.glob("*/db.dump"))[-1]
    try:
        os.chmod(dump, 0o644)
        step, _proc = _fails_exactly(backed_up, "backup_file_modes")
        assert step["details"]["details"]["loose"] == [{"path": str(dump), "mode": "0644"}]
    finally:
        os.chmod(dump, 0o600)
    _passes_again(backed_up, "backup_file_modes")


def test_a_secret_in_a_report_fails_report_secrets_without_showing_it(backed_up):
    secret = backed_up["primary"]["fediflow_pg_superuser_password"]
    planted = Path(backed_up["primary"]["fediflow_report_dir"]) / "planted-notes.md"
    try:
        planted.parent.mkdir(parents=True, exist_ok=True)  # a lab whose first report is yet to come has none
        planted.write_text("on-call notes: the db password is %s\n" % secret)
        step, proc = _fails_exactly(backed_up, "report_secrets")
        found = step["details"]["details"]["found"]
        assert found == [{"file": str(planted), "variables": ["fediflow_pg_superuser_password"]}]
        assert secret not in proc.stdout + proc.stderr
        for report in _report_dir(backed_up).glob("latest.*"):
            assert secret not in report.read_text()
    finally:
        planted.unlink(missing_ok=True)
    _passes_again(backed_up, "report_secrets")


def test_the_region_comes_from_probing_not_from_stale_inventory_groups(backed_up, tmp_path):
    """A copy of the inventory whose groups say the standby is the primary: the probe still finds us-east-1."""
    inv = tmp_path / "inv"
    shutil.copytree(INVENTORY.parent, inv)
    hosts = (inv / "hosts.yml").read_text()
    primary_host = "pg-" + backed_up["primary"]["fediflow_region"]
    standby_host = "pg-" + backed_up["standby"]["fediflow_region"]
    swapped = hosts.replace(primary_host, "@@").replace(standby_host, primary_host).replace("@@", standby_host)
    (inv / "hosts.yml").write_text(swapped)
    # group_vars/region_* would now lie about fediflow_pg_role and the serving replicas: the role reads neither
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv / "hosts.yml"), str(ROOT / "playbooks" / "validate.yml"),
                           "-e", '{"validate_checks": ["app_database_role"], "validate_report_dir": ""}'],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=False)
    assert "region_primary" in swapped and swapped.index(standby_host) < swapped.index(primary_host)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "passed in %s" % backed_up["primary"]["fediflow_region"] in proc.stdout


def test_a_database_host_that_does_not_answer_is_listed_not_failed(backed_up):
    """The stopped standby (as the old primary after a failover): its checks are listed as not run."""
    standby = backed_up["standby"]
    stopped = module("fediflow.dr.pg_ctl", {"data_dir": standby["fediflow_pg_data_dir"], "state": "stopped",
                                            "os_user": standby["fediflow_pg_os_user"]})
    assert stopped.get("changed"), stopped
    try:
        proc, steps = _validate(backed_up, *_only("pg_hba_trust", "backup_file_modes"))
        assert proc.returncode == 0, proc.stdout[-3000:]
        host_step = steps[("pg-" + standby["fediflow_region"], standby["fediflow_region"])]
        assert host_step["status"] == "skipped" and "did not answer" in host_step["msg"]
        assert {region for (name, region) in steps if name == "pg_hba_trust"} == {backed_up["primary"]["fediflow_region"]}
        assert "not checked: pg-%s did not answer" % standby["fediflow_region"] in " ".join(proc.stdout.split())
    finally:
        module("fediflow.dr.pg_ctl", {"data_dir": standby["fediflow_pg_data_dir"], "state": "started",
                                      "os_user": standby["fediflow_pg_os_user"]},
               netns=lab_netns(standby))  # on the standby's host: it listens on the region's address
    assert poll(lambda: pg_streaming(standby), 60)


@pytest.mark.parametrize("extra, message", [
    (("-e", "region=mars-1"), "validate_region must be empty or a region of the inventory"),
    (("-e", "validate_row_count_tolerance=1.5"), "validate_row_count_tolerance a fraction from 0 up to but not including 1"),
    (("-e", '{"validate_checks": ["db_magic"]}'), "unknown: db_magic"),
])
def test_bad_input_is_refused_before_anything_is_checked(backed_up, extra, message):
    proc, _took = playbook("validate.yml", *extra, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout
    assert "Probe each database host" not in proc.stdout
