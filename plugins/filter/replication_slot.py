# -*- coding: utf-8 -*-
# Copyright: (c) 2026, FediFlow SRE <sre@fediflow.example>
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The physical replication slot (and application_name) a standby streams under: one home for its default."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

_VALID = re.compile(r"^[a-z0-9_]{1,63}$")


def replication_slot(host):
    """``host``: a host's variables (``hostvars[name]``) or a region name. The host's own
    ``replication_slot_name`` when it sets one, else ``standby_<region>`` (``-`` as ``_``)."""
    if isinstance(host, Mapping):
        name = host.get("replication_slot_name")
        if name is None:
            region = host.get("fediflow_region")
            if not region:
                raise AnsibleFilterError("replication_slot: the host has neither replication_slot_name nor fediflow_region")
            name = "standby_" + str(region).replace("-", "_")
    elif isinstance(host, str) and host:
        name = "standby_" + host.replace("-", "_")
    else:
        raise AnsibleFilterError("replication_slot: expects a host's variables or a region name, got %s" % type(host).__name__)
    name = str(name)
    if not _VALID.match(name):
        raise AnsibleFilterError("replication_slot: %r is not a valid slot name (lower-case letters, digits and _, "
                                 "at most 63)" % name)
    return name


class FilterModule:
    """fediflow.dr filters."""

    def filters(self):
        return {"replication_slot": replication_slot}
