# -*- coding: utf-8 -*-
"""module_utils/fence.py (the command fence method) with real programs: this Python, run from argument lists."""
from __future__ import annotations

import json
import sys
import time

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import common, fence
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

PY = sys.executable
SECRET = "pdu-secret-93ab"


def py(code, *args):
    return [PY, "-c", code] + [str(a) for a in args]


def failure(excinfo):
    """The message and the partial result a failed fence carries."""
    return excinfo.value.message, excinfo.value.details["result"]


def test_fence_without_verify_is_proven_by_its_exit_status_only(tmp_path):
    marker = tmp_path / "off"
    res = fence.command_fence(py("import sys; open(sys.argv[1], 'w').write('off')", marker))
    assert marker.read_text() == "off"
    assert res["changed"] and res["fenced"]
    assert res["proved"] == "fence command exited 0 (no verify command: its exit status is the only proof)"
    assert res["fence"]["rc"] == 0 and res["verify"] is None and res["duration_s"] >= 0


def test_verify_is_polled_until_it_passes(tmp_path):
    counter = tmp_path / "runs"
    verify = py("import os, sys; p = sys.argv[1]; n = os.path.getsize(p) if os.path.exists(p) else 0; "
                "open(p, 'a').write('x'); sys.exit(0 if n >= 2 else 1)", counter)
    res = fence.command_fence(py("pass"), verify_argv=verify, verify_timeout=20, verify_interval=0.2)
    assert res["fenced"] and res["verify"]["attempts"] == 3 and counter.read_text() == "xxx"
    assert res["proved"].startswith("verify command exited 0 (attempt 3, ")
    assert len(res["actions"]) == 2 and res["actions"][1].endswith("(exit 0 at attempt 3)")


def test_failing_fence_is_not_proven_and_no_proof_is_sought(tmp_path):
    counter = tmp_path / "runs"
    with pytest.raises(FediflowError) as excinfo:
        fence.command_fence(py("import sys; sys.stderr.write('outlet busy\\n'); sys.exit(4)"),
                            verify_argv=py("open(__import__('sys').argv[1], 'w')", counter))
    msg, partial = failure(excinfo)
    assert msg.startswith("fence command %s exited 4: outlet busy; the old primary is NOT proven fenced" % PY)
    assert "source_confirmed_down=true" in msg
    assert partial["changed"] and not partial["fenced"] and partial["fence"]["rc"] == 4
    assert not counter.exists()


def test_verify_that_never_passes_fails_after_its_deadline():
    t0 = time.monotonic()
    with pytest.raises(FediflowError) as excinfo:
        fence.command_fence(py("pass"), verify_argv=py("print('outlet on'); raise SystemExit(1)"),
                            verify_timeout=1.5, verify_interval=0.2)
    took = time.monotonic() - t0
    msg, partial = failure(excinfo)
    assert "did not exit 0 within 1.5s" in msg and "last exit 1: outlet on" in msg
    assert partial["verify"]["attempts"] >= 2 and not partial["fenced"]
    assert 1.5 <= took < 10


def test_secrets_reach_the_programs_only_through_the_environment(tmp_path):
    res = fence.command_fence(py("import os; print('password', os.environ['PDU_PASSWORD'])"),
                              verify_argv=py("import os, sys; sys.exit(0 if os.environ['PDU_PASSWORD'] == sys.argv[1] else 1)", SECRET),
                              env={"PDU_PASSWORD": SECRET})
    assert res["fenced"] and res["fence"]["stdout"] == "password ********"
    # the verify argv held the secret (a test-only habit): masked wherever it is shown
    assert SECRET not in json.dumps(res)


def _state(pid):
    """The one-letter state of ``pid`` (/proc/PID/stat, after the command's closing parenthesis), None when gone."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_a_hanging_fence_is_killed_with_its_children(tmp_path):
    """The fence starts a child that would outlive it and keep its output open; the time-out kills both."""
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "open(sys.argv[1], 'w').write(str(c.pid)); time.sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(FediflowError) as excinfo:
        fence.command_fence(py(code, pid_file), timeout=1.5)
    assert time.monotonic() - t0 < 15
    msg, partial = failure(excinfo)
    assert "did not finish within 1.5s (killed, with the processes it started)" in msg
    assert partial["changed"] and partial["fence"] is None  # it ran: it may have acted
    child = int(pid_file.read_text())
    # killed: gone, or a zombie until whoever inherited the orphan reaps it
    assert common.wait_until(lambda: _state(child) in (None, "Z"), 5)[0]


def test_check_mode_runs_nothing_and_finds_missing_programs(tmp_path):
    marker = tmp_path / "off"
    res = fence.command_fence(py("open(__import__('sys').argv[1], 'w')", marker), verify_argv=["true"], check_mode=True)
    assert res["changed"] and not res["fenced"] and not marker.exists()
    assert res["actions"][0].startswith("would run the fence command: %s -c " % PY)
    assert res["actions"][1].startswith("would run the verify command until it exits 0 (at most 60.0s): true")
    with pytest.raises(FediflowError, match="fence program not found on this host: /nonexistent/fence_agent"):
        fence.command_fence(["/nonexistent/fence_agent", "--off"], check_mode=True)
    with pytest.raises(FediflowError, match="not found on this host: no-such-verify-program"):
        fence.command_fence(["true"], verify_argv=["no-such-verify-program"], check_mode=True)


def test_missing_program_is_not_proven():
    with pytest.raises(FediflowError, match="fence command failed: program not found: /nonexistent/fence_agent") as excinfo:
        fence.command_fence(["/nonexistent/fence_agent"])
    assert not failure(excinfo)[1]["changed"]
    with pytest.raises(FediflowError, match=r"verify command no-such-verify-program did not exit 0 .*1 attempts; "
                                            r"last program not found"):
        fence.command_fence(["true"], verify_argv=["no-such-verify-program"], verify_timeout=30)


@pytest.mark.parametrize("argv, verify, env, timeout, message", [
    (None, None, None, 120, "argv is required"),
    ("fence_ipmilan --off", None, None, 120, "argv must be a non-empty list"),
    ([], None, None, 120, "argv must be a non-empty list"),
    (["fence", 3], None, None, 120, "element 1 is not"),
    (["true"], "true", None, 120, "verify_argv must be a non-empty list"),
    (["true"], None, {"A=B": "x"}, 120, "variable name must be a non-empty string without '='"),
    (["true"], None, None, 0, "timeout must be greater than 0"),
])
def test_bad_input_is_refused_before_running_anything(argv, verify, env, timeout, message):
    with pytest.raises(FediflowError, match=message):
        fence.command_fence(argv, verify_argv=verify, env=env, timeout=timeout)


def test_program_found_uses_the_programs_path(tmp_path):
    prog = tmp_path / "fence_test"
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    assert fence.program_found(str(prog)) and not fence.program_found(str(tmp_path / "nope"))
    assert fence.program_found("fence_test", {"PATH": str(tmp_path)})
    assert not fence.program_found("fence_test", {"PATH": "/nonexistent"})
