# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DR lease (the ``dr_lease`` module, role ``lease``): one DR operation at a time per environment.

The lease is one small JSON document per environment, kept in every *store* of a list - an S3 bucket in
each region and one at a third site - and changed only by compare-and-swap (``s3cas``): created with
``If-None-Match: *``, replaced with ``If-Match: <ETag>``. The document lists its *holders*; an operation
holds the lease when its entry is in a **majority** of the stores. Majorities intersect, and no store ever
holds two entries that conflict (a writer refuses when any store it read shows a live conflicting entry,
and its write only lands on the version it read), so two conflicting operations can never both hold it:
not two controllers racing, not the two sides of a partition (the side with one store cannot reach a
majority). One lost region costs one store of three: the lease still works with the other two.

- **Modes.** A DR operation (failover, failback, PITR, recover, drill) holds it ``exclusive``: alone. A backup
  holds it ``shared`` for the parts it runs (``database``, ``media``, ``cache``, ``config``): beside other
  backups whose parts it does not share, and beside backups of a part every holder calls *concurrent*
  (``media``: s3_snapshot's own repository locks make snapshots safe side by side). Any exclusive holder
  conflicts with every other holder.
- **Time** is the stores' own: each answer's ``Date`` header. ``since`` is the stores' time when the lease
  is taken, ``until`` is ``since + ttl``; an entry counts as expired in a store when that store's time is
  past ``until`` (plus ``CLOCK_MARGIN_S``). Controllers (laptops, AWX pods) do not need synchronised clocks.
- **Expired** entries are dropped by the next writer, which says it took them over. **Released** entries
  leave a tombstone (their token until their ``until``), so a copy stranded in a store that was down
  during the release counts as released once any store shows the tombstone. ``break_lease`` removes
  live conflicting entries (and tombstones them), said as loudly.
- **In flight.** An entry in fewer than a majority of the stores and younger than ``SETTLE_S`` is an
  acquisition in progress: the reader backs off (its own partial entries removed) and reads again, so
  two operations started together end with one holder, not two refusals.

Everything read back from a store is untrusted: documents are validated field by field, texts cleaned
before they reach a message. The decisions (``assess``, ``store_plan``, ``release_plan``) are pure
functions of plain data, unit-tested without S3.
"""

from __future__ import annotations

import getpass
import json
import random
import re
import secrets
import socket
import time
from datetime import datetime, timedelta, timezone

from ansible_collections.fediflow.dr.plugins.module_utils import aws, repos
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer
from ansible_collections.fediflow.dr.plugins.module_utils.s3cas import CasObject, Conflict
from ansible_collections.fediflow.dr.plugins.module_utils.s3store import MissingBucket

FORMAT = "fediflow.dr/lease"
FORMAT_VERSION = 1
MODES = ("exclusive", "shared")
STATES = ("acquired", "released", "query")
CLOCK_MARGIN_S = 2      # the Date header has whole seconds; stores' clocks agree closer than that
SETTLE_S = 10           # an entry younger than this in a minority of the stores is an acquisition in flight
CONTENTION_S = 20       # how long racing writers retry before giving up (beside the caller's wait_s)
HISTORY_KEEP = 20       # events kept in the document (acquired, released, took_over, broken)
TTL_RANGE = (10, 7 * 86400)
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
PART_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
OPERATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
TEXT_MAX = 200
UTC = timezone.utc


class InvalidDocument(FediflowError):
    """A store holds something that is not a lease document this version understands."""


# ---------------------------------------------------------------- times and texts (pure)

def iso(when):
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text):
    """``2026-11-25T14:03:00Z`` (a zone required) -> aware datetime, None when it is not one."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    raw = text.strip()
    raw = raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return when if when.tzinfo is not None and when.utcoffset() is not None else None


def clean_text(value, limit=TEXT_MAX):
    """A text from a store (or the environment) fit for a one-line message: control characters out, bounded."""
    text = CONTROL_RE.sub(" ", str(value if value is not None else ""))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def span(seconds):
    """``95`` -> ``1 min 35 s``: how long, for a person."""
    seconds = int(max(0, round(seconds)))
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %d s" % divmod(seconds, 60) if seconds % 60 else "%d min" % (seconds // 60)
    hours, rest = divmod(seconds, 3600)
    return "%d h %d min" % (hours, rest // 60) if rest // 60 else "%d h" % hours


def expired(until, now):
    """Whether an entry that ends at ``until`` (ISO text) is over at the store time ``now``."""
    end = parse_iso(until)
    return end is None or now > end + timedelta(seconds=CLOCK_MARGIN_S)


# ---------------------------------------------------------------- holders (pure)

def new_holder(request, token, now):
    """The entry an operation writes: who, what, since when, until when."""
    return {
        "token": token, "operation": request["operation"], "playbook": request.get("playbook") or "",
        "mode": request["mode"], "parts": sorted(request.get("parts") or []),
        "concurrent_parts": sorted(request.get("concurrent_parts") or []),
        "user": request.get("user") or "", "host": request.get("host") or "",
        "awx_job_id": request.get("awx_job_id") or "", "ttl_s": int(request["ttl_s"]),
        "since": iso(now), "until": iso(now + timedelta(seconds=int(request["ttl_s"]))),
    }


def compatible(one, other):
    """Whether two holders may hold the lease at once: never beside an exclusive one; shared ones when
    every part they share is one that both call concurrent."""
    if one["token"] == other["token"]:
        return True
    if "exclusive" in (one["mode"], other["mode"]):
        return False
    common = set(one["parts"]) & set(other["parts"])
    return common <= (set(one["concurrent_parts"]) & set(other["concurrent_parts"]))


def who(holder):
    user, host = holder.get("user") or "?", holder.get("host") or "?"
    job = ", AWX job %s" % holder["awx_job_id"] if holder.get("awx_job_id") else ""
    return "%s@%s%s" % (user, host, job)


def describe(holder):
    """``failover (playbooks/failover.yml) by root@ctl, AWX job 42, since ... until ...`` - one line."""
    what = holder["operation"]
    if holder["mode"] == "shared":
        what += " [%s]" % ", ".join(holder["parts"])
    if holder.get("playbook"):
        what += " (%s)" % holder["playbook"]
    return "%s by %s, since %s until %s" % (what, who(holder), holder["since"], holder["until"])


# ---------------------------------------------------------------- documents (pure)

def empty_document(environment):
    return {"format": FORMAT, "version": FORMAT_VERSION, "environment": environment, "serial": 0,
            "holders": [], "released": [], "history": []}


def _holder(raw, where):
    if not isinstance(raw, dict):
        raise InvalidDocument("%s: a holder is not an object" % where)
    token = raw.get("token")
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise InvalidDocument("%s: a holder's token is malformed" % where)
    if raw.get("mode") not in MODES:
        mode = clean_text(raw.get("mode"), 20)
        raise InvalidDocument("%s: holder %s has mode %r (not %s)" % (where, token[:8], mode, " or ".join(MODES)))
    out = {"token": token, "mode": raw["mode"]}
    for field in ("parts", "concurrent_parts"):
        value = raw.get(field) or []
        if not isinstance(value, list) or not all(isinstance(x, str) and PART_RE.match(x) for x in value):
            raise InvalidDocument("%s: holder %s: %s must be a list of part names" % (where, token[:8], field))
        out[field] = sorted(set(value))
    operation = raw.get("operation")
    if not isinstance(operation, str) or not OPERATION_RE.match(operation):
        raise InvalidDocument("%s: holder %s: operation is malformed" % (where, token[:8]))
    out["operation"] = operation
    for field in ("since", "until"):
        if parse_iso(raw.get(field)) is None:
            raise InvalidDocument("%s: holder %s: %s is not an ISO 8601 time with a zone" % (where, token[:8], field))
        out[field] = iso(parse_iso(raw[field]))
    ttl = raw.get("ttl_s")
    out["ttl_s"] = ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else 0
    for field in ("playbook", "user", "host", "awx_job_id"):
        out[field] = clean_text(raw.get(field) or "")
    return out


def parse_document(raw, environment, where):
    """The document a store holds (bytes; None: none yet) as validated plain data; InvalidDocument otherwise."""
    if raw is None:
        return empty_document(environment)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidDocument("%s is not JSON" % where)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidDocument("%s is not a %s document" % (where, FORMAT))
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidDocument("%s has no valid version" % where)
    if version > FORMAT_VERSION:
        raise InvalidDocument("%s was written by a newer fediflow.dr (lease format %d; this one reads %d): "
                              "run the newer collection" % (where, version, FORMAT_VERSION))
    if data.get("environment") != environment:
        raise InvalidDocument("%s names environment %r, not %r" % (where, clean_text(data.get("environment"), 64),
                                                                   environment))
    holders, released = data.get("holders"), data.get("released")
    if not isinstance(holders, list) or not isinstance(released, list):
        raise InvalidDocument("%s: holders and released must be lists" % where)
    doc = empty_document(environment)
    doc["holders"] = [_holder(h, where) for h in holders]
    if len({h["token"] for h in doc["holders"]}) != len(doc["holders"]):
        raise InvalidDocument("%s: a token is listed twice" % where)
    for entry in released:
        if not (isinstance(entry, dict) and isinstance(entry.get("token"), str) and TOKEN_RE.match(entry["token"])
                and parse_iso(entry.get("until")) is not None):
            raise InvalidDocument("%s: a released entry is malformed" % where)
        doc["released"].append({"token": entry["token"], "until": iso(parse_iso(entry["until"]))})
    serial = data.get("serial")
    doc["serial"] = serial if isinstance(serial, int) and not isinstance(serial, bool) and serial >= 0 else 0
    history = data.get("history") if isinstance(data.get("history"), list) else []
    doc["history"] = [{k: clean_text(v) for k, v in e.items() if isinstance(k, str) and len(k) <= 32}
                      for e in history[-HISTORY_KEEP:] if isinstance(e, dict)]
    return doc


def dump_document(doc):
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


# ---------------------------------------------------------------- decisions (pure)

def tombstones(views):
    """``{token: until}`` of every release still in force in any store that answered."""
    out = {}
    for view in views.values():
        if view.get("invalid"):
            continue
        for entry in view["doc"]["released"]:
            if not expired(entry["until"], view["now"]):
                out[entry["token"]] = entry["until"]
    return out


def assess(views, request_holder, n_stores):
    """What the stores that answered say about taking the lease for ``request_holder``.

    ``views``: ``{store: {"doc", "now", "invalid"}}`` (``invalid``: why the store's object is unusable, or
    None). Returns ``{majority, own: set of stores holding request_holder's token, conflicts, in_flight,
    expired, others, invalid, tombstones}``; ``conflicts`` (settled) and ``in_flight`` are
    ``[{"holder", "stores"}]`` that cannot hold the lease beside the request, ``expired`` the entries over
    in every store that shows them, ``others`` the live compatible ones."""
    majority = n_stores // 2 + 1
    tomb = tombstones(views)
    seen = {}
    for name in sorted(views):
        view = views[name]
        if view.get("invalid"):
            continue
        for holder in view["doc"]["holders"]:
            if holder["token"] in tomb:
                continue
            rec = seen.setdefault(holder["token"], {"holder": holder, "stores": set(), "expired_in": set()})
            (rec["expired_in"] if expired(holder["until"], view["now"]) else rec["stores"]).add(name)
    own = seen.pop(request_holder["token"], None)
    newest = max(v["now"] for v in views.values()) if views else None
    out = {"majority": majority, "own": set(own["stores"]) if own else set(), "conflicts": [], "in_flight": [],
           "expired": [], "others": [], "tombstones": tomb,
           "invalid": sorted((n, v["invalid"]) for n, v in views.items() if v.get("invalid"))}
    for rec in seen.values():
        if not rec["stores"]:
            out["expired"].append({"holder": rec["holder"], "stores": sorted(rec["expired_in"])})
            continue
        entry = {"holder": rec["holder"], "stores": sorted(rec["stores"])}
        if compatible(request_holder, rec["holder"]):
            out["others"].append(entry)
            continue
        age = (newest - parse_iso(rec["holder"]["since"])).total_seconds()
        flying = len(rec["stores"]) < majority and age < SETTLE_S
        out["in_flight" if flying else "conflicts"].append(entry)
    for key in ("conflicts", "in_flight", "expired", "others"):
        out[key].sort(key=lambda e: (-len(e["stores"]), e["holder"]["since"]))
    return out


def _event(kind, holder, now, by):
    return {"at": iso(now), "event": kind, "operation": holder["operation"], "holder": who(holder),
            "token": holder["token"][:8], "by": by}


def store_plan(view, own, tomb, remove, by):
    """The document one store should hold so that ``own`` holds the lease there: its live entries kept
    (``remove``: tokens broken with break_lease), expired and released ones dropped, ``own`` added, the
    tombstones of every store carried. Returns ``(document, events)``, or ``(None, [])`` when the store
    already says so."""
    now = view["now"]
    doc = empty_document(view["doc"]["environment"]) if view.get("invalid") else view["doc"]
    events, holders = [], []
    present = False
    for holder in doc["holders"]:
        if holder["token"] == own["token"]:
            present = True
            holders.append(holder)
        elif holder["token"] in tomb:
            continue
        elif expired(holder["until"], now):
            events.append(_event("took_over", holder, now, by))
        elif holder["token"] in remove:
            events.append(_event("broken", holder, now, by))
        else:
            holders.append(holder)
    released = {e["token"]: e["until"] for e in doc["released"] if not expired(e["until"], now)}
    released.update(tomb)
    for holder in doc["holders"]:
        if holder["token"] in remove:
            released[holder["token"]] = holder["until"]
    if not present:
        holders.append(own)
        events.append(_event("acquired", own, now, by))
    new_released = [{"token": t, "until": u} for t, u in sorted(released.items())]
    if present and not events and holders == doc["holders"] and new_released == doc["released"] \
            and not view.get("invalid"):
        return None, []
    new = dict(doc, holders=holders, released=new_released, serial=doc["serial"] + 1,
               history=(doc["history"] + events)[-HISTORY_KEEP:])
    return new, events


def release_plan(view, token, by):
    """The document one store should hold once ``token`` released the lease: its entry removed and a
    tombstone left until the entry's ``until`` (a copy stranded elsewhere then counts as released).
    ``(None, None)`` when the store holds no entry of it (or its object is unusable)."""
    if view.get("invalid"):
        return None, None
    now, doc = view["now"], view["doc"]
    mine = [h for h in doc["holders"] if h["token"] == token]
    if not mine:
        return None, None
    holders = [h for h in doc["holders"] if h["token"] != token and not expired(h["until"], now)]
    released = {e["token"]: e["until"] for e in doc["released"] if not expired(e["until"], now)}
    released[token] = mine[0]["until"]
    event = _event("released", mine[0], now, by)
    new = dict(doc, holders=holders, released=[{"token": t, "until": u} for t, u in sorted(released.items())],
               serial=doc["serial"] + 1, history=(doc["history"] + [event])[-HISTORY_KEEP:])
    return new, mine[0]


def refusal(request, environment, entry, now, n_stores):
    """The one-line message of a refused operation: who holds the lease, since and until when, what to do."""
    holder = entry["holder"]
    left = (parse_iso(holder["until"]) - now).total_seconds()
    where = "recorded in %d of %d stores" % (len(entry["stores"]), n_stores)
    return ("%s refused: the DR lease of environment '%s' is held by %s (%s left; %s). Wait for it to finish, "
            "or if that run is dead (killed, its controller gone) re-run with -e break_lease=true"
            % (request["operation"], environment, describe(holder), span(left), where))


# ---------------------------------------------------------------- input (pure)

def validate(p):
    """Refuse bad input naming the option, before any store is read."""
    state = p.get("state") or "acquired"
    if state not in STATES:
        raise FediflowError("state must be one of %s, got '%s'" % (", ".join(STATES), state))
    if not NAME_RE.match(p.get("environment") or ""):
        raise FediflowError("environment '%s' must be letters, digits, '.', '_' or '-' (e.g. production)"
                            % clean_text(p.get("environment"), 64))
    if not PREFIX_RE.match(p.get("key_prefix") or "") or ".." in p["key_prefix"].split("/"):
        raise FediflowError("key_prefix '%s' must be a plain S3 key prefix such as fediflow-lease"
                            % clean_text(p.get("key_prefix"), 64))
    stores = p.get("stores") or []
    if not 1 <= len(stores) <= 9:
        raise FediflowError("stores must list 1 to 9 stores (3 survive the loss of one region), got %d" % len(stores))
    token = p.get("token") or ""
    if token and not TOKEN_RE.match(token):
        raise FediflowError("token must be the 32 hex digits a dr_lease acquisition returned (lease.token)")
    if state == "released" and not token:
        raise FediflowError("state=released needs token (the lease.token the acquisition returned)")
    if state != "acquired":
        return
    if not OPERATION_RE.match(p.get("operation") or ""):
        raise FediflowError("operation '%s' must name the operation (letters, digits, '.', '_', '-'), e.g. failover"
                            % clean_text(p.get("operation"), 64))
    if p.get("mode") not in MODES:
        raise FediflowError("mode must be exclusive or shared, got '%s'" % clean_text(p.get("mode"), 32))
    for option in ("parts", "concurrent_parts"):
        bad = [x for x in p.get(option) or [] if not PART_RE.match(str(x))]
        if bad:
            raise FediflowError("%s: '%s' is not a part name (lower-case letters, digits, '_', '-')"
                                % (option, clean_text(bad[0], 32)))
    if p["mode"] == "shared" and not p.get("parts"):
        raise FediflowError("mode=shared needs parts (what the operation works on, e.g. [database, media])")
    ttl = p.get("ttl_s")
    if not isinstance(ttl, int) or not TTL_RANGE[0] <= ttl <= TTL_RANGE[1]:
        raise FediflowError("ttl_s must be %d to %d seconds (the operation's normal duration with a margin), got %s"
                            % (TTL_RANGE[0], TTL_RANGE[1], ttl))
    if not 0 <= float(p.get("wait_s") or 0) <= 3600:
        raise FediflowError("wait_s must be 0 to 3600 seconds, got %s" % p.get("wait_s"))
    if not 0.1 <= float(p.get("timeout_s") or 0) <= 60:
        raise FediflowError("timeout_s must be 0.1 to 60 seconds, got %s" % p.get("timeout_s"))


def request_of(p):
    """The acquisition asked for, with who asks (the OS user and host name unless given)."""
    try:
        user = p.get("user") or getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"operation": p["operation"], "playbook": clean_text(p.get("playbook") or ""), "mode": p["mode"],
            "parts": sorted(set(p.get("parts") or [])), "concurrent_parts": sorted(set(p.get("concurrent_parts") or [])),
            "ttl_s": int(p["ttl_s"]), "user": clean_text(user), "host": clean_text(p.get("host") or socket.gethostname()),
            "awx_job_id": clean_text(p.get("awx_job_id") or "")}


# ---------------------------------------------------------------- the stores (I/O)

class Stores:
    """The lease's stores: one ``CasObject`` per store (``<prefix>/<key_prefix>/<environment>.json`` in its
    bucket), each through a quick client (``timeout_s`` to connect and to read, two attempts: a store of a
    lost region costs seconds, not the minutes of the full retry policy). A store that does not answer is
    ``down`` for the rest of the run; a bucket that does not exist is bad input, refused."""

    def __init__(self, p, make_client=None):
        self.environment = p["environment"]
        self.repos = repos.normalize({"repositories": p["stores"], "region": p.get("region"),
                                      "endpoint_url": p.get("endpoint_url")})
        timeout = float(p.get("timeout_s") or 2)
        if make_client is None:
            shared = aws.session_for(p)   # one credential set for every store: the S3 model loaded once

            def make_client(params):
                return aws.client("s3", params, max_attempts=2, connect_timeout=timeout, read_timeout=timeout,
                                  session=shared)
        self.objects, self.down = {}, {}
        for repo in self.repos:
            key = "/".join(x for x in (repo["prefix"], p["key_prefix"].strip("/"), self.environment + ".json") if x)
            self.objects[repo["name"]] = CasObject(make_client(repos.repo_params(p, repo)), repo["bucket"], key,
                                                   what="the lease")
        self.n = len(self.repos)
        self.majority = self.n // 2 + 1

    def answering(self):
        return [name for name in self.objects if name not in self.down]

    def read(self):
        """``{store: view}`` of every store that answers (``view``: doc, etag, now, invalid); the others are
        marked down. ``now`` is the store's time (its Date header), the controller's when it sent none."""
        names = self.answering()
        answers = repos.parallel(_capture(lambda name: self.objects[name].load()), names)
        views = {}
        for name, (got, exc) in zip(names, answers):
            if isinstance(exc, MissingBucket):
                raise FediflowError("lease store '%s': %s" % (name, exc.message))
            if exc is not None:
                self.down[name] = _why(exc)
                continue
            view = {"etag": got.etag, "now": got.server_time, "server_time": got.server_time is not None,
                    "invalid": None}
            if view["now"] is None:
                view["now"] = datetime.now(UTC)
            try:
                view["doc"] = parse_document(got.body, self.environment, self.objects[name].where)
            except InvalidDocument as err:
                view["doc"], view["invalid"] = empty_document(self.environment), err.message
            views[name] = view
        return views

    def write(self, plans):
        """``plans``: ``{store: (document, etag)}`` written at once; ``{store: "ok" | "conflict" | why}``.
        A store that fails otherwise than by a conflict is marked down."""
        names = list(plans)

        def save(name):
            document, etag = plans[name]
            return self.objects[name].save(dump_document(document), etag)
        answers = repos.parallel(_capture(save), names)
        out = {}
        for name, (_got, exc) in zip(names, answers):
            if exc is None:
                out[name] = "ok"
            elif isinstance(exc, Conflict):
                out[name] = "conflict"
            else:
                self.down[name] = out[name] = _why(exc)
        return out


def _capture(func):
    def run(item):
        try:
            return func(item), None
        except Exception as exc:  # pylint: disable=broad-except
            return None, exc
    return run


def _why(exc):
    if isinstance(exc, FediflowError):
        return exc.message
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return clean_text("%s: %s" % (type(exc).__name__, first), 300)


# ---------------------------------------------------------------- the flows

class Run:
    """One module run: the stores, the result being built, the clock and the pauses (injectable for tests)."""

    def __init__(self, p, stores, check_mode=False, sleep=time.sleep, rand=None, warn=None):
        self.p, self.stores, self.check_mode = p, stores, check_mode
        self.sleep, self.rand, self.warn = sleep, rand or random.Random(), warn or (lambda msg: None)
        self.timer = Timer()
        self.by = "%s@%s" % (clean_text(p.get("user") or _os_user()), clean_text(p.get("host") or socket.gethostname()))
        self.result = {"changed": False, "acquired": False, "reentrant": False, "released": False, "lease": None,
                       "holders": [], "took_over": [], "broken": [], "stores": [], "majority": stores.majority,
                       "attempts": 0, "clock": "server", "environment": p["environment"]}
        self.wrote = set()

    def finish(self, views, msg):
        views = views or {}
        self.result["stores"] = [{"name": name, "answered": name in views and name not in self.stores.down,
                                  "error": self.stores.down.get(name) or (views.get(name) or {}).get("invalid"),
                                  "wrote": name in self.wrote} for name in self.stores.objects]
        if views and not all(v["server_time"] for v in views.values()):
            self.result["clock"] = "controller"
        self.result["msg"] = msg
        self.result["duration_s"] = self.timer.elapsed()
        self.result["phases"] = dict(self.timer.phases)
        return self.result

    def fail(self, views, msg):
        raise FediflowError(msg, result=self.finish(views, msg))

    def say(self, msg):
        """A warning (Ansible shows it; the result's msg says the same)."""
        self.warn(msg)

    def read(self):
        with self.timer.phase("read"):
            views = self.stores.read()
        if len(views) < self.stores.majority:
            down = "; ".join("%s: %s" % (n, why) for n, why in sorted(self.stores.down.items()))
            what = "%s refused" % self.p["operation"] if self.p.get("operation") else "the lease"
            self.fail(views, "%s: only %d of the %d lease stores answer (%s); the lease needs %d. One lost region costs "
                      "one store; with fewer answering, this side of a partition cannot know who holds the lease on the "
                      "other. Make the stores reachable (or fix their credentials) and re-run."
                      % (what, len(views), self.stores.n, down, self.stores.majority))
        return views

    def holders(self, views):
        seen = {}
        tomb = tombstones(views)
        for name in sorted(views):
            if views[name].get("invalid"):
                continue
            for holder in views[name]["doc"]["holders"]:
                if holder["token"] in tomb or expired(holder["until"], views[name]["now"]):
                    continue
                seen.setdefault(holder["token"], dict(holder, stores=[]))["stores"].append(name)
        return sorted(seen.values(), key=lambda h: h["since"])

    def remove_own(self, views, token):
        """Take ``token``'s entry out of every store that answers (compare-and-swap, re-read on a conflict):
        a release, or an acquisition backing off. Returns the stores it left and the entry found."""
        left, found = [], None
        pending = {name for name, view in views.items() if any(h["token"] == token for h in view["doc"]["holders"])}
        for _round in range(6):
            if not pending:
                break
            plans = {}
            for name in pending:
                new, mine = release_plan(views[name], token, self.by)
                if new is not None:
                    plans[name] = (new, views[name]["etag"])
                    found = found or mine
            with self.timer.phase("write"):
                outcome = self.stores.write(plans)
            self.wrote.update(n for n, state in outcome.items() if state == "ok")
            left += [n for n, state in outcome.items() if state == "ok"]
            retry = {n for n, state in outcome.items() if state == "conflict"}
            if not retry:
                break
            views = {n: v for n, v in self.read_quiet().items() if n in retry}
            pending = {n for n, v in views.items() if any(h["token"] == token for h in v["doc"]["holders"])}
        return sorted(left), found

    def read_quiet(self):
        with self.timer.phase("read"):
            return self.stores.read()


def _os_user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _summary(entry):
    return dict(entry["holder"], stores=entry["stores"])


def acquire(p, stores, check_mode=False, sleep=time.sleep, rand=None, clock=time.monotonic, warn=None):
    """Take the lease (or confirm a re-entrant ``token`` holds it). Refusals fail naming the holder."""
    run = Run(p, stores, check_mode, sleep, rand, warn)
    if p.get("token"):
        return _reentrant(run, p)
    request = request_of(p)
    token = secrets.token_hex(16)
    start = clock()
    wait_until = start + float(p.get("wait_s") or 0)
    give_up = max(wait_until, start + CONTENTION_S)
    breaking = bool(p.get("break_lease"))
    while True:
        run.result["attempts"] += 1
        views = run.read()
        now = max(v["now"] for v in views.values())
        mine = {n for n, v in views.items() if any(h["token"] == token for h in v["doc"]["holders"])}
        own = next((h for n in sorted(mine) for h in views[n]["doc"]["holders"] if h["token"] == token),
                   None) or new_holder(request, token, now)   # a previous attempt's entry keeps its times
        view = assess(views, own, stores.n)
        if token in view["tombstones"]:
            run.fail(views, "%s refused: another run broke the lease (break_lease) while this one was taking it; "
                     "nothing was done" % request["operation"])
        if not breaking:
            blocking, why = _blocking(run, views, view, request, clock() < wait_until, clock() < give_up)
            if blocking and mine and not check_mode:  # back off: an acquisition in flight settles, a holder may go
                run.remove_own(views, token)
                # withdrawing leaves a tombstone of this token (a copy stranded in a store that did not answer counts
                # as released): the next attempt is a new entry with a token of its own, or it would read its own
                # tombstone as a break_lease by another run (a race of eight acquisitions failed that way once)
                token = secrets.token_hex(16)
            if blocking == "fail":
                run.result["holders"] = run.holders(views)
                run.fail(views, why)
            if blocking:
                sleep(run.rand.uniform(0.2, 1.0) if blocking == "in_flight" else min(2.0, max(0.1, wait_until - clock())))
                continue
        broken = view["conflicts"] + view["in_flight"] if breaking else []
        remove = {e["holder"]["token"] for e in broken}
        plans = {}
        for name, store_view in views.items():
            new, _events = store_plan(store_view, own, view["tombstones"], remove, run.by)
            if new is not None:
                plans[name] = (new, store_view["etag"])
        run.result["took_over"] = _distinct([e["holder"] for e in view["expired"]])
        run.result["broken"] = _distinct([e["holder"] for e in broken])
        before = run.holders(views)
        if check_mode:
            run.result.update(changed=bool(plans), lease=own, holders=before,
                              diff=_diff(before, [h for h in before if h["token"] not in remove] + [own]))
            return run.finish(views, "%s would take the DR lease of environment '%s' (check mode: nothing written)"
                              % (request["operation"], p["environment"]))
        with run.timer.phase("write"):
            outcome = stores.write(plans)
        run.wrote.update(n for n, state in outcome.items() if state == "ok")
        holding = (mine - set(outcome)) | {n for n, state in outcome.items() if state == "ok"}
        if len(holding) >= stores.majority:
            # read the majority back: the entry is there, and nothing that conflicts holds a majority
            confirmed = run.read_quiet()
            check = assess(confirmed, own, stores.n)
            rivals = [e for e in check["conflicts"] + check["in_flight"] if len(e["stores"]) >= stores.majority]
            if len(check["own"]) >= stores.majority and not rivals:
                return _acquired(run, confirmed, own, before)
        if clock() >= give_up:
            run.remove_own(run.read_quiet(), token)
            run.fail(views, "%s refused: could not take the DR lease of environment '%s' within %d s: other runs kept "
                     "writing it (%s); re-run" % (request["operation"], p["environment"], int(clock() - start),
                                                  "; ".join(describe(h) for h in run.holders(views)) or "-"))
        sleep(run.rand.uniform(0.05, 0.5))  # lost a compare-and-swap to another writer: read again


def _blocking(run, views, view, request, waiting, settling):
    """What stands in the way (without break_lease): ``("fail", message)`` for good, ``("wait" | "in_flight",
    None)`` when the caller should read again, ``(None, None)`` when nothing does."""
    now = max(v["now"] for v in views.values())
    if view["invalid"]:
        return "fail", ("%s refused: %s; fix or remove that object, or re-run with -e break_lease=true to overwrite it"
                        % (request["operation"], "; ".join(why for _n, why in view["invalid"])))
    if view["conflicts"]:
        return ("wait", None) if waiting else ("fail", refusal(request, run.p["environment"], view["conflicts"][0], now, run.stores.n))
    if view["in_flight"]:
        return ("in_flight", None) if settling else ("fail", refusal(request, run.p["environment"], view["in_flight"][0], now, run.stores.n))
    return None, None


def _distinct(holders):
    seen, out = set(), []
    for holder in holders:
        if holder["token"] not in seen:
            seen.add(holder["token"])
            out.append(holder)
    return out


def _diff(before, after):
    return {"before": "".join(describe(h) + "\n" for h in before), "after": "".join(describe(h) + "\n" for h in after)}


def _acquired(run, views, own, before):
    res = run.result
    res.update(changed=True, acquired=True, lease=own, holders=run.holders(views))
    res["diff"] = _diff(before, res["holders"])
    msg = "%s holds the DR lease of environment '%s' until %s (%s, in %d of %d stores)" % (
        own["operation"], run.p["environment"], own["until"], span(own["ttl_s"]),
        sum(1 for v in views.values() if any(h["token"] == own["token"] for h in v["doc"]["holders"])), run.stores.n)
    for holder in res["took_over"]:
        run.say("took over the expired DR lease of %s" % describe(holder))
    for holder in res["broken"]:
        run.say("break_lease=true: broke the DR lease of %s - that run, if still alive, no longer holds it"
                % describe(holder))
    beside = [h for h in res["holders"] if h["token"] != own["token"]]
    if beside:
        msg += ", beside %s" % "; ".join(describe(h) for h in beside)
    if res["took_over"]:
        msg += "; took over the expired lease of %s" % "; ".join(describe(h) for h in res["took_over"])
    if res["broken"]:
        msg += "; BROKE the lease of %s (break_lease=true)" % "; ".join(describe(h) for h in res["broken"])
    if run.stores.down:
        run.say("lease stores not answering: %s (the lease holds in the others)"
                % "; ".join("%s: %s" % kv for kv in sorted(run.stores.down.items())))
    return run.finish(views, msg)


def _reentrant(run, p):
    """A run that holds the lease already (its token) asks again - a nested playbook or role: confirmed
    from the stores, nothing written, nothing to release for it."""
    views = run.read()
    token = p["token"]
    held = [h for h in run.holders(views) if h["token"] == token]
    if not held or len(held[0]["stores"]) < run.stores.majority:
        gone = token in tombstones(views)
        run.result["holders"] = run.holders(views)
        run.fail(views, "%s: the DR lease this run took (token %s...) is no longer held (%s): something else may run "
                 "now; check the holders and re-run" % (p.get("operation") or "the lease", token[:8],
                                                        "released or broken" if gone else "expired or never taken"))
    holder = dict(held[0])
    holder.pop("stores")
    run.result.update(acquired=True, reentrant=True, lease=holder, holders=run.holders(views))
    return run.finish(views, "%s: this run holds the DR lease of environment '%s' already (%s)"
                      % (p.get("operation") or "the lease", p["environment"], describe(holder)))


def release(p, stores, check_mode=False, warn=None):
    """Give the lease back: ``token``'s entry removed from every store that answers, a tombstone left."""
    run = Run(p, stores, check_mode, warn=warn)
    with run.timer.phase("read"):
        views = stores.read()
    token = p["token"]
    present = [n for n, v in views.items() if any(h["token"] == token for h in v["doc"]["holders"])]
    if not present:
        run.result["holders"] = run.holders(views)
        if stores.down:
            run.say("lease stores not answering: %s - if lease %s... is recorded there, it counts until its until"
                    % ("; ".join("%s: %s" % kv for kv in sorted(stores.down.items())), token[:8]))
        return run.finish(views, "nothing to release: no store that answers holds lease %s... (released already, "
                          "taken over after it expired, or broken)" % token[:8])
    entry = next(h for n in present for h in views[n]["doc"]["holders"] if h["token"] == token)
    run.result["lease"] = entry
    if check_mode:
        run.result.update(changed=True, holders=run.holders(views))
        return run.finish(views, "would release the DR lease of %s (check mode)" % describe(entry))
    before = run.holders(views)
    left, _found = run.remove_own(views, token)
    after = run.read_quiet() if left else views
    run.result.update(changed=bool(left), released=bool(left), holders=run.holders(after),
                      diff=_diff(before, run.holders(after)))
    stranded = sorted(set(present) - set(left)) + sorted(stores.down)
    if stranded:
        run.say("the lease stays recorded in %s until that store answers again (the release recorded in the others "
                "cancels it) or it expires at %s" % (", ".join(sorted(set(stranded))), entry["until"]))
    return run.finish(after, "released the DR lease of %s (from %s)" % (describe(entry), ", ".join(left) or "no store"))


def query(p, stores):
    """Who holds the lease now (read only)."""
    run = Run(p, stores)
    views = run.read()
    run.result["holders"] = run.holders(views)
    text = "; ".join(describe(h) for h in run.result["holders"]) or "nobody"
    return run.finish(views, "the DR lease of environment '%s' is held by %s" % (p["environment"], text))


def run_module(p, check_mode=False, warn=None, make_client=None):
    """The module's entry point: validate, then acquire, release or query."""
    validate(p)
    stores = Stores(p, make_client)
    if len(stores.repos) < 3 and warn:
        warn("the lease has %d store(s): it survives the loss of one only with 3 (two regions and a third site)"
             % len(stores.repos))
    state = p.get("state") or "acquired"
    if state == "released":
        return release(p, stores, check_mode, warn=warn)
    if state == "query":
        return query(p, stores)
    return acquire(p, stores, check_mode, warn=warn)
