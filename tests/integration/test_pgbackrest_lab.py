"""pgBackRest (Debian's 2.45) with fediflow.dr.pgbackrest_config against the real lab (issue 21's foundation): one
repository per region - each region's backup bucket on that region's own S3, reached through its TLS front (the lab
CA's certificate; pgBackRest speaks only HTTPS to S3) - with the lab's IAM enforcement on and two identities, as the
native engine has them: the WAL identity's file in archive_command, the backup identity's for stanza-create and the
backups. WAL goes to both regions asynchronously; a full backup lands in each region, an incremental after churn
is a fraction of it; what `pgbackrest info` says becomes ledger entries (module_utils/pgbackrest.parse_info).

The database is a throwaway cluster (pitr_fixtures.ArchivedCluster), never the lab's primary; its backups and WAL
are a stanza of their own in the lab's repositories (Object Lock keeps them a day; nothing else reads there)."""
import json
import os
import pwd
import shutil
import stat

import boto3
import pytest

from lab_fixtures import inventory, module
from pgbackrest_fixtures import (archive_through_pgbackrest, configure, pgbackrest, repositories, run_pgbackrest,
                                 take_backup)
from pitr_fixtures import ArchivedCluster
from pair_fixtures import OS_USER, SUPERUSER

pytestmark = pytest.mark.skipif(not shutil.which("pgbackrest"), reason="pgbackrest is not installed (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def engine(lab):
    # a stanza of its own (pgbackrest_fixtures.configure): the repository is the one a user's inventory gets
    # (<prefix>/pgbackrest), whose IAM statements name pgbackrest/archive/* and pgbackrest/backup/*
    cluster = ArchivedCluster().build()
    try:
        yield dict(configure(cluster, lab["primary"]), standby=lab["standby"])
    finally:
        cluster.destroy()


def _objects(hv, prefix, engine_):
    """Every key under ``prefix`` in the region's bucket (listed as the lab's operator)."""
    s3 = boto3.client("s3", endpoint_url=hv["fediflow_s3_tls_endpoint_url"], region_name=hv["fediflow_region"],
                      verify=engine_["primary"]["fediflow_pg_ca_cert"], aws_access_key_id=hv["fediflow_aws_access_key"],
                      aws_secret_access_key=hv["fediflow_aws_secret_key"])
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=hv["fediflow_backup_bucket"], Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def test_the_configuration_files_are_private_and_hold_no_secret_in_what_the_module_says(engine):
    for name, key in (("wal", "fediflow_s3_wal_secret_key"), ("backup", "fediflow_s3_backup_secret_key")):
        res = engine[name]
        st = os.stat(res["path"])
        assert stat.S_IMODE(st.st_mode) == 0o600 and pwd.getpwuid(st.st_uid).pw_name == OS_USER
        with open(res["path"], encoding="utf-8") as handle:
            assert engine["primary"][key] in handle.read()
        assert engine["primary"][key] not in json.dumps(res)
        assert [r["name"] for r in res["repositories"]] == [hv["fediflow_region"] for hv in inventory()]
    again = module("fediflow.dr.pgbackrest_config", dict(engine["common"], path=engine["wal"]["path"],
                                                         access_key=engine["primary"]["fediflow_s3_wal_access_key"],
                                                         secret_key=engine["primary"]["fediflow_s3_wal_secret_key"]))
    assert again["changed"] is False


def test_an_http_endpoint_is_refused_before_anything_is_written(engine, tmp_path):
    repos = [dict(r, endpoint_url=hv["fediflow_s3_endpoint_url"]) for r, hv in zip(repositories("x"), inventory())]
    path = tmp_path / "refused.conf"
    res = module("fediflow.dr.pgbackrest_config", dict(engine["common"], repositories=repos, path=str(path)))
    assert res.get("failed") and "endpoint_url" in res["msg"] and "https" in res["msg"]
    assert not path.exists()


def _oldest_archived(engine_, repo):
    """The oldest WAL segment pgBackRest's info shows archived in one repository (by key: 1, 2)."""
    regions = [hv["fediflow_region"] for hv in inventory()]
    doc = json.loads(run_pgbackrest(engine_, "info", "--output=json", "--repo=%d" % (regions.index(repo) + 1)).stdout)
    return min(a["min"] for a in doc[0]["archive"] if a.get("min"))


def test_wal_goes_to_both_regions_and_backups_to_each_through_the_tls_fronts_with_least_privilege(engine):
    cluster = engine["cluster"]
    regions = [hv["fediflow_region"] for hv in inventory()]
    # archive_command: the WAL identity's file; reloaded, every segment is pushed asynchronously to both regions
    archive_through_pgbackrest(engine)
    predicted = take_backup(engine, "full", check_mode=True)
    assert predicted["changed"] and predicted["backups"] == [] and set(predicted["repositories"]) == set(regions)
    assert run_pgbackrest(engine, "info", "--output=json").returncode == 0
    assert not any(b for b in pgbackrest.parse_info(run_pgbackrest(engine, "info", "--output=json").stdout, engine["stanza"],
                                                    dict(enumerate(regions, start=1)))["backups"])
    full = take_backup(engine, "full")   # stanza-create (none yet), then a full into each region's repository
    assert not full.get("failed"), full.get("msg")
    assert full["stanza_created"]["ok"] and full["copies"] == 2 and full["degraded"] == []
    assert [(b["type"], b["repositories"]) for b in full["backups"]] == [("full", [regions[0]]), ("full", [regions[1]])]
    checked = run_pgbackrest(engine, "check")   # a segment switched, archived and found in every repository
    assert checked.returncode == 0, checked.stdout + checked.stderr
    cluster.exec("INSERT INTO t (batch) SELECT 'churn' FROM generate_series(1, 20000)")
    rows = cluster.exec("SELECT count(*) FROM t")[0][0]
    incr = take_backup(engine, "incr", verify="restore", login_host="127.0.0.1", login_port=cluster.node.port,
                       login_user=SUPERUSER, login_password=cluster.password, db="app", ssl_mode="disable")
    assert not incr.get("failed"), incr.get("msg")
    assert "stanza_created" not in incr
    # proven: verified in both repositories, region 1's restored into a scratch cluster whose rows match the source's
    proof = incr["verification"]
    assert proof["ok"] and proof["level"] == "restore", proof
    assert all(proof["repositories"][r]["ok"] and proof["repositories"][r]["method"] == "pgbackrest verify" for r in regions)
    restore = proof["restore"]
    assert restore["repository"] == regions[0] and restore["backup"] == incr["repositories"][regions[0]]["backup"]
    table = {t["table"]: t for t in restore["tables"]}["public.t"]
    assert table["source"] == table["restored"] == rows and table["ok"], restore["tables"]
    assert restore["where"]["removed"] is True and not os.path.exists(restore["where"]["data_dir"])
    fulls = {b["repositories"][0]: b for b in full["backups"]}
    for b in incr["backups"]:
        repo = b["repositories"][0]
        assert b["type"] == "incr" and b["prior"] == fulls[repo]["id"] and incr["repositories"][repo]["backup"] == b["id"]
        assert b["repo_delta"] < fulls[repo]["repo_delta"] / 2 and not b["error"]
    # both regions' buckets hold the WAL archive and their own backups
    stanza = engine["stanza"]
    for hv, label in zip(inventory(), (fulls[regions[0]]["id"], fulls[regions[1]]["id"])):
        assert any(k.startswith("pgbackrest/archive/%s/15-1/" % stanza) for k in _objects(hv, "pgbackrest/archive/%s/" % stanza, engine))
        assert "pgbackrest/backup/%s/%s/backup.manifest" % (stanza, label) in _objects(hv, "pgbackrest/backup/%s/" % stanza, engine)
    # the proof is recorded on each backup in its repository: the ledger every region reads with info
    ledger = {b["id"]: b for b in pgbackrest.parse_info(run_pgbackrest(engine, "info", "--output=json").stdout, stanza,
                                                        dict(enumerate(regions, start=1)))["backups"]}
    for b in full["backups"]:
        assert ledger[b["id"]]["verification"]["ok"] and ledger[b["id"]]["verification"]["level"] == "list"
    for b in incr["backups"]:
        level = "restore" if b["repositories"] == [regions[0]] else "list"
        assert ledger[b["id"]]["verification"]["ok"] and ledger[b["id"]]["verification"]["level"] == level, ledger[b["id"]]
    # retention: a new full with one chain kept expires the first chain (its full and incremental) in each region,
    # through the WAL expiry identity, and the WAL only it needed with it
    oldest_wal = {r: _oldest_archived(engine, r) for r in regions}
    cluster.exec("SELECT pg_switch_wal()")
    second = take_backup(engine, "full", retention_full=1, expire_config=engine["expire"]["path"])
    assert not second.get("failed"), second.get("msg")
    for key, repo in enumerate(regions, start=1):
        plan = second["expired"][repo]
        first_chain = [fulls[repo]["id"]] + [b["id"] for b in incr["backups"] if b["repositories"] == [repo]]
        assert plan["ok"] and plan["keep_full"] == 1 and sorted(plan["expired"]) == sorted(first_chain), plan
        assert _oldest_archived(engine, repo) > oldest_wal[repo], "the WAL only the expired chain needed is gone"
    left = pgbackrest.parse_info(run_pgbackrest(engine, "info", "--output=json").stdout, stanza,
                                 dict(enumerate(regions, start=1)))["backups"]
    assert sorted(b["id"] for b in left) == sorted(b["id"] for b in second["backups"])
    assert all(b["verification"]["ok"] for b in left)
    # least privilege holds for pgBackRest too: the WAL identity cannot list the backups - the lab's IAM denies it,
    # and info (which exits 0 all the same) reports each repository unreadable rather than empty
    denied = run_pgbackrest(engine, "info", "--output=json", config="wal")
    seen = pgbackrest.parse_info(denied.stdout, engine["stanza"], dict(enumerate(regions, start=1)))
    assert seen["backups"] == [], seen
    for name in regions:
        assert not seen["repositories"][name]["ok"] and "403" in seen["repositories"][name]["message"], seen


def test_a_repository_that_fails_degrades_the_backup_and_the_others_still_get_theirs(engine):
    """Region 2's repository points at a bucket that does not exist: its backup fails and is reported; region 1's
    is taken; with every copy required the run fails naming the repository, with what it did in the result."""
    primary = engine["primary"]
    repos = repositories("")
    repos[1]["bucket"] = "fediflow-lab-no-such-bucket"
    broken = module("fediflow.dr.pgbackrest_config", dict(
        engine["common"], repositories=repos, path=os.path.join(engine["cluster"].base, "etc", "broken.conf"),
        access_key=primary["fediflow_s3_backup_access_key"], secret_key=primary["fediflow_s3_backup_secret_key"]))
    assert not broken.get("failed"), broken.get("msg")
    regions = [r["name"] for r in repos]
    one = take_backup(engine, "incr", config=broken["path"], required_copies=1)
    assert not one.get("failed"), one.get("msg")
    assert one["copies"] == 1 and one["degraded"] == [regions[1]] and one["repositories"][regions[0]]["ok"]
    assert one["repositories"][regions[1]]["detail"] and one["repositories"][regions[1]]["backup"] is None
    assert [b["repositories"] for b in one["backups"]] == [[regions[0]]]
    every = take_backup(engine, "incr", config=broken["path"])
    assert every.get("failed") and regions[1] in every["msg"] and "1 of 2" in every["msg"], every.get("msg")
    assert every["copies"] == 1 and every["repositories"][regions[0]]["ok"]
