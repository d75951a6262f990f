"""pg_promote on a real primary + streaming standby built per test (pair_fixtures.py), never the
shared lab clusters: each promotion consumes its pair. Run through the module as a user runs
it; the outcome is checked with psycopg2 on both servers and pg_ctl status."""
import json
import threading
import time

import psycopg2
import pytest

from doubles_fixtures import free_port
from lab_fixtures import module, poll
from pair_fixtures import make_pair

MODULE = "fediflow.dr.pg_promote"


@pytest.fixture
def pair():
    built = make_pair()
    yield built
    built.destroy()


def _seed(pair, rows=100):
    pair.primary.query("CREATE TABLE IF NOT EXISTS dr_probe (id serial PRIMARY KEY, v text)")
    pair.primary.query("INSERT INTO dr_probe (v) SELECT 'row ' || g FROM generate_series(1, %s) g", (rows,))
    return pair.primary.one("SELECT count(*) FROM dr_probe")


def _timeline(node):
    return int(node.one("SELECT pg_walfile_name(pg_current_wal_lsn())")[:8], 16)


def _no_secret(pair, res):
    text = json.dumps(res)
    assert pair.password not in text and pair.repl_password not in text


def test_split_brain_refused_while_the_old_primary_takes_writes(pair):
    _seed(pair)
    res = module(MODULE, pair.module_args())
    assert res["failed"] and res["changed"] is False
    assert "split-brain" in res["msg"] and "127.0.0.1:%d" % pair.primary.port in res["msg"]
    guard = res["guards"]["split_brain"]
    assert (guard["ok"], guard["status"], guard["source"]) == (False, "writable", "options")
    assert pair.standby.one("SELECT pg_is_in_recovery()") is True
    assert pair.standby.one("SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert pair.primary.one("SELECT pg_is_in_recovery()") is False
    _no_secret(pair, res)

    # without old_primary_host the upstream the standby streams from is asked
    args = pair.module_args()
    del args["old_primary_host"], args["old_primary_port"]
    res = module(MODULE, args)
    assert res["failed"] and res["guards"]["split_brain"]["source"] == "pg_stat_wal_receiver"
    assert res["guards"]["split_brain"]["status"] == "writable"

    # a server that answers but will not let us in is not "down"
    res = module(MODULE, pair.module_args(old_primary_login_password="wrong-password"))
    assert res["failed"] and res["guards"]["split_brain"]["status"] == "unknown"
    assert "password authentication failed" in res["guards"]["split_brain"]["error"]

    # a wrong address: "does not answer" is not "down" - refused, naming the two ways forward
    res = module(MODULE, pair.module_args(old_primary_port=free_port()), check_mode=True)
    assert res["failed"] and res["guards"]["split_brain"]["status"] == "unreachable"
    assert "not the same as down" in res["msg"] and "source_confirmed_down=true" in res["msg"]
    # with a fence that succeeded it goes through (check mode here), with a warning, since the
    # standby still streams from a live upstream
    res = module(MODULE, pair.module_args(old_primary_port=free_port(), old_primary_fenced_by="test: a fence"),
                 check_mode=True)
    assert res["changed"] is True and res["guards"]["split_brain"]["fenced_by"] == "test: a fence"
    assert res["wal_receiver"]["status"] == "streaming" and res["wal_receiver"]["last_msg_age_s"] < 60
    assert any("still reported 'streaming'" in w for w in res.get("warnings", [])), res.get("warnings")

    # nobody answers at the given address, but pg_ctl on this host says the old primary runs
    res = module(MODULE, pair.module_args(old_primary_port=free_port(), old_primary_data_dir=pair.primary.data_dir))
    assert res["failed"] and res["guards"]["split_brain"]["status"] == "unknown"
    assert res["guards"]["split_brain"]["pg_ctl_state"] == "running"
    assert pair.standby.one("SELECT pg_is_in_recovery()") is True


def test_promote_after_the_old_primary_dies_then_nothing_to_do(pair):
    rows = _seed(pair, 500)
    assert pair.wait_replayed()
    pair.primary.stop("immediate")  # the region is gone
    # unreachable is not down: without a fence or the operator's word, nothing happens
    refused = module(MODULE, pair.module_args())
    assert refused["failed"] and refused["changed"] is False
    assert refused["guards"]["split_brain"]["status"] == "unreachable"
    assert pair.standby.one("SELECT pg_is_in_recovery()") is True
    t0 = time.monotonic()
    res = module(MODULE, pair.module_args(old_primary_confirmed_down=True), diff=True)
    wall = time.monotonic() - t0
    assert res["changed"] is True and res["promoted"] is True, res.get("msg")
    guard = res["guards"]["split_brain"]
    assert guard["status"] == "unreachable" and guard["confirmed_down"] is True
    assert "the operator confirmed it down" in guard["detail"]
    assert res["in_recovery"] is False
    assert (res["timeline_before"], res["timeline"]) == (1, 2)
    assert res["diff"] == {"before": {"in_recovery": True, "timeline": 1},
                           "after": {"in_recovery": False, "timeline": 2}}
    assert res["promote_lsn"] and res["lag"]["bytes"] == 0 and res["lag"]["unreceived_bytes"] is None
    assert 0 < res["time_to_writable_s"] < 5 and res["duration_s"] < wall
    _no_secret(pair, res)

    node = pair.standby  # checked independently
    assert node.one("SELECT pg_is_in_recovery()") is False
    assert node.one("SELECT count(*) FROM dr_probe") == rows
    node.query("INSERT INTO dr_probe (v) VALUES ('after promotion')")
    assert _timeline(node) == 2
    history = node.one("SELECT pg_read_file('pg_wal/00000002.history')")
    assert history.split("\t")[1] == res["promote_lsn"]  # where timeline 2 branches off

    again = module(MODULE, pair.module_args(), diff=True)
    assert again["changed"] is False and again["promoted"] is False
    assert "already promoted" in again["msg"]
    assert again["diff"]["before"] == again["diff"]["after"] == {"in_recovery": False, "timeline": 2}


def test_check_mode_predicts_and_touches_nothing(pair):
    _seed(pair)
    refused = module(MODULE, pair.module_args(), check_mode=True)
    assert refused["failed"] and "split-brain" in refused["msg"]
    predicted = module(MODULE, pair.module_args(fence_old_primary="stop",
                                                old_primary_data_dir=pair.primary.data_dir),
                       check_mode=True, diff=True)
    assert predicted["changed"] is True and predicted["fence"]["predicted"] is True
    assert predicted["guards"]["split_brain"]["ok"] is True
    assert any("would fence" in a for a in predicted["actions"])
    assert pair.primary.running() and pair.primary.one("SELECT pg_is_in_recovery()") is False

    pair.primary.stop("immediate")
    res = module(MODULE, pair.module_args(old_primary_fenced_by="test: stopped"), check_mode=True, diff=True)
    assert res["changed"] is True and res["promoted"] is True and res["time_to_writable_s"] is None
    assert res["diff"]["after"] == {"in_recovery": False, "timeline": 2}
    assert res["msg"].startswith("would promote")
    assert pair.standby.one("SELECT pg_is_in_recovery()") is True
    assert not pair.standby.query("SELECT 1 FROM pg_ls_waldir() WHERE name = '00000002.history'")


def test_lag_bound_refuses_before_fencing_and_force_overrides(pair):
    _seed(pair)
    assert pair.wait_replayed()
    pair.standby.query("SELECT pg_wal_replay_pause()")
    rows = _seed(pair, 20000)
    assert pair.wait_received()  # received by the standby, not replayed

    res = module(MODULE, pair.module_args(max_lag_bytes=1024, fence_old_primary="stop",
                                          old_primary_data_dir=pair.primary.data_dir))
    assert res["failed"] and "max_lag_bytes=1024" in res["msg"]
    assert res["guards"]["lag"]["status"] == "exceeded" and res["guards"]["lag"]["bytes"] > 1024
    assert pair.primary.running(), "refused by the lag guard, yet the old primary was fenced"
    assert pair.standby.one("SELECT pg_is_in_recovery()") is True

    pair.primary.stop("immediate")
    res = module(MODULE, pair.module_args(max_lag_seconds=0.001))
    assert res["failed"] and "max_lag_seconds=0.001" in res["msg"]

    res = module(MODULE, pair.module_args(max_lag_bytes=1024, max_lag_seconds=0.001, force=True,
                                          old_primary_confirmed_down=True))
    assert res["changed"] is True and res["forced"] is True and res["overridden"] == ["lag"]
    assert "force=true overrode: lag" in res["msg"]
    assert res["lag"]["replay_paused"] is True and res["lag"]["bytes"] > 1024
    # received-but-unreplayed WAL is replayed before the node opens: the lag cost time, not data
    assert pair.standby.one("SELECT count(*) FROM dr_probe") == rows
    assert pair.standby.one("SELECT pg_is_in_recovery()") is False


def test_fence_stop_then_promote_keeps_every_committed_row(pair):
    rows = _seed(pair, 1000)  # no wait: the fast shutdown ships the last WAL to the standby
    res = module(MODULE, pair.module_args(fence_old_primary="stop", old_primary_data_dir=pair.primary.data_dir))
    assert res["changed"] is True, res.get("msg")
    assert res["fence"]["mode"] == "stop" and res["fence"]["changed"] is True
    assert res["fence"]["cluster_state"] == "shut down" and res["fence"]["checkpoint_lsn"]
    assert res["guards"]["split_brain"]["status"] == "stopped"
    catch_up = res["guards"]["catch_up"]
    assert catch_up["status"] == "replayed" and catch_up["wait_replay_lsn"] == res["fence"]["checkpoint_lsn"]
    assert res["actions"][0].startswith("fence: pg_ctl stop -m fast")
    assert not pair.primary.running()
    assert pair.standby.one("SELECT count(*) FROM dr_probe") == rows
    assert _timeline(pair.standby) == 2


def _stop_on_its_host(pair):
    """The old primary stopped where it runs (fediflow.dr.pg_ctl, as the region_failover role does over
    SSH); its control file says where its last WAL ends."""
    stop = module("fediflow.dr.pg_ctl", {"data_dir": pair.primary.data_dir, "state": "stopped",
                                         "stop_mode": "fast"})
    assert stop["changed"] is True and stop["control"]["cluster_state"] == "shut down", stop
    return stop["control"]["checkpoint_lsn"]


def test_switchover_across_hosts_waits_for_the_last_wal_and_loses_no_acknowledged_write(pair):
    """A steady write load until the old primary stops; every write it acknowledged is on the new
    primary (counted), because the promotion waits until the standby replayed past the shutdown
    checkpoint. read_only is refused as a fence: any session can lift it."""
    _seed(pair, 10)
    refused = module(MODULE, pair.module_args(fence_old_primary="read_only"))
    assert refused["failed"] and "fence_old_primary must be one of: none, stop" in refused["msg"]
    acked, errors = [], []
    stop_writing = threading.Event()

    def writer():
        conn = pair.primary.connect()
        try:
            for i in range(20000):  # bounded: the stop below ends it long before
                if stop_writing.is_set():
                    return
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO dr_probe (v) VALUES (%s) RETURNING id", ("load %d" % i,))
                        acked.append(cur.fetchone()[0])
                except psycopg2.Error as exc:
                    errors.append(str(exc).strip())
                    return
        finally:
            conn.close()
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert poll(lambda: len(acked) >= 200, 30), "the write load did not start"
        checkpoint = _stop_on_its_host(pair)
    finally:
        stop_writing.set()
        thread.join(30)
    assert errors, "the writer should have been cut off by the stop"
    res = module(MODULE, pair.module_args(old_primary_fenced_by="stopped on its host (pg_ctl stop -m fast)",
                                          wait_replay_lsn=checkpoint))
    assert res["changed"] is True, res.get("msg")
    assert res["guards"]["catch_up"]["status"] == "replayed"
    assert res["guards"]["split_brain"]["fenced_by"].startswith("stopped on its host")
    assert res["lag"]["unreceived_bytes"] is None  # the old primary cannot be asked any more
    ids = {row[0] for row in pair.standby.query("SELECT id FROM dr_probe")}
    missing = [i for i in acked if i not in ids]
    assert not missing, "%d acknowledged writes lost, e.g. %s" % (len(missing), missing[:5])


def test_a_switchover_refuses_when_the_standby_cannot_reach_the_last_checkpoint(pair):
    """The standby was cut off before the old primary stopped: it cannot have its last WAL, and a
    promotion would lose what the old primary acknowledged after the cut - refused, standby untouched."""
    _seed(pair, 10)
    assert pair.wait_replayed()
    pair.standby.query("ALTER SYSTEM SET primary_conninfo = ''")
    pair.standby.query("SELECT pg_reload_conf()")
    assert poll(lambda: pair.standby.one("SELECT count(*) FROM pg_stat_wal_receiver") == 0, 30)
    _seed(pair, 500)
    checkpoint = _stop_on_its_host(pair)
    res = module(MODULE, pair.module_args(old_primary_fenced_by="stopped on its host", wait_replay_lsn=checkpoint,
                                          timeout=3))
    assert res["failed"] and res["guards"]["catch_up"]["status"] == "behind", res.get("msg")
    assert "not past the old primary's last checkpoint" in res["msg"]
    assert pair.standby.one("SELECT pg_is_in_recovery()") is True


def test_a_read_only_old_primary_is_no_fence(pair):
    _seed(pair, 10)
    pair.primary.query("ALTER SYSTEM SET default_transaction_read_only = on")
    pair.primary.query("SELECT pg_reload_conf()")
    res = module(MODULE, pair.module_args(old_primary_fenced_by="a read-only setting"))
    assert res["failed"] and res["guards"]["split_brain"]["status"] == "read_only"
    assert "which any session can lift" in res["msg"]
    assert pair.standby.one("SELECT pg_is_in_recovery()") is True


def test_bad_input_refused_before_touching_anything(pair):
    pair.primary.stop("immediate")  # a promotion would be allowed: only the input stops it
    for extra, message in [
            ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
            ({"max_lag_bytes": -1}, "max_lag_bytes must be 0 or more, got -1"),
            ({"fence_old_primary": "stop"}, "fence_old_primary=stop needs old_primary_data_dir"),
            ({"fence_old_primary": "read_only"}, "fence_old_primary must be one of: none, stop, got: read_only"),
            ({"wait_replay_lsn": "soon"}, "wait_replay_lsn must be an LSN like 0/3000028, got 'soon'")]:
        res = module(MODULE, pair.module_args(**extra))
        assert res["failed"] and message in res["msg"], res.get("msg")
        assert pair.standby.one("SELECT pg_is_in_recovery()") is True
