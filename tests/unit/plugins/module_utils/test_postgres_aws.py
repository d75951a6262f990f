# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import aws, postgres
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def _params(**kw):
    params = {k: v.get("default") for k, v in postgres.postgres_common_argument_spec().items()}
    params.update(kw)
    return params


def test_libpq_env_never_carries_the_password():
    env = postgres.libpq_env(_params(login_host="127.0.0.1", login_port=15432, login_password="pw"))
    assert env["PGHOST"] == "127.0.0.1"
    assert env["PGPORT"] == "15432"
    assert "pw" not in env.values() and "PGPASSWORD" not in env  # the password goes in postgres.passfile


def test_socket_used_when_no_host():
    env = postgres.libpq_env(_params(login_unix_socket="/run/pg"))
    assert env["PGHOST"] == "/run/pg"
    assert "PGPASSWORD" not in env


def test_connect_kwargs_and_port_validation():
    kw = postgres.connect_kwargs(_params(login_host="h", db="app"))
    assert kw["host"] == "h" and kw["dbname"] == "app" and "password" not in kw
    with pytest.raises(FediflowError, match="login_port must be between 1 and 65535"):
        postgres.connect_kwargs(_params(login_port=70000))


def test_tls_options_reach_libpq_and_psycopg2(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    params = _params(login_host="db.example", ssl_mode="verify-full", ca_cert=str(ca))
    env = postgres.libpq_env(params)
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == str(ca)
    kw = postgres.connect_kwargs(params)
    assert kw["sslmode"] == "verify-full" and kw["sslrootcert"] == str(ca)
    # the default is libpq's own (prefer), and no root certificate is named unless given
    default = postgres.connect_kwargs(_params(login_host="h"))
    assert default["sslmode"] == "prefer" and "sslrootcert" not in default
    assert "PGSSLROOTCERT" not in postgres.libpq_env(_params(login_host="h"))


def test_tls_options_are_checked_before_anything_connects(tmp_path):
    with pytest.raises(FediflowError, match="ca_cert .*missing.crt is not a readable file"):
        postgres.connect_kwargs(_params(ssl_mode="verify-full", ca_cert=str(tmp_path / "missing.crt")))
    with pytest.raises(FediflowError, match="ca_cert .* is not a readable file"):
        postgres.libpq_env(_params(ca_cert=str(tmp_path)))  # a directory
    with pytest.raises(FediflowError, match="ssl_mode must be one of allow, disable, prefer, require, verify-ca, verify-full"):
        postgres.connect_kwargs(_params(ssl_mode="verify"))


def test_tls_options_match_community_postgresql_names():
    spec = postgres.postgres_common_argument_spec()
    assert spec["ssl_mode"]["choices"] == ["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]
    assert spec["ssl_mode"]["default"] == "prefer"
    assert spec["ca_cert"]["type"] == "path" and spec["ca_cert"]["aliases"] == ["ssl_rootcert"]


def test_aws_tls_options(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    spec = aws.aws_common_argument_spec()
    assert spec["validate_certs"] == {"type": "bool", "default": True} and spec["aws_ca_bundle"]["type"] == "path"
    assert aws.tls_verify({"validate_certs": True, "aws_ca_bundle": None}) is None  # AWS_CA_BUNDLE / botocore's
    assert aws.tls_verify({"validate_certs": True, "aws_ca_bundle": str(bundle)}) == str(bundle)
    assert aws.tls_verify({"validate_certs": False, "aws_ca_bundle": None}) is False
    with pytest.raises(FediflowError, match="aws_ca_bundle .*nope.pem is not a readable file"):
        aws.tls_verify({"validate_certs": True, "aws_ca_bundle": str(tmp_path / "nope.pem")})
    with pytest.raises(FediflowError, match="aws_ca_bundle is given but validate_certs is false"):
        aws.tls_verify({"validate_certs": False, "aws_ca_bundle": str(bundle)})


def test_aws_client_refuses_a_bad_bundle_before_any_request(tmp_path):
    with pytest.raises(FediflowError, match="aws_ca_bundle"):
        aws.client("s3", {"region": "us-east-1", "endpoint_url": "https://127.0.0.1:1",
                          "aws_ca_bundle": str(tmp_path / "missing.pem")})


def test_secret_options_are_no_log():
    assert postgres.postgres_common_argument_spec()["login_password"]["no_log"] is True
    spec = aws.aws_common_argument_spec()
    assert all(spec[k]["no_log"] for k in ("access_key", "secret_key", "session_token"))
