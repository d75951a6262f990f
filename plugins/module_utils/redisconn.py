# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis connection options (``doc_fragments/redis.py``) and a client factory.

The password reaches Redis inside the AUTH command of the client connection, never on a
command line; messages name the option to fix and never hold the password.
"""

from __future__ import annotations

import os
import traceback

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

try:
    import redis  # pylint: disable=unused-import
    REDIS_IMPORT_ERROR = None
except ImportError:
    redis = None
    REDIS_IMPORT_ERROR = traceback.format_exc()


def redis_common_argument_spec():
    """The argument spec matching ``doc_fragments/redis.py``."""
    return {
        "redis_host": {"type": "str", "default": "127.0.0.1"},
        "redis_port": {"type": "int", "default": 6379},
        "redis_user": {"type": "str"},
        "redis_password": {"type": "str", "no_log": True},
        "redis_db": {"type": "int", "default": 0},
        "redis_tls": {"type": "bool", "default": False},
        "redis_tls_ca_cert": {"type": "path"},
        "redis_tls_validate_certs": {"type": "bool", "default": True},
        "redis_connect_timeout": {"type": "float", "default": 10},
    }


def describe(params):
    """``host:port/db`` for messages (never the password)."""
    return "%s:%s/%s" % (params.get("redis_host"), params.get("redis_port"), params.get("redis_db") or 0)


def validate_conn(params):
    if not params.get("redis_host"):
        raise FediflowError("redis_host must not be empty")
    port = params.get("redis_port")
    if port is None or not 0 < int(port) < 65536:
        raise FediflowError("redis_port must be between 1 and 65535, got %s" % port)
    if params.get("redis_db") is not None and int(params["redis_db"]) < 0:
        raise FediflowError("redis_db must be 0 or more, got %s" % params["redis_db"])
    if params.get("redis_connect_timeout") is not None and float(params["redis_connect_timeout"]) <= 0:
        raise FediflowError("redis_connect_timeout must be greater than 0, got %s" % params["redis_connect_timeout"])
    ca_cert = params.get("redis_tls_ca_cert")
    if ca_cert and not params.get("redis_tls"):
        raise FediflowError("redis_tls_ca_cert is set but redis_tls is false; set redis_tls=true")
    if ca_cert and not os.path.isfile(ca_cert):
        raise FediflowError("redis_tls_ca_cert '%s' does not exist" % ca_cert)


def client_kwargs(params):
    """Keyword arguments for ``redis.Redis`` (plain data, testable without a server)."""
    validate_conn(params)
    timeout = float(params.get("redis_connect_timeout") or 10)
    kwargs = {
        "host": params["redis_host"],
        "port": int(params["redis_port"]),
        "db": int(params.get("redis_db") or 0),
        "username": params.get("redis_user") or None,
        "password": params.get("redis_password") or None,
        "socket_connect_timeout": timeout,
        "socket_timeout": max(timeout, 30.0),
        "client_name": "fediflow.dr",
    }
    if params.get("redis_tls"):
        kwargs["ssl"] = True
        kwargs["ssl_cert_reqs"] = "required" if params.get("redis_tls_validate_certs", True) else "none"
        if params.get("redis_tls_ca_cert"):
            kwargs["ssl_ca_certs"] = params["redis_tls_ca_cert"]
    return kwargs


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(params):
    """A connected client (PING answered), or a FediflowError naming the option to fix."""
    if redis is None:
        raise FediflowError("the redis Python library is required on the host running this module "
                            "(pip install redis)")
    kwargs = client_kwargs(params)
    where = describe(params)
    password = params.get("redis_password") or ""
    client = redis.Redis(**kwargs)
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as exc:
        client.close()
        text = _first_line(exc).replace(password, "********") if password else _first_line(exc)
        if params.get("redis_password"):
            raise FediflowError("Redis at %s refused the credentials (check redis_password%s): %s" % (
                where, " and redis_user" if params.get("redis_user") else "", text))
        raise FediflowError("Redis at %s requires a password: set redis_password (%s)" % (where, text))
    except redis.exceptions.ConnectionError as exc:
        client.close()
        raise FediflowError("cannot connect to Redis at %s (check redis_host, redis_port%s): %s" % (
            where, ", redis_tls" if params.get("redis_tls") else "", _first_line(exc)))
    except redis.exceptions.ResponseError as exc:
        client.close()
        raise FediflowError("Redis at %s answered PING with an error: %s" % (where, _first_line(exc)))
    return client


def replication(client):
    """``{'role': 'master'|'slave', 'master_host', 'master_port', 'link_status', 'replicas'}``."""
    info = client.info("replication")
    return {
        "role": info.get("role"),
        "master_host": info.get("master_host"),
        "master_port": info.get("master_port"),
        "link_status": info.get("master_link_status"),
        "replicas": int(info.get("connected_slaves") or 0),
    }
