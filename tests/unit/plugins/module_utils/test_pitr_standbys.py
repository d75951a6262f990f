# -*- coding: utf-8 -*-
"""PITR and the cluster's standbys, the pure part: what counts as a standby (refused in place), the timeline a
promotion creates, and which standbys an in-place restore leaves on the old history. Plain data only."""
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import pitr

PRIMARY = {"host": "198.18.9.11", "port": 24432, "user": "postgres"}
EU = {"name": "pg-eu-west-1", "host": "198.18.9.12", "port": 24433, "slot": "standby_eu_west_1",
      "data_dir": "/srv/eu/pgdata", "state": "standby"}


def row(app, addr, state="streaming", lsn="0/5000148"):
    return {"application_name": app, "client_addr": addr, "state": state, "sync_state": "async", "replay_lsn": lsn}


@pytest.mark.parametrize("signal, running, in_recovery, recovery_signal, expected", [
    (True, True, True, False, True),      # a running standby
    (True, False, None, False, True),     # a stopped standby (or an old primary a failover fenced): still one
    (False, True, True, False, True),     # in recovery without any signal file left: no restore of ours
    (False, True, True, True, False),     # a point-in-time restore paused at its target (recovery.signal)
    (False, True, False, False, False),   # a primary
    (False, False, None, False, False),   # a stopped primary
])
def test_what_counts_as_a_standby(signal, running, in_recovery, recovery_signal, expected):
    assert pitr.is_standby(signal, running, in_recovery, recovery_signal) is expected


def test_the_refusal_says_both_ways_forward():
    msg = pitr.standby_refusal("/srv/pgdata", "running", "198.18.9.11:24432")
    assert "holds a standby (streaming from 198.18.9.11:24432)" in msg
    assert "on the primary" in msg and "switch=false" in msg and "Nothing was touched" in msg
    assert "stopped, with standby.signal" in pitr.standby_refusal("/srv/pgdata", "stopped")


@pytest.mark.parametrize("timelines, tli, expected", [
    ([1], 1, 2),
    ([1, 2, 3], 3, 4),
    ([1, 2, 3], 2, 4),   # a timeline 3 branched off 2 already: the promotion takes the next free number
    ([1, 2, 5], 2, 3),   # the first number above it that the archive does not know (PostgreSQL probes upward)
])
def test_the_timeline_a_promotion_creates(timelines, tli, expected):
    assert pitr.next_timeline(timelines, tli) == expected


def test_an_inventory_standby_that_streamed_is_matched_by_its_slot():
    found = pitr.left_behind([row("standby_eu_west_1", "10.0.0.9")], [EU], PRIMARY, 3)
    assert len(found) == 1
    entry = found[0]
    assert entry["name"] == "pg-eu-west-1" and entry["in_inventory"] and entry["streamed"]
    assert entry["state_before"] == "streaming" and entry["replay_lsn_before"] == "0/5000148"
    assert entry["address"] == "198.18.9.12:24433" and entry["slot"] == "standby_eu_west_1"


def test_or_by_its_address():
    found = pitr.left_behind([row("walreceiver", "198.18.9.12")], [EU], PRIMARY, 3)
    assert [e["name"] for e in found] == ["pg-eu-west-1"] and found[0]["streamed"]


def test_an_inventory_standby_that_did_not_stream_is_left_behind_too():
    stopped = dict(EU, state="stopped standby")
    found = pitr.left_behind([], [stopped], PRIMARY, 3)
    assert found[0]["streamed"] is False and found[0]["state_before"] == "stopped standby"


def test_a_receiver_outside_the_inventory_is_named_with_how_to_reseed_it_by_hand():
    found = pitr.left_behind([row("reporting", "10.0.0.7")], [EU], PRIMARY, 3)
    names = {e["name"]: e for e in found}
    assert set(names) == {"pg-eu-west-1", "reporting"}
    extra = names["reporting"]
    assert extra["in_inventory"] is False and extra["streamed"] and extra["address"] == "10.0.0.7"
    assert "pg_create_physical_replication_slot('reporting')" in extra["howto"]
    assert "--source-server='host=198.18.9.11 port=24432 user=postgres dbname=postgres'" in extra["howto"]


def test_base_backups_and_wal_archivers_are_no_standbys():
    rows = [row("pg_basebackup", "198.18.9.11", state="backup"), row("pg_basebackup", "198.18.9.11"),
            row("pg_receivewal", "10.0.0.3")]
    assert pitr.left_behind(rows, [], PRIMARY, 3) == []


def test_howto_names_the_data_directory_the_slot_and_the_new_timeline():
    howto = pitr.left_behind([], [EU], PRIMARY, 7)[0]["howto"]
    assert howto.startswith("on pg-eu-west-1: pg_ctl stop -D /srv/eu/pgdata -m fast")
    assert "pg_rewind --target-pgdata=/srv/eu/pgdata" in howto and "--restore-target-wal" in howto
    assert "--slot=standby_eu_west_1" in howto and "received_tli is 7" in howto
    assert "Never promote it before" in howto
    assert "the primary's new timeline" in pitr.left_behind([], [EU], PRIMARY, None)[0]["howto"]
