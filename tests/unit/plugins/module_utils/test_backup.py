# -*- coding: utf-8 -*-
"""Input validation and row-count comparison of pg_backup_verify, as plain data."""
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import backup
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def _p(**kw):
    p = {"mode": "logical", "verify": "list", "format": "custom", "compression": "gzip",
         "compression_level": None, "jobs": 2, "retention_count": None, "retention_days": None,
         "dest": "/var/backups/x", "s3_sse": "AES256", "backup_id": None, "login_port": 5432,
         "connect_timeout": 10}
    p.update(kw)
    return p


@pytest.mark.parametrize("change, message", [
    ({"mode": "incremental"}, "mode must be one of logical, physical"),
    ({"verify": "maybe"}, "verify must be one of"),
    ({"format": "tar"}, "format must be custom or directory for mode=logical"),
    ({"mode": "physical", "format": "custom"}, "format must be tar or plain for mode=physical"),
    ({"compression": "zstd"}, "compression for mode=logical"),
    ({"mode": "physical", "format": "plain", "compression": "zstd"}, "compression needs format=tar"),
    ({"retention_count": 0}, "retention_count must be at least 1"),
    ({"retention_days": 0}, "retention_days must be at least 1"),
    ({"dest": "relative/dir"}, "dest must be an absolute directory path"),
    ({"jobs": 0}, "jobs must be at least 1"),
    ({"compression_level": 30}, "compression_level must be between 0 and 22"),
    ({"backup_id": "../etc"}, "is not a backup id"),
    ({"login_port": 0}, "login_port must be between 1 and 65535"),
])
def test_validate_refuses_bad_input_naming_the_option(change, message):
    with pytest.raises(FediflowError, match=message):
        backup.validate(_p(**change))


def test_validate_accepts_good_input():
    backup.validate(_p())
    backup.validate(_p(mode="physical", format="tar", compression="zstd", verify="restore"))


def test_compare_counts_exact():
    ok, rows = backup.compare_counts({"a": 3, "b": 5}, {"a": 3, "b": 5})
    assert ok and [r["table"] for r in rows] == ["a", "b"]


def test_compare_counts_names_the_bad_table():
    ok, rows = backup.compare_counts({"a": 3, "b": 5}, {"a": 3, "b": 4})
    assert not ok and [r["table"] for r in rows if not r["ok"]] == ["b"]


def test_missing_table_fails_and_slack_allows_concurrent_writes():
    ok, _rows = backup.compare_counts({"a": 3}, {})
    assert not ok
    ok, _rows = backup.compare_counts({"a": 10}, {"a": 8}, slack={"a": 2})
    assert ok
    ok, _rows = backup.compare_counts({"a": 10}, {"a": 7}, slack={"a": 2})
    assert not ok


def test_retention_weighs_only_backups_of_the_same_source():
    from ansible_collections.fediflow.dr.plugins.module_utils.backup_run import same_source
    p = {"mode": "logical", "db": "a", "cluster_name": "pg1", "region_name": "us-east-1"}
    mine = {"cluster": "pg1", "region": "us-east-1", "source": {"database": "a"}}
    assert same_source(mine, p)
    assert not same_source(dict(mine, source={"database": "b"}), p)
    assert not same_source(dict(mine, cluster="pg2"), p)
    assert same_source(dict(mine, source={"database": "b"}), dict(p, mode="physical"))


def test_the_s3_api_region_never_stands_in_for_the_dr_region():
    from ansible_collections.fediflow.dr.plugins.module_utils.backup_run import same_source
    p = {"mode": "physical", "cluster_name": "pg1", "region": "us-east-1"}  # S3 options, no DR region named
    assert same_source({"cluster": "pg1", "region": None}, p)
    assert not same_source({"cluster": "pg1", "region": "us-east-1"}, p)  # a DR region us-east-1 is another source
    assert same_source({"cluster": "pg1", "region": "us-east-1"}, dict(p, region_name="us-east-1", region="eu-west-1"))


def test_counts_not_recorded_prove_the_restore_without_comparing():
    manifest = {"source": {"row_counts": None}}
    verdict = backup._counts_verdict(manifest, {"public.t": 3})
    assert verdict["ok"] is True and verdict["tables_compared"] == 0 and "not recorded" in verdict["note"]
    verdict = backup._counts_verdict({"source": {"row_counts": {"public.t": 4}}}, {"public.t": 3})
    assert verdict["ok"] is False


def test_wal_needed_spans_start_to_end_lsn_of_each_range():
    seg = 16 * 1024 * 1024
    manifest = {"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/4000100"}]}
    assert backup.wal_needed(manifest, seg) == [(1, "0/2000028", "0/4000100", [
        "000000010000000000000002", "000000010000000000000003", "000000010000000000000004"])]
    # an end on a segment boundary needs nothing of the segment that starts there
    manifest = {"WAL-Ranges": [{"Timeline": 2, "Start-LSN": "0/2000028", "End-LSN": "0/3000000"}]}
    assert backup.wal_needed(manifest, seg)[0][3] == ["000000020000000000000002"]


def test_segment_size_refuses_a_truncated_segment():
    assert backup._segment_size([16 * 1024 * 1024] * 3) == 16 * 1024 * 1024
    with pytest.raises(FediflowError, match="different sizes"):
        backup._segment_size([16 * 1024 * 1024, 8 * 1024 * 1024])
    with pytest.raises(FediflowError, match="not a WAL segment size"):
        backup._segment_size([12345])
