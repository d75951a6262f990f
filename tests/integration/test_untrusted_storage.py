"""Hostile storage on the lab's real S3 (moto with IAM enforcement): manifests and snapshots a module did not
write are planted with boto3 beside good ones, then the modules run as a user runs them. Checked independently:
boto3 lists what is left in the bucket, the file system shows nothing written outside the target.

The backup ledger runs in a bucket of the test's own without Object Lock (on a locked bucket a wrong deletion
would be refused by S3 itself, and this test could not fail); the snapshot repositories run under a prefix of
their own in the lab's backup bucket (snapshot_fixtures)."""
import copy
import json
import os

import pytest

from lab_fixtures import module
from snapshot_fixtures import make_tree, repo  # noqa: F401 pylint: disable=unused-import
from test_pg_backup_verify import _keys, _unlocked_bucket, bk  # noqa: F401 pylint: disable=unused-import

pytestmark = pytest.mark.slow


def _put_json(bk_, key, data):
    bk_["s3"].put_object(Bucket=bk_["bucket"], Key=key, Body=json.dumps(data).encode())


def test_hostile_backup_manifests_are_skipped_reported_and_never_delete_or_write_anything(bk, tmp_path):
    bk = _unlocked_bucket(bk)
    args = dict(bk["args"], mode="logical", verify="list", retention_count=5)
    ids = [module("fediflow.dr.pg_backup_verify", args)["backup_id"] for _attempt in range(2)]
    good = json.loads(bk["s3"].get_object(Bucket=bk["bucket"], Key="%s/%s/manifest.json" % (bk["prefix"], ids[0]))["Body"].read())
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = {
        # an empty id: a prefix deletion of "<prefix>/" + "" would take every backup with it
        "empty-id": dict(good, id=""),
        # a parent directory as id: retention would remove the ledger's parent
        "dot-dot": dict(good, id=".."),
        # another backup's id: its retention would delete that (good) backup
        "claims-another": dict(good, id=ids[1]),
        # a file path out of the download directory, an absolute one, and a file listed twice
        "escape": dict(good, id="escape", files=[dict(good["files"][0], path="../../../%s/evil" % outside)]),
        "absolute": dict(good, id="absolute", files=[dict(good["files"][0], path=str(outside / "evil"))]),
        "twice": dict(good, id="twice", files=[good["files"][0], copy.deepcopy(good["files"][0])]),
    }
    for name, manifest in hostile.items():
        _put_json(bk, "%s/%s/manifest.json" % (bk["prefix"], name), manifest)
        bk["s3"].put_object(Bucket=bk["bucket"], Key="%s/%s/%s" % (bk["prefix"], name, good["files"][0]["path"]),
                            Body=b"planted")
    # not JSON at all, and one far over the size bound
    bk["s3"].put_object(Bucket=bk["bucket"], Key="%s/garbage/manifest.json" % bk["prefix"], Body=b"\x00not json{")
    bk["s3"].put_object(Bucket=bk["bucket"], Key="%s/huge/manifest.json" % bk["prefix"], Body=b" " * (17 * 1024 * 1024))
    before = _keys(bk)

    # retention down to one backup: the older good backup goes, every hostile one is skipped and reported
    res = module("fediflow.dr.pg_backup_verify", dict(args, retention_count=1))
    assert res.get("failed") is not True, res.get("msg")
    skipped = " ".join(json.dumps(s) for s in res["skipped_manifests"])
    for name in list(hostile) + ["garbage", "huge"]:
        assert "/%s/manifest.json" % name in skipped, name
    assert any("could not be trusted" in w or "skipped" in w for w in res.get("warnings", [])), res.get("warnings")
    newest = res["backup_id"]  # the run takes its own backup first, then keeps one
    pruned = sorted(p["id"] for p in res["pruned"])
    assert pruned == sorted(ids), pruned  # the two older good backups, nothing else
    after = _keys(bk)
    gone = set(before) - set(after)
    assert gone and all(k.split("/")[2] in ids for k in gone), sorted(gone)
    for name in list(hostile) + [newest, "garbage", "huge"]:
        assert any(k.startswith("%s/%s/" % (bk["prefix"], name)) for k in after), name

    # asked for by id, a hostile backup is not in the ledger: refused before any download, nothing written
    empty = tmp_path / "empty-ledger"
    by_id = {k: v for k, v in args.items() if k != "retention_count"}
    for name in ("escape", "absolute", "twice"):
        res = module("fediflow.dr.pg_backup_verify", dict(by_id, dest=str(empty), backup_id=name))
        assert res.get("failed") and "not in the ledger" in res["msg"], res.get("msg")
    assert list(outside.iterdir()) == []
    assert not os.path.exists(str(empty)) or all(not n.startswith(".verify-") for n in os.listdir(str(empty)))
    # the good backup still verifies from S3 alone (the hostile neighbours block nothing)
    res = module("fediflow.dr.pg_backup_verify", dict(by_id, dest=str(empty), backup_id=newest))
    assert res.get("failed") is not True and res["verified"] is True, res.get("msg")


def _snapshot(repo_, tmp_path, files):
    src = tmp_path / "src"
    make_tree(src, files)
    res = repo_.run(state="present", src=str(src))
    assert res.get("failed") is not True, res.get("msg")
    return res["snapshot_id"], repo_.manifest(res["snapshot_id"])


def _plant_snapshot(repo_, snapshot_id, manifest):
    repo_.s3.put_object(Bucket=repo_.bucket, Key="%s/snapshots/%s.json" % (repo_.prefix, snapshot_id),
                        Body=json.dumps(manifest).encode())


def test_a_snapshot_restore_never_writes_through_a_symlink(repo, tmp_path):
    snapshot_id, manifest = _snapshot(repo, tmp_path, {"a/one.txt": b"one\n", "top.txt": b"top\n"})
    outside = tmp_path / "outside"
    outside.mkdir()

    # 1. the target holds a symlink where the snapshot has a directory: restoring with force replaces the link
    #    by the snapshot's directory, never follows it
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(outside), str(dest / "a"))
    res = repo.run(state="restored", snapshot_id=snapshot_id, dest=str(dest), force=True)
    assert res.get("failed") is not True, res.get("msg")
    assert list(outside.iterdir()) == []
    assert not os.path.islink(str(dest / "a")) and (dest / "a" / "one.txt").read_bytes() == b"one\n"

    # 2. a planted snapshot whose own symlink would lead a file out: refused before anything is written
    evil_id = snapshot_id[:-4] + "evil"
    planted = copy.deepcopy(manifest)
    planted["id"] = evil_id
    planted["dirs"] = [d for d in planted["dirs"] if d["path"] != "a"]
    planted["symlinks"] = [{"path": "a", "target": str(outside), "uid": 0, "gid": 0}]
    _plant_snapshot(repo, evil_id, planted)
    dest2 = tmp_path / "dest2"
    res = repo.run(state="restored", snapshot_id=evil_id, dest=str(dest2))
    assert res.get("failed") and "not a directory of the snapshot" in res["msg"], res.get("msg")
    assert list(outside.iterdir()) == [] and not dest2.exists()

    # 3. a file path that climbs out, planted with its object so only the path is wrong
    climb_id = snapshot_id[:-4] + "clmb"
    planted = copy.deepcopy(manifest)
    planted["id"] = climb_id
    planted["files"][0]["path"] = "../outside/evil.txt"
    _plant_snapshot(repo, climb_id, planted)
    res = repo.run(state="restored", snapshot_id=climb_id, dest=str(tmp_path / "dest3"))
    assert res.get("failed") and "refused" in res["msg"], res.get("msg")
    assert list(outside.iterdir()) == []

    # the good snapshot still restores
    res = repo.run(state="restored", snapshot_id=snapshot_id, dest=str(tmp_path / "good"))
    assert res.get("failed") is not True, res.get("msg")
    assert (tmp_path / "good" / "a" / "one.txt").read_bytes() == b"one\n"


def test_hostile_snapshot_ids_never_steer_retention(repo, tmp_path):
    first, manifest = _snapshot(repo, tmp_path, {"one.txt": b"one\n"})
    second, _manifest = _snapshot(repo, tmp_path, {"two.txt": b"two\n"})
    # '..' as a snapshot's name, one whose id is another's, and one that is not JSON
    _plant_snapshot(repo, "..", dict(manifest, id=".."))
    _plant_snapshot(repo, second[:-4] + "twin", dict(manifest, id=first))
    repo.s3.put_object(Bucket=repo.bucket, Key="%s/snapshots/%s.json" % (repo.prefix, second[:-4] + "junk"), Body=b"{{{")
    objects = repo.objects()
    res = repo.run(state="absent", keep_last=1)
    assert res.get("failed") is not True, res.get("msg")
    skipped = json.dumps(res.get("skipped_manifests", []))
    for name in ("/...json", second[:-4] + "twin", second[:-4] + "junk"):
        assert name in skipped, (name, skipped)
    assert any("not trusted" in w for w in res.get("warnings", []))
    # only the older good snapshot went; the malformed manifests stay (never a key to delete) and, as the objects
    # they might reference are unknown, garbage collection keeps every object
    keys = repo.keys("snapshots")
    assert "%s/snapshots/%s.json" % (repo.prefix, first) not in keys
    for name in ("..", second, second[:-4] + "twin", second[:-4] + "junk"):
        assert "%s/snapshots/%s.json" % (repo.prefix, name) in keys, name
    assert "malformed" in json.dumps(res), res
    assert repo.objects() == objects
