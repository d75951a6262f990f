"""route53_failover against the lab's moto (Route53), each test in a hosted zone of its own
(never the lab's fediflow-lab.example. zone). Outcomes are checked with boto3.

moto answers INSYNC at once, so waiting is exercised by the unit tier (a scripted get_change).
moto 5.2 checks a DELETE only against its change journal - any CREATE/UPSERT ever made with the
same name, type, TTL and values passes, and the delete then removes the set by name/type (or
set identifier) whatever it holds - and it applies a batch change by change, not atomically.
Real Route53 rejects the whole batch with InvalidChangeBatch ("Tried to delete resource record
set ... but the values provided do not match the current values") when a DELETE differs from
the current set in any field. The precondition test below therefore checks what moto does
enforce (a DELETE of values never present), and the realistic race (the set changed to
something new after our read) is an xfail that documents moto's gap.
"""
import json
import sys
import uuid

import boto3
import pytest

from lab_fixtures import ROOT, module

sys.path.insert(0, str(ROOT / ".build" / "collections"))
from ansible_collections.fediflow.dr.plugins.module_utils import route53  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError  # noqa: E402  pylint: disable=wrong-import-position

MODULE = "fediflow.dr.route53_failover"


@pytest.fixture
def r53(lab):
    p = lab["primary"]
    client = boto3.client("route53", endpoint_url=p["fediflow_aws_endpoint_url"], region_name="us-east-1",
                          aws_access_key_id=p["fediflow_aws_access_key"],
                          aws_secret_access_key=p["fediflow_aws_secret_key"])
    conn = {"endpoint_url": p["fediflow_aws_endpoint_url"], "access_key": p["fediflow_aws_access_key"],
            "secret_key": p["fediflow_aws_secret_key"], "region": "us-east-1"}
    return {"client": client, "conn": conn, "secret": p["fediflow_aws_secret_key"]}


@pytest.fixture
def zone(r53):
    """A hosted zone of this test only; removed with its records and health checks afterwards."""
    client = r53["client"]
    name = "t%s.example." % uuid.uuid4().hex[:10]
    zone_id = client.create_hosted_zone(Name=name, CallerReference=str(uuid.uuid4()))["HostedZone"]["Id"]
    health_checks = []
    yield {"id": zone_id.split("/")[-1], "name": name, "health_checks": health_checks}
    for rr in client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]:
        if rr["Type"] not in ("NS", "SOA"):
            client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
                "Changes": [{"Action": "DELETE", "ResourceRecordSet": rr}]})
    client.delete_hosted_zone(Id=zone_id)
    for hc_id in health_checks:
        client.delete_health_check(HealthCheckId=hc_id)


def _sets(r53, zone, name, rtype="A"):
    out = r53["client"].list_resource_record_sets(HostedZoneId=zone["id"], StartRecordName=name,
                                                  StartRecordType=rtype)["ResourceRecordSets"]
    return sorted((rr for rr in out if rr["Name"] == name and rr["Type"] == rtype),
                  key=lambda rr: rr.get("SetIdentifier") or "")


def _create(r53, zone, *rrsets):
    r53["client"].change_resource_record_sets(HostedZoneId=zone["id"], ChangeBatch={
        "Changes": [{"Action": "CREATE", "ResourceRecordSet": rr} for rr in rrsets]})


def _a(name, *values, ttl=60):
    return {"Name": name, "Type": "A", "TTL": ttl, "ResourceRecords": [{"Value": v} for v in values]}


def _values(rrset):
    return [r["Value"] for r in rrset["ResourceRecords"]]


def test_repoint_a_record_then_nothing_to_do(r53, zone):
    name = "app." + zone["name"]
    _create(r53, zone, _a(name, "192.0.2.10", ttl=120))
    args = dict(r53["conn"], zone=zone["name"], record=name, type="A", value=["198.51.100.10"])
    res = module(MODULE, args, diff=True)
    assert res["changed"] is True, res.get("msg")
    assert res["status"] == "INSYNC" and res["change_id"]
    assert res["value_before"] == ["192.0.2.10"] and res["value_after"] == ["198.51.100.10"]
    assert [c["Action"] for c in res["changes"]] == ["DELETE", "CREATE"]
    assert res["diff"]["before"]["record_sets"][0]["value"] == ["192.0.2.10"]
    assert res["diff"]["after"]["record_sets"][0]["value"] == ["198.51.100.10"]
    assert res["duration_s"] >= res["waited_s"] >= 0
    sets = _sets(r53, zone, name)
    assert len(sets) == 1 and _values(sets[0]) == ["198.51.100.10"]
    assert sets[0]["TTL"] == 120  # TTL kept when not given
    assert r53["secret"] not in json.dumps(res)

    again = module(MODULE, args, diff=True)
    assert again["changed"] is False and again["change_id"] is None and again["changes"] == []
    assert again["diff"]["before"] == again["diff"]["after"]


def test_back_and_forth_repeatedly(r53, zone):
    """Fail over, fail back, fail over again: a drill must be repeatable on the same zone
    (against moto this needs the UPSERT resend, see retried_as_upsert)."""
    name = "app." + zone["name"]
    _create(r53, zone, _a(name, "192.0.2.10"))
    args = dict(r53["conn"], zone=zone["name"], record=name, type="A")
    for value in ("198.51.100.10", "192.0.2.10", "198.51.100.10", "192.0.2.10"):
        res = module(MODULE, dict(args, value=[value]))
        assert res["changed"] is True, res.get("msg")
        assert [c["ResourceRecordSet"]["ResourceRecords"] for c in res["changes"]][-1] == [{"Value": value}]
        assert _values(_sets(r53, zone, name)[0]) == [value]


def test_missing_record_is_created(r53, zone):
    name = "new." + zone["name"]
    res = module(MODULE, dict(r53["conn"], hosted_zone_id=zone["id"], record=name, type="A",
                              value=["192.0.2.7"], ttl=30))
    assert res["changed"] and [c["Action"] for c in res["changes"]] == ["CREATE"] and res["old"] == []
    sets = _sets(r53, zone, name)
    assert _values(sets[0]) == ["192.0.2.7"] and sets[0]["TTL"] == 30


def test_check_mode_reports_the_batch_and_changes_nothing(r53, zone):
    name = "app." + zone["name"]
    _create(r53, zone, _a(name, "192.0.2.10"))
    res = module(MODULE, dict(r53["conn"], zone=zone["name"], record=name, type="A", value=["198.51.100.10"]),
                 check_mode=True, diff=True)
    assert res["changed"] is True and res["change_id"] is None
    assert res["changes"][0]["Action"] == "DELETE" and res["diff"]["after"]["record_sets"][0]["value"] == ["198.51.100.10"]
    assert _values(_sets(r53, zone, name)[0]) == ["192.0.2.10"]


def test_stale_delete_precondition_rejects_the_whole_batch(r53, zone):
    """The module's write path with a 'current' that no longer matches: Route53 must refuse the
    batch and leave the record as it is."""
    name = "app." + zone["name"]
    _create(r53, zone, _a(name, "192.0.2.10"))
    stale = [_a(name, "192.0.2.99")]  # what a reader might have seen; never the record's value here
    changes = route53.plan_change(stale, [_a(name, "198.51.100.10")])
    with pytest.raises(FediflowError, match="rejected the change batch, nothing was changed"):
        route53.apply_change(r53["client"], zone["id"], changes)
    assert _values(_sets(r53, zone, name)[0]) == ["192.0.2.10"]


@pytest.mark.xfail(strict=True, reason="moto 5.2 checks a DELETE against its change journal, not the current "
                   "value, and applies batches non-atomically; real Route53 rejects this batch (InvalidChangeBatch)")
def test_record_changed_between_read_and_write_is_not_overwritten(r53, zone):
    name = "app." + zone["name"]
    _create(r53, zone, _a(name, "192.0.2.10"))
    current = _sets(r53, zone, name)                       # the module's read
    changes = route53.plan_change(current, [_a(name, "198.51.100.10")])
    r53["client"].change_resource_record_sets(HostedZoneId=zone["id"], ChangeBatch={"Changes": [  # someone else
        {"Action": "UPSERT", "ResourceRecordSet": _a(name, "203.0.113.5")}]})
    with pytest.raises(FediflowError, match="rejected the change batch"):
        route53.apply_change(r53["client"], zone["id"], changes)  # the module's write
    assert _values(_sets(r53, zone, name)[0]) == ["203.0.113.5"]


def _health_check(r53, zone, ip):
    hc_id = r53["client"].create_health_check(CallerReference=str(uuid.uuid4()), HealthCheckConfig={
        "IPAddress": ip, "Port": 443, "Type": "HTTPS", "ResourcePath": "/health"})["HealthCheck"]["Id"]
    zone["health_checks"].append(hc_id)
    return hc_id


def test_failover_pair_swap_keeps_health_checks_and_fails_back(r53, zone):
    name = "db." + zone["name"]
    hc_us, hc_eu = _health_check(r53, zone, "192.0.2.10"), _health_check(r53, zone, "198.51.100.10")
    _create(r53, zone,
            dict(_a(name, "192.0.2.10"), SetIdentifier="us-east-1", Failover="PRIMARY", HealthCheckId=hc_us),
            dict(_a(name, "198.51.100.10"), SetIdentifier="eu-west-1", Failover="SECONDARY", HealthCheckId=hc_eu))
    args = dict(r53["conn"], zone=zone["name"], record=name, type="A", target="secondary",
                failover_pair={"primary": {"set_identifier": "us-east-1"}, "secondary": {"set_identifier": "eu-west-1"}})
    res = module(MODULE, args, diff=True)
    assert res["changed"] is True, res.get("msg")
    assert res["serving"] == "eu-west-1" and res["value_after"] == ["198.51.100.10"]
    assert [c["Action"] for c in res["changes"]] == ["DELETE", "DELETE", "CREATE", "CREATE"]
    us, eu = _sets(r53, zone, name)[1], _sets(r53, zone, name)[0]
    assert (eu["SetIdentifier"], eu["Failover"], eu["HealthCheckId"], _values(eu)) == (
        "eu-west-1", "PRIMARY", hc_eu, ["198.51.100.10"])
    assert (us["SetIdentifier"], us["Failover"], us["HealthCheckId"], _values(us)) == (
        "us-east-1", "SECONDARY", hc_us, ["192.0.2.10"])
    before = {s["set_identifier"]: s["failover"] for s in res["diff"]["before"]["record_sets"]}
    after = {s["set_identifier"]: s["failover"] for s in res["diff"]["after"]["record_sets"]}
    assert before == {"us-east-1": "PRIMARY", "eu-west-1": "SECONDARY"}
    assert after == {"us-east-1": "SECONDARY", "eu-west-1": "PRIMARY"}

    assert module(MODULE, args)["changed"] is False

    back = module(MODULE, dict(args, target="primary"))
    assert back["changed"] is True and back["serving"] == "us-east-1"
    roles = {rr["SetIdentifier"]: (rr["Failover"], rr["HealthCheckId"]) for rr in _sets(r53, zone, name)}
    assert roles == {"us-east-1": ("PRIMARY", hc_us), "eu-west-1": ("SECONDARY", hc_eu)}


def test_missing_zone_is_a_clear_error(r53):
    name = "nope-%s.example." % uuid.uuid4().hex[:8]
    res = module(MODULE, dict(r53["conn"], zone=name, record="app." + name, type="A", value=["192.0.2.1"]))
    assert res["failed"] and "no public hosted zone named '%s'" % name in res["msg"]
    res = module(MODULE, dict(r53["conn"], hosted_zone_id="ZDOESNOTEXIST1", record="app.x.example.", type="A",
                              value=["192.0.2.1"]))
    assert res["failed"] and "hosted_zone_id 'ZDOESNOTEXIST1' does not exist" in res["msg"]


def test_bad_input_is_refused_before_any_call(r53, zone):
    res = module(MODULE, dict(r53["conn"], zone=zone["name"], record="app.elsewhere.org.", type="A",
                              value=["192.0.2.1"]))
    assert res["failed"] and "is not inside zone" in res["msg"]
    res = module(MODULE, dict(r53["conn"], zone=zone["name"], record="app." + zone["name"], type="A",
                              value=["999.0.2.1"]))
    assert res["failed"] and "value: value '999.0.2.1' is not an IPv4 address" in res["msg"]
    assert _sets(r53, zone, "app." + zone["name"]) == []
