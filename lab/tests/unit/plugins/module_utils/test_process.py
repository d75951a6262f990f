# -*- coding: utf-8 -*-
"""lab_service logic against real processes (a tiny HTTP server), no mocks."""
from __future__ import annotations

import os
import socket
import sys

import pytest

from ansible_collections.fediflow.dr_lab.plugins.module_utils import process
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def service(tmp_path):
    port = _free_port()
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    spec = {"name": "web", "argv": argv, "pid_file": str(tmp_path / "web.pid"),
            "log_file": str(tmp_path / "web.log"), "health_url": "http://127.0.0.1:%d/" % port,
            "timeout": 15}
    yield spec
    pid = process.read_pid(spec["pid_file"])
    if pid:
        process.stop_pid(pid, 5)


@pytest.mark.parametrize("current, wanted, actions", [
    ({"state": "stopped"}, "started", ["start"]),
    ({"state": "started", "argv_matches": True, "healthy": True}, "started", []),
    ({"state": "started", "argv_matches": False, "healthy": False}, "started", ["stop", "start"]),
    ({"state": "started", "argv_matches": True, "healthy": False}, "started", ["stop", "start"]),
    ({"state": "started"}, "stopped", ["stop"]),
    ({"state": "stopped"}, "stopped", []),
])
def test_plan(current, wanted, actions):
    assert process.plan(current, wanted) == actions


def test_start_is_idempotent_and_stop_ends_the_process(service):
    check = process.ensure(check_mode=True, **service)
    assert check["changed"] and check["actions"] == ["start"]
    assert process.read_pid(service["pid_file"]) is None  # check mode started nothing

    first = process.ensure(**service)
    assert first["changed"] and first["state"] == "started"
    assert process.healthy(service["health_url"])
    second = process.ensure(**service)
    assert not second["changed"] and second["pid"] == first["pid"]

    stopped = process.ensure(state="stopped", **service)
    assert stopped["changed"]
    assert process.process_argv(first["pid"]) is None
    assert not os.path.exists(service["pid_file"])
    assert not process.ensure(state="stopped", **service)["changed"]


def test_changed_argv_restarts(service):
    first = process.ensure(**service)
    service["argv"] = service["argv"] + ["--directory", "/"]
    again = process.ensure(**service)
    assert again["actions"] == ["stop", "start"]
    assert again["pid"] != first["pid"]
    assert process.process_argv(first["pid"]) is None


def test_program_that_dies_is_reported_with_its_log(tmp_path):
    argv = [sys.executable, "-c", "import sys; print('boom: no config'); sys.exit(3)"]
    with pytest.raises(FediflowError, match="exited with code 3.*boom: no config"):
        process.ensure("bad", argv, str(tmp_path / "bad.pid"), str(tmp_path / "bad.log"),
                       health_url="http://127.0.0.1:9/", timeout=10)
    assert not os.path.exists(str(tmp_path / "bad.pid"))


def test_match_argv_false_keeps_a_healthy_service_started_differently(service):
    first = process.ensure(**service)
    other = dict(service, argv=service["argv"] + ["--directory", "/"])
    kept = process.ensure(match_argv=False, **other)
    assert kept["actions"] == [] and kept["pid"] == first["pid"]


def test_stale_pid_file_never_names_another_process(tmp_path):
    """After a reboot or pid reuse the pid file's start time no longer matches: not ours."""
    pid_file = tmp_path / "x.pid"
    pid_file.write_text("%d %s\n" % (os.getpid(), "1"))  # our pid, wrong start time
    assert process.read_pid(str(pid_file)) is None
    pid_file.write_text("%d\n" % os.getpid())  # old format without a start time
    assert process.read_pid(str(pid_file)) is None
    pid_file.write_text("%d %s\n" % (os.getpid(), process.start_ticks(os.getpid())))
    assert process.read_pid(str(pid_file)) == os.getpid()
    stopped = process.ensure("x", ["/bin/true"], str(tmp_path / "y.pid"), str(tmp_path / "y.log"),
                             state="stopped")
    assert stopped["actions"] == []
