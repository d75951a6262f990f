from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.fediflow.dr.plugins.filter.replication_slot import FilterModule, replication_slot


def test_the_hosts_own_name_wins():
    assert replication_slot({"replication_slot_name": "dr_copy", "fediflow_region": "eu-west-1"}) == "dr_copy"


def test_the_default_is_derived_from_the_region():
    assert replication_slot({"fediflow_region": "eu-west-1"}) == "standby_eu_west_1"
    assert replication_slot("us-east-1") == "standby_us_east_1"


@pytest.mark.parametrize("host, word", [
    ({}, "neither"),
    ({"replication_slot_name": "Bad-Name"}, "not a valid slot name"),
    ({"fediflow_region": "EU-West"}, "not a valid slot name"),
    ({"replication_slot_name": "x" * 64}, "not a valid slot name"),
    (None, "expects"),
    ("", "expects"),
])
def test_refused(host, word):
    with pytest.raises(AnsibleFilterError, match=word):
        replication_slot(host)


def test_registered_under_its_name():
    assert FilterModule().filters()["replication_slot"] is replication_slot
