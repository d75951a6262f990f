#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pgbackrest_info
short_description: Read the pgBackRest engine's ledger and which repositories answer
version_added: 0.4.0
description:
  - Runs C(pgbackrest info --output=json) for one stanza and returns its backups as the collection's ledger entries
    (the label as C(id), C(type), C(prior), C(repositories), LSN and WAL range, sizes, times, and the proof recorded
    on each by M(fediflow.dr.pgbackrest_backup) - C(verification)) and each repository's state.
  - Everything C(info) prints is read as untrusted input (checked field by field, size-bounded). A repository
    C(info) could not read (down, denied, a TLS error - pgBackRest still exits 0) is reported in RV(down) with
    pgBackRest's message, and its backups are unknown, never taken for none.
  - Reads only; runs pgBackRest as O(os_user) with the configuration file O(config) (a reading identity's - the
    WAL identity may not list backups and sees every repository as denied).
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
attributes:
  check_mode:
    support: full
    details: Reads the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  config:
    description: The pgBackRest configuration file (the backup or WAL expiry identity's).
    type: path
    required: true
  stanza:
    description: The stanza.
    type: str
    required: true
  repositories:
    description: The names of the configuration's repositories, in its order (C(repo1), C(repo2), ...).
    type: list
    elements: str
    required: true
  os_user:
    description: The OS user pgBackRest runs as.
    type: str
    default: postgres
  binary:
    description: The C(pgbackrest) program; unset - the one on C(PATH), else C(/usr/bin/pgbackrest).
    type: path
  timeout:
    description: Seconds C(info) may take (a repository that does not answer costs pgBackRest's I/O time-out).
    type: int
    default: 120
  probe_timeout:
    description:
      - Seconds a repository's S3 endpoint (as O(config) names it) has to take a TCP connection before the run leaves
        it out - reported, its backup degraded - instead of letting pgBackRest retry it for minutes (a lost region's).
    type: int
    default: 3
"""

EXAMPLES = r"""
- name: Which repositories answer, and the newest verified backup
  fediflow.dr.pgbackrest_info:
    config: /var/lib/postgresql/15/pgbackrest/backup.conf
    stanza: fediflow
    repositories: [us-east-1, eu-west-1]
  register: pgbackrest_ledger

- name: Say so when a region's repository is down
  ansible.builtin.debug:
    msg: "down: {{ pgbackrest_ledger.down }}; newest verified: {{ pgbackrest_ledger.newest_verified.id | default('none') }}"
"""

RETURN = r"""
stanza:
  description: The stanza.
  returned: always
  type: str
backups:
  description:
    - The ledger, oldest first - C(id) (the label), C(type), C(prior), C(references), C(repositories), C(start_wal),
      C(stop_wal), C(start_lsn), C(stop_lsn), C(size), C(delta), C(repo_size), C(repo_delta), C(started_at),
      C(finished_at), C(start_time), C(stop_time), C(source) (C(timeline)), C(kind) (V(physical)), C(error),
      C(verification) (C(ok), C(level), C(at), C(detail)).
  returned: always
  type: list
  elements: dict
repositories:
  description: Per repository - C(ok), C(code) (pgBackRest's status code), C(message).
  returned: always
  type: dict
answering:
  description: The repositories C(info) could read.
  returned: always
  type: list
  elements: str
down:
  description: The repositories it could not read.
  returned: always
  type: list
  elements: str
newest_verified:
  description: The newest backup with a proof (an entry of RV(backups)), or null.
  returned: always
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest_run
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    module = AnsibleModule(argument_spec=pgbackrest_run.INFO_SPEC, supports_check_mode=True)
    run_module(module, pgbackrest_run.info, module.params, module.check_mode)


if __name__ == "__main__":
    main()
