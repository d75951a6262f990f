# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # Redis connection options (the redis Python client).
    DOCUMENTATION = r"""
options:
  redis_host:
    description:
      - Host name or address of the Redis server.
    type: str
    default: 127.0.0.1
  redis_port:
    description:
      - Port of the Redis server.
    type: int
    default: 6379
  redis_user:
    description:
      - ACL user name (Redis 6 and later). Omit to authenticate with O(redis_password) only (the C(default) user).
    type: str
  redis_password:
    description:
      - Password of the Redis server (C(requirepass)) or of O(redis_user). Sent in the client's
        C(AUTH) command, never on a command line, never in the result.
    type: str
  redis_db:
    description:
      - Logical database number.
    type: int
    default: 0
  redis_tls:
    description:
      - Connect with TLS.
    type: bool
    default: false
  redis_tls_ca_cert:
    description:
      - CA certificate file that signed the server's certificate (with O(redis_tls=true)).
    type: path
  redis_tls_validate_certs:
    description:
      - Validate the server's certificate (with O(redis_tls=true)). Only turn off for testing.
    type: bool
    default: true
  redis_connect_timeout:
    description:
      - Seconds to wait for the connection before failing.
    type: float
    default: 10
requirements:
  - redis (the Python client) on the host running the module.
"""
