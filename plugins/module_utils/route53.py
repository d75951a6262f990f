# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point a Route53 record, or a PRIMARY/SECONDARY failover pair, at a region (``route53_failover``).

The change is computed as plain data first (``wanted_record_sets`` then ``plan_change``, both
pure and unit-tested with dicts), then sent as **one** change batch: DELETE of the exact record
sets as they were read, then CREATE of the new ones. Route53 applies a batch atomically and
rejects the whole batch when a DELETE does not match the current set exactly (name, type,
set identifier, TTL, values, failover role, health check), so a concurrent modification
between our read and our write makes the batch fail instead of being overwritten - the
optimistic concurrency amazon.aws relies on as well.

Failover pairs: the region named by ``target`` gets Failover=PRIMARY and the other one
Failover=SECONDARY; each set keeps its own values and health check id (a health check
belongs to a region's endpoint, so it travels with that region's set).
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.fediflow.dr.plugins.module_utils import aws
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer, wait_until

TYPES = ("A", "AAAA", "CNAME")
ROLES = ("primary", "secondary")
COMMENT = "fediflow.dr.route53_failover"
DEFAULT_TTL = 60
MAX_TTL = 2147483647


# ---------------------------------------------------------------- pure helpers

def normalize_name(name):
    """Lower case, trailing dot, Route53's octal escapes decoded ('\\052.example.' -> '*.example.')."""
    text = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), (name or "").strip())
    text = text.lower()
    return text if text.endswith(".") else text + "."


def in_zone(record, zone):
    record, zone = normalize_name(record), normalize_name(zone)
    return record == zone or record.endswith("." + zone)


def canonical_value(rtype, value):
    """The value as compared: IPs in their canonical form, host names lower case without the final dot."""
    text = str(value).strip()
    try:
        if rtype == "A":
            return str(ipaddress.IPv4Address(text))
        if rtype == "AAAA":
            return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise FediflowError("value '%s' is not an %s address" % (text, "IPv4" if rtype == "A" else "IPv6"))
    if not text or " " in text:
        raise FediflowError("value '%s' is not a host name for a CNAME record" % text)
    return text.lower().rstrip(".")


def check_values(rtype, values, option="value"):
    if not values:
        raise FediflowError("%s must list at least one value" % option)
    if rtype == "CNAME" and len(values) != 1:
        raise FediflowError("%s: a CNAME record holds exactly one value, got %d" % (option, len(values)))
    try:
        canon = [canonical_value(rtype, v) for v in values]
    except FediflowError as exc:
        raise FediflowError("%s: %s" % (option, exc.message))
    if len(set(canon)) != len(canon):
        raise FediflowError("%s lists the same value twice: %s" % (option, ", ".join(values)))


def validate(p):
    """Refuse bad input before any API call; messages name the option."""
    if p.get("type") not in TYPES:
        raise FediflowError("type must be one of %s, got '%s'" % (", ".join(TYPES), p.get("type")))
    if not p.get("record"):
        raise FediflowError("record must name the DNS record, e.g. app.example.com")
    if bool(p.get("zone")) == bool(p.get("hosted_zone_id")):
        raise FediflowError("give exactly one of zone or hosted_zone_id")
    if p.get("zone") and not in_zone(p["record"], p["zone"]):
        raise FediflowError("record '%s' is not inside zone '%s'" % (p["record"], p["zone"]))
    if p.get("ttl") is not None and not 0 <= p["ttl"] <= MAX_TTL:
        raise FediflowError("ttl must be between 0 and %d, got %s" % (MAX_TTL, p["ttl"]))
    if p.get("wait_timeout") is None or p["wait_timeout"] < 1:
        raise FediflowError("wait_timeout must be at least 1 second, got %s" % p.get("wait_timeout"))
    pair = p.get("failover_pair")
    if bool(p.get("value")) == bool(pair):
        raise FediflowError("give exactly one of value (a plain record) or failover_pair")
    if p.get("value"):
        check_values(p["type"], p["value"])
        return
    if p.get("target") not in ROLES:
        raise FediflowError("target must be primary or secondary with failover_pair, got '%s'" % p.get("target"))
    ids = []
    for role in ROLES:
        spec = (pair or {}).get(role) or {}
        set_id = spec.get("set_identifier")
        if not set_id or len(set_id) > 128:
            raise FediflowError("failover_pair.%s.set_identifier must be 1 to 128 characters" % role)
        ids.append(set_id)
        if spec.get("value") is not None:
            check_values(p["type"], spec["value"], "failover_pair.%s.value" % role)
    if ids[0] == ids[1]:
        raise FediflowError("failover_pair.primary and .secondary need different set_identifier values, "
                            "both are '%s'" % ids[0])


def values_of(rrset):
    return [r["Value"] for r in rrset.get("ResourceRecords", [])]


def simplify(rrset):
    """A record set as people read it (and as the diff shows it)."""
    return {"set_identifier": rrset.get("SetIdentifier"), "failover": rrset.get("Failover"),
            "ttl": rrset.get("TTL"), "value": values_of(rrset), "health_check_id": rrset.get("HealthCheckId")}


def _key(rrset):
    return rrset.get("SetIdentifier")


def same_set(current, wanted):
    """Equal as Route53 serves them: values compared as canonical sets, plus TTL, role and health check."""
    rtype = wanted["Type"]
    return (sorted(canonical_value(rtype, v) for v in values_of(current))
            == sorted(canonical_value(rtype, v) for v in values_of(wanted))
            and current.get("TTL") == wanted.get("TTL")
            and current.get("Failover") == wanted.get("Failover")
            and current.get("HealthCheckId") == wanted.get("HealthCheckId"))


def _rrset(name, rtype, ttl, values, set_id=None, failover=None, health_check_id=None):
    out = {"Name": name, "Type": rtype}
    if set_id:
        out.update(SetIdentifier=set_id, Failover=failover)
    out.update(TTL=ttl, ResourceRecords=[{"Value": v} for v in values])
    if health_check_id:
        out["HealthCheckId"] = health_check_id
    return out


def wanted_record_sets(p, current):
    """The record sets the options ask for, given the ``current`` sets of that name and type
    (dicts as list_resource_record_sets returns them). Refuses what the module must not touch."""
    name, rtype = normalize_name(p["record"]), p["type"]
    for rr in current:
        if rr.get("AliasTarget"):
            raise FediflowError("%s %s is an alias record; route53_failover only manages value records"
                                % (name, rtype))
    if p.get("value"):
        routed = [rr.get("SetIdentifier") for rr in current if rr.get("SetIdentifier")]
        if routed:
            raise FediflowError("%s %s has routing-policy record sets (%s): use failover_pair"
                                % (name, rtype, ", ".join(routed)))
        ttl = p.get("ttl") if p.get("ttl") is not None else (current[0]["TTL"] if current else DEFAULT_TTL)
        return [_rrset(name, rtype, ttl, p["value"])]

    by_id = {rr.get("SetIdentifier"): rr for rr in current}
    if None in by_id:
        raise FediflowError("%s %s is a plain record (no failover routing): use value, or delete it before "
                            "creating a failover pair" % (name, rtype))
    ours = {p["failover_pair"][role]["set_identifier"] for role in ROLES}
    strangers = sorted(set(by_id) - ours)
    if strangers:
        raise FediflowError("%s %s has record sets not named in failover_pair: %s" % (name, rtype, ", ".join(strangers)))
    for set_id, rr in by_id.items():
        if not rr.get("Failover"):
            raise FediflowError("record set '%s' of %s %s uses another routing policy than failover"
                                % (set_id, name, rtype))
    out = []
    for role in ROLES:
        spec = p["failover_pair"][role]
        cur = by_id.get(spec["set_identifier"], {})
        values = spec.get("value") if spec.get("value") is not None else values_of(cur)
        if not values:
            raise FediflowError("failover_pair.%s.value is needed: record set '%s' does not exist yet"
                                % (role, spec["set_identifier"]))
        ttl = p["ttl"] if p.get("ttl") is not None else cur.get("TTL", DEFAULT_TTL)
        health = spec.get("health_check_id") or cur.get("HealthCheckId")
        failover = "PRIMARY" if role == p["target"] else "SECONDARY"
        out.append(_rrset(name, rtype, ttl, values, spec["set_identifier"], failover, health))
    return out


def plan_change(current_rrsets, wanted):
    """One change batch turning ``current_rrsets`` into ``wanted``, or None when nothing differs.

    Every DELETE comes first and repeats the current set exactly as read: it is the batch's
    precondition (Route53 rejects the whole batch when the set changed meanwhile). Record sets
    of the name that are not in ``wanted`` are left alone.
    """
    current = {_key(rr): rr for rr in current_rrsets}
    deletes, creates = [], []
    for rrset in wanted:
        cur = current.get(_key(rrset))
        if cur is not None and same_set(cur, rrset):
            continue
        if cur is not None:
            deletes.append({"Action": "DELETE", "ResourceRecordSet": cur})
        creates.append({"Action": "CREATE", "ResourceRecordSet": rrset})
    return (deletes + creates) or None


def after_change(current_rrsets, wanted):
    """The record sets of the name once ``wanted`` is applied."""
    by_key = {_key(rr): rr for rr in current_rrsets}
    by_key.update({_key(rr): rr for rr in wanted})
    return sorted(by_key.values(), key=lambda rr: rr.get("SetIdentifier") or "")


def served(rrsets):
    """What the name answers with when healthy: the plain set's values, else the PRIMARY set's."""
    for rr in rrsets:
        if not rr.get("SetIdentifier") or rr.get("Failover") == "PRIMARY":
            return {"set_identifier": rr.get("SetIdentifier"), "value": values_of(rr)}
    return {"set_identifier": None, "value": []}


# ---------------------------------------------------------------- Route53 calls

def find_zone(client, p):
    """{'id', 'name', 'private'} of the hosted zone named by ``zone`` / ``hosted_zone_id``."""
    if p.get("hosted_zone_id"):
        zone_id = p["hosted_zone_id"].split("/")[-1]
        try:
            zone = client.get_hosted_zone(Id=zone_id)["HostedZone"]
        except Exception as exc:  # pylint: disable=broad-except
            if not aws.is_client_error(exc):
                raise
            code, message = aws.error_text(exc)
            if code in ("NoSuchHostedZone", "InvalidInput"):
                raise FediflowError("hosted_zone_id '%s' does not exist (%s)" % (p["hosted_zone_id"], message))
            raise FediflowError("Route53 GetHostedZone failed: %s: %s" % (code, message))
        return {"id": zone_id, "name": normalize_name(zone["Name"]),
                "private": bool(zone.get("Config", {}).get("PrivateZone"))}
    name = normalize_name(p["zone"])
    private = bool(p.get("private_zone"))
    try:
        zones = client.list_hosted_zones_by_name(DNSName=name, MaxItems="100")["HostedZones"]
    except Exception as exc:  # pylint: disable=broad-except
        if not aws.is_client_error(exc):
            raise
        raise FediflowError("Route53 ListHostedZonesByName failed: %s: %s" % aws.error_text(exc))
    found = [z for z in zones if normalize_name(z["Name"]) == name
             and bool(z.get("Config", {}).get("PrivateZone")) == private]
    kind = "private" if private else "public"
    if not found:
        raise FediflowError("no %s hosted zone named '%s' (zone): check the name, private_zone, or the account "
                            "the credentials belong to" % (kind, name))
    if len(found) > 1:
        raise FediflowError("%d %s hosted zones are named '%s': set hosted_zone_id (%s)"
                            % (len(found), kind, name, ", ".join(z["Id"].split("/")[-1] for z in found)))
    return {"id": found[0]["Id"].split("/")[-1], "name": name, "private": private}


def current_record_sets(client, zone_id, name, rtype):
    """Every record set of exactly ``name`` and ``rtype`` (all set identifiers), as Route53 returns them."""
    out = []
    kwargs = {"HostedZoneId": zone_id, "StartRecordName": name, "StartRecordType": rtype, "MaxItems": "100"}
    while True:
        try:
            page = client.list_resource_record_sets(**kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            if not aws.is_client_error(exc):
                raise
            raise FediflowError("Route53 ListResourceRecordSets failed: %s: %s" % aws.error_text(exc))
        for rr in page["ResourceRecordSets"]:
            if normalize_name(rr["Name"]) != name or rr["Type"] != rtype:
                return out  # the listing is ordered and starts at our name and type: we are past them
            out.append(rr)
        if not page.get("IsTruncated") or normalize_name(page.get("NextRecordName", "")) != name \
                or page.get("NextRecordType") != rtype:
            return out
        kwargs.update(StartRecordName=page["NextRecordName"], StartRecordType=page["NextRecordType"])
        if page.get("NextRecordIdentifier"):
            kwargs["StartRecordIdentifier"] = page["NextRecordIdentifier"]


def _set_key(rrset):
    return normalize_name(rrset["Name"]), rrset["Type"], rrset.get("SetIdentifier")


def upsert_variant(changes):
    """The same batch with each CREATE turned into an UPSERT, when every CREATE replaces a set
    the batch DELETEs first (else None).

    Only used to work around moto (getmoto/moto#9105, open for 5.2): it refuses a CREATE equal
    to any CREATE in its change journal while a set of that name and type exists, even when the
    same batch DELETEs it first, so a failback to values used before fails there. Route53
    accepts such a batch and never answers it with "already exists" (the DELETE empties the
    set first), so the variant is only tried on that answer; the DELETEs, and with them the
    precondition, stay.
    """
    deleted = {_set_key(c["ResourceRecordSet"]) for c in changes if c["Action"] == "DELETE"}
    creates = [c for c in changes if c["Action"] == "CREATE"]
    if not creates or any(_set_key(c["ResourceRecordSet"]) not in deleted for c in creates):
        return None
    return [dict(c, Action="UPSERT") if c["Action"] == "CREATE" else c for c in changes]


def apply_change(client, zone_id, changes, comment=COMMENT):
    """Send one change batch; a batch Route53 rejects (stale DELETE precondition, conflict) raises
    FediflowError and changes nothing. Throttling (incl. PriorRequestNotComplete) is retried by
    botocore's standard retry mode configured in aws.client()."""
    batch, retried = changes, False
    while True:
        try:
            info = client.change_resource_record_sets(
                HostedZoneId=zone_id, ChangeBatch={"Comment": comment, "Changes": batch})["ChangeInfo"]
            break
        except Exception as exc:  # pylint: disable=broad-except
            if not aws.is_client_error(exc):
                raise
            code, message = aws.error_text(exc)
            variant = upsert_variant(batch) if not retried else None
            if code == "InvalidChangeBatch" and "already exists" in message and variant:
                batch, retried = variant, True
                continue
            if code in ("InvalidChangeBatch", "InvalidInput"):
                raise FediflowError("Route53 rejected the change batch, nothing was changed: %s (%s). If the "
                                    "record changed since it was read, run again to re-read it" % (message, code))
            if code == "NoSuchHealthCheck":
                raise FediflowError("a health_check_id does not exist: %s" % message)
            raise FediflowError("Route53 ChangeResourceRecordSets failed: %s: %s" % (code, message))
    return {"id": info["Id"].split("/")[-1], "status": info["Status"], "changes": batch, "retried_as_upsert": retried}


def wait_insync(client, change_id, timeout, interval=2.0, max_interval=10.0):
    """Poll GetChange until the change is INSYNC or ``timeout`` seconds pass.

    Real Route53 reports PENDING for tens of seconds before INSYNC; moto answers INSYNC at once,
    so the loop itself is unit-tested with a fake get_change (PENDING, PENDING, INSYNC) - the one
    place a fake stands in, because it is AWS's timing that moto cannot reproduce.
    Returns (status, waited_s, polls).
    """
    state = {"status": None, "polls": 0}

    def insync():
        try:
            state["status"] = client.get_change(Id=change_id)["ChangeInfo"]["Status"]
        except Exception as exc:  # pylint: disable=broad-except
            if not aws.is_client_error(exc):
                raise
            raise FediflowError("Route53 GetChange %s failed: %s: %s" % ((change_id,) + aws.error_text(exc)))
        state["polls"] += 1
        return state["status"] == "INSYNC"

    waited = wait_until(insync, timeout, interval=interval, max_interval=max_interval)[1]
    return state["status"], waited, state["polls"]


# ---------------------------------------------------------------- the module's entry point

def ensure(p, check_mode=False, client=None):
    """Point the record at the target (see the module documentation); a plain dict back."""
    timer = Timer()
    validate(p)
    if client is None:
        params = dict(p)
        params["region"] = params.get("region") or "us-east-1"  # Route53 is global; its API is in us-east-1
        client = aws.client("route53", params)
    result = {"changed": False}
    try:
        return _run(p, client, check_mode, timer, result)
    except FediflowError:
        raise
    except Exception as exc:
        if not any(cls.__name__ == "BotoCoreError" for cls in type(exc).__mro__):
            raise
        result["duration_s"] = timer.elapsed()
        raise FediflowError("cannot talk to Route53 (%s): %s" % (p.get("endpoint_url") or "AWS", exc), result=result)


def _run(p, client, check_mode, timer, result):
    with timer.phase("read"):
        zone = find_zone(client, p)
        name, rtype = normalize_name(p["record"]), p["type"]
        if not in_zone(name, zone["name"]):
            raise FediflowError("record '%s' is not inside hosted zone '%s' (%s)" % (name, zone["name"], zone["id"]))
        current = current_record_sets(client, zone["id"], name, rtype)
    wanted = wanted_record_sets(p, current)
    changes = plan_change(current, wanted)
    after = after_change(current, wanted)
    old, new = [simplify(rr) for rr in current], [simplify(rr) for rr in after]
    result.update({
        "changed": bool(changes), "zone_id": zone["id"], "zone": zone["name"], "record": name, "type": rtype,
        "old": old, "new": new, "value_before": served(current)["value"], "value_after": served(after)["value"],
        "serving": served(after)["set_identifier"], "changes": changes or [], "change_id": None,
        "status": None, "waited_s": 0.0,
        "diff": {"before": {"record": name, "type": rtype, "record_sets": old},
                 "after": {"record": name, "type": rtype, "record_sets": new}},
    })
    if check_mode or not changes:
        result["duration_s"] = timer.elapsed()
        return result
    with timer.phase("change"):
        info = apply_change(client, zone["id"], changes)
    result.update(change_id=info["id"], status=info["status"], changes=info["changes"])
    if info["retried_as_upsert"]:
        result["retried_as_upsert"] = True
    if p.get("wait", True) and info["status"] != "INSYNC":
        with timer.phase("wait"):
            status, waited = wait_insync(client, info["id"], p["wait_timeout"])[:2]
        result.update(status=status, waited_s=waited)
        if status != "INSYNC":
            result["duration_s"] = timer.elapsed()
            raise FediflowError("change %s is still %s after wait_timeout=%ss; Route53 applies it anyway - "
                                "check it with get-change" % (info["id"], status, p["wait_timeout"]), result=result)
    result.update(duration_s=timer.elapsed(), phases=timer.phases)
    return result
