# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import aws, postgres
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def _params(**kw):
    params = {k: v.get("default") for k, v in postgres.postgres_common_argument_spec().items()}
    params.update(kw)
    return params


def test_libpq_env_carries_the_password_in_the_environment():
    env = postgres.libpq_env(_params(login_host="127.0.0.1", login_port=15432, login_password="pw"))
    assert env["PGHOST"] == "127.0.0.1"
    assert env["PGPORT"] == "15432"
    assert env["PGPASSWORD"] == "pw"


def test_socket_used_when_no_host():
    env = postgres.libpq_env(_params(login_unix_socket="/run/pg"))
    assert env["PGHOST"] == "/run/pg"
    assert "PGPASSWORD" not in env


def test_connect_kwargs_and_port_validation():
    kw = postgres.connect_kwargs(_params(login_host="h", db="app"))
    assert kw["host"] == "h" and kw["dbname"] == "app" and "password" not in kw
    with pytest.raises(FediflowError, match="login_port must be between 1 and 65535"):
        postgres.connect_kwargs(_params(login_port=70000))


def test_secret_options_are_no_log():
    assert postgres.postgres_common_argument_spec()["login_password"]["no_log"] is True
    spec = aws.aws_common_argument_spec()
    assert all(spec[k]["no_log"] for k in ("access_key", "secret_key", "session_token"))
