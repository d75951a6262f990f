#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: route53_failover
short_description: Point a Route53 record, or a failover pair, at the region that should serve
version_added: 0.2.0
description:
  - "Plain record (O(value)): the A, AAAA or CNAME record O(record) is made to hold exactly O(value)."
  - "Failover pair (O(failover_pair) + O(target)): the two record sets of O(record) with failover
    routing, one per region, are rewritten so that the region named by O(target) has
    C(Failover=PRIMARY) and the other C(Failover=SECONDARY). Each set keeps its own values and
    health check id unless given here (a health check belongs to a region's endpoint, so it
    travels with that region's set). With O(target=primary) the pair is back to normal
    (failback)."
  - The change is one Route53 change batch. It first DELETEs the record sets exactly as they
    were read, then CREATEs the new ones. Route53 applies a batch atomically and rejects all of
    it when a DELETE does not match the current set, so a change made by someone else between
    this module's read and its write makes the module fail (nothing changed) instead of
    silently overwriting it. Run it again to re-read.
  - With O(wait), polls C(GetChange) until the change is C(INSYNC) (on all Route53 name servers)
    or O(wait_timeout) passes. Throttling, including C(PriorRequestNotComplete), is retried with
    botocore's standard retry mode.
  - Nothing is sent when the record already points there (C(changed=false)). Check mode reads
    the zone and reports the change batch it would send.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.aws
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  zone:
    description:
      - Name of the hosted zone holding O(record). Exactly one of O(zone) and O(hosted_zone_id).
    type: str
  hosted_zone_id:
    description:
      - Id of the hosted zone holding O(record) (with or without the C(/hostedzone/) prefix).
    type: str
  private_zone:
    description:
      - Look O(zone) up among private hosted zones instead of public ones. Ignored with O(hosted_zone_id).
    type: bool
    default: false
  record:
    description: Full name of the record, for example C(app.example.com).
    type: str
    required: true
  type:
    description: Record type.
    type: str
    choices: [ A, AAAA, CNAME ]
    required: true
  value:
    description:
      - For a plain record, the values it must hold (one for a CNAME). Exactly one of O(value) and O(failover_pair).
    type: list
    elements: str
  ttl:
    description:
      - TTL in seconds. When omitted, an existing record set keeps its TTL and a new one gets 60.
    type: int
  failover_pair:
    description:
      - The two record sets of a failover pair, by the region's normal role. O(target) says which one serves.
    type: dict
    suboptions:
      primary:
        description: The set of the region that serves normally.
        type: dict
        required: true
        suboptions:
          set_identifier:
            description: The set's C(SetIdentifier), for example the region name.
            type: str
            required: true
          value:
            description: The set's values. When omitted, the current values are kept (required for a new set).
            type: list
            elements: str
          health_check_id:
            description: The set's health check. When omitted, the current one is kept.
            type: str
      secondary:
        description: The set of the standby region.
        type: dict
        required: true
        suboptions:
          set_identifier:
            description: The set's C(SetIdentifier), for example the region name.
            type: str
            required: true
          value:
            description: The set's values. When omitted, the current values are kept (required for a new set).
            type: list
            elements: str
          health_check_id:
            description: The set's health check. When omitted, the current one is kept.
            type: str
  target:
    description:
      - With O(failover_pair), the region whose set becomes C(Failover=PRIMARY). V(secondary) fails over,
        V(primary) fails back.
    type: str
    choices: [ primary, secondary ]
  wait:
    description:
      - Wait until the change is C(INSYNC). Unlike M(amazon.aws.route53), on by default, since a failover is
        only done when the name servers answer with the new values.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for C(INSYNC) with O(wait).
    type: int
    default: 300
notes:
  - Alias records and record sets with other routing policies (weighted, latency ...) are refused, not changed.
  - Clients keep using the old answer until its TTL runs out; keep failover records' TTL short.
seealso:
  - module: amazon.aws.route53
"""

EXAMPLES = r"""
- name: Point the app record at the standby region's endpoint
  fediflow.dr.route53_failover:
    zone: fediflow.example.
    record: app.fediflow.example.
    type: A
    value: [198.51.100.10]

- name: Fail over a PRIMARY/SECONDARY pair to eu-west-1 (health checks kept)
  fediflow.dr.route53_failover:
    hosted_zone_id: Z0123456789ABCDEFGHIJ
    record: api.fediflow.example.
    type: CNAME
    failover_pair:
      primary:
        set_identifier: us-east-1
      secondary:
        set_identifier: eu-west-1
    target: secondary
  register: dns

- name: Fail back
  fediflow.dr.route53_failover:
    hosted_zone_id: Z0123456789ABCDEFGHIJ
    record: api.fediflow.example.
    type: CNAME
    failover_pair:
      primary: {set_identifier: us-east-1}
      secondary: {set_identifier: eu-west-1}
    target: primary
"""

RETURN = r"""
change_id:
  description: Id of the Route53 change, null when nothing was sent.
  returned: always
  type: str
  sample: C2682N5HXP0BZ4
status:
  description: Last known status of the change (C(PENDING) or C(INSYNC)), null when nothing was sent.
  returned: always
  type: str
  sample: INSYNC
waited_s:
  description: Seconds spent polling C(GetChange).
  returned: always
  type: float
zone_id:
  description: Id of the hosted zone.
  returned: always
  type: str
zone:
  description: Name of the hosted zone.
  returned: always
  type: str
record:
  description: The record name, normalized (lower case, final dot).
  returned: always
  type: str
  sample: app.fediflow.example.
type:
  description: The record type.
  returned: always
  type: str
old:
  description: The record sets of the name and type before the run.
  returned: always
  type: list
  elements: dict
  contains:
    set_identifier:
      description: C(SetIdentifier), null for a plain record.
      type: str
    failover:
      description: C(PRIMARY), C(SECONDARY), or null.
      type: str
    ttl:
      description: TTL in seconds.
      type: int
    value:
      description: The values.
      type: list
      elements: str
    health_check_id:
      description: The health check, or null.
      type: str
new:
  description: The record sets after the run (as they would be, in check mode); same keys as RV(old).
  returned: always
  type: list
  elements: dict
value_before:
  description: What the name answered with before (the plain record's values, or the PRIMARY set's).
  returned: always
  type: list
  elements: str
  sample: [192.0.2.10]
value_after:
  description: What the name answers with after the run (when the PRIMARY set is healthy).
  returned: always
  type: list
  elements: str
  sample: [198.51.100.10]
serving:
  description: With O(failover_pair), the set identifier that has C(Failover=PRIMARY) after the run.
  returned: always
  type: str
  sample: eu-west-1
changes:
  description: The change batch sent (or that would be sent in check mode); empty when nothing changes.
  returned: always
  type: list
  elements: dict
retried_as_upsert:
  description:
    - The batch was refused with "already exists" although it DELETEs every set it CREATEs (an answer only
      moto gives, see getmoto/moto#9105) and was sent again with UPSERT in place of CREATE, DELETEs kept.
  returned: when that happened
  type: bool
phases:
  description: Seconds spent per phase (read, change, wait).
  returned: when a change was sent
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import route53
from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module

SET_OPTIONS = {
    "set_identifier": {"type": "str", "required": True},
    "value": {"type": "list", "elements": "str"},
    "health_check_id": {"type": "str"},
}


def main():
    spec = aws_common_argument_spec()
    spec.update(
        zone={"type": "str"},
        hosted_zone_id={"type": "str"},
        private_zone={"type": "bool", "default": False},
        record={"type": "str", "required": True},
        type={"type": "str", "required": True, "choices": list(route53.TYPES)},
        value={"type": "list", "elements": "str"},
        ttl={"type": "int"},
        failover_pair={"type": "dict", "options": {
            "primary": {"type": "dict", "required": True, "options": SET_OPTIONS},
            "secondary": {"type": "dict", "required": True, "options": SET_OPTIONS},
        }},
        target={"type": "str", "choices": list(route53.ROLES)},
        wait={"type": "bool", "default": True},
        wait_timeout={"type": "int", "default": 300},
    )
    module = AnsibleModule(
        argument_spec=spec, supports_check_mode=True,
        mutually_exclusive=[["zone", "hosted_zone_id"], ["value", "failover_pair"]],
        required_one_of=[["zone", "hosted_zone_id"], ["value", "failover_pair"]],
        required_together=[["failover_pair", "target"]],
    )
    run_module(module, route53.ensure, dict(module.params), check_mode=module.check_mode)


if __name__ == "__main__":
    main()
