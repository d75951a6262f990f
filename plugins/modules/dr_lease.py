#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dr_lease
short_description: One DR operation at a time per environment - a lease kept in a majority of three S3 stores
version_added: 0.5.0
description:
  - "Takes, releases or reads the DR lease of an environment: one small JSON document per environment
    (C(<prefix>/<key_prefix>/<environment>.json)) in each store of O(stores) - the backup bucket of each
    region and a bucket at a third site - changed only by S3 conditional writes: created with
    C(If-None-Match: *), replaced with C(If-Match: <ETag>)."
  - "An operation holds the lease when its entry is in a B(majority) of the stores (2 of 3), read back after
    writing. Majorities intersect and no store ever takes an entry beside a live conflicting one, so two
    conflicting operations never both hold it - not two controllers started together, not the two sides of a
    partition: the side that reaches one store is refused. The loss of one region costs one store; the lease
    still works with the other two."
  - "O(mode=exclusive) (failover, failback, PITR, recover, the drill) holds it alone. O(mode=shared) (backups)
    holds it for O(parts): beside other shared holders whose parts differ, and beside holders of a part both
    list in O(concurrent_parts) (C(media): snapshots lock their repository themselves). An exclusive holder
    conflicts with every other holder."
  - "A second operation is refused with a one-line message naming the holder (operation, playbook, user@host,
    AWX job), since and until when, and what to do: wait, or re-run with C(-e break_lease=true) if that run is
    dead. With O(wait_s) it polls for the holder to go first."
  - "Time is the stores' own (the C(Date) header of their answers): C(since) is the stores' time when the lease
    is taken, C(until) = C(since) + O(ttl_s); an entry is expired when the store's time has passed C(until).
    An expired lease is taken over, and the result and a warning say whose it was. Controllers do not need
    synchronised clocks."
  - "O(state=released) removes the entry from every store that answers and leaves a tombstone until its C(until),
    so a copy stranded in a store that was down counts as released once it answers. A run that is killed
    leaves its lease to expire."
  - "Everything read from a store is untrusted: a document that is not a valid lease document refuses the
    operation (naming the store) unless O(break_lease) overwrites it."
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.aws
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
attributes:
  idempotent:
    support: partial
    details:
      - O(state=acquired) without O(token) is a new operation each time (a second one is refused while the first holds an
        exclusive lease); with O(token), and O(state=released) and O(state=query), a repeat changes nothing.
options:
  state:
    description:
      - V(acquired) takes the lease (or, with O(token), confirms that this run holds it - a nested playbook or role,
        re-entrant, nothing written); V(released) gives it back; V(query) reports who holds it.
    type: str
    choices: [acquired, released, query]
    default: acquired
  stores:
    description:
      - The stores that keep the lease, in order - three for a lease that survives the loss of a region (the two
        regions' backup buckets and one at a third site); the majority is more than half of them.
      - A store that does not answer within O(timeout_s) (two attempts) is left out of the run; fewer answering
        than a majority refuses. A bucket that does not exist is refused before anything is written.
      - Each store is given as a backup repository is (the inventory's C(fediflow_backup_repositories) entries serve as they
        are), so the regions' stores can be their backup buckets.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: How results and messages name the store (letters, digits, C(.), C(_), C(-)); unique.
        type: str
        required: true
      bucket:
        description: The bucket that keeps this store's copy of the lease document.
        type: str
        required: true
      prefix:
        description: Where in that bucket, before O(key_prefix).
        type: str
        default: ''
      region:
        description: The AWS region of that bucket (default O(region)).
        type: str
      endpoint_url:
        description: That bucket's S3 endpoint, for example its region's own (default O(endpoint_url)).
        type: str
  environment:
    description: The environment the lease guards (one lease per environment), for example C(production).
    type: str
    default: default
  key_prefix:
    description: Where the lease document lives in each bucket (after the store's O(stores[].prefix)).
    type: str
    default: fediflow-lease
  operation:
    description: What takes the lease (C(failover), C(backup), ...); required with O(state=acquired), shown to whoever is refused.
    type: str
  playbook:
    description: The playbook that runs the operation, shown to whoever is refused.
    type: str
    default: ''
  mode:
    description: V(exclusive) - alone; V(shared) - beside holders of other O(parts) (backups).
    type: str
    choices: [exclusive, shared]
    default: exclusive
  parts:
    description: What a V(shared) holder works on (for example V(database), V(media), V(cache), V(config)); required with O(mode=shared).
    type: list
    elements: str
    default: []
  concurrent_parts:
    description:
      - Parts that several shared holders may work on at once (both must list the part). Every caller of an
        environment should give the same list.
    type: list
    elements: str
    default: [media]
  ttl_s:
    description:
      - How long the lease lasts without a release (seconds, 10 to 604800) - the operation's normal duration with a
        margin. A killed run's lease is free after it; a run that lasts longer can be taken over.
    type: int
    default: 3600
  token:
    description:
      - The C(token) of the RV(lease) an acquisition returned. With O(state=released) - the lease to give back. With
        O(state=acquired) - confirm this run holds it (re-entrant - nothing written, nothing to release for it).
    type: str
  break_lease:
    description:
      - Take the lease even from a live holder (its entries removed and tombstoned), or over an invalid document.
        Only when that run is dead. Said in a warning and in RV(broken), and kept in the document's history.
    type: bool
    default: false
  wait_s:
    description: Poll this long for a conflicting holder to go before refusing (V(0) - refuse at once).
    type: float
    default: 0
  timeout_s:
    description: Seconds to connect to and to wait for a store (two attempts each), so that a lost region costs seconds.
    type: float
    default: 2
  user:
    description: Who runs the operation (for example AWX's launching user); empty - the OS user running the module.
    type: str
    default: ''
  host:
    description: Where it runs; empty - this host's name.
    type: str
    default: ''
  awx_job_id:
    description: The AWX / Automation Controller job that runs it (empty outside AWX).
    type: str
    default: ''
seealso:
  - module: fediflow.dr.incident
notes:
  - "S3 conditional writes (C(If-None-Match) since August 2024, C(If-Match) since November 2024) are atomic on AWS.
    moto (the lab's S3) checks the condition and then writes, so two writers racing inside that window can both
    succeed there; the read-back after writing catches most such races, not all."
  - The role C(fediflow.dr.lease) (C(tasks_from) acquire.yml / release.yml) takes and releases the lease around
    every DR playbook of this collection; its README describes the inventory variables.
"""

EXAMPLES = r"""
- name: Take the environment's DR lease for a failover (refused, naming the holder, when another operation runs)
  fediflow.dr.dr_lease:
    stores:
      - {name: us-east-1, bucket: fediflow-backups-us-east-1, region: us-east-1}
      - {name: eu-west-1, bucket: fediflow-backups-eu-west-1, region: eu-west-1}
      - {name: us-west-2, bucket: fediflow-lease-us-west-2, region: us-west-2}
    environment: production
    operation: failover
    playbook: playbooks/failover.yml
    ttl_s: 1800
    awx_job_id: "{{ awx_job_id | default('') }}"
  register: dr_lease

- name: The media backup, beside other backups (media snapshots may run side by side)
  fediflow.dr.dr_lease:
    stores: "{{ fediflow_lease_stores }}"
    environment: production
    operation: backup_media
    mode: shared
    parts: [media]
    ttl_s: 900

- name: Give it back
  fediflow.dr.dr_lease:
    stores: "{{ fediflow_lease_stores }}"
    environment: production
    state: released
    token: "{{ dr_lease.lease.token }}"

- name: Who holds it?
  fediflow.dr.dr_lease:
    stores: "{{ fediflow_lease_stores }}"
    environment: production
    state: query
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lease now (V(false) in check mode, which writes nothing).
  returned: always
  type: bool
reentrant:
  description: Whether O(token) confirmed a lease this run held already (nothing written).
  returned: always
  type: bool
released:
  description: Whether O(state=released) removed the entry from at least one store.
  returned: always
  type: bool
lease:
  description:
    - The entry this run holds (or released) - C(token) (give it to O(state=released)), C(operation), C(playbook),
      C(mode), C(parts), C(concurrent_parts), C(user), C(host), C(awx_job_id), C(ttl_s), C(since), C(until)
      (ISO 8601, the stores' time). Null for O(state=query) and when nothing was held.
  returned: always
  type: dict
  sample: {token: 3f2a9c0e5b7d41e8a6c2f0b9d8e7a6c5, operation: failover, playbook: playbooks/failover.yml,
           mode: exclusive, parts: [], user: root, host: ctl-1, awx_job_id: "", ttl_s: 1800,
           since: "2026-11-25T14:03:00Z", until: "2026-11-25T14:33:00Z"}
holders:
  description: Every live holder after the run, each an entry as RV(lease) plus C(stores) (where it is recorded).
  returned: always
  type: list
  elements: dict
took_over:
  description: Expired entries this acquisition replaced (the operations whose runs ended without a release).
  returned: always
  type: list
  elements: dict
broken:
  description: Live entries O(break_lease) removed.
  returned: always
  type: list
  elements: dict
stores:
  description: Per store - C(name), C(answered), C(error) (why it did not, or why its document is unusable), C(wrote).
  returned: always
  type: list
  elements: dict
majority:
  description: How many stores must hold an entry for it to hold the lease.
  returned: always
  type: int
attempts:
  description: Read-decide-write rounds an acquisition took (more than one when racing another writer).
  returned: always
  type: int
clock:
  description: V(server) - times are the stores' (their Date header); V(controller) - a store sent none, this host's clock was used.
  returned: always
  type: str
msg:
  description: One line saying what happened (who holds the lease, what was taken over or broken).
  returned: always
  type: str
phases:
  description: Seconds spent reading and writing the stores.
  returned: always
  type: dict
duration_s:
  description: Wall time of the run in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import aws, lease, repos
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    spec = aws.aws_common_argument_spec()
    spec.update(
        state={"type": "str", "choices": list(lease.STATES), "default": "acquired"},
        stores=dict(repos.argument_spec(write=False)["repositories"], required=True),   # a store is given as a repository is
        environment={"type": "str", "default": "default"},
        key_prefix={"type": "str", "default": "fediflow-lease", "no_log": False},
        operation={"type": "str"},
        playbook={"type": "str", "default": ""},
        mode={"type": "str", "choices": list(lease.MODES), "default": "exclusive"},
        parts={"type": "list", "elements": "str", "default": []},
        concurrent_parts={"type": "list", "elements": "str", "default": ["media"]},
        ttl_s={"type": "int", "default": 3600},
        token={"type": "str", "no_log": False},
        break_lease={"type": "bool", "default": False},
        wait_s={"type": "float", "default": 0},
        timeout_s={"type": "float", "default": 2},
        user={"type": "str", "default": ""},
        host={"type": "str", "default": ""},
        awx_job_id={"type": "str", "default": ""},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_if=[("state", "acquired", ("operation",)), ("state", "released", ("token",))])
    run_module(module, lease.run_module, dict(module.params), check_mode=module.check_mode, warn=module.warn)


if __name__ == "__main__":
    main()
