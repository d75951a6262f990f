# -*- coding: utf-8 -*-
"""pg_ctl planning as plain data; the real start/stop is proven by the integration tier."""
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import pgctl
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


@pytest.mark.parametrize("current, wanted, actions", [
    ("running", "started", []),
    ("stopped", "started", ["start"]),
    ("running", "stopped", ["stop"]),
    ("stopped", "stopped", []),
    ("running", "restarted", ["restart"]),
    ("stopped", "restarted", ["start"]),
    ("running", "reloaded", ["reload"]),
    ("stopped", "reloaded", ["start"]),
])
def test_plan(current, wanted, actions):
    assert pgctl.plan(current, wanted) == actions


def test_plan_refuses_unknown_state():
    with pytest.raises(FediflowError, match="state must be one of"):
        pgctl.plan("running", "paused")


def test_find_bindir_explicit_must_hold_pg_ctl(tmp_path):
    with pytest.raises(FediflowError, match="has no pg_ctl"):
        pgctl.find_bindir(str(tmp_path))
    (tmp_path / "pg_ctl").write_text("")
    assert pgctl.find_bindir(str(tmp_path)) == str(tmp_path)


def test_status_of_an_empty_directory_is_absent(tmp_path):
    assert pgctl.status("/nonexistent", str(tmp_path), None) == {"state": "absent", "pid": None}


def test_ensure_refuses_bad_input_before_touching_anything(tmp_path):
    with pytest.raises(FediflowError, match="stop_mode must be one of"):
        pgctl.ensure(str(tmp_path), stop_mode="violent")
    with pytest.raises(FediflowError, match="state must be one of"):
        pgctl.ensure(str(tmp_path), state="gone")
    (tmp_path / "pg_ctl").write_text("")
    with pytest.raises(FediflowError, match="holds no PostgreSQL cluster"):
        pgctl.ensure(str(tmp_path / "data"), bin_dir=str(tmp_path))


def test_version_key_orders_numerically():
    dirs = ["/usr/lib/postgresql/9/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/13/bin"]
    assert sorted(dirs, key=pgctl._version_key)[-1] == "/usr/lib/postgresql/15/bin"


@pytest.mark.parametrize("cluster", ["15/main", "15/fdl0_us_east_1", "9.6/main"])
def test_split_cluster_takes_what_pg_lsclusters_names(cluster):
    version, name = pgctl.split_cluster(cluster)
    assert "%s/%s" % (version, name) == cluster


@pytest.mark.parametrize("cluster", ["main", "15", "15/", "/main", "15/main/x", "15/ma in", "15/main;rm", "x/main"])
def test_split_cluster_refuses_anything_else_naming_the_option(cluster):
    with pytest.raises(FediflowError, match="cluster must be VERSION/NAME"):
        pgctl.split_cluster(cluster)


def test_a_debian_cluster_is_controlled_with_pg_ctlcluster(tmp_path):
    (tmp_path / "15" / "main").mkdir(parents=True)
    assert pgctl.control_argv("/bin", "stop", "/d", "15/main", mode="immediate", conf_root=str(tmp_path)) == [
        "pg_ctlcluster", "-m", "immediate", "15", "main", "stop"]
    assert pgctl.control_argv("/bin", "start", "/d", "15/main", log_file="/l") == ["pg_ctlcluster", "15", "main", "start"]
    assert pgctl.control_argv("/bin", "reload", "/d", "15/main") == ["pg_ctlcluster", "15", "main", "reload"]


def test_a_debian_cluster_whose_configuration_is_gone_is_still_stopped_by_its_data_directory(tmp_path):
    # pg_ctlcluster no longer knows it (its /etc/postgresql/VERSION/NAME removed) while its server runs
    assert pgctl.control_argv("/b", "stop", "/d", "15/main", mode="fast", conf_root=str(tmp_path)) == [
        "/b/pg_ctl", "stop", "-D", "/d", "-w", "-t", "60", "-m", "fast"]
    assert pgctl.control_argv("/b", "start", "/d", "15/main", conf_root=str(tmp_path))[0] == "pg_ctlcluster"


def test_a_plain_data_directory_is_controlled_with_pg_ctl():
    assert pgctl.control_argv("/b", "start", "/d", log_file="/l", timeout=30) == [
        "/b/pg_ctl", "start", "-D", "/d", "-l", "/l", "-w", "-t", "30"]
    assert pgctl.control_argv("/b", "stop", "/d", mode="fast") == ["/b/pg_ctl", "stop", "-D", "/d", "-w", "-t", "60",
                                                                   "-m", "fast"]
    assert pgctl.control_argv("/b", "reload", "/d") == ["/b/pg_ctl", "reload", "-D", "/d"]


def test_ensure_refuses_a_malformed_cluster_before_touching_anything(tmp_path):
    with pytest.raises(FediflowError, match="cluster must be VERSION/NAME"):
        pgctl.ensure(str(tmp_path), cluster="main")


def test_parse_controldata_reads_state_checkpoint_and_timeline():
    text = """pg_control version number:            1300
Database cluster state:               shut down
Latest checkpoint location:           0/3000028
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's TimeLineID:       2
Latest checkpoint's PrevTimeLineID:   2
"""
    assert pgctl.parse_controldata(text) == {"cluster_state": "shut down", "checkpoint_lsn": "0/3000028",
                                             "redo_lsn": "0/3000028", "timeline": 2}
    assert pgctl.parse_controldata("") == {}
    assert pgctl.parse_controldata("Latest checkpoint's TimeLineID: x")["timeline"] is None
