# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # PostgreSQL connection options, named as in community.postgresql.
    DOCUMENTATION = r"""
options:
  login_user:
    description:
      - The database role to connect as.
    type: str
    default: postgres
    aliases: [ login ]
  login_password:
    description:
      - The password of O(login_user). Passed to libpq through the environment
        (E(PGPASSWORD)) or a password file, never on a command line.
      - When omitted, libpq's usual sources apply (E(PGPASSWORD), E(PGPASSFILE), C(~/.pgpass)).
    type: str
    default: ''
  login_host:
    description:
      - Host running the database. An empty value connects through O(login_unix_socket).
    type: str
    default: ''
    aliases: [ host ]
  login_port:
    description:
      - Database port to connect to.
    type: int
    default: 5432
    aliases: [ port ]
  login_unix_socket:
    description:
      - Directory of the local Unix domain socket, used when O(login_host) is empty.
    type: str
    default: ''
    aliases: [ unix_socket ]
  db:
    description:
      - Name of the database to connect to.
    type: str
    default: postgres
    aliases: [ login_db ]
  connect_timeout:
    description:
      - Seconds to wait for a connection before failing.
    type: int
    default: 10
requirements:
  - psycopg2 (psycopg2-binary) on the managed node.
"""
