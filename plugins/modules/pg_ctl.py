#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_ctl
short_description: Start, stop, restart or reload a PostgreSQL cluster with pg_ctl
version_added: 0.1.0
description:
  - Brings a PostgreSQL cluster (a data directory) to the wanted state with C(pg_ctl),
    running it as the cluster's OS owner (PostgreSQL refuses to run as root).
  - A cluster of Debian's packaged layout (C(postgresql-common), configuration in
    C(/etc/postgresql/VERSION/NAME), data directory elsewhere) is named by O(cluster) and controlled
    with C(pg_ctlcluster), which reads that configuration directory and, where systemd runs, goes
    through the cluster's C(postgresql@VERSION-NAME) unit, so the service manager stays in charge.
  - A plain data directory (configuration inside it, C(initdb)'s layout) is controlled with C(pg_ctl -D).
  - C(pg_ctl -w) returns when the server accepts connections; for a standby that is before
    recovery has caught up. Use a query of C(pg_is_in_recovery()) when that matters.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
attributes:
  idempotent:
    support: partial
    details: O(state=restarted) and O(state=reloaded) act on every run, as with a service manager.
options:
  data_dir:
    description: The cluster's data directory (C(PG_VERSION), C(postmaster.pid)).
    type: path
    required: true
  cluster:
    description:
      - Debian packaged cluster as C(pg_lsclusters) names it, C(VERSION/NAME) (C(15/main)). Start, stop,
        restart and reload then run C(pg_ctlcluster) (as root, which becomes the cluster's owner);
        O(log_file) and O(timeout) are the cluster's own (C(pg_createcluster -l); C(pg_ctl)'s 60 s).
      - Unset - a plain data directory, C(pg_ctl -D O(data_dir)).
    type: str
  state:
    description: Wanted state. V(restarted) and V(reloaded) start a stopped cluster.
    type: str
    choices: [ started, stopped, restarted, reloaded ]
    default: started
  os_user:
    description: The OS user that owns the cluster and runs C(pg_ctl).
    type: str
    default: postgres
  bin_dir:
    description:
      - Directory holding C(pg_ctl). By default C(pg_config --bindir), else the newest
        C(/usr/lib/postgresql/*/bin) or C(/usr/pgsql-*/bin).
    type: path
  log_file:
    description:
      - Server log for start-up (C(pg_ctl -l)). Defaults to C(<data_dir>.log) beside the data directory.
    type: path
  stop_mode:
    description: Shutdown mode for V(stopped) and V(restarted).
    type: str
    choices: [ smart, fast, immediate ]
    default: fast
  timeout:
    description: Seconds C(pg_ctl) waits for start-up or shutdown to complete.
    type: int
    default: 60
"""

EXAMPLES = r"""
- name: Make sure the primary is running
  fediflow.dr.pg_ctl:
    data_dir: /var/lib/postgresql/15/main

- name: Restart a Debian packaged cluster (pg_ctlcluster 15 main restart; systemctl where systemd runs)
  fediflow.dr.pg_ctl:
    data_dir: /var/lib/postgresql/15/main
    cluster: 15/main
    state: restarted

- name: Stop a cluster as a crash would (failover drill)
  fediflow.dr.pg_ctl:
    data_dir: /var/tmp/fediflow-lab/us-east-1/pgdata
    state: stopped
    stop_mode: immediate
"""

RETURN = r"""
state:
  description: C(running) or C(stopped) after the run (predicted in check mode).
  returned: always
  type: str
  sample: running
pid:
  description: The postmaster's process id, null when stopped.
  returned: always
  type: int
actions:
  description: The C(pg_ctl) actions taken (or that would be taken in check mode).
  returned: always
  type: list
  elements: str
  sample: [ start ]
commands:
  description: The commands run, with their exit codes and durations.
  returned: always
  type: list
  elements: dict
bin_dir:
  description: The PostgreSQL program directory used.
  returned: always
  type: str
  sample: /usr/lib/postgresql/15/bin
log_file:
  description: The start-up log file (null for a O(cluster), whose log is its own).
  returned: always
  type: str
cluster:
  description: The Debian packaged cluster controlled with C(pg_ctlcluster), null for a plain data directory.
  returned: always
  type: str
  sample: 15/main
control:
  description:
    - What the stopped cluster's control file says (C(pg_controldata)). After a clean stop of a primary
      (V(fast) or V(smart)), the standbys that were streaming from it hold its WAL up to RV(control.checkpoint_lsn)
      (its shutdown checkpoint); a planned switchover waits until the standby has replayed past it.
  returned: when the cluster is stopped after the run (not in check mode when it would stop)
  type: dict
  contains:
    cluster_state:
      description: C(shut down) after a clean stop, C(shut down in recovery) for a standby, C(in production) after a crash.
      type: str
      sample: shut down
    checkpoint_lsn:
      description: Latest checkpoint location.
      type: str
      sample: 0/3000028
    redo_lsn:
      description: The latest checkpoint's REDO location.
      type: str
    timeline:
      description: The latest checkpoint's timeline.
      type: int
      sample: 1
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module

from ansible_collections.fediflow.dr.plugins.module_utils import pgctl


def main():
    module = AnsibleModule(
        argument_spec={
            "data_dir": {"type": "path", "required": True},
            "cluster": {"type": "str"},
            "state": {"type": "str", "default": "started", "choices": list(pgctl.STATES)},
            "os_user": {"type": "str", "default": "postgres"},
            "bin_dir": {"type": "path"},
            "log_file": {"type": "path"},
            "stop_mode": {"type": "str", "default": "fast", "choices": list(pgctl.STOP_MODES)},
            "timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second, got %s" % params["timeout"])
    run_module(module, pgctl.ensure, params["data_dir"], state=params["state"], os_user=params["os_user"],
               bin_dir=params["bin_dir"], log_file=params["log_file"], stop_mode=params["stop_mode"],
               timeout=params["timeout"], check_mode=module.check_mode, cluster=params["cluster"])


if __name__ == "__main__":
    main()
