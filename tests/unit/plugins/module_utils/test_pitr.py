# -*- coding: utf-8 -*-
"""PITR's pure logic with plain data: targets, the archive's timelines, base selection, bounds,
recovery settings. No server, no files."""
from __future__ import annotations

import datetime

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import pitr
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

UTC = datetime.timezone.utc
SEG = pitr.DEFAULT_SEGMENT_SIZE
T0 = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def target(**kw):
    return pitr.parse_target(kw)


def seg(tli, segno):
    return pitr.segment_name(tli, segno * SEG)


def epoch(minutes):
    return (T0 + datetime.timedelta(minutes=minutes)).timestamp()


def iso(minutes):
    return (T0 + datetime.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest(bid, stop_min, start_lsn, stop_lsn, tli=1, ok=True, kind="physical"):
    return {"id": bid, "kind": kind, "stop_time": (T0 + datetime.timedelta(minutes=stop_min)).isoformat(),
            "start_lsn": start_lsn, "stop_lsn": stop_lsn, "source": {"timeline": tli},
            "verification": {"ok": ok}}


# --------------------------------------------------------------------------- targets

@pytest.mark.parametrize("text, expected", [
    ("2026-11-25T14:03:00Z", datetime.datetime(2026, 11, 25, 14, 3, tzinfo=UTC)),
    ("2026-11-25 16:03:00.5+02:00", datetime.datetime(2026, 11, 25, 14, 3, 0, 500000, tzinfo=UTC)),
    ("2026-11-25T09:03-0500", datetime.datetime(2026, 11, 25, 14, 3, tzinfo=UTC)),
])
def test_time_with_zone_is_normalized_to_utc(text, expected):
    t = target(target_time=text)
    assert t["value"] == expected and t["setting"] == "recovery_target_time"
    assert t["setting_value"] == expected.strftime("%Y-%m-%d %H:%M:%S.%f+00")


@pytest.mark.parametrize("text, words", [
    ("2026-13-01", "no time zone"),
    ("2026-13-01T00:00:00Z", "month must be in 1..12"),
    ("2026-02-30T10:00:00Z", "day is out of range"),
    ("2026-11-25T14:03:00", "no time zone"),
    ("2026-11-25T25:03:00Z", "hour must be in 0..23"),
    ("yesterday", "ISO 8601"),
    ("2026-11-25T14:03:00+25:00", "offset"),
])
def test_bad_times_are_refused_naming_the_option(text, words):
    with pytest.raises(FediflowError) as err:
        target(target_time=text)
    assert "target_time" in err.value.message and words in err.value.message


def test_exactly_one_target():
    with pytest.raises(FediflowError, match="target_time and target_lsn"):
        target(target_time="2026-11-25T14:03:00Z", target_lsn="0/3000000")
    with pytest.raises(FediflowError, match="exactly one target"):
        target()
    with pytest.raises(FediflowError, match="exactly one target"):
        target(target_latest=False)


def test_lsn_xid_name_latest():
    assert target(target_lsn="0/3000148")["value"] == 0x3000148
    assert target(target_lsn="1/0")["setting_value"] == "1/0"
    assert target(target_xid="741")["setting_value"] == "741"
    assert target(target_name="before-migration")["setting"] == "recovery_target_name"
    latest = target(target_latest=True)
    assert latest["setting"] is None and latest["action"] == "promote"


@pytest.mark.parametrize("kw, words", [
    ({"target_lsn": "0/XYZ"}, "target_lsn must be an LSN"),
    ({"target_lsn": "3000148"}, "target_lsn must be an LSN"),
    ({"target_xid": "-4"}, "target_xid must be a transaction id"),
    ({"target_xid": "2"}, "target_xid must be a transaction id"),
    ({"target_name": "x" * 64}, "target_name must be a restore point name"),
    ({"target_latest": True, "action": "pause"}, "action=pause needs a target"),
    ({"target_lsn": "0/1", "action": "shutdown"}, "action must be promote or pause"),
])
def test_bad_targets(kw, words):
    with pytest.raises(FediflowError, match=words):
        target(**kw)


def test_timeline_option():
    assert pitr.parse_timeline(None) == "auto"
    assert pitr.parse_timeline("latest") == "latest"
    assert pitr.parse_timeline("3") == 3
    with pytest.raises(FediflowError, match="timeline must be"):
        pitr.parse_timeline("0")


# --------------------------------------------------------------------------- segments and timelines

def test_segment_names_round_trip():
    assert pitr.segment_name(1, 0x3000148) == "000000010000000000000003"
    assert pitr.segment_name(2, (1 << 32) + 5 * SEG) == "000000020000000100000005"
    assert pitr.parse_segment("000000020000000100000005") == (2, 256 + 5)
    assert pitr.parse_segment("00000002.history") is None
    assert pitr.segments_between(0x3000028, 0x5000000) == 3


def test_history_and_lineage():
    assert pitr.parse_history("1\t0/5000198\tno recovery target specified\n") == [(1, 0x5000198)]
    idx = pitr.archive_index([(seg(1, 3), 1), (seg(2, 5), 2)], {2: "1\t0/5000198\tno recovery target\n"})
    assert idx["lineage"][2] == [(1, 0x5000198), (2, None)]
    assert pitr.tli_at(idx["lineage"][2], 0x5000197) == 1
    assert pitr.tli_at(idx["lineage"][2], 0x5000198) == 2
    assert pitr.tlis_for_segno(idx["lineage"][2], 5) == [2, 1]
    assert pitr.tlis_for_segno(idx["lineage"][2], 4) == [1]


def failover_archive(parent_tail=0):
    """tl1 segments 1..5, failover at 0/5000198 -> tl2 segments 5..8; ``parent_tail`` more tl1 segments."""
    entries = [(seg(1, s), epoch(s)) for s in range(1, 6 + parent_tail)]
    entries += [(seg(2, s), epoch(10 + s)) for s in range(5, 9)]
    return pitr.archive_index(entries, {2: "1\t0/5000198\tno recovery target specified\n"})


def test_plain_failover_is_not_ambiguous():
    idx = failover_archive()
    assert pitr.divergences(idx) == []
    assert pitr.choose_timeline(idx, target(target_time="2026-11-25T12:30:00Z")) == 2


def test_a_fork_with_wal_on_both_sides_is_ambiguous_for_time_but_not_before_the_fork():
    idx = failover_archive(parent_tail=3)  # the old timeline went on after the branch (a PITR)
    assert pitr.divergences(idx) == [(1, 2, 0x5000198)]
    with pytest.raises(FediflowError) as err:  # tl1 still archived then (its last segment at T0+8 min)
        pitr.choose_timeline(idx, target(target_time=iso(7)))
    assert "timeline ambiguity" in err.value.message and "0/5000198" in err.value.message
    assert pitr.choose_timeline(idx, target(target_lsn="0/4000000")) == 2  # same on both branches
    with pytest.raises(FediflowError, match="ambiguity"):
        pitr.choose_timeline(idx, target(target_lsn="0/6000000"))
    assert pitr.choose_timeline(idx, target(target_time="2026-11-25T12:30:00Z"), requested=1) == 1
    with pytest.raises(FediflowError, match="timeline 7 is not in the WAL archive"):
        pitr.choose_timeline(idx, target(target_lsn="0/6000000"), requested=7)


# --------------------------------------------------------------------------- base backup

LEDGER = [
    manifest("b1", 5, "0/1000028", "0/1000100"),
    manifest("b2", 15, "0/3000028", "0/3000100"),
    manifest("b3", 25, "0/6000028", "0/6000100", tli=2),
    manifest("b4", 30, "0/7000028", "0/7000100", tli=2, ok=False),
    manifest("l1", 20, "0/4000000", "0/4000100", kind="logical"),
]
LINEAGE2 = [(1, 0x5000198), (2, None)]


def test_newest_verified_backup_ending_before_the_target():
    base, why = pitr.choose_base(LEDGER, target(target_time="2026-11-25T12:20:00Z"), LINEAGE2)
    assert base["id"] == "b2" and "newest" in why
    base, _why = pitr.choose_base(LEDGER, target(target_time="2026-11-25T13:00:00Z"), LINEAGE2)
    assert base["id"] == "b3"  # b4 is newer but failed verification
    base, _why = pitr.choose_base(LEDGER, target(target_lsn="0/3000100"), LINEAGE2)
    assert base["id"] == "b2"


def test_target_before_the_oldest_verified_backup_is_refused_naming_it():
    with pytest.raises(FediflowError) as err:
        pitr.choose_base(LEDGER, target(target_time="2026-11-25T12:01:00Z"), LINEAGE2)
    assert "oldest verified base backup b1" in err.value.message


def test_backups_off_the_lineage_are_not_used():
    # timeline 1 only: b3 (timeline 2) cannot be a base
    base, _why = pitr.choose_base(LEDGER, target(target_time="2026-11-25T13:00:00Z"), [(1, None)])
    assert base["id"] == "b2"
    # a tl1 backup ending after tl2 branched off cannot reach tl2
    late = [manifest("x", 15, "0/5000000", "0/5000300")]
    with pytest.raises(FediflowError, match="no verified base backup lies on timeline 2"):
        pitr.choose_base(late, target(target_latest=True), LINEAGE2)


def test_unknown_position_takes_the_oldest_usable_unless_hinted():
    base, why = pitr.choose_base(LEDGER, target(target_xid="900"), LINEAGE2)
    assert base["id"] == "b1" and "unknown" in why
    base, _why = pitr.choose_base(LEDGER, target(target_name="rp"), LINEAGE2, hint_lsn=0x3500000)
    assert base["id"] == "b2"


def test_missing_or_unverified_backups():
    with pytest.raises(FediflowError, match="no physical base backup"):
        pitr.choose_base([LEDGER[-1]], target(target_latest=True), LINEAGE2)
    with pytest.raises(FediflowError, match="no verified physical base backup"):
        pitr.choose_base([LEDGER[3]], target(target_latest=True), LINEAGE2)
    with pytest.raises(FediflowError, match="backup_id 'b4' is not verified"):
        pitr.choose_base(LEDGER, target(target_latest=True), LINEAGE2, backup_id="b4")
    with pytest.raises(FediflowError, match="backup_id 'zz' is not a physical backup"):
        pitr.choose_base(LEDGER, target(target_latest=True), LINEAGE2, backup_id="zz")


# --------------------------------------------------------------------------- archive bounds

def test_bounds_of_the_archive():
    idx = failover_archive()
    b2 = pitr.backup_facts(LEDGER[1])
    ok = pitr.check_archive(idx, b2, target(target_time="2026-11-25T12:16:00Z"), idx["lineage"][2])
    assert ok["first_segment"] == seg(1, 3) and ok["last_segment"] == seg(2, 8)
    assert ok["segments_available"] == 6 and ok["gap_at"] is None
    # within S3's one-second LastModified resolution of the newest segment (archived 12:18:00): allowed
    pitr.check_archive(idx, b2, target(target_time="2026-11-25T12:18:00.9Z"), idx["lineage"][2])
    with pytest.raises(FediflowError) as err:  # beyond the newest archived segment
        pitr.check_archive(idx, b2, target(target_time="2026-11-25T12:18:01Z"), idx["lineage"][2])
    assert "after the newest archived WAL (segment %s" % seg(2, 8) in err.value.message
    with pytest.raises(FediflowError, match="after the newest archived WAL"):
        pitr.check_archive(idx, b2, target(target_lsn="0/9000001"), idx["lineage"][2])
    # exactly the end of the last archived segment: the record there is in a segment not archived yet
    with pytest.raises(FediflowError, match="after the newest archived WAL"):
        pitr.check_archive(idx, b2, target(target_lsn="0/9000000"), idx["lineage"][2])
    pitr.check_archive(idx, b2, target(target_lsn="0/8FFFFFF"), idx["lineage"][2])


def test_a_gap_in_the_archive_is_named():
    entries = [(seg(1, s), epoch(s)) for s in (3, 4, 6, 7)]
    idx = pitr.archive_index(entries, {})
    b2 = pitr.backup_facts(LEDGER[1])
    with pytest.raises(FediflowError) as err:
        pitr.check_archive(idx, b2, target(target_lsn="0/6800000"), idx["lineage"][1])
    assert "%s is missing from the archive (a gap)" % seg(1, 5) in err.value.message
    with pytest.raises(FediflowError, match="is not in the archive"):
        pitr.check_archive(pitr.archive_index([(seg(1, 9), 1)], {}), b2, target(target_latest=True), [(1, None)])


# --------------------------------------------------------------------------- settings

def test_recovery_settings_and_the_conf_block():
    cmd = pitr.restore_command("/usr/bin/python3", "/opt/fediflow tools/fediflow_wal.py", "/etc/f/wal.json")
    assert cmd == "/usr/bin/python3 '/opt/fediflow tools/fediflow_wal.py' --config /etc/f/wal.json fetch %f %p"
    s = pitr.recovery_settings(target(target_time="2026-11-25T14:03:00Z", inclusive=False), 2, cmd)
    assert s["recovery_target_time"] == "2026-11-25 14:03:00.000000+00"
    assert s["recovery_target_inclusive"] == "off" and s["recovery_target_action"] == "pause"
    assert s["recovery_target_timeline"] == "2"
    latest = pitr.recovery_settings(target(target_latest=True), "latest", cmd)
    assert set(latest) == {"restore_command", "recovery_target_timeline"}
    named = pitr.recovery_settings(target(target_name="it's"), 1, cmd)
    assert "recovery_target_inclusive" not in named
    text = pitr.replace_block("port = 5432\n", named)
    assert text.startswith("port = 5432\n# BEGIN") and "recovery_target_name = 'it''s'" in text
    again = pitr.replace_block(text, {"port": "6000"})
    assert again.count("# BEGIN") == 1 and "recovery_target_name" not in again and "port = '6000'" in again
    assert pitr.replace_block(again, {}) == "port = 5432\n"
    assert pitr.conf_quote("a\\b") == "'a\\\\b'"


def test_dir_names():
    names = pitr.dir_names("/srv/pg/data/", T0)
    assert names == {"new": "/srv/pg/data.pitr-20261125T120000.000000Z",
                     "kept": "/srv/pg/data.pre-pitr-20261125T120000.000000Z"}
    # a restore a fraction of a second later gets its own directory
    later = pitr.dir_names("/srv/pg/data/", T0 + datetime.timedelta(microseconds=200000))
    assert later["new"] == "/srv/pg/data.pitr-20261125T120000.200000Z" and later["new"] != names["new"]


def test_unarchived_wal_carries_the_segments_the_archive_lacks_and_nothing_recycled():
    seg = 16 * 1024 * 1024
    end = 5 * seg  # the archive holds ...01 to ...04
    files = [("000000010000000000000003", 3 * seg), ("000000010000000000000004", 4 * seg),
             ("000000010000000000000005", 5 * seg),  # being written when the cluster stopped
             ("000000010000000000000006", 2 * seg),  # recycled ahead: old WAL under a future name
             ("000000020000000000000005", 5 * seg),  # another timeline
             ("00000001000000000000000A", 10 * seg)]  # after a hole
    assert pitr.unarchived_wal(files, 1, end, seg) == ["000000010000000000000005"]
    files.append(("000000010000000000000006", 6 * seg))
    assert pitr.unarchived_wal(files[:2] + files[2:3] + files[-1:], 1, end, seg) == [
        "000000010000000000000005", "000000010000000000000006"]
    assert pitr.unarchived_wal(files, 2, end, seg) == ["000000020000000000000005"]
    assert pitr.unarchived_wal([], 1, end, seg) == []


def test_a_time_after_the_abandoned_branch_stopped_is_on_the_latest_line():
    """tl1 went on after tl2 branched (a restore in place left its tail), but its last segment was archived at
    T0+8 min: a target well after that is on tl2's line; one while tl1 still archived is still ambiguous."""
    idx = failover_archive(parent_tail=3)   # tl1 segments 6..8 archived at T0+6..8 min
    assert pitr.choose_timeline(idx, target(target_time=iso(20))) == 2
    with pytest.raises(FediflowError, match="ambiguity"):
        pitr.choose_timeline(idx, target(target_time=iso(8.5)))  # within the clock margin of tl1's last segment
    with pytest.raises(FediflowError, match="ambiguity"):
        pitr.choose_timeline(idx, target(target_time=iso(7)))   # tl1 was still taking writes
    # an xid whose commit time is known settles it the same way; unknown, it stays ambiguous
    xid = target(target_xid="1000")
    assert pitr.choose_timeline(idx, xid, hint_time=T0 + datetime.timedelta(minutes=20)) == 2
    with pytest.raises(FediflowError, match="ambiguity"):
        pitr.choose_timeline(idx, xid)


def test_a_side_branch_off_the_latest_line_is_never_settled_by_time():
    """tl3 branched off tl1 (a restore whose branch was left), tl2 is the line that goes on: a target on tl3's
    side cannot be ruled out by tl1's archive times, so the choice stays the operator's."""
    entries = [(seg(1, s), epoch(s)) for s in range(1, 9)]
    entries += [(seg(2, s), epoch(10 + s)) for s in range(5, 9)] + [(seg(3, s), epoch(30 + s)) for s in range(7, 10)]
    idx = pitr.archive_index(entries, {2: "1\t0/5000198\tx\n", 3: "1\t0/7000000\tx\n"})
    with pytest.raises(FediflowError, match="ambiguity"):
        pitr.choose_timeline(idx, target(target_time=iso(60)))
