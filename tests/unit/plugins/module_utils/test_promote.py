# -*- coding: utf-8 -*-
"""pg_promote's decisions as plain data: input checks, LSN arithmetic, lag, guards.
Promotion itself, fencing and the probes are proven on a real pair by the integration tier."""
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import postgres, promote
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def _params(**kw):
    params = {k: v.get("default") for k, v in postgres.postgres_common_argument_spec().items()}
    params.update(timeout=60, fence_old_primary="none", force=False, max_lag_bytes=None, max_lag_seconds=None,
                  old_primary_host=None, old_primary_port=None, old_primary_data_dir=None)
    params.update(kw)
    return params


@pytest.mark.parametrize("kw, message", [
    ({"timeout": 0}, "timeout must be a positive number"),
    ({"timeout": -5}, "timeout must be a positive number"),
    ({"max_lag_bytes": -1}, "max_lag_bytes must be 0 or more"),
    ({"max_lag_seconds": -0.5}, "max_lag_seconds must be 0 or more"),
    ({"fence_old_primary": "stop"}, "fence_old_primary=stop needs old_primary_data_dir"),
    ({"fence_old_primary": "shoot"}, "fence_old_primary must be one of"),
    ({"old_primary_port": 0}, "old_primary_port must be between 1 and 65535"),
    ({"login_port": 70000}, "login_port must be between 1 and 65535"),
])
def test_bad_input_is_refused(kw, message):
    with pytest.raises(FediflowError, match=message):
        promote.validate(_params(**kw))


def test_good_input_passes():
    promote.validate(_params(fence_old_primary="stop", old_primary_data_dir="/srv/pg", max_lag_bytes=0))


def test_bad_input_is_refused_before_connecting():
    # an unroutable port would fail differently: validation comes first
    with pytest.raises(FediflowError, match="timeout must be"):
        promote.ensure(_params(timeout=0, login_host="192.0.2.1"))


def test_lsn_arithmetic():
    assert promote.lsn_to_int("0/0") == 0
    assert promote.lsn_to_int("0/3015FF8") == 0x3015FF8
    assert promote.lsn_to_int("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert promote.lsn_to_int(None) is None
    with pytest.raises(FediflowError, match="not an LSN"):
        promote.lsn_to_int("3015FF8")


def test_timeline_of_walfile():
    assert promote.timeline_of_walfile("000000020000000000000003") == 2
    assert promote.timeline_of_walfile("0000001A0000000100000003") == 26
    assert promote.timeline_of_walfile(None) is None


def test_lag_is_zero_when_everything_received_is_replayed_however_old_the_last_commit():
    # an idle primary: the last replayed transaction is an hour old, nothing is missing
    assert promote.assess_lag("0/3000148", "0/3000148", 3600.0) == {"bytes": 0, "seconds": 0.0, "caught_up": True}


def test_lag_counts_received_but_not_replayed():
    lag = promote.assess_lag("0/3100000", "0/3000000", 12.5)
    assert lag == {"bytes": 0x100000, "seconds": 12.5, "caught_up": False}


def test_lag_replay_ahead_of_receive_is_no_lag():
    # WAL replayed from pg_wal/archive at start-up can be ahead of what streaming received
    assert promote.assess_lag("0/3000000", "0/3100000", 5.0)["bytes"] == 0


def test_lag_unknown_without_streaming():
    assert promote.assess_lag(None, "0/3000000", 5.0) == {"bytes": None, "seconds": None, "caught_up": None}


def test_lag_guard_bounds():
    lag = {"bytes": 2048, "seconds": 3.0}
    assert promote.lag_guard(lag)["status"] == "not_requested"
    assert promote.lag_guard(lag)["ok"] is True
    assert promote.lag_guard(lag, max_bytes=4096, max_seconds=5)["status"] == "within_bounds"
    over = promote.lag_guard(lag, max_bytes=1024)
    assert over["ok"] is False and "2048 bytes received but not replayed > max_lag_bytes=1024" in over["detail"]
    late = promote.lag_guard(lag, max_seconds=1)
    assert late["ok"] is False and "max_lag_seconds=1" in late["detail"]
    assert promote.lag_guard({"bytes": 0, "seconds": 0.0}, max_bytes=0, max_seconds=0)["ok"] is True


def test_lag_guard_refuses_what_it_cannot_measure():
    unknown = {"bytes": None, "seconds": None}
    assert promote.lag_guard(unknown, max_bytes=100)["ok"] is False
    assert "cannot be measured" in promote.lag_guard(unknown, max_seconds=10)["detail"]
    assert promote.lag_guard(unknown)["ok"] is True  # no bound asked: nothing to refuse


@pytest.mark.parametrize("message, kind", [
    ('connection to server at "127.0.0.1", port 15432 failed: Connection refused', "unreachable"),
    ("timeout expired", "timeout"),  # a partition looks like this: never "safe"
    ('could not translate host name "db.gone" to address: Name or service not known', "unreachable"),
    ('connection to server on socket "/run/pg/.s.PGSQL.5432" failed: No such file or directory', "unreachable"),
    # connect() to an address routed to a blackhole (a lost region's network, the lab's `down`): EINVAL
    ('connection to server at "198.18.0.11", port 15432 failed: Invalid argument', "unreachable"),
    ('failed: FATAL:  password authentication failed for user "postgres"', "login_refused"),
    ("failed: FATAL:  no pg_hba.conf entry for host", "login_refused"),
    # a server answered TLS and its certificate was refused (wrong ca_cert): alive, never "down"
    ('connection to server at "127.0.0.1", port 15432 failed: SSL error: certificate verify failed', "login_refused"),
    ('failed: server certificate for "db1" does not match host name "127.0.0.1"', "login_refused"),
    ("failed: server does not support SSL, but SSL was required", "login_refused"),
    ("failed: FATAL:  the database system is shutting down", "unknown"),
    ("failed: FATAL:  the database system is in recovery mode", "unknown"),
])
def test_connect_errors_classified(message, kind):
    assert postgres.classify_connect_error(message) == kind


@pytest.mark.parametrize("in_recovery, read_only, state", [
    (False, False, "writable"), (False, True, "read_only"), (True, False, "in_recovery"), (True, True, "in_recovery"),
])
def test_old_primary_state(in_recovery, read_only, state):
    assert promote.old_primary_state(in_recovery, read_only) == state


@pytest.mark.parametrize("status, ok", [
    ("writable", False), ("unknown", False), ("not_checked", False), ("unreachable", False), ("no_answer", False),
    ("stopped", True), ("read_only", False), ("in_recovery", True),
])
def test_split_brain_guard(status, ok):
    guard = promote.split_brain_guard({"status": status, "target": "10.0.0.1:5432", "error": "x"})
    assert guard["ok"] is ok
    assert guard["status"] == status and guard["target"] == "10.0.0.1:5432"
    if status == "writable":
        assert "split-brain" in guard["detail"] and "10.0.0.1:5432" in guard["detail"]


@pytest.mark.parametrize("status", ["unreachable", "no_answer"])
def test_unreachable_is_not_down_without_a_fence_or_the_operators_word(status):
    probe = {"status": status, "target": "10.0.0.1:5432", "error": "Connection refused"}
    refused = promote.split_brain_guard(probe)
    assert refused["ok"] is False
    # the refusal names both ways forward
    assert "not the same as down" in refused["detail"] and "Fence it" in refused["detail"]
    assert "source_confirmed_down=true" in refused["detail"]
    fenced = promote.split_brain_guard(probe, fenced_by="lab: no postmaster in the namespace")
    assert fenced["ok"] is True and fenced["fenced_by"] == "lab: no postmaster in the namespace"
    assert "fenced: lab: no postmaster" in fenced["detail"]
    confirmed = promote.split_brain_guard(probe, confirmed_down=True)
    assert confirmed["ok"] is True and confirmed["confirmed_down"] is True


@pytest.mark.parametrize("status", ["writable", "read_only", "unknown"])
def test_a_fence_does_not_excuse_an_old_primary_that_still_answers(status):
    guard = promote.split_brain_guard({"status": status, "target": "h:1", "error": "x"},
                                      fenced_by="command: exit 0", confirmed_down=True)
    assert guard["ok"] is False
    if status == "writable":
        assert "although it was reported fenced (command: exit 0)" in guard["detail"]


def test_read_only_is_no_fence():
    with pytest.raises(FediflowError, match="fence_old_primary=read_only is no fence"):
        promote.validate(_params(fence_old_primary="read_only"))


def test_wait_replay_lsn_must_be_an_lsn():
    promote.validate(_params(wait_replay_lsn="0/3000028"))
    with pytest.raises(FediflowError, match="wait_replay_lsn must be an LSN"):
        promote.validate(_params(wait_replay_lsn="yesterday"))


def test_split_brain_guard_in_check_mode_counts_the_fence_it_would_apply():
    guard = promote.split_brain_guard({"status": "writable", "target": "h:1"}, would_fence="stop")
    assert guard["ok"] is True and "fence_old_primary=stop would fence it" in guard["detail"]


def test_force_turns_blockers_into_overrides():
    guards = {"lag": {"ok": False}, "split_brain": {"ok": False}}
    assert promote.blockers(guards, force=False) == (["lag", "split_brain"], [])
    assert promote.blockers(guards, force=True) == ([], ["lag", "split_brain"])
    assert promote.blockers({"lag": {"ok": True}}, force=False) == ([], [])


def test_upstream_target_prefers_options_then_receiver_then_conninfo():
    receiver = {"sender_host": "10.0.0.5", "sender_port": 5433}
    conninfo = {"host": "db1", "port": "6432"}
    assert promote.upstream_target(_params(old_primary_host="h", old_primary_port=1), receiver, conninfo) == {
        "host": "h", "port": 1, "source": "options"}
    assert promote.upstream_target(_params(old_primary_host="h"), None, None)["port"] == 5432
    assert promote.upstream_target(_params(), receiver, conninfo) == {
        "host": "10.0.0.5", "port": 5433, "source": "pg_stat_wal_receiver"}
    assert promote.upstream_target(_params(), None, conninfo) == {"host": "db1", "port": 6432,
                                                                  "source": "primary_conninfo"}
    assert promote.upstream_target(_params(), None, {}) is None


def test_old_primary_login_defaults_to_the_standbys():
    params = _params(login_user="admin", login_password="pw", login_unix_socket="/run/pg")
    target = {"host": "10.0.0.5", "port": 5433}
    assert promote.postgres.connect_kwargs(promote.old_primary_params(params, target)) == {
        "user": "admin", "password": "pw", "host": "10.0.0.5", "port": 5433, "dbname": "postgres",
        "connect_timeout": 10, "application_name": "fediflow.dr", "sslmode": "prefer"}
    params.update(old_primary_login_user="u2", old_primary_login_password="p2")
    own = promote.old_primary_params(params, target)
    assert (own["login_user"], own["login_password"]) == ("u2", "p2")
