# -*- coding: utf-8 -*-
from __future__ import annotations

import os
import tempfile

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import common
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


class _Ended(Exception):
    pass


class _Module:
    """What run_module uses of AnsibleModule: fail_json/exit_json end the module (here: raise)."""
    _diff = False

    def __init__(self):
        self.ended = None

    def fail_json(self, msg, **kwargs):
        self.ended = ("fail", dict(kwargs, msg=msg))
        raise _Ended()

    def exit_json(self, **kwargs):
        self.ended = ("exit", kwargs)
        raise _Ended()


def test_a_failure_whose_partial_result_carries_a_msg_fails_with_the_errors_message():
    """integrity_check's result has its own msg; failing with it once crashed the module (KeyError 'msg')."""
    def logic():
        raise FediflowError("1 of 1 integrity checks failed: db_sequences",
                            result={"changed": True, "msg": "older text", "failed_checks": ["db_sequences"], "diff": {}})
    module = _Module()
    with pytest.raises(_Ended):
        run_module(module, logic)
    kind, out = module.ended
    assert kind == "fail" and out["msg"] == "1 of 1 integrity checks failed: db_sequences"
    assert out["changed"] is True and out["failed_checks"] == ["db_sequences"] and "diff" not in out
    assert out["duration_s"] == 0.0


def test_a_result_is_returned_without_its_diff_unless_asked():
    module = _Module()
    with pytest.raises(_Ended):
        run_module(module, lambda: {"changed": False, "diff": {"before": 1}, "duration_s": 0.1})
    assert module.ended == ("exit", {"changed": False, "duration_s": 0.1})


def _loose(root):
    """Paths under ``root`` (and itself) that group or others may read, write or enter."""
    found = []
    for base, dirs, files in os.walk(str(root)):
        for path in [base] + [os.path.join(base, n) for n in dirs + files]:
            if os.lstat(path).st_mode & 0o077:
                found.append((path, oct(os.lstat(path).st_mode & 0o777)))
    return sorted(set(found))


def test_everything_a_module_creates_is_private_from_the_start(tmp_path):
    """Files and directories the logic creates with default modes - in Python, through tempfile, and by a
    program it starts - are 0600 / 0700 when created (no chmod afterwards); the umask is put back."""
    before = os.umask(0o022)
    os.umask(before)

    def logic():
        os.makedirs(str(tmp_path / "out" / "sub"))
        with open(str(tmp_path / "out" / "sub" / "result.json"), "w", encoding="utf-8") as handle:
            handle.write("{}")
        tempfile.mkstemp(dir=str(tmp_path / "out"))
        res = common.run(["sh", "-c", 'mkdir "$1/by-child" && echo data > "$1/by-child/file"', "sh", str(tmp_path / "out")])
        assert res.rc == 0, res.stderr
        return {"changed": True, "duration_s": 0.0}

    module = _Module()
    os.umask(0o022)  # what a shell gives a module
    try:
        with pytest.raises(_Ended):
            run_module(module, logic)
        assert os.umask(0o022) == 0o022  # put back
    finally:
        os.umask(before)
    assert module.ended[0] == "exit"
    assert _loose(tmp_path / "out") == []
    assert oct(os.stat(str(tmp_path / "out" / "by-child" / "file")).st_mode & 0o777) == "0o600"
