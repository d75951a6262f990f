# -*- coding: utf-8 -*-
"""The DR lease's decisions as plain data (plugins/module_utils/lease.py): which holders may share the lease,
what a store's document says (validated: it is untrusted), how the stores' answers are weighed (a conflict held
by a majority, an acquisition in flight, a stranded copy, an expired or released entry), what each store is
written, and the messages a person reads. The stores themselves (S3 compare-and-swap, racing writers, a lost
region) run against the lab in tests/integration/test_lease.py."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import lease
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

T0 = datetime(2026, 11, 26, 1, 0, 0, tzinfo=timezone.utc)
ENV = "production"
STORES = ("us-east-1", "eu-west-1", "us-west-2")


def _at(seconds):
    return T0 + timedelta(seconds=seconds)


def _holder(n, operation="failover", mode="exclusive", parts=(), since=0, ttl=600, concurrent=("media",)):
    request = {"operation": operation, "mode": mode, "parts": list(parts), "concurrent_parts": list(concurrent),
               "ttl_s": ttl, "user": "oncall", "host": "ctl-%d" % n, "playbook": "playbooks/%s.yml" % operation}
    return lease.new_holder(request, "%032x" % n, _at(since))


def _doc(*holders, released=()):
    doc = lease.empty_document(ENV)
    doc["holders"] = list(holders)
    doc["released"] = [{"token": h["token"], "until": h["until"]} for h in released]
    return doc


def _views(now_s, docs):
    """``docs``: {store: document} - every store answering at the same time ``now_s``."""
    return {name: {"doc": doc, "now": _at(now_s), "etag": '"%s"' % name, "invalid": None} for name, doc in docs.items()}


# ---------------------------------------------------------------- who may hold it together

def test_an_exclusive_holder_shares_with_nobody():
    failover, backup = _holder(1), _holder(2, "backup", "shared", ["media"])
    assert not lease.compatible(failover, backup) and not lease.compatible(backup, failover)
    assert not lease.compatible(failover, _holder(3, "pitr"))
    assert lease.compatible(failover, dict(failover))  # itself (re-entrant)


def test_backups_share_when_their_parts_differ_or_are_concurrent_for_both():
    full = _holder(1, "backup", "shared", ["database", "media", "cache", "config"])
    media = _holder(2, "backup_media", "shared", ["media"])
    config = _holder(3, "backup_config", "shared", ["config"])
    assert lease.compatible(full, media)                       # media: concurrent for both
    assert not lease.compatible(full, config)                  # config: one at a time
    assert lease.compatible(media, config)
    strict = _holder(4, "backup_media", "shared", ["media"], concurrent=())
    assert not lease.compatible(full, strict)                  # both must call it concurrent


# ---------------------------------------------------------------- documents are untrusted

def test_a_document_round_trips_and_texts_are_cleaned():
    holder = dict(_holder(1), user="evil\nuser\x1b[31m", host="h" * 500)
    raw = lease.dump_document(_doc(holder))
    doc = lease.parse_document(raw, ENV, "s3://b/k")
    assert doc["holders"][0]["user"] == "evil user [31m" and len(doc["holders"][0]["host"]) == lease.TEXT_MAX
    assert "\n" not in lease.describe(doc["holders"][0])
    assert lease.parse_document(None, ENV, "s3://b/k") == lease.empty_document(ENV)


@pytest.mark.parametrize("raw, why", [
    (b"not json", "is not JSON"),
    (json.dumps({"format": "other"}).encode(), "is not a fediflow.dr/lease document"),
    (json.dumps(dict(lease.empty_document(ENV), version=2)).encode(), "newer fediflow.dr (lease format 2"),
    (json.dumps(lease.empty_document("staging")).encode(), "names environment 'staging'"),
    (json.dumps(dict(lease.empty_document(ENV), holders=[dict(_holder(1), token="x")])).encode(), "token is malformed"),
    (json.dumps(dict(lease.empty_document(ENV), holders=[dict(_holder(1), mode="greedy")])).encode(), "mode 'greedy'"),
    (json.dumps(dict(lease.empty_document(ENV), holders=[dict(_holder(1), until="tomorrow")])).encode(),
     "until is not an ISO 8601 time"),
    (json.dumps(dict(lease.empty_document(ENV), holders=[_holder(1), _holder(1)])).encode(), "listed twice"),
    (json.dumps(dict(lease.empty_document(ENV), holders=[dict(_holder(1), parts=["../x"])])).encode(), "list of part names"),
])
def test_a_bad_document_is_refused_naming_why(raw, why):
    with pytest.raises(lease.InvalidDocument, match=why.replace("(", r"\(").replace(".", r"\.")):
        lease.parse_document(raw, ENV, "s3://bucket/fediflow-lease/production.json")


def test_expiry_is_judged_by_the_store_clock_with_a_margin():
    holder = _holder(1, ttl=60)
    assert not lease.expired(holder["until"], _at(60 + lease.CLOCK_MARGIN_S))
    assert lease.expired(holder["until"], _at(61 + lease.CLOCK_MARGIN_S))
    assert lease.expired("garbage", _at(0))   # an unreadable end never holds


# ---------------------------------------------------------------- weighing the stores' answers

def test_a_conflict_held_by_a_majority_refuses_naming_its_holder():
    failover = _holder(1, since=-30)
    request = _holder(2, "pitr", since=0)
    view = lease.assess(_views(0, {"us-east-1": _doc(failover), "eu-west-1": _doc(failover), "us-west-2": _doc()}),
                        request, 3)
    assert [e["holder"]["token"] for e in view["conflicts"]] == [failover["token"]] and not view["in_flight"]
    assert view["conflicts"][0]["stores"] == ["eu-west-1", "us-east-1"]
    msg = lease.refusal({"operation": "pitr"}, ENV, view["conflicts"][0], _at(0), 3)
    assert msg.startswith("pitr refused: the DR lease of environment 'production' is held by failover "
                          "(playbooks/failover.yml) by oncall@ctl-1, since 2026-11-26T00:59:30Z until 2026-11-26T01:09:30Z")
    assert "(9 min 30 s left; recorded in 2 of 3 stores)" in msg and "-e break_lease=true" in msg and "\n" not in msg


def test_a_young_entry_in_one_store_is_an_acquisition_in_flight_an_old_one_is_a_conflict():
    racing = _holder(1, since=-3)
    request = _holder(2, "pitr")
    docs = {"us-east-1": _doc(racing), "eu-west-1": _doc(), "us-west-2": _doc()}
    view = lease.assess(_views(0, docs), request, 3)
    assert [e["holder"]["token"] for e in view["in_flight"]] == [racing["token"]] and not view["conflicts"]
    stranded = lease.assess(_views(lease.SETTLE_S + 5, docs), request, 3)   # nobody finished or backed off it
    assert [e["holder"]["token"] for e in stranded["conflicts"]] == [racing["token"]]


def test_expired_and_released_entries_do_not_hold_it():
    old = _holder(1, since=-700)           # until -100: expired
    gone = _holder(2, since=-10)           # released: its tombstone is in one store
    request = _holder(3, "pitr")
    docs = {"us-east-1": _doc(old, gone), "eu-west-1": _doc(old, released=[gone]), "us-west-2": _doc(gone)}
    view = lease.assess(_views(0, docs), request, 3)
    assert not view["conflicts"] and not view["in_flight"]
    assert [e["holder"]["token"] for e in view["expired"]] == [old["token"]]
    assert gone["token"] in view["tombstones"]


def test_a_holder_expired_by_one_store_clock_but_not_another_still_holds():
    holder = _holder(1, since=-600)        # until 0
    views = _views(0, {"us-east-1": _doc(holder), "eu-west-1": _doc(holder), "us-west-2": _doc()})
    views["us-east-1"]["now"] = _at(lease.CLOCK_MARGIN_S + 5)   # that store's clock runs ahead
    view = lease.assess(views, _holder(2, "pitr"), 3)
    assert view["conflicts"] and view["conflicts"][0]["stores"] == ["eu-west-1"]


def test_compatible_holders_and_own_entries_are_not_conflicts():
    full = _holder(1, "backup", "shared", ["database", "media"], since=-60)
    media = _holder(2, "backup_media", "shared", ["media"])
    docs = {"us-east-1": _doc(full, media), "eu-west-1": _doc(full), "us-west-2": _doc(full)}
    view = lease.assess(_views(0, docs), media, 3)
    assert not view["conflicts"] and not view["in_flight"]
    assert view["own"] == {"us-east-1"} and [e["holder"]["token"] for e in view["others"]] == [full["token"]]


def test_an_unusable_document_is_reported():
    views = _views(0, {"us-east-1": _doc(), "eu-west-1": _doc(), "us-west-2": _doc()})
    views["us-west-2"]["invalid"] = "s3://x/y is not JSON"
    assert lease.assess(views, _holder(1), 3)["invalid"] == [("us-west-2", "s3://x/y is not JSON")]


# ---------------------------------------------------------------- what each store is written

def test_a_store_gets_the_new_holder_expired_ones_dropped_tombstones_carried():
    old = _holder(1, since=-700)
    elsewhere = _holder(2, since=-100, ttl=50)   # released, its tombstone from another store
    own = _holder(3, "pitr")
    view = _views(0, {"s": _doc(old)})["s"]
    new, events = lease.store_plan(view, own, {elsewhere["token"]: elsewhere["until"]}, set(), "oncall@ctl-3")
    assert [h["token"] for h in new["holders"]] == [own["token"]]
    assert [e["event"] for e in events] == ["took_over", "acquired"] and events[0]["operation"] == "failover"
    assert new["released"] == [{"token": elsewhere["token"], "until": elsewhere["until"]}]
    assert new["serial"] == 1 and new["history"][-1]["event"] == "acquired"
    again, _events = lease.store_plan(dict(view, doc=new), own, {elsewhere["token"]: elsewhere["until"]}, set(), "x")
    assert again is None   # already says so: nothing to write


def test_break_lease_removes_the_live_holder_and_tombstones_it():
    live = _holder(1, since=-10)
    own = _holder(2, "failover")
    new, events = lease.store_plan(_views(0, {"s": _doc(live)})["s"], own, {}, {live["token"]}, "oncall@ctl-2")
    assert [h["token"] for h in new["holders"]] == [own["token"]]
    assert {"token": live["token"], "until": live["until"]} in new["released"]
    assert [e["event"] for e in events] == ["broken", "acquired"] and events[0]["by"] == "oncall@ctl-2"


def test_an_invalid_document_is_replaced_only_by_a_writer_that_breaks():
    view = dict(_views(0, {"s": _doc()})["s"], invalid="not JSON")
    new, _events = lease.store_plan(view, _holder(1), {}, set(), "x")
    assert [h["token"] for h in new["holders"]] == [_holder(1)["token"]] and new["serial"] == 1


def test_history_is_bounded():
    view = _views(0, {"s": _doc()})["s"]
    view["doc"]["history"] = [{"event": "acquired", "at": "x"}] * lease.HISTORY_KEEP
    new, _events = lease.store_plan(view, _holder(1), {}, set(), "x")
    assert len(new["history"]) == lease.HISTORY_KEEP and new["history"][-1]["token"] == _holder(1)["token"][:8]


def test_a_release_removes_the_entry_and_leaves_a_tombstone():
    mine, other = _holder(1, "backup", "shared", ["database"]), _holder(2, "backup_media", "shared", ["media"])
    view = _views(0, {"s": _doc(mine, other)})["s"]
    new, found = lease.release_plan(view, mine["token"], "x")
    assert found["token"] == mine["token"] and [h["token"] for h in new["holders"]] == [other["token"]]
    assert new["released"] == [{"token": mine["token"], "until": mine["until"]}]
    assert lease.release_plan(dict(view, doc=new), mine["token"], "x") == (None, None)


# ---------------------------------------------------------------- input

def _params(**kw):
    p = {"state": "acquired", "environment": ENV, "key_prefix": "fediflow-lease", "stores": [{}] * 3,
         "operation": "failover", "mode": "exclusive", "parts": [], "concurrent_parts": ["media"], "ttl_s": 1800,
         "wait_s": 0, "timeout_s": 2, "token": None}
    p.update(kw)
    return p


@pytest.mark.parametrize("change, option", [
    ({"environment": "prod/../x"}, "environment"),
    ({"key_prefix": "a/../b"}, "key_prefix"),
    ({"stores": []}, "stores must list 1 to 9"),
    ({"operation": "fail over"}, "operation"),
    ({"mode": "shared"}, "mode=shared needs parts"),
    ({"mode": "shared", "parts": ["Data Base"]}, "parts: 'Data Base'"),
    ({"ttl_s": 5}, "ttl_s must be 10 to 604800"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"token": "abc"}, "token must be the 32 hex digits"),
    ({"state": "released", "token": None}, "state=released needs token"),
])
def test_bad_input_is_refused_naming_the_option(change, option):
    with pytest.raises(FediflowError, match=option.replace("(", r"\(")):
        lease.validate(_params(**change))


def test_times_and_spans_for_people():
    assert lease.iso(_at(0)) == "2026-11-26T01:00:00Z" and lease.parse_iso("2026-11-26T01:00:00Z") == _at(0)
    assert lease.parse_iso("2026-11-26T01:00:00") is None   # no zone: not trusted
    assert [lease.span(s) for s in (5, 60, 95, 3600, 5400)] == ["5 s", "1 min", "1 min 35 s", "1 h", "1 h 30 min"]
