# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

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
