#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab_network
short_description: "LAB ONLY: the lab's regions as network namespaces that can go down or be partitioned"
version_added: 0.3.0
description:
  - LAB ONLY. Not for real hosts; the lab role and its playbooks use it on the controller, as root.
  - V(present) makes one network namespace per region in O(regions) and one for the global services
    (O(global_address)), each with a veth (C(eth0) inside) into a lab bridge in the root namespace
    whose address O(bridge_address) is the controller's; loopback up in every namespace; no namespace
    has a default route (one found is removed). The root namespace gets a blackhole route for the whole
    lab range C(198.18.0.0/15), so a lab address that is not on a live link can never follow the
    host's default route. Namespaces and links that belong to this lab index but are no longer named
    by the options are removed (their processes stopped first).
  - "Names derive from O(lab_index): bridge C(fdlab<N>), namespaces C(fdl<N>-<region>) and C(fdl<N>-global),
    root-side links C(fdl<N>h<host number>) (within the 15 characters Linux allows); so two labs on one
    machine, with distinct indexes and subnets, never share anything. A subnet already used on this
    machine by something else is refused before anything is touched."
  - V(partitioned) (O(region) required) keeps the region's processes running and cuts it off, inside the
    lab only - an nftables table C(inet fediflow_lab_isolate) in the region's namespace drops every packet
    not on loopback, and a /32 blackhole route to the region's address in the root namespace and in every
    other lab namespace makes a connection attempt fail locally.
  - V(down) (O(region) required) isolates the region as V(partitioned) does, then stops every process in
    its namespace (listed with C(ip netns pids); SIGTERM, then SIGKILL after O(stop_timeout) seconds)
    but those of O(durable_pid_files), which it freezes, and sets its link down.
  - V(up) (O(region) required) sets the link up and removes the blackhole routes and the nftables table.
    After V(down), RV(restart_required) is true and RV(stopped_processes) says what ran there, so that the
    playbook starts the region's services again.
  - Each region's state is recorded in O(state_file), so V(present) keeps a region down or partitioned, and
    V(up) knows what was stopped. V(absent) stops every process in the lab's namespaces, removes the
    namespaces, links, bridge, routes (and the range blackhole when no other lab remains) and O(state_file),
    then checks that nothing is left.
  - Every change is planned as data first (check mode reports it, C(--diff) shows each node's state
    before and after) and made with argument lists of C(ip) and C(nft), never a shell.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  state:
    description: The lab network, or one region's state.
    type: str
    choices: [ present, absent, up, partitioned, down ]
    default: present
  lab_index:
    description:
      - Which lab on this machine (0 to 255); every name the module makes derives from it.
    type: int
    required: true
  bridge_address:
    description:
      - The controller's address on the lab bridge, with the lab subnet's prefix (for example
        V(198.18.0.1/24)). The subnet must lie inside C(198.18.0.0/15).
    type: str
    required: true
  global_address:
    description: Address of the global services' namespace, inside the lab subnet.
    type: str
    required: true
  regions:
    description:
      - "Each region's name and the address of its host, inside the lab subnet (for example
        C({us-east-1: 198.18.0.11, eu-west-1: 198.18.0.12}))."
      - Names are lower-case letters, digits and C(-), at most 32 characters, not C(global).
    type: dict
    required: true
  region:
    description: The region that O(state=up), O(state=partitioned) or O(state=down) acts on.
    type: str
  state_file:
    description:
      - JSON file that records each region's state (and what V(down) stopped). Its directory is
        created when missing; O(state=absent) removes it.
    type: path
    required: true
  stop_timeout:
    description: Seconds to wait after SIGTERM before SIGKILL, when processes are stopped.
    type: float
    default: 10
  durable_pid_files:
    description:
      - Pid files (C(PID START_TICKS), as M(fediflow.dr_lab.lab_service) writes them) of services whose data a
        region outage must not erase - the region's object storage, as S3 keeps objects through a regional
        outage (moto holds them in memory only). V(down) freezes those that run in the region's namespace
        with SIGSTOP (isolated and stopped, they answer nobody) instead of ending them, and records them (pid
        and start time); V(up) after V(down) wakes them with SIGCONT once the region is reachable again.
      - Ignored by the other states. V(absent) ends every process, frozen ones included.
    type: list
    elements: path
    default: []
notes:
  - Needs root, C(ip) from iproute2 and C(nft) from Debian's C(nftables).
  - No lab packet leaves the machine - namespaces have no default route, the lab range is blackholed in
    the root namespace, and a partition drops packets inside the lab, never by removing a route.
seealso:
  - module: fediflow.dr_lab.lab_service
"""

EXAMPLES = r"""
- name: The lab network of lab 0, and a partition of us-east-1
  module_defaults:
    fediflow.dr_lab.lab_network:
      lab_index: 0
      bridge_address: 198.18.0.1/24
      global_address: 198.18.0.10
      regions: {us-east-1: 198.18.0.11, eu-west-1: 198.18.0.12}
      state_file: /var/tmp/fediflow-lab/run/network.json
  block:
    - name: Make the lab's hosts (a namespace per region, one for the global services)
      fediflow.dr_lab.lab_network:
        state: present

    - name: Cut us-east-1 off (its processes keep running)
      fediflow.dr_lab.lab_network:
        state: partitioned
        region: us-east-1

    - name: Take eu-west-1 down (every process in it stopped, its link down)
      fediflow.dr_lab.lab_network:
        state: down
        region: eu-west-1

    - name: Bring eu-west-1 back; back.restart_required says its services must be started again
      fediflow.dr_lab.lab_network:
        state: up
        region: eu-west-1
      register: back

    - name: Remove everything the lab network made
      fediflow.dr_lab.lab_network:
        state: absent
"""

RETURN = r"""
state:
  description: The state asked for.
  returned: always
  type: str
  sample: partitioned
region:
  description: The region acted on (null for V(present) and V(absent)).
  returned: always
  type: str
  sample: us-east-1
previous_state:
  description: The region's recorded state before this run.
  returned: when O(state) is up, partitioned or down
  type: str
  sample: up
lab_index:
  description: The lab index.
  returned: always
  type: int
bridge:
  description: The lab bridge's name and the controller's address on it.
  returned: always
  type: dict
  sample: {name: fdlab0, cidr: 198.18.0.1/24}
nodes:
  description: Each node (C(global) and the regions) with its namespace, address, interfaces and state after the run.
  returned: always
  type: dict
  sample:
    us-east-1: {netns: fdl0-us-east-1, address: 198.18.0.11, interface: eth0, host_interface: fdl0h11, state: down}
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [isolate us-east-1 (nftables drop of all but loopback), blackhole 198.18.0.11 in the root namespace]
commands:
  description: The commands run (in check mode, those that would run), as argument lists; signals sent as C(kill).
  returned: always
  type: list
  elements: list
restart_required:
  description: True when the region comes back from V(down) and its services must be started again.
  returned: always
  type: bool
stopped_processes:
  description:
    - For V(down) and V(absent), the processes stopped (pid, argv); for V(up) after V(down), those the region
      ran when it went down (what to restart).
  returned: always
  type: list
  elements: dict
  sample: [{pid: 4242, argv: [/usr/sbin/sshd, -D, -e, -f, /var/tmp/fediflow-lab/ssh/us-east-1/sshd_config]}]
frozen_processes:
  description: For V(down), the processes of O(durable_pid_files) frozen now (pid, argv).
  returned: always
  type: list
  elements: dict
  sample: [{pid: 4243, argv: [/opt/venv/bin/python3, /opt/venv/bin/moto_server, -H, 198.18.0.11, -p, "15001"]}]
thawed_processes:
  description: For V(up) (or V(partitioned)) after V(down), the frozen processes woken (pid, argv).
  returned: always
  type: list
  elements: dict
phases:
  description: Seconds spent observing, applying and verifying.
  returned: when something changed
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module

from ansible_collections.fediflow.dr_lab.plugins.module_utils import labnet


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "absent", "up", "partitioned", "down"],
                      "default": "present"},
            "lab_index": {"type": "int", "required": True},
            "bridge_address": {"type": "str", "required": True},
            "global_address": {"type": "str", "required": True},
            "regions": {"type": "dict", "required": True},
            "region": {"type": "str"},
            "state_file": {"type": "path", "required": True},
            "stop_timeout": {"type": "float", "default": 10},
            "durable_pid_files": {"type": "list", "elements": "path", "default": []},
        },
        required_if=[("state", "up", ("region",)), ("state", "partitioned", ("region",)),
                     ("state", "down", ("region",))],
        supports_check_mode=True,
    )
    params = module.params
    run_module(module, labnet.ensure, params["state"], params["lab_index"], params["bridge_address"],
               params["global_address"], params["regions"], params["state_file"], region=params["region"],
               stop_timeout=params["stop_timeout"], check_mode=module.check_mode,
               durable_pid_files=params["durable_pid_files"])


if __name__ == "__main__":
    main()
