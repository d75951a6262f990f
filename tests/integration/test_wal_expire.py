"""WAL expiry on the real lab: the us-east-1 primary archives every segment into both regions' buckets
(wal/us-east-1 in each, the replication role's configuration). Physical backups are taken into a private
ledger with retention; fediflow.dr.wal_expire runs on the region's host (its namespace, its configuration
file) weighing that ledger and the lab's S3 ledgers. Checked independently with boto3 (every bucket: only
files before the oldest retained verified backup's start segment are gone, every .history stays) and with a
point-in-time restore to just after the oldest retained backup's end, beside the lab (row-checked with
psycopg2). Then region us-east-1 goes down during an expiry run from eu-west-1: eu-west-1's copy is expired,
us-east-1 is reported and, once back, untouched until the next run.

The lab's backup buckets carry S3 Object Lock (governance, fediflow_backup_object_lock_days: a day), as a
production archive should: there the expiry plans the same files, deletes none and reports each as locked. What
it deletes, and the restore after it, are therefore proven on a copy of the archive in buckets of the test's own
without Object Lock, on the same regions' S3 servers (the lab's admin identity: the expiry identity's IAM
policy names the lab's buckets only)."""
import json
import os
import shutil
import tempfile
import uuid

import boto3
import psycopg2
import pytest

from doubles_fixtures import free_port
from lab_fixtures import lab_netns, lab_region, module, pg_connect, pg_streaming, pg_tls, playbook, poll
from pair_fixtures import _as_pg, bindir

pytestmark = pytest.mark.slow

SEG = 16 * 1024 * 1024
PREFIX = "wal/us-east-1/"
LEDGER_PREFIXES = ["postgres/us-east-1/physical", "postgres/eu-west-1/physical"]


def _position(name):
    """(kind, segno) of an archive file name, as PostgreSQL orders WAL (never by name: timelines sort first)."""
    if name.endswith(".history"):
        return "history", None
    return ("partial" if name.endswith(".partial") else "backup" if name.endswith(".backup") else "segment",
            int(name[8:16], 16) * 256 + int(name[16:24], 16))


def _s3(hv):
    return boto3.client("s3", endpoint_url=hv["fediflow_s3_endpoint_url"], region_name=hv["fediflow_region"],
                        aws_access_key_id=hv["fediflow_aws_access_key"], aws_secret_access_key=hv["fediflow_aws_secret_key"],
                        config=boto3.session.Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}))


def _wal_files(hv, bucket=None):
    """{name: size} of the WAL archive in this region's bucket (or ``bucket``, a copy on its S3 server)."""
    out = {}
    pages = _s3(hv).get_paginator("list_objects_v2").paginate(Bucket=bucket or hv["fediflow_backup_bucket"], Prefix=PREFIX)
    for page in pages:
        for obj in page.get("Contents", []):
            out[obj["Key"][len(PREFIX):]] = obj["Size"]
    return out


def _oldest_start_segno(ledger_dir, regions):
    """The start segment of the oldest verified physical backup of every ledger (the local one, and the S3 ledgers
    of ``regions``), read independently."""
    manifests = []
    for name in os.listdir(ledger_dir):
        path = os.path.join(ledger_dir, name, "manifest.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                manifests.append(json.load(handle))
    for hv in regions:
        client = _s3(hv)
        for prefix in LEDGER_PREFIXES:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=hv["fediflow_backup_bucket"], Prefix=prefix + "/")
            for page in pages:
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/manifest.json"):
                        body = client.get_object(Bucket=hv["fediflow_backup_bucket"], Key=obj["Key"])["Body"].read()
                        manifests.append(json.loads(body))
    starts = {}
    for m in manifests:
        if m.get("kind") == "physical" and (m.get("verification") or {}).get("ok"):
            starts[m["id"]] = _start_segno(m)
    return min(starts.values()), {i for i, segno in starts.items() if segno == min(starts.values())}


OLD = "000000010000000000000001"


def _plant_old(regions, bound_segno):
    """A segment far older than every retained backup in each region's copy of the archive (the lab's own
    may be gone already: other tests' backups in the shared ledgers can hold the bound before them)."""
    assert _position(OLD)[1] < bound_segno
    for hv in regions:
        if OLD not in _wal_files(hv):
            _s3(hv).put_object(Bucket=hv["fediflow_backup_bucket"], Key=PREFIX + OLD, Body=b"\0" * SEG)


def _switch_and_archive(hv, count):
    """``count`` segments written (a message record, then a switch each) and archived in every bucket."""
    with pg_connect(hv) as conn, conn.cursor() as cur:
        for _index in range(count):
            cur.execute("SELECT pg_logical_emit_message(false, 'fediflow-wal-expire-test', 'x')")
            cur.execute("SELECT pg_walfile_name(pg_switch_wal())")
            segment = cur.fetchone()[0]

    def archived():
        with pg_connect(hv) as conn, conn.cursor() as cur:
            cur.execute("SELECT last_archived_wal >= %s FROM pg_stat_archiver", (segment,))
            return cur.fetchone()[0]
    assert poll(archived, 60), "segment %s not archived" % segment
    return segment


def _backup(hv, ledger_dir, keep):
    res = module("fediflow.dr.pg_backup_verify", {
        "mode": "physical", "compression": "zstd", "verify": "list", "dest": ledger_dir, "cluster_name": "wal-expire-test",
        "login_host": hv["fediflow_pg_host"], "login_port": hv["fediflow_pg_port"],
        "login_password": hv["fediflow_pg_superuser_password"], "db": hv["fediflow_app_db"], "retention_count": keep})
    assert res.get("verified") is True, res.get("msg")
    return res


def _marker(hv):
    """A row committed now; returns (marker, the LSN just after its commit)."""
    marker = "walexp-%s" % uuid.uuid4().hex[:10]
    with pg_connect(hv, "fediflow") as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO accounts (username, domain) VALUES (%s, 'wal-expire.example')", (marker,))
    with pg_connect(hv) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_insert_lsn()::text")
        return marker, cur.fetchone()[0]


def _expiry_identity(hv):
    """The WAL expiry's own S3 identity, as the backup role gives it: the archive's (fediflow-wal.json) may put and
    get WAL but neither list the backups' ledgers nor delete (the lab's S3 enforces its IAM policies)."""
    return {"access_key": hv["fediflow_s3_wal_expire_access_key"], "secret_key": hv["fediflow_s3_wal_expire_secret_key"]}


def _lab_wal_config(hv):
    return os.path.join(os.path.dirname(hv["fediflow_pg_data_dir"]), "fediflow-wal.json")


def _expire(hv, ledger_dir, check_mode=False, **extra):
    args = {"wal_config": _lab_wal_config(hv),
            "ledgers": [{"path": ledger_dir}] + [{"s3_prefix": p} for p in LEDGER_PREFIXES], "keep_days": 0}
    args.update(_expiry_identity(hv))
    args.update(extra)
    return module("fediflow.dr.wal_expire", args, check_mode=check_mode, diff=check_mode,
                  netns=lab_netns(hv))  # on the region's host


def _expire_copy(hv, ledger_dir, copy):
    """The expiry on the unlocked copy: its configuration, the lab's admin identity, this test's ledger only (the
    copy holds none of the S3 ledgers)."""
    return _expire(hv, ledger_dir, wal_config=copy["config"], ledgers=[{"path": ledger_dir}],
                   access_key=copy["admin"]["fediflow_aws_access_key"], secret_key=copy["admin"]["fediflow_aws_secret_key"])


def _unlocked_copy(hv, regions, path, from_segno):
    """Every region's WAL archive from segment ``from_segno`` on (and every .history) copied into a new bucket
    without Object Lock on that region's S3 server, the OLD segment planted in each, and a WAL configuration
    (``hv``'s, the buckets and credentials swapped) the postgres user can read. Returns {config, buckets, admin}."""
    with open(_lab_wal_config(hv), encoding="utf-8") as handle:
        cfg = json.load(handle)
    by_region = {r["fediflow_region"]: r for r in regions}
    buckets = {}
    for repo in cfg["repositories"]:
        region_hv = by_region[repo["name"]]
        client = _s3(region_hv)
        bucket = "fediflow-test-walexp-%s" % uuid.uuid4().hex[:8]
        client.create_bucket(Bucket=bucket, **({} if region_hv["fediflow_region"] == "us-east-1" else
                                               {"CreateBucketConfiguration": {"LocationConstraint": region_hv["fediflow_region"]}}))
        buckets[repo["name"]] = bucket
        for name in _wal_files(region_hv):
            kind, segno = _position(name)
            if kind == "history" or segno >= from_segno:
                body = client.get_object(Bucket=repo["bucket"], Key=PREFIX + name)["Body"].read()
                client.put_object(Bucket=bucket, Key=PREFIX + name, Body=body)
        client.put_object(Bucket=bucket, Key=PREFIX + OLD, Body=b"\0" * SEG)
        repo.update(bucket=bucket, access_key=region_hv["fediflow_aws_access_key"],
                    secret_key=region_hv["fediflow_aws_secret_key"], session_token=None)
    config = os.path.join(path, "wal-copy.json")
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(cfg, handle)
    shutil.chown(config, "postgres")
    return {"config": config, "buckets": buckets, "admin": hv, "regions": by_region}


def _drop_copy(copy):
    for name, bucket in copy["buckets"].items():
        client = _s3(copy["regions"][name])
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                client.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
        client.delete_bucket(Bucket=bucket)


def _local_start_segno(ledger_dir):
    return _oldest_start_segno(ledger_dir, ())[0]


def _check_only_older_gone(before, after, bound_segno):
    gone = set(before) - set(after)
    assert gone, "nothing was expired"
    for name in gone:
        kind, segno = _position(name)
        assert kind != "history" and segno < bound_segno, name
    for name in after:   # and everything older went
        kind, segno = _position(name)
        assert kind == "history" or segno >= bound_segno, name
    for name in before:
        kind, segno = _position(name)
        if kind == "history" or segno >= bound_segno:
            assert name in after, name
    return gone


def _start_segno(backup):
    """The start segment of a backup (its manifest's, or pg_backup_verify's result's, start_lsn)."""
    high, low = backup["start_lsn"].split("/")
    return ((int(high, 16) << 32) | int(low, 16)) // SEG


@pytest.fixture
def work(lab):
    path = tempfile.mkdtemp(prefix="fediflow-wal-expire-", dir="/var/tmp")
    shutil.chown(path, "postgres")
    copies = []
    yield lab, path, copies
    for copy in copies:
        _drop_copy(copy)
    shutil.rmtree(path, ignore_errors=True)


def test_expiry_removes_only_what_the_oldest_retained_backup_does_not_need_and_pitr_still_works(work):
    lab, path, copies = work
    primary, standby = lab["primary"], lab["standby"]
    ledger_dir = os.path.join(path, "backups")
    _switch_and_archive(primary, 2)
    _backup(primary, ledger_dir, keep=2)  # pruned by the third backup: its WAL goes
    _switch_and_archive(primary, 3)
    oldest = _backup(primary, ledger_dir, keep=2)
    marker, target_lsn = _marker(primary)  # just after the oldest retained backup's end
    _switch_and_archive(primary, 1)
    later, _lsn = _marker(primary)  # after the target: not in the restore
    _switch_and_archive(primary, 3)
    third = _backup(primary, ledger_dir, keep=2)
    assert [p["id"] for p in third["pruned"]] and oldest["backup_id"] not in [p["id"] for p in third["pruned"]]
    _switch_and_archive(primary, 1)
    bound_segno, bound_ids = _oldest_start_segno(ledger_dir, (primary, standby))
    _plant_old((primary, standby), bound_segno)
    regions = {hv["fediflow_region"]: hv for hv in (primary, standby)}
    before = {name: _wal_files(hv) for name, hv in regions.items()}

    # the lab's archive (Object Lock, every ledger): planned exactly, nothing deleted, each planned file reported
    check = _expire(primary, ledger_dir, check_mode=True)
    assert check.get("failed") is not True, check.get("msg")
    assert check["changed"] is True and check["diff"]["before"] != check["diff"]["after"]
    assert {name: _wal_files(hv) for name, hv in regions.items()} == before  # check mode touched nothing
    res = _expire(primary, ledger_dir)
    assert res.get("failed") is not True, res.get("msg")
    # the oldest retained backup of every ledger (this test's, or an older one other tests left in the region ledgers)
    assert res["bound"]["segno"] == bound_segno and res["bound"]["backup_id"] in bound_ids
    assert "lab-secret-key" not in json.dumps(res)  # the credentials of the configuration file stay in it
    assert _expiry_identity(primary)["secret_key"] not in json.dumps(res)  # and the expiry's own, given as an option
    planned = {r["name"]: r for r in check["repositories"]}
    assert res["changed"] is False and res["removed"] == 0 and res["degraded"] is False
    for repo in res["repositories"]:
        older = {n for n in before[repo["name"]] if _position(n)[0] != "history" and _position(n)[1] < bound_segno}
        assert OLD in older and planned[repo["name"]]["removed"] == len(older)  # what check mode predicted
        assert repo["locked"] == len(older) and repo["locked_until"], repo  # every one of them locked, reported
        assert any(repo["name"] in w and "Object Lock" in w for w in res.get("warnings", []))
    assert {name: _wal_files(hv) for name, hv in regions.items()} == before  # nothing gone

    # a copy without Object Lock (this test's ledger only): the files older than its oldest backup are deleted
    local_bound = _local_start_segno(ledger_dir)
    assert local_bound == _start_segno(oldest)
    copy = _unlocked_copy(primary, (primary, standby), path, local_bound - 2)
    copies.append(copy)
    before = {name: _wal_files(hv, copy["buckets"][name]) for name, hv in regions.items()}
    res = _expire_copy(primary, ledger_dir, copy)
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is True and res["degraded"] is False and res["bound"]["backup_id"] == oldest["backup_id"]
    assert primary["fediflow_aws_secret_key"] not in json.dumps(res)
    for repo in res["repositories"]:
        name = repo["name"]
        after = _wal_files(regions[name], copy["buckets"][name])
        gone = _check_only_older_gone(before[name], after, local_bound)  # in EVERY region's bucket
        assert OLD in gone and repo["locked"] == 0
        assert repo["removed"] == len(gone) and repo["removed_bytes"] == sum(before[name][n] for n in gone)
        assert repo["before"]["bytes"] == sum(before[name].values()) and repo["after"]["bytes"] == sum(after.values())
        assert repo["oldest_kept_segment"] == min((n for n in after if _position(n)[0] == "segment"), key=_position)
    again = _expire_copy(primary, ledger_dir, copy)
    assert again["changed"] is False and again["removed"] == 0  # idempotent

    # PITR from the oldest retained backup to just after its end, beside the lab, from the expired archive
    port = free_port()
    data_dir = primary["fediflow_pg_data_dir"]
    pitr = module("fediflow.dr.pitr_restore", dict(
        login_host=primary["fediflow_pg_host"], login_port=primary["fediflow_pg_port"],
        login_password=primary["fediflow_pg_superuser_password"], db=primary["fediflow_app_db"],
        data_dir=data_dir, target_lsn=target_lsn, backup_id=oldest["backup_id"], action="pause", switch=False,
        restore_port=port, config_dir=primary.get("fediflow_pg_config_dir"), backup_dest=ledger_dir,
        wal_config=copy["config"],  # the expired copy
        wal_tool=os.path.join(primary["fediflow_tools_dir"], "fediflow_wal.py"), timeout=180), netns=lab_netns(primary))
    try:
        assert pitr.get("failed") is not True, pitr.get("msg")
        assert pitr["base_backup"]["id"] == oldest["backup_id"] and pitr["state"] == "paused"
        conn = psycopg2.connect(host=primary["fediflow_pg_host"], port=port, user="postgres", dbname="fediflow",
                                password=primary["fediflow_pg_superuser_password"], **pg_tls(primary))
        with conn.cursor() as cur:
            cur.execute("SELECT username FROM accounts WHERE username IN (%s, %s)", (marker, later))
            assert [r[0] for r in cur.fetchall()] == [marker]
        conn.close()
    finally:
        new_dir = pitr.get("new_data_dir")
        if new_dir and os.path.isdir(new_dir):
            _as_pg([os.path.join(bindir(), "pg_ctl"), "stop", "-D", new_dir, "-m", "immediate", "-w"], check=False)
            shutil.rmtree(new_dir, ignore_errors=True)
        if new_dir and os.path.exists(new_dir + ".log"):
            os.unlink(new_dir + ".log")


@pytest.mark.restarts_lab
def test_a_region_down_during_expiry_the_other_repository_is_expired_and_the_down_one_reported(work):
    lab, path, copies = work
    primary, standby = lab["primary"], lab["standby"]
    regions = {hv["fediflow_region"]: hv for hv in (primary, standby)}
    ledger_dir = os.path.join(path, "backups")
    _backup(primary, ledger_dir, keep=1)
    _switch_and_archive(primary, 3)
    _backup(primary, ledger_dir, keep=1)  # the first one pruned: its WAL may go
    _switch_and_archive(primary, 1)
    bound_segno = _local_start_segno(ledger_dir)
    copy = _unlocked_copy(primary, (primary, standby), path, bound_segno - 2)  # without Object Lock: see the top
    copies.append(copy)
    before = {name: _wal_files(hv, copy["buckets"][name]) for name, hv in regions.items()}
    down_name, up_name = primary["fediflow_region"], standby["fediflow_region"]
    assert "up -> down" in lab_region(primary, "down")
    try:
        res = _expire_copy(standby, ledger_dir, copy)  # from eu-west-1's host: both buckets, one region down
    finally:
        lab_region(primary, "up")
        playbook("lab_up.yml")
        assert poll(lambda: pg_streaming(standby), timeout=120), "the standby did not stream again"
    assert res.get("failed") is not True, res.get("msg")
    assert res["degraded"] is True and res["not_answered"] == [down_name]
    by_name = {r["name"]: r for r in res["repositories"]}
    assert by_name[down_name]["answered"] is False and by_name[down_name]["error"]
    assert by_name[up_name]["removed"] > 0 and by_name[up_name]["error"] is None
    assert any(down_name in w for w in res.get("warnings", []))
    _check_only_older_gone(before[up_name], _wal_files(standby, copy["buckets"][up_name]), bound_segno)
    assert before[down_name] == _wal_files(primary, copy["buckets"][down_name])  # the down one: untouched
    # back up: the next run expires it, the other has nothing left to remove
    res = _expire_copy(primary, ledger_dir, copy)
    assert res.get("failed") is not True, res.get("msg")
    by_name = {r["name"]: r for r in res["repositories"]}
    assert by_name[down_name]["removed"] > 0 and by_name[up_name]["removed"] == 0
    _check_only_older_gone(before[down_name], _wal_files(primary, copy["buckets"][down_name]), bound_segno)
