# -*- coding: utf-8 -*-
"""pitr_restore's input checks (nothing touched before they pass) and the idempotence marker,
with plain data and files in tmp_path only."""
from __future__ import annotations

import json

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import pitr_run
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


@pytest.fixture
def params(tmp_path):
    tool = tmp_path / "fediflow_wal.py"
    tool.write_text("")
    config = tmp_path / "wal.json"
    config.write_text(json.dumps({"backend": "dir", "repo": str(tmp_path)}))
    return {"data_dir": str(tmp_path / "pgdata"), "wal_config": str(config), "wal_tool": str(tool),
            "backup_dest": str(tmp_path / "backups"), "target_time": "2026-11-25T14:03:00Z", "timeout": 60,
            "amcheck_max_indexes": 10, "login_port": 5432, "connect_timeout": 10, "timeline": "auto"}


def test_valid_input_passes(params):
    target, timeline, engine = pitr_run.validate(params)
    assert target["kind"] == "time" and timeline == "auto" and engine is None


@pytest.mark.parametrize("change, words", [
    ({"data_dir": "relative/pgdata"}, "data_dir must be an absolute path"),
    ({"wal_tool": "/nonexistent/fediflow_wal.py"}, "wal_tool '/nonexistent/fediflow_wal.py' does not exist"),
    ({"backup_dest": None}, "give backup_dest"),
    ({"backup_dest": "backups"}, "backup_dest must be an absolute path"),
    ({"restore_port": 70000}, "restore_port must be between 1 and 65535"),
    ({"timeout": 0}, "timeout must be at least 1 second"),
    ({"amcheck_max_indexes": -1}, "amcheck_max_indexes must be >= 0"),
    ({"verify_jobs": 0}, "verify_jobs must be at least 1"),
    ({"timeline": "sideways"}, "timeline must be auto, latest or a timeline number"),
    ({"target_lsn": "0/1"}, "give exactly one target, got target_time and target_lsn"),
    ({"login_port": 0}, "login_port must be between 1 and 65535"),
    ({"config_dir": "etc/postgresql/15/main"}, "config_dir must be an absolute path"),
    ({"cluster": "main"}, "cluster must be VERSION/NAME"),
])
def test_bad_input_is_refused_naming_the_option(params, change, words):
    with pytest.raises(FediflowError) as err:
        pitr_run.validate(dict(params, **change))
    assert words in err.value.message


def test_s3_ledger_alone_is_enough(params):
    pitr_run.validate(dict(params, backup_dest=None, s3_bucket="bucket"))


def test_marker(tmp_path):
    assert pitr_run.read_marker(str(tmp_path)) is None
    (tmp_path / pitr_run.MARKER).write_text('{"target": "x", "kind": "name"}')
    assert pitr_run.read_marker(str(tmp_path)) == {"target": "x", "kind": "name"}
    (tmp_path / pitr_run.MARKER).write_text("not json")
    assert pitr_run.read_marker(str(tmp_path)) is None
