# -*- coding: utf-8 -*-
from __future__ import annotations

import os
import sys
import time

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import common
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def test_as_user_same_user_is_unchanged():
    assert common.as_user(["id"], common.current_user()) == ["id"]
    assert common.as_user(["id"], None) == ["id"]


def test_as_user_other_user_uses_runuser_without_shell(monkeypatch):
    monkeypatch.setattr(common, "current_user", lambda: "root")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert common.as_user(["pg_ctl", "status"], "postgres") == [
        "runuser", "-u", "postgres", "--", "pg_ctl", "status"]


def test_as_user_refuses_without_root(monkeypatch):
    monkeypatch.setattr(common, "current_user", lambda: "alice")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(FediflowError, match="not running as root"):
        common.as_user(["pg_ctl"], "postgres")


def test_run_passes_env_not_argv_and_none_unsets(monkeypatch):
    monkeypatch.setenv("FEDIFLOW_TEST_INHERITED", "from-parent")
    res = common.run([sys.executable, "-c", "import os; print(os.environ['FEDIFLOW_TEST_VALUE'], "
                      "os.environ.get('FEDIFLOW_TEST_INHERITED', 'unset'))"],
                     env={"FEDIFLOW_TEST_VALUE": "s3cret", "FEDIFLOW_TEST_INHERITED": None})
    assert res.rc == 0
    assert res.stdout.split() == ["s3cret", "unset"]
    assert "s3cret" not in " ".join(res.argv)


def test_run_missing_program_is_a_clear_error():
    with pytest.raises(FediflowError, match="program not found: /nonexistent/prog"):
        common.run(["/nonexistent/prog"])


def test_run_timeout_is_reported():
    with pytest.raises(FediflowError, match="did not finish within 0.2s"):
        common.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)


def test_redact_masks_secrets_and_password_words():
    argv = ["psql", "host=x password=hunter2 user=y", "--token=abc123"]
    out = common.redact(argv, secrets=["abc123"])
    assert out == ["psql", "host=x password=******** user=y", "--token=********"]
    assert argv[2] == "--token=abc123"  # the input is not modified


def test_wait_until_returns_the_value_once_true():
    calls = []

    def predicate():
        calls.append(1)
        return "ready" if len(calls) >= 3 else None

    value, waited = common.wait_until(predicate, timeout=10, interval=0.01)
    assert value == "ready"
    assert len(calls) == 3
    assert waited < 10


def test_wait_until_gives_up_at_the_deadline():
    t0 = time.monotonic()
    value, waited = common.wait_until(lambda: False, timeout=0.3, interval=0.05)
    assert value is False
    assert waited >= 0.3
    assert time.monotonic() - t0 < 5


def test_timer_phases_accumulate():
    timer = common.Timer()
    with timer.phase("a"):
        pass
    with timer.phase("a"):
        pass
    assert set(timer.phases) == {"a"}
    assert timer.elapsed() >= timer.phases["a"]


def test_last_lines():
    assert common.last_lines("a\n\nb\nc\n", 2) == "b | c"
    assert common.last_lines(None) == ""
