# -*- coding: utf-8 -*-
"""Retention is a pure function of the ledger: plain dicts in, removals out."""
from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import ledger

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.timezone.utc)


def _m(i, days_ago, ok=True, kind="logical"):
    stop = NOW - datetime.timedelta(days=days_ago)
    return {"id": "b%02d" % i, "kind": kind, "stop_time": ledger.iso(stop), "verification": {"ok": ok}}


def ids(plan):
    return sorted(i for i, _reason in plan)


def test_no_policy_removes_nothing():
    assert ledger.plan_retention([_m(1, 40)], NOW) == []


def test_count_keeps_the_newest_n():
    ms = [_m(i, i) for i in range(5)]
    assert ids(ledger.plan_retention(ms, NOW, retention_count=2)) == ["b02", "b03", "b04"]


def test_days_removes_only_older_ones():
    ms = [_m(i, d) for i, d in enumerate((0, 10, 31, 45))]
    assert ids(ledger.plan_retention(ms, NOW, retention_days=30)) == ["b02", "b03"]


def test_both_policies_must_agree():
    ms = [_m(i, d) for i, d in enumerate((0, 1, 2, 40))]
    # count says remove b02, b03; age says remove only b03
    assert ids(ledger.plan_retention(ms, NOW, retention_count=2, retention_days=30)) == ["b03"]


def test_newest_verified_survives_failed_newer_backups():
    ms = [_m(0, 0, ok=False), _m(1, 1, ok=False), _m(2, 2, ok=True), _m(3, 3, ok=True)]
    plan = ledger.plan_retention(ms, NOW, retention_count=1)
    assert "b02" not in ids(plan)  # newest verified is never removed
    assert ids(plan) == ["b01", "b03"]  # failures beyond the newest retention_count go too


def test_failures_newer_than_the_last_good_backup_cannot_fill_the_disk():
    ms = [_m(i, i, ok=False) for i in range(5)] + [_m(9, 9, ok=True)]
    plan = ids(ledger.plan_retention(ms, NOW, retention_count=2))
    assert "b09" not in plan  # the newest verified stays
    assert plan == ["b02", "b03", "b04"]  # only the newest 2 failures are kept


def test_nothing_verified_means_nothing_removed():
    ms = [_m(i, 50 + i, ok=False) for i in range(4)]
    assert ledger.plan_retention(ms, NOW, retention_count=1, retention_days=1) == []


def test_other_kinds_are_untouched():
    ms = [_m(0, 0), _m(1, 1), _m(2, 2, kind="physical"), _m(3, 3, kind="physical")]
    assert ids(ledger.plan_retention(ms, NOW, retention_count=1, kind="logical")) == ["b01"]


def test_order_comes_from_the_ledger_not_the_id():
    a = dict(_m(0, 5), id="zzz-old")
    b = dict(_m(1, 0), id="aaa-new")
    assert ids(ledger.plan_retention([a, b], NOW, retention_count=1)) == ["zzz-old"]


def test_manifest_written_last_and_atomic(tmp_path):
    bdir = tmp_path / "b1"
    bdir.mkdir()
    (bdir / "db.dump").write_bytes(b"abc")
    entries = ledger.file_entries(str(bdir))
    assert entries == [{"path": "db.dump", "size": 3,
                        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}]
    assert ledger.list_local(str(tmp_path)) == []  # no manifest, no backup
    ledger.write_manifest(str(bdir), {"id": "b1", "files": entries})
    assert [m["id"] for m in ledger.list_local(str(tmp_path))] == ["b1"]
    assert oct(os.stat(str(bdir / "manifest.json")).st_mode & 0o777) == "0o600"
    assert not [n for n in os.listdir(str(bdir)) if n.startswith(".tmp-")]
    ledger.remove_local(str(tmp_path), "b1")
    assert ledger.list_local(str(tmp_path)) == [] and not bdir.exists()


def test_new_ids_sort_by_time_and_are_unique():
    a = ledger.new_backup_id("logical", NOW)
    b = ledger.new_backup_id("logical", NOW + datetime.timedelta(seconds=1))
    assert a < b and a.startswith("20261125T120000Z-logical-")
    assert ledger.new_backup_id("logical", NOW) != a


def test_corrupt_manifest_is_reported(tmp_path):
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(Exception, match="not valid JSON"):
        ledger.read_manifest(str(tmp_path))


def _holder(dest, name):
    """A real process that holds a work directory (as a running backup does) until it is killed; returns once
    the directory exists (the child says so on stdout: no sleep)."""
    import subprocess
    import sys
    code = ("import sys\nfrom ansible_collections.fediflow.dr.plugins.module_utils import ledger\n"
            "w = ledger.WorkDir(sys.argv[1], sys.argv[2]).__enter__()\nprint('held', flush=True)\nsys.stdin.read()\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code, dest, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_leftover_held_by_a_live_run_is_kept_whatever_its_age_a_dead_ones_goes(tmp_path):
    """Liveness is the lock the run holds, not the age: a backup running for 3 h is not removed under it; once
    its process is gone (killed: no clean-up ran) the next run removes the directory and its lock."""
    import signal
    dest = str(tmp_path)
    proc = _holder(dest, ".partial-live")
    try:
        live = tmp_path / ".partial-live"
        (live / "base.tar").write_bytes(b"x" * 100)
        os.utime(str(live), (0, 0))  # three hours, three years: the age says nothing
        dead = tmp_path / ".verify-dead"  # a run killed before the locks existed, or whose lock went with it
        dead.mkdir()
        kept = tmp_path / "20261125T000000Z-logical-abc"
        kept.mkdir()
        os.utime(str(kept), (0, 0))
        assert ledger.clean_leftovers(dest) == [".verify-dead"]
        assert sorted(os.listdir(dest)) == [".lock-.partial-live", ".partial-live", "20261125T000000Z-logical-abc"]
        assert (live / "base.tar").read_bytes() == b"x" * 100
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert ledger.clean_leftovers(dest) == [".partial-live"]
    assert sorted(os.listdir(dest)) == ["20261125T000000Z-logical-abc"]


def test_work_dir_is_removed_with_its_lock_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with ledger.WorkDir(str(tmp_path), ".partial-x") as held:
            (tmp_path / ".partial-x" / "f").write_text("half")
            assert held.path == str(tmp_path / ".partial-x")
            raise RuntimeError("killed mid-run")
    assert os.listdir(str(tmp_path)) == []
    with pytest.raises(Exception, match="not a work directory"):
        ledger.WorkDir(str(tmp_path), "../x")


def test_publish_makes_the_backup_visible_with_its_files(tmp_path):
    work = tmp_path / ".partial-b"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "data").write_bytes(b"d")
    ledger.publish(str(work), str(tmp_path / "b"), {"id": "b", "files": []})
    assert ledger.read_manifest(str(tmp_path / "b"))["id"] == "b"
    assert (tmp_path / "b" / "sub" / "data").read_bytes() == b"d" and not work.exists()


def test_work_dir_makes_its_dest(tmp_path):
    """A verify host verifies a backup it never held: its dest does not exist before the first verification."""
    dest = tmp_path / "verify" / "dest"
    with ledger.WorkDir(str(dest), ".verify-x") as held:
        assert os.path.isdir(held.path) and os.path.isfile(held.lock_path)
        assert oct(os.stat(str(dest)).st_mode & 0o777) == oct(0o700)
    assert os.listdir(str(dest)) == []
