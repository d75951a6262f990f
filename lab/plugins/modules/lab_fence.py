#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab_fence
short_description: LAB ONLY - fence a lab region's PostgreSQL through the lab's control plane
version_added: 0.6.0
description:
  - "LAB ONLY. The lab's fence method (C(fediflow_fence.method=lab) in the lab inventory), run on the
    controller: it stops a region's PostgreSQL by acting on the region's network namespace directly,
    the way a cloud API stops an instance that can no longer be reached over the network - whether the
    region is up, partitioned or down."
  - The postmaster (first line of C(postmaster.pid)) is stopped only when it lives in O(netns) and runs in
    O(data_dir) - SIGQUIT (O(mode=immediate), as C(pg_ctl stop -m immediate)), or SIGINT first (O(mode=fast))
    and SIGQUIT after O(timeout) - then SIGKILL of any process of the cluster left.
  - With O(mark_standby), C(standby.signal) is written into the data directory, so that whoever starts the old
    primary again gets a read-only server in recovery until C(failback.yml) rejoins it.
  - "The proof (RV(proved)): no process in the namespace has its working directory in O(data_dir) - the
    postmaster and every backend run there - read from C(/proc), not over the network."
  - Idempotent - a cluster already stopped and marked changes nothing. Check mode reports what would be
    done.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  netns:
    description: The region's network namespace (the lab names it C(fdl<index>-<region>)).
    type: str
    required: true
  data_dir:
    description: The region's PostgreSQL data directory (absolute).
    type: path
    required: true
  os_user:
    description: The cluster's OS owner (owns C(standby.signal)).
    type: str
    default: postgres
  mark_standby:
    description: Write C(standby.signal) into the data directory after the stop.
    type: bool
    default: true
  mode:
    description:
      - V(immediate) - SIGQUIT at once - a fence is about speed; the data directory stays crash-consistent and
        failback rewinds it. V(fast) - a clean shutdown first, which a partitioned primary may not finish (its
        walsenders wait for a standby they cannot reach until C(wal_sender_timeout)).
    type: str
    choices: [ immediate, fast ]
    default: immediate
  timeout:
    description: Seconds for each stage (the fast shutdown, then the immediate one) before the next.
    type: float
    default: 10
notes:
  - Runs as root on the machine the lab's namespaces live on.
seealso:
  - module: fediflow.dr_lab.lab_network
  - module: fediflow.dr.pg_promote
"""

EXAMPLES = r"""
- name: Fence us-east-1's PostgreSQL (partitioned or down) through the lab's control plane
  fediflow.dr_lab.lab_fence:
    netns: fdl0-us-east-1
    data_dir: /var/tmp/fediflow-lab/us-east-1/pgdata
  delegate_to: localhost
  register: fence
"""

RETURN = r"""
fenced:
  description: The cluster has no process left in the namespace (the module fails otherwise).
  returned: success
  type: bool
proved:
  description: One sentence saying what was proven and how.
  returned: success
  type: str
  sample: "no process of the cluster /var/tmp/fediflow-lab/us-east-1/pgdata left in namespace fdl0-us-east-1 (stopped 7; ...)"
postmaster_pid:
  description: The postmaster that was signalled, null when none ran.
  returned: always
  type: int
processes_before:
  description: Processes of the cluster found in the namespace before the fence.
  returned: always
  type: int
signals:
  description: The signals sent, as C(kill) argument lists.
  returned: always
  type: list
  elements: list
marked_standby:
  description: Whether C(standby.signal) was written in this run.
  returned: always
  type: bool
actions:
  description: What was done (would be done, in check mode).
  returned: always
  type: list
  elements: str
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr_lab.plugins.module_utils import labfence
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    module = AnsibleModule(
        argument_spec={
            "netns": {"type": "str", "required": True},
            "data_dir": {"type": "path", "required": True},
            "os_user": {"type": "str", "default": "postgres"},
            "mark_standby": {"type": "bool", "default": True},
            "mode": {"type": "str", "default": "immediate", "choices": ["immediate", "fast"]},
            "timeout": {"type": "float", "default": 10},
        },
        supports_check_mode=True)
    run_module(module, labfence.fence, dict(module.params), check_mode=module.check_mode)


if __name__ == "__main__":
    main()
