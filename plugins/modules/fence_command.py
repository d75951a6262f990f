#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fence_command
short_description: Fence a host with an operator's command, proven by a verify command
version_added: 0.3.0
description:
  - Runs a fence program (a power switch, a hypervisor or cloud CLI, a fence agent's C(off) action) from an
    argument list, no shell, then polls a verify program until it exits 0 - the proof that the host is fenced.
    Without O(verify_argv) the fence program's exit status is the only proof, and the result says so.
  - The fence always runs. A verify program that passes before it (one that only sees that the host does not
    answer, say) must never skip it. The fence program must therefore be idempotent, as fence agents' C(off)
    action is; the module reports C(changed) whenever it ran.
  - A program that does not finish within its time-out is killed with every process it started.
  - Secrets go in O(environment), never in the argument lists - they would show in the process list. Values of
    O(environment) are masked in the result, the output tails included.
  - The C(command) fence method of role C(fediflow.dr.region_failover) (C(docs/fencing.md)).
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
attributes:
  check_mode:
    support: full
    details: Nothing runs; the result says what would run, and the module fails when a program is not found.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: The fence program runs on every call (it must be idempotent itself).
options:
  argv:
    description: The fence program and its arguments, as a list. Exit 0 means the fence was applied.
    type: list
    elements: str
    required: true
  verify_argv:
    description:
      - A program that exits 0 when the host is proven fenced (an outlet reported off, an instance reported
        stopped), run after the fence until it does or O(verify_timeout) passes.
      - It must check the fence itself, not that the host does not answer - a partitioned host does not answer
        either.
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds the fence program may run; then it is killed and the fence failed.
    type: float
    default: 120
  verify_timeout:
    description: Seconds within which the verify program must exit 0 (it is run again every 0.5 to 2 seconds).
    type: float
    default: 60
  environment:
    description: Environment variables for both programs, added to the module's own. Values may be secrets.
    type: dict
    default: {}
notes:
  - Runs where the task runs; role C(fediflow.dr.region_failover) delegates it to C(region_failover_api_host).
"""

EXAMPLES = r"""
- name: Fence the old primary with its power switch (IPMI), proven by the switch's report
  fediflow.dr.fence_command:
    argv: [/usr/sbin/fence_ipmilan, --ip=10.0.9.21, --username=fence, --action=off]
    verify_argv: [/usr/local/bin/outlet-is-off, db1-us-east-1]
    timeout: 60
    environment:
      IPMI_PASSWORD: "{{ vault_ipmi_password }}"
  register: fence

- name: Say what it proved
  ansible.builtin.debug:
    msg: "{{ fence.proved }}"
"""

RETURN = r"""
fenced:
  description: The fence program exited 0 and, when given, the verify program exited 0 (false in check mode).
  returned: always
  type: bool
proved:
  description: One sentence - what was proven (empty when nothing was, or in check mode).
  returned: always
  type: str
  sample: verify command exited 0 (attempt 2, 2.1 s after the fence)
actions:
  description: What was run (or would be, in check mode), secrets masked.
  returned: always
  type: list
  elements: str
fence:
  description: The fence program's run - C(argv), C(rc), C(duration_s), the last lines of C(stdout) and C(stderr).
  returned: when it ran
  type: dict
verify:
  description: The verify program's last run as C(fence), with C(attempts) and C(waited_s).
  returned: when it ran
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module

from ansible_collections.fediflow.dr.plugins.module_utils import fence


def main():
    module = AnsibleModule(
        argument_spec={
            "argv": {"type": "list", "elements": "str", "required": True},
            "verify_argv": {"type": "list", "elements": "str", "default": []},
            "timeout": {"type": "float", "default": 120},
            "verify_timeout": {"type": "float", "default": 60},
            "environment": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    run_module(module, fence.command_fence, params["argv"], verify_argv=params["verify_argv"],
               timeout=params["timeout"], verify_timeout=params["verify_timeout"], env=params["environment"],
               check_mode=module.check_mode)


if __name__ == "__main__":
    main()
