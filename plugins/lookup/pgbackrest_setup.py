# -*- coding: utf-8 -*-
# Copyright: (c) 2026, FediFlow SRE <sre@fediflow.example>
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: pgbackrest_setup
author: FediFlow SRE (@fediflow)
version_added: 0.4.0
short_description: Where a database host keeps the pgBackRest engine and what it names
description:
  - The pgBackRest engine's layout on one database host - the stanza, the three configuration files (one per S3
    identity - C(wal) for C(archive_command), C(backup) for the backups, C(expire) for retention), the spool, log
    and lock directories, and the repositories (the inventory's C(fediflow_backup_repositories), the host's region
    first, each with its https endpoint).
  - One home for these (C(plugins/module_utils/pgbackrest.py) C(host_setup)), so the replication, backup, PITR and
    failover roles agree (see C(docs/pgbackrest.md)).
  - Reads C(fediflow_backup_engine) (V(native) or V(pgbackrest)), C(fediflow_pgbackrest_stanza) (default
    V(fediflow)), C(fediflow_backup_repositories), C(fediflow_pgbackrest_endpoints) (repository name to https URL,
    for private endpoints) and C(fediflow_s3_ca_file) as the task sees them, and the host's own
    C(fediflow_region), C(fediflow_pg_data_dir) and C(fediflow_pgbackrest_dir) (default
    C(<the data directory's parent>/pgbackrest)).
  - Refuses a bad engine name or stanza, naming the variable.
options:
  host:
    description: The inventory host whose layout it is; default the task's host.
    type: str
"""

EXAMPLES = r"""
- name: The WAL identity's configuration file of this host
  ansible.builtin.debug:
    msg: "{{ lookup('fediflow.dr.pgbackrest_setup').configs.wal }}"

- name: The layout of the failover's target host
  ansible.builtin.debug:
    msg: "{{ lookup('fediflow.dr.pgbackrest_setup', host='pg-eu-west-1').repository_names }}"
"""

RETURN = r"""
_raw:
  description:
    - One dict - C(engine), C(stanza), C(dir), C(configs) (C(wal), C(backup), C(expire)), C(spool_path), C(log_path),
      C(lock_path), C(repositories) (C(name), C(bucket), C(region), C(endpoint_url)), C(repository_names), C(ca_file),
      C(restore) (M(fediflow.dr.pitr_restore)'s O(fediflow.dr.pitr_restore#module:pgbackrest) option for the host).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

SHARED = ("fediflow_backup_engine", "fediflow_pgbackrest_stanza", "fediflow_backup_repositories",
          "fediflow_pgbackrest_endpoints", "fediflow_s3_ca_file")
OWN = ("fediflow_region", "fediflow_pg_data_dir", "fediflow_pgbackrest_dir")


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}
        host = self.get_option("host") or variables.get("inventory_hostname")
        mine = host == variables.get("inventory_hostname")
        if not mine and host not in (variables.get("hostvars") or {}):
            raise AnsibleLookupError("pgbackrest_setup: host %r is not in the inventory" % host)
        values = {}
        for name in SHARED:
            values[name] = self._templar.template(variables[name]) if name in variables else None
        for name in OWN:
            if mine:
                values[name] = self._templar.template(variables[name]) if name in variables else None
            else:
                values[name] = variables["hostvars"][host].get(name)
        try:
            return [pgbackrest.host_setup(values)]
        except FediflowError as exc:
            raise AnsibleLookupError("pgbackrest_setup: %s" % exc.message)
