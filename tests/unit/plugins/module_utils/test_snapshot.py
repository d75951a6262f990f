# -*- coding: utf-8 -*-
"""s3_snapshot planning as plain data: input checks, change detection, manifest diffs,
retention and garbage collection. The S3 side is proven by the integration tier."""
from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import snapshot
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _p(tmp_path, **kw):
    p = {"state": "present", "s3_bucket": "b", "s3_prefix": "media", "src": str(tmp_path), "parallel": 4,
         "multipart_threshold_mb": 64, "exclude": [], "s3_sse": "AES256"}
    p.update(kw)
    return p


@pytest.mark.parametrize("change, message", [
    ({"state": "paused"}, "state must be one of present, restored, absent, verified"),
    ({"s3_bucket": ""}, "s3_bucket or repositories is required"),
    ({"s3_prefix": "a/../b"}, "s3_prefix 'a/../b' must not hold"),
    ({"parallel": 0}, "parallel must be between 1 and 64, got 0"),
    ({"multipart_threshold_mb": 4}, "multipart_threshold_mb must be at least 5"),
    ({"state": "absent", "keep_last": 0}, "keep_last must be at least 1, got 0"),
    ({"state": "absent", "keep_daily": -1}, "keep_daily must be at least 1"),
    ({"state": "absent", "keep_within": "7 days"}, "keep_within must be a duration such as 7d"),
    ({"state": "absent", "keep_within": "0h"}, "keep_within must be longer than 0"),
    ({"state": "restored", "dest": "/x", "before": "yesterday"}, "before must be an ISO 8601 timestamp"),
    ({"state": "restored", "dest": "/x", "before": "2026-11-25T10:00:00"}, "has no time zone"),
    ({"state": "restored", "dest": "/x", "snapshot_id": "../etc"}, "is not a snapshot id"),
    ({"state": "restored", "dest": "/x", "snapshot_id": "latest", "before": "2026-11-25T10:00:00Z"},
     "mutually exclusive"),
    ({"state": "restored", "dest": "relative"}, "dest must be an absolute directory path"),
    ({"state": "absent"}, "state=absent needs snapshot_id or a retention option"),
    ({"state": "absent", "snapshot_id": "latest"}, "exact snapshot_id"),
    ({"s3_kms_key_id": "alias/x"}, "s3_kms_key_id needs s3_sse: aws:kms"),
    ({"src": None}, "src is required with state=present"),
    ({"src": "relative/dir"}, "src must be an absolute path"),
    ({"src": "/nonexistent/media"}, "src '/nonexistent/media' does not exist"),
    ({"snapshot_id": "abc"}, "state=present takes a new one"),
])
def test_validate_refuses_bad_input_naming_the_option(tmp_path, change, message):
    with pytest.raises(FediflowError, match=message):
        snapshot.validate(_p(tmp_path, **change))


def test_validate_src_must_be_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FediflowError, match="is not a directory"):
        snapshot.validate(_p(tmp_path, src=str(tmp_path / "f")))


def test_validate_normalizes(tmp_path):
    p = snapshot.validate(_p(tmp_path, s3_prefix="/media/", state="absent", keep_within="1w2d",
                             parallel=None, src=None))
    assert p["s3_prefix"] == "media" and p["parallel"] == 4 and p["retention"]
    assert p["keep_within_td"] == datetime.timedelta(days=9)
    p = snapshot.validate(_p(tmp_path, state="restored", dest="/x", before="2026-11-25T15:30:00+01:00"))
    assert p["before_dt"] == datetime.datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize("text, seconds", [("7d", 7 * 86400), ("12h", 43200), ("90m", 5400), ("1w2d3h", 788400)])
def test_parse_duration(text, seconds):
    assert snapshot.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("rel, patterns, hit", [
    ("a/b/x.tmp", ["*.tmp"], True),          # a name pattern matches at any depth
    ("a/cache", ["cache"], True),
    ("a/cache", ["/cache"], False),          # anchored at the root
    ("cache", ["/cache"], True),
    ("tmp/x.part", ["tmp/*.part"], True),
    ("a/tmp/x.part", ["tmp/*.part"], False),
    ("photo.jpg", ["*.tmp", "*.part"], False),
])
def test_excluded(rel, patterns, hit):
    assert snapshot.excluded(rel, patterns) is hit


SCAN = 1_000_000_000_000  # when the previous scan started (ns)
PREV = {"sha256": "ab" * 32, "size": 10, "mtime_ns": SCAN - 10**10, "ctime_ns": SCAN - 10**10 + 123, "ino": 7}


@pytest.mark.parametrize("change, expected", [
    ({}, False),
    ({"size": 11}, True),
    ({"mtime_ns": SCAN - 1}, True),
    ({"ctime_ns": SCAN + 5}, True),   # content edited, size and mtime put back with utime
    ({"ino": 8}, True),               # replaced by another file (rename over it)
])
def test_needs_hash_uses_size_mtime_ctime_inode(change, expected):
    current = {k: PREV[k] for k in ("size", "mtime_ns", "ctime_ns", "ino")}
    current.update(change)
    assert snapshot.needs_hash(current, PREV, SCAN) is expected


def test_needs_hash_force_new_and_racy():
    same = dict(PREV)
    assert snapshot.needs_hash(same, PREV, SCAN, force_hash=True)
    assert snapshot.needs_hash(same, None, SCAN)
    assert snapshot.needs_hash(same, PREV, None)
    racy = dict(PREV, ctime_ns=SCAN - 50_000_000)   # changed 50 ms before the scan read it
    assert snapshot.needs_hash(dict(racy), racy, SCAN)
    coarse = dict(PREV, ctime_ns=SCAN - 1_000_000_000, mtime_ns=SCAN - 10**9)  # whole-second filesystem
    assert snapshot.is_racy(coarse, SCAN - SCAN % 10**9 + 10**9)
    assert not snapshot.is_racy(dict(PREV, ctime_ns=SCAN - 500_000_001), SCAN)


def _f(path, sha="aa", size=1, mode="0644", mtime=5, uid=0):
    return {"path": path, "sha256": sha * 32, "size": size, "mode": mode, "mtime_ns": mtime, "uid": uid, "gid": 0,
            "ctime_ns": 9, "ino": 1}


def _m(files=(), dirs=(), links=()):
    return {"files": list(files), "dirs": [{"path": ".", "mode": "0755", "mtime_ns": 1}] + list(dirs),
            "symlinks": list(links)}


def test_diff_manifests_added_changed_removed():
    old = _m([_f("a"), _f("b"), _f("c"), _f("d")], links=[{"path": "l", "target": "a"}])
    new = _m([_f("a", sha="bb"), _f("b", mode="0600"), _f("c"), _f("e")],
             dirs=[{"path": "empty", "mode": "0755", "mtime_ns": 3}], links=[{"path": "l", "target": "b"}])
    assert snapshot.diff_manifests(old, new) == {"added": ["e", "empty/"], "changed": ["a", "b", "l"],
                                                 "removed": ["d"]}
    assert snapshot.diff_manifests(None, _m([_f("a")]))["added"] == ["./", "a"]


def test_diff_ignores_stat_only_fields_and_directory_mtimes():
    old = _m([_f("a")], dirs=[{"path": "d", "mode": "0755", "mtime_ns": 1}])
    new = _m([dict(_f("a"), ctime_ns=1234, ino=99)], dirs=[{"path": "d", "mode": "0755", "mtime_ns": 2}])
    assert not any(snapshot.diff_manifests(old, new).values())


def test_diff_text_is_capped():
    changes = {"added": ["x%d" % i for i in range(5)], "changed": ["y"], "removed": ["z"]}
    assert snapshot.diff_text(changes) == "".join("+ x%d\n" % i for i in range(5)) + "~ y\n- z\n"
    assert snapshot.diff_text(changes, limit=2).endswith("... and 5 more\n")


def test_totals_count_duplicates_once():
    t = snapshot.totals([_f("a", size=3), _f("b", size=3), _f("c", sha="cc", size=4)])
    assert t == {"files": 3, "bytes": 10, "unique_objects": 2, "unique_bytes": 7}


def _snaps(*hours_ago):
    return [{"id": "s%02d" % i, "time": NOW - datetime.timedelta(hours=h)} for i, h in enumerate(hours_ago)]


def test_retention_without_policy_keeps_everything():
    keep, remove = snapshot.plan_retention(_snaps(1, 2, 3))
    assert remove == [] and set(keep) == {"s00", "s01", "s02"}


def test_keep_last():
    keep, remove = snapshot.plan_retention(_snaps(0, 1, 2, 3), keep_last=2)
    assert remove == ["s02", "s03"] and keep["s00"] == ["last 2"]


def test_keep_within_counts_from_the_newest_snapshot_not_now():
    snaps = _snaps(100, 110, 130, 200)                         # backups stopped 100 h ago
    keep, remove = snapshot.plan_retention(snaps, keep_within=datetime.timedelta(hours=12))
    assert sorted(keep) == ["s00", "s01"] and remove == ["s02", "s03"]


def test_keep_hourly_keeps_the_newest_of_each_of_the_last_n_hours_that_have_one():
    base = datetime.datetime(2026, 11, 25, 12, 50, tzinfo=UTC)
    minutes = [0, 20, 40, 70, 200, 600]   # 12:50 12:30 12:10 | 11:40 | 09:30 | 02:50
    snaps = [{"id": "s%d" % i, "time": base - datetime.timedelta(minutes=m)} for i, m in enumerate(minutes)]
    keep, remove = snapshot.plan_retention(snaps, keep_hourly=3)
    assert sorted(keep) == ["s0", "s3", "s4"]            # the gap between 09:xx and 11:xx does not count
    assert remove == ["s1", "s2", "s5"]
    assert keep["s3"] == ["hourly 2026-11-25 11:00"]


def test_keep_daily_and_weekly_union_with_last():
    snaps = [{"id": "d%02d" % d, "time": NOW - datetime.timedelta(days=d)} for d in range(0, 30)]
    keep, remove = snapshot.plan_retention(snaps, keep_last=1, keep_daily=3, keep_weekly=3)
    # daily: 25, 24, 23 Nov; weekly: newest of W48 (25th), W47 (22nd), W46 (15th)
    assert sorted(keep) == ["d00", "d01", "d02", "d03", "d10"]
    assert "d04" in remove and len(remove) == 25
    assert keep["d00"] == ["last 1", "daily 2026-11-25", "weekly 2026-W48"]


def test_newest_is_always_kept_and_order_comes_from_time_not_id():
    snaps = [{"id": "zzz-old", "time": NOW - datetime.timedelta(days=3)}, {"id": "aaa-new", "time": NOW}]
    keep, remove = snapshot.plan_retention(snaps, keep_last=1)
    assert list(keep) == ["aaa-new"] and remove == ["zzz-old"]


def test_before_candidates_from_ids_newest_first():
    ids = ["20261125T100000Z-snapshot-aaaaaa", "20261125T110000Z-snapshot-bbbbbb",
           "20261125T120000Z-snapshot-cccccc", "odd-id"]
    before = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert snapshot.before_candidates(ids, before) == ids[1::-1]
    assert snapshot.id_time(ids[0]) == datetime.datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_garbage_is_what_no_kept_manifest_references():
    kept = [{"files": [_f("a", sha="aa"), _f("b", sha="bb")]}, {"files": [_f("c", sha="bb")]}]
    assert snapshot.unreferenced({"aa" * 32: 1, "bb" * 32: 1, "cc" * 32: 1}, kept) == ["cc" * 32]


def test_lock_staleness():
    def alive(pid):
        return pid == 1

    fresh = {"host": "h", "pid": 1, "time": "2026-11-25T11:00:00.000000Z"}
    assert not snapshot.lock_is_stale(fresh, NOW, "h", alive)
    assert snapshot.lock_is_stale(dict(fresh, pid=2), NOW, "h", alive)          # its process is gone
    assert not snapshot.lock_is_stale(dict(fresh, pid=2), NOW, "other", alive)  # another host: by age
    assert snapshot.lock_is_stale(dict(fresh, host="other", time="2026-11-23T11:00:00Z"), NOW, "h", alive)


def test_scan_tree_records_files_dirs_symlinks_and_skips_specials(tmp_path):
    (tmp_path / "a" / "empty").mkdir(parents=True)
    (tmp_path / "a" / "x.txt").write_bytes(b"abc")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "big").write_bytes(b"zzz")
    (tmp_path / "y.tmp").write_bytes(b"")
    os.symlink("a/x.txt", str(tmp_path / "link"))
    os.mkfifo(str(tmp_path / "pipe"))
    os.chmod(str(tmp_path / "a" / "x.txt"), 0o640)
    files, dirs, links, skipped = snapshot.scan_tree(str(tmp_path), ["/cache", "*.tmp"])
    assert [f["path"] for f in files] == ["a/x.txt"]
    assert files[0]["size"] == 3 and files[0]["mode"] == "0640" and files[0]["ino"] > 0
    assert [d["path"] for d in dirs] == [".", "a", "a/empty"]
    assert links == [{"path": "link", "target": "a/x.txt", "uid": os.getuid(), "gid": os.getgid()}]
    assert skipped == [{"path": "pipe", "type": "fifo"}]


def test_parallel_map_raises_the_first_failure_in_order():
    def work(item):
        if item in (3, 5):
            raise FediflowError("bad %d" % item)
        return item * 2

    assert snapshot.parallel_map(work, [1, 2], 2) == [2, 4]
    with pytest.raises(FediflowError, match="bad 3"):
        snapshot.parallel_map(work, list(range(10)), 1)
