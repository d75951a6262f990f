# -*- coding: utf-8 -*-
"""WAL expiry's planning as plain data (the bound from the ledgers, each repository's plan), and the run
against directory repositories, one of them down. The S3 deletion round trip runs against the lab's moto in
tests/integration/test_wal_expire.py."""
from __future__ import annotations

import datetime
import json
import os

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import ledger, walarchive, walexpire
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

SEG = 16 * 1024 * 1024
NOW = 1_800_000_000.0
DAY = 86400.0


def seg(tli, segno):
    return "%08X%08X%08X" % (tli, segno // 256, segno % 256)


def lsn(segno, offset=0x28):
    value = segno * SEG + offset
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def backup(bid, start_segno, tli=1, ok=True, kind="physical", stop_days_ago=1.0, cluster="pg-us-east-1"):
    return {"id": bid, "kind": kind, "start_lsn": lsn(start_segno), "stop_lsn": lsn(start_segno + 1, 0x100),
            "source": {"timeline": tli}, "verification": {"ok": ok}, "cluster": cluster,
            "stop_time": ledger.iso(datetime.datetime.fromtimestamp(NOW - stop_days_ago * DAY, datetime.timezone.utc))}


def listing(names, age_days=10.0, size=SEG):
    return [(name, NOW - age_days * DAY, size if not name.endswith((".history", ".backup")) else 100)
            for name in names]


# --------------------------------------------------------------------------- the bound

def test_bound_is_the_start_of_the_oldest_verified_physical_backup():
    manifests = [backup("new", 0x30), backup("old", 0x10), backup("older-unverified", 0x05, ok=False),
                 backup("logical", 0x01, kind="logical")]
    bound, reason = walexpire.expiry_bound(manifests)
    assert reason is None and bound["backup_id"] == "old" and bound["segno"] == 0x10
    assert bound["segment"] == seg(1, 0x10) and bound["start_lsn"] == "0/10000028" and bound["verified_backups"] == 2
    assert walexpire.backup_label_name(1, 0x10 * SEG + 0x28) in bound["labels"]


def test_no_verified_physical_backup_means_nothing_expires():
    bound, reason = walexpire.expiry_bound([backup("a", 0x10, ok=False), backup("l", 0x20, kind="logical")])
    assert bound is None and "0 verified physical backups" in reason
    assert walexpire.expiry_bound([])[0] is None
    plan = walexpire.plan_repository(listing([seg(1, i) for i in range(5)]), None, NOW)
    assert plan["remove"] == [] and plan["after"] == plan["before"]


def test_min_verified_backups_and_margin():
    manifests = [backup("a", 0x10), backup("b", 0x20)]
    assert walexpire.expiry_bound(manifests, min_verified_backups=3)[0] is None
    bound, _reason = walexpire.expiry_bound(manifests, min_verified_backups=2, margin_segments=3)
    assert bound["segno"] == 0x0D and bound["start_segment"] == seg(1, 0x10)
    assert walexpire.expiry_bound([backup("a", 2)], margin_segments=9)[0]["segno"] == 0


def test_an_unreadable_start_lsn_of_a_verified_backup_refuses_to_guess():
    broken = backup("broken", 0x10)
    broken["start_lsn"] = None
    bound, reason = walexpire.expiry_bound([backup("a", 0x20), broken])
    assert bound is None and "broken has no readable start_lsn" in reason


def test_backup_clusters_filter():
    manifests = [backup("ours", 0x20), backup("theirs", 0x02, cluster="scratch")]
    assert walexpire.expiry_bound(manifests)[0]["backup_id"] == "theirs"  # every cluster: the safe default
    assert walexpire.expiry_bound(manifests, clusters=["pg-us-east-1"])[0]["backup_id"] == "ours"


# --------------------------------------------------------------------------- one repository

def test_only_files_before_the_bound_go_history_and_labels_stay():
    bound, _reason = walexpire.expiry_bound([backup("b", 0x10)])
    names = [seg(1, i) for i in range(0x0C, 0x13)] + [
        "00000001.history", seg(1, 0x0E) + ".partial", seg(1, 0x0D) + ".00000028.backup",
        walexpire.backup_label_name(1, 0x10 * SEG + 0x28), "README", ".tmp-x"]
    plan = walexpire.plan_repository(listing(names), bound, NOW)
    assert plan["remove"] == [seg(1, 0x0C), seg(1, 0x0D), seg(1, 0x0D) + ".00000028.backup", seg(1, 0x0E),
                              seg(1, 0x0E) + ".partial", seg(1, 0x0F)]
    assert plan["oldest_kept_segment"] == seg(1, 0x10)
    assert plan["before"]["segments"] == 7 and plan["after"]["segments"] == 3
    assert plan["before"]["files"] == 11 and plan["after"]["files"] == 5  # README and temp files not counted
    assert plan["removed_bytes"] == 4 * SEG + SEG + 100


def test_timelines_compare_by_position_not_by_name():
    """A backup on timeline 2 (promoted at segment 0x18): timeline 1's WAL after the fork sorts before every
    timeline 2 name but is not older than the backup; timeline 2's first segments are."""
    bound, _reason = walexpire.expiry_bound([backup("tl2", 0x20, tli=2)])
    tl1 = [seg(1, i) for i in range(0x10, 0x26)]  # the old primary went on to 0x25
    tl2 = [seg(2, i) for i in range(0x18, 0x28)]
    plan = walexpire.plan_repository(listing(tl1 + tl2 + ["00000002.history"]), bound, NOW)
    gone = set(plan["remove"])
    assert gone == {seg(1, i) for i in range(0x10, 0x20)} | {seg(2, i) for i in range(0x18, 0x20)}
    assert seg(1, 0x20) not in gone and seg(1, 0x25) not in gone  # a name comparison would remove these
    assert "00000002.history" not in gone
    assert plan["oldest_kept_segment"] == seg(1, 0x20)


def test_a_backup_on_timeline_1_keeps_timeline_2_from_its_start():
    bound, _reason = walexpire.expiry_bound([backup("tl1", 0x10, tli=1), backup("tl2", 0x30, tli=2)])
    names = [seg(1, i) for i in range(0x08, 0x20)] + [seg(2, i) for i in range(0x1F, 0x32)]
    plan = walexpire.plan_repository(listing(names), bound, NOW)
    assert set(plan["remove"]) == {seg(1, i) for i in range(0x08, 0x10)}


def test_keep_days_keeps_recent_files_before_the_bound():
    bound, _reason = walexpire.expiry_bound([backup("b", 0x10)])
    old = listing([seg(1, i) for i in range(0x08, 0x0C)], age_days=3)
    recent = listing([seg(1, i) for i in range(0x0C, 0x12)], age_days=0.5)
    plan = walexpire.plan_repository(old + recent, bound, NOW, keep_days=1)
    assert plan["remove"] == [seg(1, i) for i in range(0x08, 0x0C)] and plan["kept_in_window"] == 4
    assert walexpire.plan_repository(old + recent, bound, NOW, keep_days=5)["remove"] == []
    assert len(walexpire.plan_repository(old + recent, bound, NOW, keep_days=0)["remove"]) == 8


def test_second_plan_after_the_first_removes_nothing():
    bound, _reason = walexpire.expiry_bound([backup("b", 0x10)])
    entries = listing([seg(1, i) for i in range(0x20)])
    plan = walexpire.plan_repository(entries, bound, NOW)
    rest = [e for e in entries if e[0] not in set(plan["remove"])]
    assert walexpire.plan_repository(rest, bound, NOW)["remove"] == []


def test_segment_size_is_honoured_and_impossible_names_are_refused():
    size = 64 * 1024 * 1024  # 64 segments a log file
    bound, _reason = walexpire.expiry_bound([backup("b", 0)], segment_size=size)
    assert bound["segno"] == 0
    per64 = ["%08X%08X%08X" % (1, 0, i) for i in range(3)] + ["%08X%08X%08X" % (1, 1, 0)]
    manifest = {"id": "x", "kind": "physical", "start_lsn": "1/28", "verification": {"ok": True}}
    bound, _reason = walexpire.expiry_bound([manifest], segment_size=size)
    assert bound["segno"] == 64
    assert walexpire.plan_repository(listing(per64), bound, NOW, segment_size=size)["remove"] == per64[:3]
    with pytest.raises(FediflowError, match="cannot exist with wal_segment_size"):
        walexpire.plan_repository(listing([seg(1, 0x80)]), bound, NOW, segment_size=size)
    with pytest.raises(FediflowError, match="power of two"):
        walexpire.check_segment_size(3000000)


# --------------------------------------------------------------------------- input and the run (dir repositories)

def _setup(tmp_path, make=("us-east-1", "eu-west-1"), segments=range(0x08, 0x14)):
    repos = []
    for name in ("us-east-1", "eu-west-1"):
        path = tmp_path / ("repo-" + name)
        if name in make:
            path.mkdir()
            for i in segments:
                (path / seg(1, i)).write_bytes(b"w" * 1000)
            (path / "00000001.history").write_text("")
        repos.append({"name": name, "backend": "dir", "repo": str(path)})
    cfg = tmp_path / "wal.json"
    cfg.write_text(json.dumps({"repositories": repos}))
    led = tmp_path / "ledger"
    for manifest in (backup("20261201-physical-a", 0x0C), backup("20261202-physical-b", 0x10)):
        (led / manifest["id"]).mkdir(parents=True)
        (led / manifest["id"] / "manifest.json").write_text(json.dumps(manifest))
    return {"wal_config": str(cfg), "ledgers": [{"path": str(led)}], "keep_days": 0}, repos


def test_run_expires_each_repository_then_changes_nothing(tmp_path):
    params, repos = _setup(tmp_path)
    check = walexpire.expire(dict(params), check_mode=True, now=NOW)
    assert check["changed"] is True and check["removed"] == 8 and len(os.listdir(repos[0]["repo"])) == 13
    assert "us-east-1: 12 segments" in check["diff"]["before"] and "us-east-1: 8 segments" in check["diff"]["after"]
    res = walexpire.expire(dict(params), now=NOW)
    assert res["changed"] is True and res["removed"] == 8 and res["degraded"] is False
    assert res["bound"]["backup_id"] == "20261201-physical-a" and res["bound"]["segment"] == seg(1, 0x0C)
    for repo, out in zip(repos, res["repositories"]):
        assert sorted(os.listdir(repo["repo"])) == ["00000001.history"] + [seg(1, i) for i in range(0x0C, 0x14)]
        assert out["before"] == {"segments": 12, "files": 13, "bytes": 12000} and out["removed"] == 4
        assert out["after"]["segments"] == 8 and out["oldest_kept_segment"] == seg(1, 0x0C)
    again = walexpire.expire(dict(params), now=NOW)
    assert again["changed"] is False and again["removed"] == 0


def test_a_repository_that_is_down_is_reported_and_the_other_expired(tmp_path):
    params, repos = _setup(tmp_path, make=("eu-west-1",))
    warnings = []
    res = walexpire.expire(dict(params), now=NOW, warn=warnings.append)
    assert res["degraded"] is True and res["not_answered"] == ["us-east-1"] and res["removed"] == 4
    down, up = res["repositories"]
    assert down["answered"] is False and down["error"] and up["removed"] == 4
    assert len(os.listdir(repos[1]["repo"])) == 9 and any("us-east-1" in w for w in warnings)


def test_no_repository_answering_fails(tmp_path):
    params, _repos = _setup(tmp_path, make=())
    with pytest.raises(FediflowError, match="no repository of the WAL archive answered"):
        walexpire.expire(dict(params), now=NOW)


@pytest.mark.parametrize("change, message", [
    ({"wal_config": None}, "exactly one of wal_config"),
    ({"wal_config": "relative.json"}, "wal_config must be an absolute path"),
    ({"ledgers": []}, "ledgers must name at least one"),
    ({"ledgers": [{"path": "/x", "s3_prefix": "p"}]}, "ledgers[0] needs exactly one of path and s3_prefix"),
    ({"ledgers": [{"path": "rel"}]}, "ledgers[0].path must be an absolute path"),
    ({"ledgers": [{"s3_prefix": "postgres/us-east-1/physical"}]}, "has none"),
    ({"keep_days": -1}, "keep_days must be >= 0"),
    ({"margin_segments": -2}, "margin_segments must be >= 0"),
    ({"min_verified_backups": 0}, "min_verified_backups must be >= 1"),
    ({"wal_segment_size": 1000}, "wal_segment_size must be a power of two"),
])
def test_bad_input_is_refused_naming_the_option_before_anything_is_touched(tmp_path, change, message):
    params, repos = _setup(tmp_path)
    params.update(change)
    with pytest.raises(FediflowError) as err:
        walexpire.expire(params, now=NOW)
    assert message in str(err.value)
    assert len(os.listdir(repos[0]["repo"])) == 13


def test_a_malformed_manifest_in_a_ledger_stops_expiry_and_is_reported(tmp_path):
    """An untrusted manifest may be a backup that needs old WAL: nothing expires, the reason names it."""
    params, repos = _setup(tmp_path)
    bad = tmp_path / "ledger" / "20261130-physical-z"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({"id": "../../etc", "kind": "physical"}))
    warnings = []
    res = walexpire.expire(dict(params), now=NOW, warn=warnings.append)
    assert res["removed"] == 0 and res["changed"] is False and res["bound"] is None
    assert len(res["skipped_manifests"]) == 1 and "20261130-physical-z" in res["skipped_manifests"][0]["where"]
    assert "could not be trusted" in res["reason"] and "20261130-physical-z" in res["reason"]
    assert any("malformed manifest skipped" in w for w in warnings)
    for repo in repos:
        assert len(os.listdir(repo["repo"])) == 13


def test_a_ledger_that_cannot_be_read_removes_nothing(tmp_path):
    params, repos = _setup(tmp_path)
    params["ledgers"].append({"path": str(tmp_path / "missing")})
    with pytest.raises(FediflowError, match="missing does not exist"):
        walexpire.expire(params, now=NOW)
    assert len(os.listdir(repos[0]["repo"])) == 13


def test_dir_backend_deletion_is_idempotent_and_refuses_non_wal_names(tmp_path):
    (tmp_path / seg(1, 1)).write_bytes(b"x")
    archive = walarchive.DirArchive(str(tmp_path))
    assert archive.delete([seg(1, 1), seg(1, 2)]) == {"deleted": [seg(1, 1), seg(1, 2)], "errors": []}
    with pytest.raises(walarchive.ArchiveError, match="not a WAL file name"):
        archive.delete(["../etc/passwd"])


DELETE_ERRORS = b"""<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Error><Key>wal/us-east-1/000000010000000000000003</Key><Code>AccessDenied</Code><Message>Access  Denied</Message></Error>
</DeleteResult>"""


def test_s3_delete_request_and_answer():
    body = walarchive.delete_request_body(["wal/a&b/000000010000000000000003"]).decode()
    assert "<Quiet>true</Quiet>" in body and "<Key>wal/a&amp;b/000000010000000000000003</Key>" in body
    assert walarchive.parse_delete_errors(DELETE_ERRORS, "wal/us-east-1/") == [
        ("000000010000000000000003", "AccessDenied: Access Denied")]
    assert walarchive.parse_delete_errors(b"<DeleteResult/>", "p/") == []
