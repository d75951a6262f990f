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
      - The password of O(login_user). Passed to psycopg2 as a keyword argument and to libpq programs through a
        password file of their own (E(PGPASSFILE), 0600 in a 0700 directory, removed afterwards), never on a
        command line or in a child's environment.
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
  ssl_mode:
    description:
      - Whether and how strictly the connection uses TLS, as libpq's C(sslmode) (E(PGSSLMODE) for the
        PostgreSQL programs a module runs).
      - V(verify-full) checks the server's certificate against O(ca_cert) and that it names O(login_host),
        which is what a connection across regions should use. V(prefer) (libpq's default) encrypts when the server
        offers TLS but verifies nothing.
    type: str
    default: prefer
    choices: [ allow, disable, prefer, require, verify-ca, verify-full ]
  ca_cert:
    description:
      - File of the certificate authorities that may sign the server's certificate (libpq's C(sslrootcert),
        E(PGSSLROOTCERT)). Checked when O(ssl_mode) is V(verify-ca) or V(verify-full); when omitted libpq
        reads C(~/.postgresql/root.crt) of the user the module runs as.
      - A path that is not a readable file is refused before anything connects.
    type: path
    default: ''
    aliases: [ ssl_rootcert ]
requirements:
  - psycopg2 (psycopg2-binary) on the managed node.
"""
