# -*- coding: utf-8 -*-
"""Backup repositories: the list read from the options, how many copies make a backup complete, what a
module reports about its copies, and retention per location (plain data; the real S3 copies are tested
on the lab in tests/integration/test_backup_copies.py)."""
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import repos
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

TWO = [{"name": "us-east-1", "bucket": "b1", "region": "us-east-1", "endpoint_url": "http://e1"},
       {"name": "eu-west-1", "bucket": "b2", "prefix": "base", "region": "eu-west-1"}]


def test_the_list_keeps_its_order_and_joins_each_prefix_with_the_kind():
    got = repos.normalize({"repositories": TWO, "s3_prefix": "/postgres/us-east-1/logical/", "endpoint_url": "http://d"})
    assert [r["name"] for r in got] == ["us-east-1", "eu-west-1"]
    assert got[0]["prefix"] == "postgres/us-east-1/logical" and got[1]["prefix"] == "base/postgres/us-east-1/logical"
    assert got[0]["endpoint_url"] == "http://e1" and got[1]["endpoint_url"] == "http://d"   # the module's as default


def test_the_one_bucket_option_is_a_list_of_one_and_none_is_local_only():
    one = repos.normalize({"s3_bucket": "b", "s3_prefix": "p", "region": "r", "endpoint_url": None})
    assert one == [{"name": "s3", "bucket": "b", "prefix": "p", "region": "r", "endpoint_url": None}]
    assert repos.normalize({}) == []


@pytest.mark.parametrize("p, message", [
    ({"repositories": TWO, "s3_bucket": "b"}, "mutually exclusive"),
    ({"repositories": [{"name": "a b", "bucket": "x"}]}, r"repositories\[0\].name 'a b'"),
    ({"repositories": [{"name": "local", "bucket": "x"}]}, "not 'local'"),
    ({"repositories": [{"name": "a", "bucket": "x"}, {"name": "a", "bucket": "y"}]}, "'a' is given twice"),
    ({"repositories": [{"name": "a"}]}, r"repositories\[0\] \(a\): bucket is required"),
    ({"repositories": [{"name": "a", "bucket": "x"}, {"name": "b", "bucket": "x"}]}, "same bucket and prefix"),
    ({"repositories": [{"name": "a", "bucket": "x", "prefix": "../up"}]}, r"repositories\[0\].prefix"),
    ({"s3_bucket": "x", "s3_prefix": "a//b"}, "s3_prefix 'a//b'"),
    ({"repositories": ["x"]}, "must be a dictionary"),
])
def test_bad_lists_are_refused_naming_the_option(p, message):
    with pytest.raises(FediflowError, match=message):
        repos.normalize(p)


@pytest.mark.parametrize("wanted, count, expect", [(0, 2, 2), (1, 2, 1), (2, 2, 2), (0, 0, 0)])
def test_required_copies_zero_means_every_repository(wanted, count, expect):
    assert repos.required({"required_copies": wanted}, TWO[:count]) == expect


@pytest.mark.parametrize("wanted, count", [(3, 2), (-1, 2), (1, 0)])
def test_required_copies_beyond_the_list_are_refused(wanted, count):
    with pytest.raises(FediflowError, match="required_copies must be 0"):
        repos.required({"required_copies": wanted}, TWO[:count])


class _Run:
    """What a module knows after probing: the list, the stores that answered, the ones down."""

    def __init__(self, required, down=()):
        self.repos = repos.normalize({"repositories": TWO})
        self.required = required
        self.down = {name: "timed out" for name in down}
        self.stores = {r["name"]: _Store() for r in self.repos if r["name"] not in self.down}


class _Store:
    def __init__(self):
        self.deleted = []

    def delete_backup(self, backup_id):
        self.deleted.append(backup_id)


def _copy(name, ok, error=None):
    return {"repository": name, "ok": ok, "error": error}


def test_a_copy_short_of_the_required_is_incomplete_and_named():
    run = _Run(required=2, down=["eu-west-1"])
    copies = [_copy("us-east-1", True), _copy("eu-west-1", False, "repository down: timed out")]
    result = {}
    assert repos.record_copies(result, run, copies, "backup x") is False
    assert result["copies_ok"] == 1 and result["degraded"] and not result["complete"] and "warnings" not in result
    text = repos.copies_error("it", run, copies)
    assert "1 of the 2 copies" in text and "eu-west-1: repository down: timed out" in text


def test_enough_copies_but_not_every_one_is_degraded_with_a_warning():
    run = _Run(required=1, down=["eu-west-1"])
    result = {}
    assert repos.record_copies(result, run, [_copy("us-east-1", True), _copy("eu-west-1", False, "down")], "backup x")
    assert result["degraded"] and result["complete"] and "backup x is degraded: 1 of 2" in result["warnings"][0]
    every = {}
    assert repos.record_copies(every, run, [_copy("us-east-1", True), _copy("eu-west-1", True)], "backup y")
    assert not every["degraded"] and "warnings" not in every


def _m(backup_id, stop, ok=True):
    return {"id": backup_id, "kind": "logical", "stop_time": stop, "verification": {"ok": ok}}


def test_retention_runs_per_location_so_a_failed_copy_costs_no_region_its_last_backup():
    run = _Run(required=1)
    old, mid, new = _m("a", "2026-01-01T00:00:00Z"), _m("b", "2026-01-02T00:00:00Z"), _m("c", "2026-01-03T00:00:00Z")
    # c's copy to eu-west-1 failed: that region's newest is b
    entries = {"a": (old, {"local", "us-east-1", "eu-west-1"}), "b": (mid, {"local", "us-east-1", "eu-west-1"}),
               "c": (new, {"local", "us-east-1"})}
    removed_local = []

    def keep_newest(held):
        newest = max(held, key=lambda m: m["stop_time"])
        return [(m["id"], "beyond the newest 1") for m in held if m is not newest]

    gone, pruned = repos.prune_each("/dest", run, entries, keep_newest, lambda dest, i: removed_local.append(i))
    assert sorted(removed_local) == ["a", "b"] and run.stores["us-east-1"].deleted == ["a", "b"]
    assert run.stores["eu-west-1"].deleted == ["a"]          # b stays: it is eu-west-1's newest
    assert gone == ["a"]                                      # b still lives in eu-west-1
    assert {p["id"]: p["where"] for p in pruned} == {"a": ["eu-west-1", "local", "us-east-1"],
                                                     "b": ["local", "us-east-1"]}


def test_a_repository_that_is_down_is_not_pruned():
    run = _Run(required=1, down=["eu-west-1"])
    entries = {"a": (_m("a", "2026-01-01T00:00:00Z"), {"local", "us-east-1"}),
               "b": (_m("b", "2026-01-02T00:00:00Z"), {"local", "us-east-1"})}
    gone, _pruned = repos.prune_each("/dest", run, entries, lambda held: [("a", "old")] if any(
        m["id"] == "a" for m in held) else [], lambda dest, i: None)
    assert gone == ["a"] and "eu-west-1" not in run.stores


def test_first_holding_keeps_the_list_order_and_skips_what_is_down():
    run = _Run(required=1, down=["us-east-1"])
    assert [n for n, _s in repos.first_holding(run, {"us-east-1", "eu-west-1"})] == ["eu-west-1"]
    assert repos.first_holding(run, {"us-east-1"}) == []
