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
