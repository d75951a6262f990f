# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incident record and scheduled status updates (the ``incident`` module, role ``comms``).

The runbook's communication plan: a first notification within 15 minutes, a status update every
30 minutes, escalation by the outage's age (``notify.escalation``, the one matrix function), to
Slack, email (SES), SMS (SNS) and a status page (a JSON + HTML document in S3).

The record (one JSON document) lives where a scheduled job can read it: a local file (0600,
written atomically, compare-and-swap under ``flock``) or an S3 object (compare-and-swap with
conditional writes: ``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace).

Never the same update twice, across re-runs and concurrent runs:

1. read the record and its version; decide (pure data, ``decide``) whether an update is due;
2. *claim* it: write the record with ``pending`` (the update's number, text and a lease) on
   the version read - a concurrent run that read the same version loses the write and sends
   nothing;
3. send to the channels not yet delivered, at the same time (``notify.run_channels``);
4. commit on the claimed version: per-channel delivery markers, ``last_update``, lease released.
   A channel that failed stays pending and is retried by the next run, the others are not
   sent again; a newer update (interval or level) supersedes it.

A run killed between 3 and 4 leaves a claim whose lease expires; the next run then re-sends the
channels not marked delivered - at least once in that case, never twice otherwise.
"""

from __future__ import annotations

import fcntl
import hashlib
import html
import json
import os
import time
from datetime import datetime, timedelta, timezone

from ansible_collections.fediflow.dr.plugins.module_utils import atomic, aws, notify, s3cas
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer, redact
from ansible_collections.fediflow.dr.plugins.module_utils.s3cas import Conflict  # noqa: F401  (incident.Conflict)

SCHEMA = "fediflow.dr/incident/v1"
STATUS_SCHEMA = "fediflow.dr/status-page/v1"
STATES = ("open", "update", "close", "status")
CHANNELS = ("slack", "email", "sms", "status_page")
STORES = ("file", "s3")
FILE_MODE = 0o600
MIN_INTERVAL_S = 60
LEASE_MARGIN_S = 30  # a claim outlives the sends (timeout + grace) by this much
HISTORY_ON_PAGE = 20
# never: a failed channel is only a warning (a failover must not stop for a status page)
FAIL_WHEN = notify.FAIL_WHEN + ("never",)


# ---------------------------------------------------------------- times

def parse_time(text, option):
    """An ISO 8601 time with a zone as an aware datetime (``option`` names it in errors)."""
    raw = str(text).strip()
    iso = raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise FediflowError("%s '%s' is not an ISO 8601 time, e.g. 2026-11-26T01:00:00Z" % (option, raw))
    if when.tzinfo is None or when.utcoffset() is None:
        raise FediflowError("%s '%s' has no time zone: add Z or an offset such as +01:00" % (option, raw))
    return when


def iso(when):
    """UTC with microseconds cut to milliseconds: 2026-11-26T01:00:00.123Z."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _t(text):
    return parse_time(text, "record time") if text else None


# ---------------------------------------------------------------- input

def validate(p, now):
    """Refuse bad input before the store or any channel is touched; a normalized config back."""
    state = p.get("state") or "update"
    if state not in STATES:
        raise FediflowError("state must be one of %s, got '%s'" % (", ".join(STATES), state))
    channels = p.get("channels")
    if channels is None:
        channels = []
    if not isinstance(channels, (list, tuple)):
        raise FediflowError("channels must be a list of %s" % ", ".join(CHANNELS))
    for i, name in enumerate(channels):
        if name not in CHANNELS:
            raise FediflowError("channels[%d] '%s' is not a channel: use %s" % (i, name, ", ".join(CHANNELS)))
    channels = [c for c in CHANNELS if c in channels]
    matrix = notify.validate_matrix(p.get("escalation_matrix"))
    interval = p.get("update_interval_s") if p.get("update_interval_s") is not None else 1800
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < MIN_INTERVAL_S:
        raise FediflowError("update_interval_s must be a whole number of seconds >= %d, got %r" % (MIN_INTERVAL_S, interval))
    timeout = p.get("timeout") if p.get("timeout") is not None else 30
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise FediflowError("timeout must be at least 1 second, got %r" % (timeout,))
    fail_when = p.get("fail_when") or "all_failed"
    if fail_when not in FAIL_WHEN:
        raise FediflowError("fail_when must be one of %s, got '%s'" % (", ".join(FAIL_WHEN), fail_when))
    severity = p.get("severity") or "critical"
    if severity not in notify.SEVERITIES:
        raise FediflowError("severity must be one of %s, got '%s'" % (", ".join(notify.SEVERITIES), severity))

    url = p.get("slack_webhook_url")
    if "slack" in channels:
        if not url:
            raise FediflowError("channels includes slack but slack_webhook_url is not set")
        notify.check_webhook_url(url)
    sender = p.get("ses_sender")
    ses_recipients = notify.check_addresses(p.get("ses_recipients"), "ses_recipients")
    if "email" in channels:
        if not sender:
            raise FediflowError("channels includes email but ses_sender is not set (a verified SES identity)")
        if not notify.is_address(sender):
            raise FediflowError("ses_sender '%s' is not an email address" % sender)
        if not ses_recipients and not any(entry["recipients"] for entry in matrix):
            raise FediflowError("channels includes email but nobody is to be emailed: set ses_recipients or "
                                "recipients on escalation_matrix levels")
    phones = notify.check_phone_numbers(p.get("sms_phone_numbers"), "sms_phone_numbers")
    topic = notify.check_topic_arn(p.get("sms_topic_arn"), "sms_topic_arn")
    if "sms" in channels and not phones and not topic:
        raise FediflowError("channels includes sms but neither sms_phone_numbers nor sms_topic_arn is set")
    page_bucket = p.get("status_page_bucket")
    if "status_page" in channels and not page_bucket:
        raise FediflowError("channels includes status_page but status_page_bucket is not set")
    prefix = str(p.get("status_page_prefix") or "").strip("/")

    store = p.get("store") or "file"
    if store not in STORES:
        raise FediflowError("store must be one of %s, got '%s'" % (", ".join(STORES), store))
    if store == "file" and not p.get("path"):
        raise FediflowError("store=file needs path (the incident record's file)")
    if store == "s3" and not (p.get("s3_bucket") and p.get("s3_key")):
        raise FediflowError("store=s3 needs s3_bucket and s3_key (the incident record's object)")

    started = None
    if p.get("outage_started"):
        started = notify.parse_started(p.get("outage_started"), now)
    notified_at = parse_time(p["notified_at"], "notified_at") if p.get("notified_at") else None
    notified = list(p.get("notified_channels") or [])
    for i, name in enumerate(notified):
        if name not in CHANNELS:
            raise FediflowError("notified_channels[%d] '%s' is not a channel: use %s" % (i, name, ", ".join(CHANNELS)))
    if notified and not notified_at:
        raise FediflowError("notified_channels needs notified_at (when that first notification went out)")
    if state == "open" and not (str(p.get("subject") or "").strip() and str(p.get("msg") or "").strip()):
        raise FediflowError("state=open needs subject and msg (the incident's title and first message)")
    fields = notify.check_fields(p.get("fields"))
    return {
        "state": state, "channels": channels, "matrix": matrix, "interval": interval, "timeout": timeout,
        "fail_when": fail_when, "severity": severity, "url": url, "sender": sender, "ses_recipients": ses_recipients,
        "phones": phones, "topic": topic, "page_bucket": page_bucket, "page_prefix": prefix, "started": started,
        "notified_at": notified_at, "notified": [c for c in notified if c in channels],
        "notify": p.get("notify") is not False, "subject": str(p.get("subject") or "").strip(),
        "msg": str(p.get("msg") or "").strip(), "fields": fields, "secrets": notify.url_secrets(url),
    }


# ---------------------------------------------------------------- the decision (pure data)

def age_s(record, now):
    return max(0.0, (now - _t(record["started"])).total_seconds())


def next_due(record, now, cfg):
    """When the next update is due: the interval after the last one, or the next level, whichever first."""
    if record is None or record.get("status") != "open":
        return None
    base = record.get("pending") or record.get("last_update")
    started = _t(record["started"])
    index, _entry = notify.escalation(age_s(record, now), cfg["matrix"])
    candidates = []
    if base:
        candidates.append(_t(base["at"]) + timedelta(seconds=cfg["interval"]))
    else:
        candidates.append(now)
    if index + 1 < len(cfg["matrix"]):
        candidates.append(started + timedelta(seconds=cfg["matrix"][index + 1]["after_s"]))
    return min(candidates)


def due(record, now, cfg):
    """Why an update is due now (None: not due) for an open ``record``: 'first notification',
    'level: <level>' (the escalation level rose) or 'interval' (update_interval_s since the last)."""
    index, entry = notify.escalation(age_s(record, now), cfg["matrix"])
    base = record.get("pending") or record.get("last_update")
    if not base:
        return "first notification"
    if index > base["level_index"]:
        return "level: %s" % entry["level"]
    if (now - _t(base["at"])).total_seconds() >= cfg["interval"]:
        return "interval"
    return None


def _lease_active(pending, now):
    return bool(pending and pending.get("lease_until") and _t(pending["lease_until"]) > now)


def _new_record(cfg, now):
    started = cfg["started"] or now
    return {
        "schema": SCHEMA, "id": "inc-" + started.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "status": "open", "title": cfg["subject"], "summary": cfg["msg"], "severity": cfg["severity"],
        "started": iso(started), "opened_at": iso(now), "closed_at": None, "fields": dict(cfg["fields"]),
        "level": None, "level_index": None, "updates": [], "last_update": None, "pending": None,
        "first_notification_at": None, "first_notification_s": None,
    }


def _message(record, reason, seq, level, age, cfg, now):
    """(subject, text) of an update, rendered by notify.render (the same text on every channel)."""
    started = _t(record["started"])
    if reason == "resolved":
        subject = "Resolved: %s" % record["title"]
        body = "%s\n\nResolved at %s after %s." % (record["summary"], notify.iso_utc(now), notify.format_age(age))
    else:
        subject = record["title"] if seq == 1 else "%s - update #%d" % (record["title"], seq)
        nxt = now + timedelta(seconds=cfg["interval"])
        body = "%s\n\nUpdate #%d (%s). Next update by %s." % (record["summary"], seq, reason, notify.iso_utc(nxt))
    fields = [(k, str(v)) for k, v in (record.get("fields") or {}).items()]
    return notify.render(subject, body, record["severity"], level, age, started, fields)


def decide(record, now, cfg):
    """What this run does, as data: {action: none|send, why, record (the claimed record to write
    first), pending (the update), channels (to send now)}. ``record`` is the stored one or None."""
    state = cfg["state"]
    if state == "status":
        return {"action": "none", "why": "status only"}
    is_open = bool(record) and record.get("status") == "open"
    if state in ("update", "close") and not is_open:
        return {"action": "none", "why": "no open incident" if not record else "the incident is closed"}
    pending = (record or {}).get("pending") if is_open else None
    if _lease_active(pending, now):
        if state == "close":
            raise FediflowError("another run is sending update #%d of %s until %s (its lease): close again after that"
                                % (pending["seq"], record["id"], pending["lease_until"]))
        return {"action": "none", "why": "another run is sending update #%d (lease until %s)"
                % (pending["seq"], pending["lease_until"])}
    rec = json.loads(json.dumps(record)) if is_open else _new_record(cfg, now)
    age = age_s(rec, now)
    index, entry = notify.escalation(age, cfg["matrix"])
    reason, retry = None, False
    if state == "open" and not is_open:
        reason = "opened"
    elif state == "open":  # already open: only finish the opening (or last) update's channels
        retry = bool(pending and set(cfg["channels"]) - set(pending["delivered"]))
    elif state == "close":
        reason = "resolved"
        rec["status"], rec["closed_at"] = "closed", iso(now)
        if cfg["msg"]:
            rec["summary"] = cfg["msg"]
    else:
        reason = due(rec, now, cfg)
        if reason is None and pending and set(cfg["channels"]) - set(pending["delivered"]):
            retry = True
        if state == "update" and cfg["msg"] and reason:
            rec["summary"] = cfg["msg"]
    if reason is None and not retry:
        return {"action": "none", "why": "nothing due (next update by %s)" % iso(next_due(rec, now, cfg))}
    if retry:
        new = dict(pending)
        channels = [c for c in cfg["channels"] if c not in pending["delivered"]]
    else:
        if pending:  # superseded: kept in the history with what it reached
            rec["updates"].append(_closed_update(pending))
        seq = len(rec["updates"]) + 1
        subject, text = _message(rec, reason, seq, entry["level"], age, cfg, now)
        new = {"seq": seq, "reason": reason, "at": iso(now), "level": entry["level"], "level_index": index,
               "subject": subject, "text": redact([text], cfg["secrets"])[0], "delivered": {}, "failed": {}}
        if reason == "opened" and cfg["notified_at"]:
            new["delivered"] = {c: iso(cfg["notified_at"]) for c in cfg["notified"]}
        channels = [c for c in cfg["channels"] if c not in new["delivered"]]
        if not cfg["notify"] and state in ("open", "close"):
            channels = []
    new["lease_until"] = iso(now + timedelta(seconds=cfg["timeout"] + notify.GRACE_S + LEASE_MARGIN_S))
    rec["level"], rec["level_index"] = entry["level"], index
    rec["pending"] = new
    return {"action": "send", "why": "retry of update #%d" % new["seq"] if retry else reason,
            "record": rec, "pending": new, "channels": channels}


def _closed_update(pending):
    return {k: pending[k] for k in ("seq", "reason", "at", "level", "level_index", "subject", "delivered", "failed")}


def commit(claimed, outcome, delivered_at, cfg, now):
    """The record after the sends: delivery markers, last_update, first notification, lease released."""
    rec = json.loads(json.dumps(claimed))
    pending = rec["pending"]
    for name, res in outcome.items():
        if res.get("ok"):
            pending["delivered"][name] = iso(delivered_at[name])
            pending["failed"].pop(name, None)
        else:
            pending["failed"][name] = res.get("error") or "failed"
    pending["lease_until"] = None
    if pending["delivered"] or not outcome:
        rec["last_update"] = {"seq": pending["seq"], "at": pending["at"], "level_index": pending["level_index"],
                              "level": pending["level"]}
    if pending["delivered"] and not rec.get("first_notification_at"):
        first = min(_t(v) for v in pending["delivered"].values())
        rec["first_notification_at"] = iso(first)
        rec["first_notification_s"] = round(max(0.0, (first - _t(rec["started"])).total_seconds()), 3)
    missing = [c for c in cfg["channels"] if c not in pending["delivered"]]
    if not missing or rec["status"] == "closed" or not outcome:
        rec["updates"].append(_closed_update(pending))
        rec["pending"] = None
    else:
        rec["pending"] = pending  # retried by the next run (unless a newer update supersedes it)
    return rec


# ---------------------------------------------------------------- the status page

def status_document(record, now):
    """The public status document (no escalation names, no internal fields)."""
    updates = list(record.get("updates") or [])
    if record.get("pending"):
        updates.append(record["pending"])
    return {
        "schema": STATUS_SCHEMA, "incident": record["id"],
        "status": "resolved" if record["status"] == "closed" else "investigating",
        "title": record["title"], "severity": record["severity"], "summary": record["summary"],
        "started": record["started"], "resolved": record.get("closed_at"), "updated": iso(now),
        "updates": [{"at": u["at"], "subject": u["subject"]} for u in updates[-HISTORY_ON_PAGE:]][::-1],
    }


def status_html(doc):
    e = html.escape
    rows = "".join("<li><time>%s</time> %s</li>" % (e(u["at"]), e(u["subject"])) for u in doc["updates"])
    colour = "#2e7d32" if doc["status"] == "resolved" else "#c62828"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"60\">"
        "<title>FediFlow status: %(status)s</title><style>body{font-family:sans-serif;max-width:48em;margin:2em auto}"
        ".s{color:%(colour)s;font-weight:bold}time{color:#555;margin-right:.5em}</style></head><body>"
        "<h1>FediFlow status</h1><p class=\"s\" id=\"status\">%(status)s</p><h2>%(title)s</h2>"
        "<p id=\"summary\">%(summary)s</p><p>Started %(started)s%(resolved)s. Updated %(updated)s.</p>"
        "<h3>Updates</h3><ul id=\"updates\">%(rows)s</ul><p><a href=\"status.json\">status.json</a></p></body></html>\n"
    ) % {"status": e(doc["status"]), "colour": colour, "title": e(doc["title"]), "summary": e(doc["summary"]),
         "started": e(doc["started"]), "resolved": (", resolved %s" % e(doc["resolved"])) if doc["resolved"] else "",
         "updated": e(doc["updated"]), "rows": rows}


def publish_status_page(client, bucket, prefix, record, now, timeout):
    """status.json then index.html (the page links the JSON) under ``prefix``; {ok, keys, error}."""
    doc = status_document(record, now)
    keys = ["/".join(p for p in (prefix, name) if p) for name in ("status.json", "index.html")]
    bodies = [(json.dumps(doc, indent=2, sort_keys=True).encode("utf-8"), "application/json"),
              (status_html(doc).encode("utf-8"), "text/html; charset=utf-8")]
    for key, (body, ctype) in zip(keys, bodies):
        one = notify.aws_retrying(
            lambda k=key, b=body, c=ctype: client.put_object(Bucket=bucket, Key=k, Body=b, ContentType=c,
                                                             CacheControl="max-age=30"),
            timeout, lambda code, message, k=key: "S3 refused the status page s3://%s/%s (%s: %s)" % (bucket, k, code, message),
            "S3")
        if not one["ok"]:
            return {"ok": False, "keys": keys, "error": one["error"]}
    return {"ok": True, "keys": keys, "error": None}


# ---------------------------------------------------------------- stores

class FileStore:
    """The record in a local file: 0600, written to a temporary file, fsync'd and renamed over the
    old one (readers see the old or the new, never half), compare-and-swap under an flock."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.where = "file %s" % self.path

    @staticmethod
    def _version(data):
        return hashlib.sha256(data).hexdigest() if data is not None else None

    def _read(self):
        try:
            with open(self.path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FediflowError("cannot read the incident record %s: %s" % (self.path, exc.strerror))

    def load(self):
        data = self._read()
        return _parse(data, self.where), self._version(data)

    def save(self, record, expected):
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            lock = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise FediflowError("cannot write the incident record in %s: %s" % (folder, exc.strerror))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._version(self._read()) != expected:
                raise Conflict(self.where)
            data = _dump(record)
            try:
                atomic.write_atomic(self.path, data, FILE_MODE)
            except OSError as exc:
                raise FediflowError("cannot write the incident record %s: %s" % (self.path, exc.strerror))
            return self._version(data)
        finally:
            os.close(lock)


class S3Store:
    """The record as an S3 object (SSE-S3), compare-and-swap by conditional writes (``s3cas``): ``If-None-Match: *``
    creates, ``If-Match: <ETag>`` replaces; a 412 (or 409) means another run wrote it first."""

    def __init__(self, params, bucket, key, client=None):
        self.bucket, self.key = bucket, key
        self.obj = s3cas.CasObject(client or aws.client("s3", params), bucket, key, what="the incident record")
        self.where = self.obj.where

    def load(self):
        got = self.obj.load()
        return _parse(got.body, self.where), got.etag

    def save(self, record, expected):
        return self.obj.save(_dump(record), expected).etag


def _dump(record):
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _parse(data, where):
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        raise FediflowError("the incident record %s is not JSON: fix or remove it" % where)
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise FediflowError("the incident record %s is not a %s document: fix or remove it" % (where, SCHEMA))
    return record


def make_store(p):
    if (p.get("store") or "file") == "s3":
        return S3Store(p, p["s3_bucket"], p["s3_key"])
    return FileStore(p["path"])


# ---------------------------------------------------------------- the module's entry point

def _jobs(cfg, p, pending, record, now, clients):
    jobs = {}
    text = pending["text"]
    for name in clients["channels"]:
        if name == "slack":
            jobs[name] = lambda: notify.post_slack(cfg["url"], text, cfg["timeout"], cfg["secrets"])
        elif name == "email":
            recipients = notify.email_recipients(cfg["ses_recipients"], cfg["matrix"], pending["level_index"])
            jobs[name] = lambda r=recipients: notify.send_ses(clients["ses"], cfg["sender"], r, pending["subject"], text,
                                                              cfg["timeout"], p.get("region"))
        elif name == "sms":
            jobs[name] = lambda: notify.send_sns(clients["sns"], cfg["phones"], cfg["topic"], pending["subject"], text,
                                                 cfg["timeout"])
        elif name == "status_page":
            page = dict(record, pending=pending)
            jobs[name] = lambda: publish_status_page(clients["s3"], cfg["page_bucket"], cfg["page_prefix"], page, now,
                                                     cfg["timeout"])
    return jobs


def _summary(record, now, cfg):
    if not record:
        return {"status": "none", "incident_id": None, "level": None, "level_index": None, "age_s": None,
                "next_update_due": None, "first_notification_s": None}
    nxt = next_due(record, now, cfg)
    index, entry = notify.escalation(age_s(record, now), cfg["matrix"])
    end = _t(record["closed_at"]) if record.get("closed_at") else now
    return {"status": record["status"], "incident_id": record["id"],
            "level": entry["level"] if record["status"] == "open" else record.get("level"),
            "level_index": index if record["status"] == "open" else record.get("level_index"),
            "age_s": round(max(0.0, (end - _t(record["started"])).total_seconds()), 3),
            "next_update_due": iso(nxt) if nxt else None,
            "first_notification_s": record.get("first_notification_s")}


def run(p, check_mode=False, warn=None, now=None, store=None):
    """Open / update / close / report the incident (see the module documentation); a plain dict back."""
    timer = Timer()
    fixed = now  # a test fixes the clock

    def clock():
        return fixed or datetime.now(timezone.utc)
    now = clock()
    cfg = validate(p, now)
    store = store or make_store(p)
    result = {"changed": False, "store": store.where, "update": None, "channels": [], "sent": [], "failed_channels": {}}
    for _attempt in range(3):
        with timer.phase("read"):
            record, version = store.load()
        plan = decide(record, now, cfg)
        # a retry after a lost claim decides afresh: nothing of the lost attempt stays in the result
        result.update(_summary(record, now, cfg), incident=record, why=plan["why"], changed=False, update=None,
                      channels=[])
        result.pop("diff", None)
        if plan["action"] == "none":
            result["duration_s"] = timer.elapsed()
            return result
        channels = plan["channels"]
        pending = plan["pending"]
        result.update(changed=True, update={k: pending[k] for k in ("seq", "reason", "level", "subject", "text")},
                      channels=channels, diff={"before": _dump(record).decode() if record else "",
                                               "after": _dump(plan["record"]).decode()})
        if check_mode:
            result.update(_summary(plan["record"], now, cfg), incident=plan["record"], duration_s=timer.elapsed())
            return result
        clients = {"channels": channels}
        if "email" in channels:
            clients["ses"] = notify.ses_client(p)
        if "sms" in channels:
            clients["sns"] = notify.sns_client(p)
        if "status_page" in channels:
            clients["s3"] = notify.channel_client("s3", p, "the status page (S3)")
        try:
            with timer.phase("claim"):
                claimed_version = store.save(plan["record"], version)
        except Conflict:
            now = clock()
            continue  # another run wrote first: read again, decide again
        break
    else:
        raise FediflowError("the incident record %s kept changing under this run (3 attempts): another run is "
                            "writing it; nothing was sent" % store.where)

    start = time.monotonic()
    sent_at = datetime.now(timezone.utc)
    outcome, spent = notify.run_channels(_jobs(cfg, p, pending, plan["record"], now, clients), cfg["timeout"],
                                         cfg["secrets"])
    delivered_at = {name: sent_at + timedelta(seconds=spent[name]) for name in outcome}
    timer.phases["send"] = round(time.monotonic() - start, 3)
    final = commit(plan["record"], outcome, delivered_at, cfg, datetime.now(timezone.utc))
    try:
        with timer.phase("commit"):
            store.save(final, claimed_version)
    except Conflict:
        raise FediflowError("the incident record %s changed while this run was sending update #%d (its lease "
                            "expired and another run took over): check the channels for a repeated message"
                            % (store.where, pending["seq"]), result=result)
    sent = [c for c in channels if outcome.get(c, {}).get("ok")]
    failed = {c: outcome[c]["error"] for c in channels if not outcome[c].get("ok")}
    result.update(_summary(final, datetime.now(timezone.utc), cfg), incident=final, sent=sent, failed_channels=failed,
                  changed=True, phases=timer.phases)  # the record was written, whatever the channels did
    result["diff"]["after"] = _dump(final).decode()
    result["duration_s"] = timer.elapsed()
    failure = None
    if channels and cfg["fail_when"] != "never":
        failure = notify.decide({c: outcome[c] for c in channels}, cfg["fail_when"])
    if failure:
        raise FediflowError(redact([failure + " (the incident record keeps them pending: the next run retries)"],
                                   cfg["secrets"])[0], result=result)
    if failed and warn:
        for name, error in failed.items():
            warn("the %s update failed (others got through; the next run retries it): %s" % (name, error))
    elif failed:
        result["warnings"] = ["the %s update failed (the next run retries it): %s" % kv for kv in failed.items()]
    return result
