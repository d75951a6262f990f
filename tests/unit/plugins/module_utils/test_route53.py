# -*- coding: utf-8 -*-
"""route53_failover's planning as plain dicts (the shapes list_resource_record_sets returns),
and the INSYNC polling loop. The API calls themselves run against moto in the integration tier.

The one fake here is ``FakeRoute53.get_change``: real Route53 reports PENDING for tens of
seconds before INSYNC, moto answers INSYNC at once, so the polling loop can only be exercised
against AWS's timing with a stand-in.
"""
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import aws, route53
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

NAME = "app.example.com."


def _params(**kw):
    params = {"zone": "example.com", "hosted_zone_id": None, "record": "app.example.com", "type": "A",
              "value": None, "ttl": None, "failover_pair": None, "target": None, "wait": True, "wait_timeout": 300}
    params.update(kw)
    return params


def _pair(target, primary=None, secondary=None):
    return _params(target=target, failover_pair={
        "primary": dict({"set_identifier": "us-east-1", "value": None, "health_check_id": None}, **(primary or {})),
        "secondary": dict({"set_identifier": "eu-west-1", "value": None, "health_check_id": None},
                          **(secondary or {}))})


def _plain(*values, ttl=60):
    return {"Name": NAME, "Type": "A", "TTL": ttl, "ResourceRecords": [{"Value": v} for v in values]}


def _fo(set_id, role, value, hc):
    return {"Name": NAME, "Type": "A", "SetIdentifier": set_id, "Failover": role, "TTL": 60,
            "ResourceRecords": [{"Value": value}], "HealthCheckId": hc}


PAIR_NORMAL = [_fo("us-east-1", "PRIMARY", "192.0.2.10", "hc-us"), _fo("eu-west-1", "SECONDARY", "198.51.100.10", "hc-eu")]


@pytest.mark.parametrize("kw, message", [
    ({"type": "MX", "value": ["x"]}, "type must be one of"),
    ({"value": ["192.0.2.1"], "zone": None}, "exactly one of zone or hosted_zone_id"),
    ({"value": ["192.0.2.1"], "hosted_zone_id": "Z1"}, "exactly one of zone or hosted_zone_id"),
    ({"value": ["192.0.2.1"], "record": "app.other.org"}, "is not inside zone"),
    ({"value": ["192.0.2.1"], "ttl": -1}, "ttl must be between"),
    ({"value": ["192.0.2.1"], "wait_timeout": 0}, "wait_timeout must be at least 1"),
    ({}, "exactly one of value"),
    ({"value": ["not-an-ip"]}, "is not an IPv4 address"),
    ({"value": ["192.0.2.1"], "type": "AAAA"}, "is not an IPv6 address"),
    ({"value": ["a.example.", "b.example."], "type": "CNAME"}, "exactly one value"),
    ({"value": ["192.0.2.1", "192.0.2.1"]}, "same value twice"),
    ({"value": []}, "exactly one of value"),
])
def test_bad_input_is_refused(kw, message):
    with pytest.raises(FediflowError, match=message):
        route53.validate(_params(**kw))


def test_bad_pair_input_is_refused():
    with pytest.raises(FediflowError, match="target must be primary or secondary"):
        route53.validate(_pair(None))
    with pytest.raises(FediflowError, match="need different set_identifier"):
        route53.validate(_pair("secondary", secondary={"set_identifier": "us-east-1"}))
    with pytest.raises(FediflowError, match="failover_pair.secondary.value"):
        route53.validate(_pair("secondary", secondary={"value": ["bad"]}))


def test_bad_input_is_refused_before_any_api_call():
    class NoCalls:  # any attribute access would mean an API call was attempted
        def __getattr__(self, name):
            raise AssertionError("API call %s before validation" % name)
    with pytest.raises(FediflowError, match="is not an IPv4 address"):
        route53.ensure(_params(value=["300.1.1.1"]), client=NoCalls())


def test_unreachable_endpoint_is_a_clear_error():
    # a real botocore client against a closed loopback port (one attempt: no retry back-off)
    client = aws.client("route53", {"endpoint_url": "http://127.0.0.1:1", "access_key": "a", "secret_key": "b",
                                    "region": "us-east-1"}, max_attempts=1)
    with pytest.raises(FediflowError, match=r"cannot talk to Route53 \(http://127.0.0.1:1\)") as err:
        route53.ensure(_params(value=["192.0.2.1"], endpoint_url="http://127.0.0.1:1"), client=client)
    assert err.value.details["result"]["changed"] is False


def test_names_are_normalized():
    assert route53.normalize_name("App.Example.COM") == "app.example.com."
    assert route53.normalize_name("\\052.example.com.") == "*.example.com."
    assert route53.in_zone("a.b.example.com", "example.com.")
    assert route53.in_zone("example.com", "example.com.")
    assert not route53.in_zone("badexample.com", "example.com")


def test_plain_record_repoint_deletes_the_exact_current_set_first():
    current = [_plain("192.0.2.10")]
    wanted = route53.wanted_record_sets(_params(value=["198.51.100.10"]), current)
    batch = route53.plan_change(current, wanted)
    assert batch == [{"Action": "DELETE", "ResourceRecordSet": current[0]},
                     {"Action": "CREATE", "ResourceRecordSet": _plain("198.51.100.10")}]
    assert batch[0]["ResourceRecordSet"] is current[0]  # verbatim as read: the precondition


def test_plain_record_already_there_plans_nothing():
    current = [_plain("192.0.2.11", "192.0.2.10")]
    assert route53.plan_change(current, route53.wanted_record_sets(
        _params(value=["192.0.2.10", "192.0.2.11"]), current)) is None  # order does not matter


def test_aaaa_and_cname_values_compare_canonically():
    aaaa = [{"Name": NAME, "Type": "AAAA", "TTL": 60, "ResourceRecords": [{"Value": "2001:db8:0:0::1"}]}]
    wanted = route53.wanted_record_sets(_params(type="AAAA", value=["2001:db8::1"]), aaaa)
    assert route53.plan_change(aaaa, wanted) is None
    cname = [{"Name": NAME, "Type": "CNAME", "TTL": 60, "ResourceRecords": [{"Value": "LB.Example.net"}]}]
    wanted = route53.wanted_record_sets(_params(type="CNAME", value=["lb.example.net."]), cname)
    assert route53.plan_change(cname, wanted) is None


def test_ttl_kept_unless_given_and_new_records_created_without_delete():
    current = [_plain("192.0.2.10", ttl=300)]
    assert route53.wanted_record_sets(_params(value=["192.0.2.20"]), current)[0]["TTL"] == 300
    changed = route53.plan_change(current, route53.wanted_record_sets(_params(value=["192.0.2.10"], ttl=30), current))
    assert [c["Action"] for c in changed] == ["DELETE", "CREATE"]
    fresh = route53.plan_change([], route53.wanted_record_sets(_params(value=["192.0.2.10"]), []))
    assert fresh == [{"Action": "CREATE", "ResourceRecordSet": _plain("192.0.2.10")}]


def test_failover_swap_keeps_values_and_health_checks_with_their_region():
    wanted = route53.wanted_record_sets(_pair("secondary"), PAIR_NORMAL)
    batch = route53.plan_change(PAIR_NORMAL, wanted)
    assert [c["Action"] for c in batch] == ["DELETE", "DELETE", "CREATE", "CREATE"]
    assert [c["ResourceRecordSet"] for c in batch[:2]] == PAIR_NORMAL
    created = {c["ResourceRecordSet"]["SetIdentifier"]: c["ResourceRecordSet"] for c in batch[2:]}
    assert created["eu-west-1"] == _fo("eu-west-1", "PRIMARY", "198.51.100.10", "hc-eu")
    assert created["us-east-1"] == _fo("us-east-1", "SECONDARY", "192.0.2.10", "hc-us")
    after = route53.after_change(PAIR_NORMAL, wanted)
    assert route53.served(after) == {"set_identifier": "eu-west-1", "value": ["198.51.100.10"]}
    assert route53.served(PAIR_NORMAL)["value"] == ["192.0.2.10"]


def test_failover_already_serving_from_target_plans_nothing():
    assert route53.plan_change(PAIR_NORMAL, route53.wanted_record_sets(_pair("primary"), PAIR_NORMAL)) is None


def test_failover_only_changed_sets_are_in_the_batch():
    wanted = route53.wanted_record_sets(_pair("primary", secondary={"value": ["198.51.100.20"]}), PAIR_NORMAL)
    batch = route53.plan_change(PAIR_NORMAL, wanted)
    assert [(c["Action"], c["ResourceRecordSet"]["SetIdentifier"]) for c in batch] == [
        ("DELETE", "eu-west-1"), ("CREATE", "eu-west-1")]
    assert batch[1]["ResourceRecordSet"]["HealthCheckId"] == "hc-eu"


def test_failover_pair_created_from_nothing_needs_values():
    with pytest.raises(FediflowError, match="failover_pair.primary.value is needed"):
        route53.wanted_record_sets(_pair("primary"), [])
    wanted = route53.wanted_record_sets(_pair("primary", primary={"value": ["192.0.2.10"], "health_check_id": "h1"},
                                              secondary={"value": ["198.51.100.10"]}), [])
    assert [w["Failover"] for w in wanted] == ["PRIMARY", "SECONDARY"]
    assert "HealthCheckId" not in wanted[1] and wanted[0]["HealthCheckId"] == "h1"
    assert [c["Action"] for c in route53.plan_change([], wanted)] == ["CREATE", "CREATE"]


def test_records_the_module_must_not_touch_are_refused():
    with pytest.raises(FediflowError, match="routing-policy record sets"):
        route53.wanted_record_sets(_params(value=["192.0.2.1"]), PAIR_NORMAL)
    with pytest.raises(FediflowError, match="plain record"):
        route53.wanted_record_sets(_pair("secondary"), [_plain("192.0.2.10")])
    with pytest.raises(FediflowError, match="not named in failover_pair: ap-south-1"):
        route53.wanted_record_sets(_pair("secondary"), PAIR_NORMAL + [_fo("ap-south-1", "SECONDARY", "203.0.113.1", None)])
    weighted = dict(PAIR_NORMAL[0], Weight=10)
    del weighted["Failover"]
    with pytest.raises(FediflowError, match="another routing policy"):
        route53.wanted_record_sets(_pair("secondary"), [weighted])
    target = {"DNSName": "lb.example.net.", "HostedZoneId": "Z2", "EvaluateTargetHealth": False}
    alias = {"Name": NAME, "Type": "A", "AliasTarget": target}
    with pytest.raises(FediflowError, match="alias record"):
        route53.wanted_record_sets(_params(value=["192.0.2.1"]), [alias])


def test_upsert_variant_only_when_every_create_replaces_a_deleted_set():
    swap = route53.plan_change(PAIR_NORMAL, route53.wanted_record_sets(_pair("secondary"), PAIR_NORMAL))
    variant = route53.upsert_variant(swap)
    assert [c["Action"] for c in variant] == ["DELETE", "DELETE", "UPSERT", "UPSERT"]
    assert [c["ResourceRecordSet"] for c in variant] == [c["ResourceRecordSet"] for c in swap]
    assert [c["Action"] for c in swap] == ["DELETE", "DELETE", "CREATE", "CREATE"]  # not modified
    fresh = route53.plan_change([], route53.wanted_record_sets(_params(value=["192.0.2.10"]), []))
    assert route53.upsert_variant(fresh) is None  # a pure CREATE keeps its "must not exist" precondition
    created = route53.wanted_record_sets(_pair("primary", secondary={"value": ["198.51.100.10"]}),
                                         [PAIR_NORMAL[0]])
    assert route53.upsert_variant(route53.plan_change([PAIR_NORMAL[0]], created)) is None


def test_simplify_for_the_diff():
    assert route53.simplify(PAIR_NORMAL[0]) == {"set_identifier": "us-east-1", "failover": "PRIMARY", "ttl": 60,
                                                "value": ["192.0.2.10"], "health_check_id": "hc-us"}


class FakeRoute53:
    """get_change answering with a scripted sequence of statuses (AWS's timing, see the module doc)."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.calls = []

    def get_change(self, Id):  # pylint: disable=invalid-name
        self.calls.append(Id)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"ChangeInfo": {"Id": "/change/" + Id, "Status": status}}


def test_wait_insync_polls_until_insync():
    fake = FakeRoute53(["PENDING", "PENDING", "INSYNC"])
    status, waited, polls = route53.wait_insync(fake, "C1", timeout=5, interval=0.001, max_interval=0.002)
    assert (status, polls) == ("INSYNC", 3)
    assert fake.calls == ["C1", "C1", "C1"]
    assert waited < 1


def test_wait_insync_gives_up_at_the_deadline():
    fake = FakeRoute53(["PENDING"])
    status, waited, polls = route53.wait_insync(fake, "C1", timeout=0.05, interval=0.01, max_interval=0.01)
    assert status == "PENDING" and polls >= 2
    assert 0.05 <= waited < 1
