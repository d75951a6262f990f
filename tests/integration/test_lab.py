"""The lab is real: a PostgreSQL primary streaming to a standby, WAL archived by the
collection's archive command, moto serving S3/Route53/SES, and per-region Kubernetes API
doubles (no real Kubernetes API server can run here: those are local HTTP doubles).

Everything is checked independently of the playbook's own output: psycopg2 on both
servers, the archive directory on disk, boto3 against moto, the kubernetes client.
"""
import json
import os
import pwd
import subprocess
import uuid

import boto3
import kubernetes
import pytest
from botocore.exceptions import ClientError

from lab_fixtures import lab_netns, module, pg_connect, playbook, poll, recap, s3_endpoint


def _aws(lab, service, hvars=None):
    """A client of the global services, or (``hvars``) of that region's own S3."""
    p = hvars or lab["primary"]
    url = s3_endpoint(p) if hvars else p["fediflow_aws_endpoint_url"]
    return boto3.client(service, endpoint_url=url, region_name=p["fediflow_region"],
                        aws_access_key_id=p["fediflow_aws_access_key"],
                        aws_secret_access_key=p["fediflow_aws_secret_key"])


def test_regions_have_their_roles_and_the_seed(lab):
    with pg_connect(lab["primary"], "fediflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery()")
        assert cur.fetchone()[0] is False
        counts = {}
        for table in ("accounts", "statuses", "follows", "media_attachments"):
            cur.execute("SELECT count(*) FROM %s" % table)
            counts[table] = cur.fetchone()[0]
    assert all(n >= 1000 for n in counts.values()), counts
    with pg_connect(lab["standby"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)")
        assert cur.fetchone() == (True, "streaming")


def test_each_region_runs_its_postgresql_layout(lab):
    """us-east-1: Debian's packaged cluster (configuration in /etc/postgresql, pg_ctlcluster); eu-west-1: a plain
    data directory. Both as the inventory names them, read back from the running servers."""
    seen = {}
    for hv in (lab["primary"], lab["standby"]):
        with pg_connect(hv) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('config_file'), current_setting('hba_file'), "
                        "current_setting('data_directory')")
            config_file, hba_file, data_directory = cur.fetchone()
        config_dir = hv.get("fediflow_pg_config_dir") or hv["fediflow_pg_data_dir"]
        assert (config_file, hba_file) == (config_dir + "/postgresql.conf", config_dir + "/pg_hba.conf")
        assert data_directory == hv["fediflow_pg_data_dir"]
        seen[bool(hv.get("fediflow_pg_cluster"))] = hv
    assert set(seen) == {True, False}, "the lab must run one region of each layout"
    debian = seen[True]
    version, name = debian["fediflow_pg_cluster"].split("/")
    listed = json.loads(subprocess.run(["pg_lsclusters", "--json"], capture_output=True, text=True, check=True).stdout)
    assert [(c["running"], c["pgdata"]) for c in listed if str(c["version"]) == version and c["cluster"] == name] == [
        (1, debian["fediflow_pg_data_dir"])]
    # the module controls it with pg_ctlcluster (a reload: harmless to the running lab)
    res = module("fediflow.dr.pg_ctl", {"data_dir": debian["fediflow_pg_data_dir"], "cluster": debian["fediflow_pg_cluster"],
                                        "state": "reloaded"}, netns=lab_netns(debian))
    assert res["commands"][0]["argv"][:1] + res["commands"][0]["argv"][-3:] == ["pg_ctlcluster", version, name, "reload"]
    assert res["state"] == "running" and res["cluster"] == debian["fediflow_pg_cluster"]


def test_row_written_on_the_primary_appears_on_the_standby(lab):
    marker = str(uuid.uuid4())
    with pg_connect(lab["primary"], "fediflow") as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO accounts (username, domain) VALUES (%s, 'probe.example') RETURNING id",
                    (marker,))
        new_id = cur.fetchone()[0]
    standby = pg_connect(lab["standby"], "fediflow")
    try:
        def visible():
            with standby.cursor() as cur:
                cur.execute("SELECT id FROM accounts WHERE username = %s", (marker,))
                row = cur.fetchone()
                return row and row[0]
        assert poll(visible, timeout=30) == new_id
    finally:
        standby.close()


def _archived(lab, segment, where=None):
    """The segment's S3 head in ``where``'s bucket (s3 backend: the primary's by default; every region's bucket
    holds a copy, under wal/<primary region>) or True (dir backend) once archived, else None."""
    p = lab["primary"]
    if p.get("fediflow_wal_backend", "dir") != "s3":
        return os.path.exists(os.path.join(p["fediflow_wal_archive_dir"], segment)) or None
    where = where or p
    try:
        return _aws(lab, "s3", where).head_object(Bucket=where["fediflow_backup_bucket"],
                                                  Key="wal/%s/%s" % (p["fediflow_region"], segment))
    except ClientError:
        return None


def test_wal_is_archived_by_the_collections_command(lab):
    p = lab["primary"]
    with pg_connect(p) as conn, conn.cursor() as cur:
        cur.execute("SELECT failed_count FROM pg_stat_archiver")
        failed_before = cur.fetchone()[0]  # cumulative: other tests break archiving on purpose
        cur.execute("CREATE TABLE IF NOT EXISTS lab_probe (v text)")
        cur.execute("INSERT INTO lab_probe VALUES ('x')")
        cur.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")
        segment = cur.fetchone()[0]
        cur.execute("SELECT pg_switch_wal()")
        found = poll(lambda: _archived(lab, segment), timeout=30)
        assert found, segment
        cur.execute("SELECT current_setting('archive_command'), failed_count FROM pg_stat_archiver")
        command, failed = cur.fetchone()
    assert "fediflow_wal.py --config " in command and " push %p %f" in command
    assert p["fediflow_aws_secret_key"] not in command  # credentials live in the 0600 config file
    assert failed == failed_before
    config = os.stat(os.path.join(os.path.dirname(p["fediflow_pg_data_dir"]), "fediflow-wal.json"))
    assert oct(config.st_mode & 0o777) == "0o600" and pwd.getpwuid(config.st_uid).pw_name == p["fediflow_pg_os_user"]
    if p.get("fediflow_wal_backend", "dir") == "s3":
        assert found["ContentLength"] == 16 * 1024 * 1024 and found["ServerSideEncryption"] == "AES256"
        assert len(found["Metadata"]["sha256"]) == 64
        # the other region's bucket holds the same copy (required_copies all: archived means both)
        other = _archived(lab, segment, lab["standby"])
        assert other and other["Metadata"]["sha256"] == found["Metadata"]["sha256"]
    else:
        archive = p["fediflow_wal_archive_dir"]
        assert oct(os.stat(archive).st_mode & 0o777) == "0o700"
        assert not [n for n in os.listdir(archive) if n.startswith(".")]  # no temp file left


def test_no_password_in_standby_config(lab):
    auto_conf = os.path.join(lab["standby"]["fediflow_pg_data_dir"], "postgresql.auto.conf")
    with open(auto_conf, encoding="utf-8") as handle:
        text = handle.read()
    assert "passfile=" in text
    assert lab["standby"]["fediflow_replication_password"] not in text
    assert "password=" not in text


def test_replication_and_clients_use_verified_tls(lab, tmp_path):
    """Each region's PostgreSQL serves TLS with a certificate from the lab CA; the standby streams with
    sslmode=verify-full against that CA, and a client given another CA is refused."""
    import psycopg2  # pylint: disable=import-outside-toplevel
    primary, standby = lab["primary"], lab["standby"]
    assert primary["fediflow_pg_ssl_mode"] == "verify-full" and os.path.isfile(primary["fediflow_pg_ca_cert"])
    with pg_connect(standby) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('primary_conninfo')")
        conninfo = dict(part.split("=", 1) for part in cur.fetchone()[0].split())
    assert conninfo["sslmode"] == "verify-full" and conninfo["sslrootcert"] == primary["fediflow_pg_ca_cert"]
    with pg_connect(primary) as conn, conn.cursor() as cur:
        cur.execute("SELECT s.ssl, s.version FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)")
        rows = cur.fetchall()
        assert rows and all(ssl for ssl, _version in rows), rows
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone()[0] is True  # this test's own connection (verify-full)
    # another CA's certificate file: the server's certificate is refused before any login
    other = tmp_path / "other-ca.crt"
    from tls_fixtures import make_pki  # pylint: disable=import-outside-toplevel
    other.write_bytes(make_pki()["other_ca"])
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        psycopg2.connect(host=primary["fediflow_pg_host"], port=primary["fediflow_pg_port"], user="postgres",
                         password=primary["fediflow_pg_superuser_password"], dbname="postgres", connect_timeout=5,
                         sslmode="verify-full", sslrootcert=str(other))


def test_the_playbooks_give_every_postgresql_client_the_inventorys_ca(lab, tmp_path):
    """The playbooks hand fediflow_pg_ssl_mode / fediflow_pg_ca_cert to every PostgreSQL client module they run
    (module_defaults for group fediflow.dr.pg_clients): with another CA named in the inventory, the same run
    that passes with the lab CA (test_validate) is refused the servers' certificates."""
    from tls_fixtures import make_pki  # pylint: disable=import-outside-toplevel
    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_pki()["other_ca"])
    proc, _took = playbook("validate.yml", "-e", json.dumps({"validate_checks": ["db_sequences"],
                                                             "fediflow_pg_ca_cert": str(other)}), check=False)
    # validate's preflight probes each region's database (health_check): both answer, and both refuse
    assert proc.returncode != 0, proc.stdout[-3000:]
    for hv in (lab["primary"], lab["standby"]):
        assert ("%s:%s/postgres answered but refused the login (certificate verify failed)"
                % (hv["fediflow_pg_host"], hv["fediflow_pg_port"])) in proc.stdout + proc.stderr, proc.stderr[-3000:]


def test_each_region_has_its_own_s3_and_the_global_moto_serves_dns_and_ses(lab):
    """Each region's bucket lives in the region's own S3 (a moto in its namespace), nowhere else: losing the
    region loses it. The global moto holds no backup bucket."""
    primary, standby = lab["primary"], lab["standby"]
    assert s3_endpoint(primary) != s3_endpoint(standby) != primary["fediflow_aws_endpoint_url"]
    for hvars, other in ((primary, standby), (standby, primary)):
        assert s3_endpoint(hvars).startswith("http://%s:" % hvars["lab_net_address"])
        s3 = _aws(lab, "s3", hvars)
        names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert hvars["fediflow_backup_bucket"] in names and other["fediflow_backup_bucket"] not in names
        enc = s3.get_bucket_encryption(Bucket=hvars["fediflow_backup_bucket"])
        rule = enc["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    global_names = {b["Name"] for b in _aws(lab, "s3").list_buckets()["Buckets"]}
    assert not global_names & {primary["fediflow_backup_bucket"], standby["fediflow_backup_bucket"]}
    r53 = _aws(lab, "route53")
    zone = [z for z in r53.list_hosted_zones()["HostedZones"] if z["Name"] == lab["primary"]["fediflow_dns_zone"]]
    assert len(zone) == 1
    records = r53.list_resource_record_sets(HostedZoneId=zone[0]["Id"])["ResourceRecordSets"]
    app = [r for r in records if r["Name"] == lab["primary"]["fediflow_app_record"] and r["Type"] == "A"]
    assert app and app[0]["ResourceRecords"][0]["Value"] == lab["primary"]["fediflow_app_endpoint"]
    ses = _aws(lab, "ses")
    assert lab["primary"]["fediflow_ses_sender"] in ses.list_identities()["Identities"]


def test_each_region_has_a_kubernetes_api_double_that_scales(lab):
    """The API server is the lab's local double: no real Kubernetes can run here."""
    for hvars, role in ((lab["primary"], "primary"), (lab["standby"], "standby")):
        kubeconfig = os.path.join(hvars["fediflow_lab_dir"], "run", "kubeconfig-%s" % hvars["fediflow_region"])
        apps = kubernetes.client.AppsV1Api(kubernetes.config.new_client_from_config(config_file=kubeconfig))
        core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(config_file=kubeconfig))
        ns = hvars["fediflow_k8s_namespace"]
        cm = core.read_namespaced_config_map("app-config", ns)
        assert cm.data["DATABASE_ROLE"] == role
        before = apps.read_namespaced_deployment_scale("worker", ns).spec.replicas
        apps.patch_namespaced_deployment_scale("worker", ns, {"spec": {"replicas": before + 2}})
        assert apps.read_namespaced_deployment("worker", ns).spec.replicas == before + 2
        apps.patch_namespaced_deployment_scale("worker", ns, {"spec": {"replicas": before}})
        assert apps.read_namespaced_deployment_scale("worker", ns).spec.replicas == before


@pytest.mark.slow
def test_second_lab_up_changes_nothing(lab):
    """A lab_up on a lab that is up changes nothing. When the session's own lab_up found the lab up
    (in its home roles before it ran), that run is the second one and is judged; else run it again."""
    if lab["was_up"]:
        took, counters = lab["up_s"], recap(lab["stdout"])
    else:
        proc, took = playbook("lab_up.yml")
        counters = recap(proc.stdout)
    assert set(counters) == {"pg-us-east-1", "pg-eu-west-1"}
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counters.values()), counters
    print("lab_up: first run %.1fs, second run %.1fs" % (lab["up_s"], took))


def test_pg_ctl_module_check_mode_predicts_and_touches_nothing(lab):
    standby = lab["standby"]
    res = module("fediflow.dr.pg_ctl", {"data_dir": standby["fediflow_pg_data_dir"], "state": "stopped"},
                 check_mode=True, diff=True)
    assert res["changed"] is True and res["actions"] == ["stop"]
    assert res["diff"]["before"]["state"] == "running" and res["diff"]["after"]["state"] == "stopped"
    assert "duration_s" in res
    again = module("fediflow.dr.pg_ctl", {"data_dir": standby["fediflow_pg_data_dir"], "state": "started"},
                   netns=lab_netns(standby))  # a start, were it needed, on the standby's host
    assert again["changed"] is False and again["state"] == "running"
    assert again["pid"] == res["pid"]  # the check run did not stop it


def test_pg_ctl_module_refuses_bad_input(lab):
    res = module("fediflow.dr.pg_ctl", {"data_dir": "/nonexistent/pgdata"})
    assert res.get("failed") and "holds no PostgreSQL cluster" in res["msg"]
    res = module("fediflow.dr.pg_ctl", {"data_dir": lab["standby"]["fediflow_pg_data_dir"], "timeout": 0})
    assert res.get("failed") and "timeout must be at least 1 second" in res["msg"]
