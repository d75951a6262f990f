"""Every backup in both regions, for real: playbooks/backup.yml writes the database (logical and physical),
media, configuration and cache backups to each region's own S3 (a moto per region namespace) and the ledger
says where each copy lives. Then a region is lost (`lab_region.yml down`: its S3 frozen, its network dark)
and the other region restores from its own repository alone, inside its own namespace; or a repository is
down during a backup and the backup is degraded, never half-visible. Checked with boto3 and by restoring.
"""
import hashlib
import json
import os
import shutil

import boto3
import pytest

from lab_fixtures import back_home, lab_netns, lab_region, module, playbook, s3_endpoint

pytestmark = [pytest.mark.restarts_lab, pytest.mark.slow]

KINDS = ("logical", "physical")


@pytest.fixture(scope="module")
def home(lab):
    """The lab in its home state before and after (lab_up starts again what a test left down)."""
    yield lab
    back_home(lab)


def _repositories(*hosts):
    """The lab's repository list (inventories/lab fediflow_backup_repositories), in the order given."""
    return [{"name": hv["fediflow_region"], "bucket": hv["fediflow_backup_bucket"], "region": hv["fediflow_region"],
             "endpoint_url": s3_endpoint(hv)} for hv in hosts]


def _aws(hv):
    return {"access_key": hv["fediflow_aws_access_key"], "secret_key": hv["fediflow_aws_secret_key"]}


def _s3(hv):
    return boto3.client("s3", endpoint_url=s3_endpoint(hv), region_name=hv["fediflow_region"],
                        aws_access_key_id=hv["fediflow_aws_access_key"],
                        aws_secret_access_key=hv["fediflow_aws_secret_key"])


def _keys(hv, prefix):
    s3 = _s3(hv)
    keys = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=hv["fediflow_backup_bucket"], Prefix=prefix):
        for obj in page.get("Contents", []):
            keys[obj["Key"]] = obj["Size"]
    return keys


def _drop(hv, prefix):
    s3 = _s3(hv)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=hv["fediflow_backup_bucket"], Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=hv["fediflow_backup_bucket"], Delete={"Objects": keys})


def _newest(dest):
    ids = sorted(n for n in os.listdir(dest) if os.path.isfile(os.path.join(dest, n, "manifest.json")))
    with open(os.path.join(dest, ids[-1], "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _tree(root, skip=()):
    out = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(base, name)
            rel = os.path.relpath(full, root)
            if rel.split(os.sep)[0] in skip:
                continue
            with open(full, "rb") as handle:
                out[rel] = hashlib.sha256(handle.read()).hexdigest()
    return out


def _copies(manifest):
    return {c["repository"]: c["ok"] for c in manifest.get("copies") or []}


@pytest.fixture(scope="module")
def backed_up(home):
    """One backup run of the playbook as a user runs it, with the physical backup verified by a restore
    (so its manifest carries the source's row counts for region 2's restore to compare with)."""
    primary = home["primary"]
    proc, _took = playbook("backup.yml", "-e", "backup_physical_verify=restore")
    dest = primary["fediflow_backup_dir"]
    newest = {kind: _newest(os.path.join(dest, kind)) for kind in KINDS + ("cache",)}
    newest["media"] = _newest(os.path.join(dest, "ledger", "media"))
    newest["config"] = _newest(os.path.join(dest, "ledger", "config"))
    return {"stdout": proc.stdout, "newest": newest}


def test_every_backup_kind_is_written_and_checked_in_both_regions(home, backed_up):
    primary, standby = home["primary"], home["standby"]
    region = primary["fediflow_region"]
    for kind, manifest in backed_up["newest"].items():
        assert _copies(manifest) == {region: True, standby["fediflow_region"]: True}, (kind, manifest.get("copies"))
    for kind in KINDS + ("cache",):
        manifest = backed_up["newest"][kind]
        prefix = "%s/%s/%s/%s/" % ("cache" if kind == "cache" else "postgres", region,
                                   "" if kind == "cache" else kind, manifest["id"])
        prefix = prefix.replace("//", "/")
        for hv in (primary, standby):
            keys = _keys(hv, prefix)
            assert prefix + "manifest.json" in keys, (kind, hv["fediflow_region"], sorted(keys))
            for entry in manifest["files"]:   # each file landed whole in each region
                assert keys.get(prefix + entry["path"]) == entry["size"], (kind, hv["fediflow_region"], entry)
    for kind in ("media", "config"):
        snap = backed_up["newest"][kind]
        for hv in (primary, standby):
            key = "%s/%s/snapshots/%s.json" % (kind, region, snap["id"])
            assert key in _keys(hv, "%s/%s/snapshots/" % (kind, region)), (kind, hv["fediflow_region"])


def test_region_1_lost_region_2_restores_every_backup_from_its_own_repository(home, backed_up, tmp_path):
    primary, standby = home["primary"], home["standby"]
    newest, region = backed_up["newest"], primary["fediflow_region"]
    repos = _repositories(primary, standby)   # the lost region's first: it must be skipped, not waited on
    inside = lab_netns(standby)
    scratch = str(tmp_path)
    os.chmod(scratch, 0o755)
    media_before = _tree(primary["fediflow_media_dir"])
    config_before = _tree(os.path.join(primary["fediflow_backup_dir"], "config-staging"), skip=(".fingerprints",))
    assert "up -> down" in lab_region(primary, "down")
    try:
        # physical: downloaded from region 2's bucket, checked, restored into a scratch cluster, row-counted
        physical = module("fediflow.dr.pg_backup_verify", dict(
            _aws(standby), mode="physical", backup_id=newest["physical"]["id"], verify="restore",
            dest=os.path.join(scratch, "physical"), repositories=repos, s3_prefix="postgres/%s/physical" % region,
            login_host=standby["fediflow_pg_host"], login_port=int(standby["fediflow_pg_port"]),
            login_user="postgres", login_password=standby["fediflow_pg_superuser_password"], db="fediflow",
            ssl_mode=standby["fediflow_pg_ssl_mode"], ca_cert=standby["fediflow_pg_ca_cert"]), netns=inside)
        assert physical.get("verified") is True, physical.get("msg") or physical.get("verification")
        assert physical["source"] == standby["fediflow_region"]
        assert region in physical["repositories_down"]
        restored = [step for step in physical["verification"]["steps"] if step["method"] == "restore"][0]
        assert restored["tables_compared"] > 0 and all(t["ok"] for t in restored["tables"]), restored  # row-counted
        # logical: downloaded from region 2 and every file's sha256 checked against the manifest
        logical = module("fediflow.dr.pg_backup_verify", dict(
            _aws(standby), mode="logical", backup_id=newest["logical"]["id"], verify="checksum",
            dest=os.path.join(scratch, "logical"), repositories=repos, s3_prefix="postgres/%s/logical" % region,
            login_host=standby["fediflow_pg_host"], login_port=int(standby["fediflow_pg_port"]),
            login_user="postgres", login_password=standby["fediflow_pg_superuser_password"], db="fediflow",
            ssl_mode=standby["fediflow_pg_ssl_mode"], ca_cert=standby["fediflow_pg_ca_cert"]), netns=inside)
        assert logical.get("verified") is True and logical["source"] == standby["fediflow_region"], logical.get("msg")
        # media and configuration: restored from region 2's bucket, byte for byte what was snapshotted
        for kind, before in (("media", media_before), ("config", config_before)):
            restored = module("fediflow.dr.s3_snapshot", dict(
                _aws(standby), state="restored", snapshot_id=newest[kind]["id"], dest=os.path.join(scratch, kind),
                repositories=repos, s3_prefix="%s/%s" % (kind, region)), netns=inside)
            assert not restored.get("failed"), restored.get("msg")
            assert restored["repository"] == standby["fediflow_region"]
            assert _tree(os.path.join(scratch, kind)) == before, kind
        # cache: read from region 2's bucket and checked; the warm-up it would do, predicted (check mode)
        cache = module("fediflow.dr.redis_cache", dict(
            _aws(standby), state="restore", backup_id=newest["cache"]["id"], dest=os.path.join(scratch, "cache"),
            repositories=repos, s3_prefix="cache/%s" % region, promote_replica=True,
            redis_host=standby["fediflow_redis_host"], redis_port=int(standby["fediflow_redis_port"]),
            redis_password=standby["fediflow_redis_password"], redis_tls=True,
            redis_tls_ca_cert=standby["fediflow_redis_tls_ca_cert"]), check_mode=True, netns=inside)
        assert not cache.get("failed"), cache.get("msg")
        assert cache["backup_where"] == [standby["fediflow_region"]] or \
            standby["fediflow_region"] in cache["backup_where"]
        assert cache["counts"]["total"] == newest["cache"]["source"]["keys"] > 0
        assert region in (cache.get("s3_error") or "")
    finally:
        assert "-> up" in lab_region(primary, "up")


def _logical(hv, repos, dest, **extra):
    args = dict(_aws(hv), mode="logical", verify="list", dest=dest, repositories=repos,
                s3_prefix="postgres/%s/copies-test" % hv["fediflow_region"], region_name=hv["fediflow_region"],
                cluster_name="copies-test", retention_count=2, login_host=hv["fediflow_pg_host"],
                login_port=int(hv["fediflow_pg_port"]), login_user="postgres",
                login_password=hv["fediflow_pg_superuser_password"], db="fediflow",
                ssl_mode=hv["fediflow_pg_ssl_mode"], ca_cert=hv["fediflow_pg_ca_cert"])
    args.update(extra)
    return module("fediflow.dr.pg_backup_verify", args, netns=lab_netns(hv))


def test_a_repository_down_during_a_backup_degrades_it_and_nothing_is_half_visible(home, tmp_path):
    primary, standby = home["primary"], home["standby"]
    repos = _repositories(primary, standby)
    other = standby["fediflow_region"]
    dest = os.path.join(primary["fediflow_backup_dir"], "copies-test")
    shutil.rmtree(dest, ignore_errors=True)
    prefix = "postgres/%s/copies-test/" % primary["fediflow_region"]
    media_repo = "media-copies-test"
    for hv in (primary, standby):   # this test's own prefixes start empty (a lab that ran it before keeps them)
        _drop(hv, prefix)
        _drop(hv, media_repo + "/")
    assert "up -> down" in lab_region(standby, "down")
    try:
        # every copy required (the default): the run fails, naming the repository; the backup is complete and
        # verified in region 1 and the local ledger says where its copy is
        failed = _logical(primary, repos, dest)
        assert failed.get("failed") and other in failed["msg"] and "1 of the 2 copies" in failed["msg"], failed
        assert failed["complete"] is False and failed["degraded"] is True
        first = failed["backup_id"]
        local = _newest(dest)
        assert local["id"] == first and _copies(local) == {primary["fediflow_region"]: True, other: False}
        assert prefix + first + "/manifest.json" in _keys(primary, prefix)
        again = _logical(primary, repos, os.path.join(str(tmp_path), "elsewhere"), backup_id=first, verify="checksum")
        assert again.get("verified") is True and again["source"] == primary["fediflow_region"], again.get("msg")
        # one copy accepted (as during a region outage): the run succeeds, degraded, with a warning
        degraded = _logical(primary, repos, dest, required_copies=1)
        assert not degraded.get("failed"), degraded.get("msg")
        assert degraded["degraded"] is True and degraded["complete"] is True and degraded["copies_ok"] == 1
        assert any("degraded" in w for w in degraded.get("warnings", [])), degraded.get("warnings")
        # media: the snapshot lands in region 1 only (degraded) ...
        snap = module("fediflow.dr.s3_snapshot", dict(
            _aws(primary), state="present", src=primary["fediflow_media_dir"], repositories=repos,
            s3_prefix=media_repo, required_copies=1), netns=lab_netns(primary))
        assert not snap.get("failed"), snap.get("msg")
        assert {c["repository"]: c["ok"] for c in snap["copies"]} == {primary["fediflow_region"]: True, other: False}
    finally:
        assert "-> up" in lab_region(standby, "up")
    # nothing of the failed copies is visible in region 2: no manifest, no file of either backup
    assert not [k for k in _keys(standby, prefix) if first in k or degraded["backup_id"] in k]
    assert not _keys(standby, media_repo + "/snapshots/")
    # ... and the next run, the tree unchanged, gives region 2 the same snapshot (same id), checked there
    catch_up = module("fediflow.dr.s3_snapshot", dict(
        _aws(primary), state="present", src=primary["fediflow_media_dir"], repositories=repos,
        s3_prefix=media_repo), netns=lab_netns(primary))
    assert not catch_up.get("failed"), catch_up.get("msg")
    assert catch_up["snapshot_id"] == snap["snapshot_id"] and catch_up["complete"] is True
    by_repo = {c["repository"]: c for c in catch_up["copies"]}
    assert by_repo[other]["ok"] is True and by_repo[other]["objects_copied"] == snap["unique_objects"]
    assert media_repo + "/snapshots/%s.json" % snap["snapshot_id"] in _keys(standby, media_repo + "/snapshots/")
    verified = module("fediflow.dr.s3_snapshot", dict(
        _aws(standby), state="verified", snapshot_id=snap["snapshot_id"], repositories=_repositories(standby),
        s3_prefix=media_repo, deep=True), netns=lab_netns(standby))
    assert verified.get("ok") is True, verified.get("msg")
    # retention runs per repository: region 1 keeps 2 of its 3 backups, region 2 (which holds none) loses nothing
    third = _logical(primary, repos, dest)
    assert not third.get("failed"), third.get("msg")
    assert sorted(_copies(_newest(dest)).values()) == [True, True]
    assert {p["id"] for p in third["pruned"]} == {first}
    # the local copy goes; region 1's copy is under the lab bucket's Object Lock (governance, a day): left, reported
    for pruned in third["pruned"]:
        assert pruned["where"] == ["local"] and list(pruned["locked"]) == [primary["fediflow_region"]], pruned
        assert pruned["locked"][primary["fediflow_region"]]["until"], pruned
