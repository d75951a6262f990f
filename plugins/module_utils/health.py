# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks in rounds (``health_check``): the runbook's "every 30 s, 3 failures -> the
region is down" and the post-failover checks (health URLs answer, peers reachable).

A run probes every target (HTTP URLs and optionally one PostgreSQL endpoint) in rounds. The
probes of a round run concurrently, one thread per target, so a round lasts about the slowest
probe's time-out, not their sum; a probe still running after its time-out plus a grace second
is recorded as failed and abandoned. A round is healthy when the share of targets that
answered ok is at least ``min_healthy_ratio``. Rounds start ``interval`` seconds apart
(measured from round start to round start); the run stops at the first healthy round.
``state`` is ``up`` when a round was healthy, else ``down`` (``rounds`` unhealthy rounds in a row).

Everything is read-only. Input checks, URL redaction, the round verdicts and the summary take
plain values, so they are unit-tested without a network; the probes themselves run against
real servers in the integration tier.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timezone
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit

from ansible.module_utils.urls import open_url

from ansible_collections.fediflow.dr.plugins.module_utils import postgres
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer

EXPECT = ("up", "down", "any")
PG_CHECKS = ("connect", "primary")
DEFAULT_STATUS = tuple(range(200, 400))
URL_KEYS = ("url", "name", "status")
REDACTED = "********"
GRACE_S = 1.0  # a probe still running this long after its own time-out is abandoned
MAX_LISTED = 5  # failed targets named in a message


def now_iso():
    """UTC wall-clock time, ISO 8601 with milliseconds and a Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- input

def display_url(url, redact_query=True):
    """``url`` as it may appear in output: a userinfo password is always masked, the query
    string too unless ``redact_query`` is false (tokens often travel there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _at, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = "%s:%s@%s" % (userinfo.split(":", 1)[0], REDACTED, hostport)
    query = REDACTED if (redact_query and parts.query) else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(urls, redact_query=True):
    """Strings of ``urls`` the module adds to its no_log values, so that they are masked in its
    whole output, the echoed options (``invocation``) included: userinfo passwords, and the
    query strings when ``redact_query``. Query strings shorter than 4 characters are left out
    (masking them everywhere would garble unrelated output)."""
    found = set()
    for entry in urls or []:
        url = entry.get("url") if isinstance(entry, dict) else entry
        if not isinstance(url, str):
            continue
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:
            continue
        if password:
            found.add(password)
        if redact_query and len(parts.query) >= 4:
            found.add(parts.query)
    return found


def _status_codes(where, value):
    if value is None:
        return DEFAULT_STATUS
    values = value if isinstance(value, list) else [value]
    codes = []
    for item in values:
        try:
            if isinstance(item, bool):
                raise ValueError(item)
            code = int(str(item).strip())
        except ValueError:
            raise FediflowError("%s.status must list HTTP status codes (100-599), got %r" % (where, item))
        if not 100 <= code <= 599:
            raise FediflowError("%s.status must list HTTP status codes (100-599), got %s" % (where, code))
        codes.append(code)
    if not codes:
        raise FediflowError("%s.status is empty: list the accepted codes, or leave it out for 200-399" % where)
    return tuple(sorted(set(codes)))


def url_target(index, entry, redact_query=True):
    """One ``urls`` entry (a string or a dict with url, name, status) as a probe target."""
    where = "urls[%d]" % index
    if isinstance(entry, str):
        entry = {"url": entry}
    if not isinstance(entry, dict):
        raise FediflowError("%s must be a URL or a dict with url, name, status; got %s" % (where, type(entry).__name__))
    unknown = sorted(set(entry) - set(URL_KEYS))
    if unknown:
        raise FediflowError("%s has unknown key(s) %s (expected url, name, status)" % (where, ", ".join(unknown)))
    url = entry.get("url")
    if not isinstance(url, str) or not url.strip():
        raise FediflowError("%s.url is required (an http:// or https:// URL)" % where)
    url = url.strip()
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise FediflowError("%s.url must be an http:// or https:// URL with a host (and a valid port), got '%s'"
                            % (where, display_url(url)))
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise FediflowError("%s.name must be a non-empty string" % where)
    return {"kind": "http", "name": name.strip() if name else display_url(url, redact_query), "url": url,
            "status": _status_codes(where, entry.get("status"))}


def pg_target(p):
    """The PostgreSQL endpoint as a probe target, or None when no login_host/login_unix_socket."""
    host = p.get("login_host") or p.get("login_unix_socket")
    if not host:
        return None
    postgres.validate_conn(p)
    name = "%s:%s/%s" % (host, p.get("login_port") or 5432, p.get("db") or "postgres")
    params = {k: p.get(k) for k in postgres.postgres_common_argument_spec()}  # TLS options included
    return {"kind": "postgres", "name": name, "params": params, "check": p.get("pg_check") or "primary",
            "timeout": float(p.get("connect_timeout") or 10)}


def _number(p, key):
    value = p.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FediflowError("%s must be a number, got %r" % (key, value))
    return value


def validate(p):
    """Refuse bad input before anything is probed; returns the targets. Messages name the option."""
    rounds = _number(p, "rounds")
    if rounds < 1 or int(rounds) != rounds:
        raise FediflowError("rounds must be a whole number of at least 1, got %s" % rounds)
    interval = _number(p, "interval")
    if interval < 0:
        raise FediflowError("interval must be 0 or more seconds, got %s" % interval)
    ratio = _number(p, "min_healthy_ratio")
    if not 0 < ratio <= 1:
        raise FediflowError("min_healthy_ratio must be more than 0 and at most 1, got %s" % ratio)
    if _number(p, "timeout") <= 0:
        raise FediflowError("timeout must be more than 0 seconds, got %s" % p["timeout"])
    expect = p.get("expect") or "up"
    if expect not in EXPECT:
        raise FediflowError("expect must be one of %s, got '%s'" % (", ".join(EXPECT), expect))
    if (p.get("pg_check") or "primary") not in PG_CHECKS:
        raise FediflowError("pg_check must be one of %s, got '%s'" % (", ".join(PG_CHECKS), p.get("pg_check")))
    urls = p.get("urls") or []
    if not isinstance(urls, list):
        raise FediflowError("urls must be a list of URLs or dicts with url, name, status")
    redact = p.get("redact_query_strings", True)
    targets = [url_target(i, entry, redact) for i, entry in enumerate(urls)]
    pg = pg_target(p)
    if pg:
        try:
            import psycopg2  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
        except ImportError:
            # must not count as "the database is down"
            raise FediflowError("psycopg2 is required on the managed node to probe PostgreSQL "
                                "(pip install psycopg2-binary)")
        targets.append(pg)
    if not targets:
        raise FediflowError("no target: give urls, or login_host / login_unix_socket for a PostgreSQL endpoint")
    seen = {}
    for index, target in enumerate(targets):
        if target["name"] in seen:
            raise FediflowError("two targets are named '%s' (targets %d and %d): give the urls entries distinct names"
                                % (target["name"], seen[target["name"]] + 1, index + 1))
        seen[target["name"]] = index
    return targets


# ---------------------------------------------------------------- probes

def describe_error(exc, timeout):
    """One short line for a failed HTTP request (refused, time-out, DNS, TLS ...)."""
    reason = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "no answer within %ss (timed out)" % timeout
    if isinstance(reason, socket.gaierror):
        return "DNS lookup failed: %s" % (reason.strerror or reason)
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    text = str(reason).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(reason, str):
        return first or "request failed"
    return "%s: %s" % (type(reason).__name__, first) if first else type(reason).__name__


def probe_http(target, timeout, validate_certs=True):
    """GET the URL once, redirects not followed. ``ok`` when the status is accepted."""
    t0 = time.monotonic()
    status = error = None
    try:
        resp = open_url(target["url"], method="GET", timeout=timeout, validate_certs=validate_certs,
                        follow_redirects="none", http_agent="fediflow.dr health_check")
        try:
            status = resp.status
        finally:
            resp.close()
    except HTTPError as exc:  # 4xx/5xx, and 3xx since redirects are not followed
        status = exc.code
        exc.close()
    except Exception as exc:  # pylint: disable=broad-except
        # refused, time-out, DNS, TLS: recorded as text, never raised
        error = describe_error(exc, timeout).replace(target["url"], target["name"])
    ok = status is not None and status in target["status"]
    if status is not None and not ok:
        error = "HTTP %s (accepted: %s)" % (status, _codes_text(target["status"]))
    return {"ok": ok, "status": status, "error": error, "latency_s": round(time.monotonic() - t0, 3)}


def _codes_text(codes):
    return "200-399" if tuple(codes) == DEFAULT_STATUS else ", ".join(str(c) for c in codes)


def probe_postgres(target):
    """Connect (connect_timeout), then ``pg_is_in_recovery()``. ``status`` is the role seen
    (primary / standby); with check=primary only a node out of recovery is ok."""
    t0 = time.monotonic()
    status = error = None
    try:
        conn = postgres.connect(target["params"])
    except FediflowError as exc:
        error = exc.message.rsplit(": ", 1)[-1].strip()
    else:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                status = "standby" if cur.fetchone()[0] else "primary"
        except Exception as exc:  # pylint: disable=broad-except
            text = str(exc).strip()
            error = text.splitlines()[0] if text else type(exc).__name__
        finally:
            conn.close()
    ok = status == "primary" or (status == "standby" and target["check"] == "connect")
    if status == "standby" and not ok:
        error = "in recovery (a standby): does not accept writes"
    return {"ok": ok, "status": status, "error": error, "latency_s": round(time.monotonic() - t0, 3)}


def make_probe(p):
    """The probe function for the targets of ``validate``."""
    timeout = float(p["timeout"])
    validate_certs = p.get("validate_certs", True)

    def probe(target):
        if target["kind"] == "postgres":
            return probe_postgres(target)
        return probe_http(target, timeout, validate_certs)
    return probe


def round_timeout(targets, timeout):
    """How long a round waits for its probes: the longest time-out among them plus a grace."""
    return max(t.get("timeout", timeout) for t in targets) + GRACE_S


def run_round(targets, probe, wait_s):
    """Probe every target at once (one daemon thread each); a probe not done after ``wait_s``
    is recorded as failed and abandoned (a daemon thread does not hold up the module's exit)."""
    results = [None] * len(targets)

    def work(index, target):
        try:
            results[index] = probe(target)
        except Exception as exc:  # pylint: disable=broad-except
            results[index] = {"ok": False, "status": None, "latency_s": None,
                              "error": "%s: %s" % (type(exc).__name__, str(exc).strip()[:200])}

    threads = [threading.Thread(target=work, args=(i, t), name="probe-%d" % i, daemon=True)
               for i, t in enumerate(targets)]
    end = time.monotonic() + wait_s
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    out = []
    for target, result in zip(targets, list(results)):
        result = dict(result) if result else {
            "ok": False, "status": None, "latency_s": round(wait_s, 3),
            "error": "no answer within %ss (probe abandoned)" % round(wait_s, 3)}
        out.append({"name": target["name"], "kind": target["kind"], "ok": bool(result["ok"]),
                    "status": result.get("status"), "error": result.get("error"), "latency_s": result.get("latency_s")})
    return out


def verdict(results, min_ratio):
    """``(healthy, ratio)`` of one round's results."""
    if not results:
        return False, 0.0
    ratio = sum(1 for r in results if r["ok"]) / float(len(results))
    return ratio >= min_ratio, round(ratio, 4)


def run_rounds(targets, probe, rounds, interval, min_ratio, wait_s, timer=None):
    """Up to ``rounds`` rounds, each starting ``interval`` s after the previous one started
    (at once when a round took longer); stops after the first healthy round."""
    timer = timer or Timer()
    out = []
    next_start = time.monotonic()
    for _index in range(int(rounds)):
        delay = next_start - time.monotonic()
        if delay > 0:
            with timer.phase("wait"):
                time.sleep(delay)  # the schedule between rounds, not a wait for a condition
        t_start = time.monotonic()
        started = now_iso()
        with timer.phase("probe"):
            results = run_round(targets, probe, wait_s)
        healthy, ratio = verdict(results, min_ratio)
        out.append({"started": started, "healthy": healthy, "ratio": ratio, "targets": results})
        if healthy:
            break
        next_start = t_start + interval
    return out


# ---------------------------------------------------------------- verdict

def failures_text(results):
    failed = ["%s: %s" % (r["name"], r["error"] or "not ok") for r in results if not r["ok"]]
    if len(failed) > MAX_LISTED:
        failed = failed[:MAX_LISTED] + ["and %d more" % (len(failed) - MAX_LISTED)]
    return "; ".join(failed)


def summarize(rounds, expect, min_ratio, label):
    """The result's summary keys and, when ``expect`` is not met, the failure message."""
    last = rounds[-1]
    state = "up" if last["healthy"] else "down"
    streak = 0
    for rnd in reversed(rounds):
        if rnd["healthy"]:
            break
        streak += 1
    first_failure = rounds[len(rounds) - streak]["started"] if streak else None
    answered = sum(1 for r in last["targets"] if r["ok"])
    total = len(last["targets"])
    if state == "up":
        msg = "%s is healthy: %d of %d targets answered in round %d" % (label, answered, total, len(rounds))
    else:
        msg = ("%s is down: %d unhealthy round(s) in a row (fewer than %s%% of targets ok; %d of %d in the last); "
               "round %d: %s" % (label, streak, _pct(min_ratio), answered, total, len(rounds), failures_text(last["targets"])))
    summary = {"state": state, "rounds_run": len(rounds), "consecutive_failures": streak,
               "healthy_ratio": last["ratio"], "first_failure": first_failure, "msg": msg}
    failure = None
    if expect == "up" and state == "down":
        failure = "health check failed (expect=up): " + msg
    elif expect == "down" and state == "up":
        failure = msg + " (expect=down: it is not down)"
    return summary, failure


def _pct(ratio):
    return ("%.1f" % (ratio * 100)).rstrip("0").rstrip(".")


def default_label(targets):
    return targets[0]["name"] if len(targets) == 1 else "the %d targets" % len(targets)


# ---------------------------------------------------------------- the module's entry point

def check(p, check_mode=False, warn=None, probe=None):
    """Run the health check ``p`` describes (see the module documentation); a plain dict back.

    Read-only, so check mode runs the same probes. ``probe`` replaces the real probes (tests).
    """
    del check_mode  # only reads: a check-mode run probes exactly like a normal one
    timer = Timer()
    targets = validate(p)
    label = p.get("name") or default_label(targets)
    min_ratio = float(p["min_healthy_ratio"])
    rounds = run_rounds(targets, probe or make_probe(p), int(p["rounds"]), float(p["interval"]), min_ratio,
                        round_timeout(targets, float(p["timeout"])), timer)
    summary, failure = summarize(rounds, p.get("expect") or "up", min_ratio, label)
    result = {"changed": False, "expect": p.get("expect") or "up", "rounds": rounds}
    result.update(summary)
    warned = set()
    for rnd in rounds:
        for res in rnd["targets"]:
            refused = res["kind"] == "postgres" and postgres.classify_connect_error(res["error"]) == "login_refused"
            if refused and res["name"] not in warned:
                warned.add(res["name"])
                text = ("the PostgreSQL server at %s answered but refused the login (%s): it counts as failed here, "
                        "although it may be up - check the login_* and TLS (ssl_mode, ca_cert) options"
                        % (res["name"], res["error"]))
                if warn:
                    warn(text)
                else:
                    result.setdefault("warnings", []).append(text)
    result.update(duration_s=timer.elapsed(), phases=timer.phases)
    if failure:
        result.pop("msg")  # the failure message replaces it
        raise FediflowError(failure, result=result)
    return result
