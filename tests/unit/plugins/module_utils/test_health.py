# -*- coding: utf-8 -*-
"""health_check's decisions as plain data: input checks, URL redaction, round verdicts, the summary,
and the round loop driven by plain probe functions (concurrency, abandonment, stop at the first healthy
round). The real probes (HTTP and PostgreSQL) run against real servers in the integration tier."""
from __future__ import annotations

import socket
import threading
import time
from datetime import datetime
from urllib.error import URLError

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import health, postgres
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def _params(**kw):
    params = {k: v.get("default") for k, v in postgres.postgres_common_argument_spec().items()}
    params.update(name=None, urls=["http://127.0.0.1:1/healthz"], timeout=5.0, validate_certs=True,
                  redact_query_strings=True, rounds=3, interval=0.0, min_healthy_ratio=1.0, expect="up",
                  pg_check="primary")
    params.update(kw)
    return params


def _result(name, ok, error=None, kind="http"):
    return {"name": name, "kind": kind, "ok": ok, "status": 200 if ok else None, "error": error, "latency_s": 0.01}


def _round(started, *results, min_ratio=1.0):
    healthy, ratio = health.verdict(list(results), min_ratio)
    return {"started": started, "healthy": healthy, "ratio": ratio, "targets": list(results)}


@pytest.mark.parametrize("kw, message", [
    ({"rounds": 0}, "rounds must be a whole number of at least 1"),
    ({"rounds": 1.5}, "rounds must be a whole number"),
    ({"interval": -1}, "interval must be 0 or more"),
    ({"min_healthy_ratio": 0}, "min_healthy_ratio must be more than 0 and at most 1"),
    ({"min_healthy_ratio": 1.5}, "min_healthy_ratio must be more than 0 and at most 1"),
    ({"timeout": 0}, "timeout must be more than 0"),
    ({"rounds": None}, "rounds must be a number"),
    ({"expect": "sideways"}, "expect must be one of up, down, any"),
    ({"pg_check": "writable"}, "pg_check must be one of connect, primary"),
    ({"urls": "http://a/"}, "urls must be a list"),
    ({"urls": [42]}, r"urls\[0\] must be a URL or a dict"),
    ({"urls": [{"url": "http://a/", "codes": [200]}]}, r"urls\[0\] has unknown key\(s\) codes"),
    ({"urls": [{"name": "x"}]}, r"urls\[0\]\.url is required"),
    ({"urls": ["http://a/", "ftp://b/"]}, r"urls\[1\]\.url must be an http:// or https:// URL"),
    ({"urls": ["http:///nohost"]}, r"urls\[0\]\.url must be an http"),
    ({"urls": ["http://a:99999/"]}, r"urls\[0\]\.url must be .* valid port"),
    ({"urls": [{"url": "http://a/", "status": [200, 700]}]}, r"urls\[0\]\.status must list HTTP status codes"),
    ({"urls": [{"url": "http://a/", "status": ["ok"]}]}, r"urls\[0\]\.status must list"),
    ({"urls": [{"url": "http://a/", "status": []}]}, r"urls\[0\]\.status is empty"),
    ({"urls": [{"url": "http://a/", "name": ""}]}, r"urls\[0\]\.name must be a non-empty string"),
    ({"urls": []}, "no target: give urls, or login_host / login_unix_socket"),
    ({"urls": ["http://a/x?t=1111", "http://a/x?t=2222"]}, "two targets are named 'http://a/x"),
    ({"urls": [], "login_host": "db", "login_port": 70000}, "login_port must be between 1 and 65535"),
])
def test_bad_input_is_refused(kw, message):
    with pytest.raises(FediflowError, match=message):
        health.validate(_params(**kw))


def test_bad_input_is_refused_before_any_probe():
    calls = []
    with pytest.raises(FediflowError, match="min_healthy_ratio"):
        health.check(_params(min_healthy_ratio=2), probe=calls.append)
    assert calls == []


def test_targets_from_urls_and_postgres():
    targets = health.validate(_params(
        urls=["https://a.example/healthz?token=s3cret",
              {"url": "http://b.example:8080/ok", "name": "b", "status": ["200", 204, 200]}],
        login_host="db.example", login_port=5433, login_password="pw"))
    assert [(t["kind"], t["name"]) for t in targets] == [
        ("http", "https://a.example/healthz?********"), ("http", "b"), ("postgres", "db.example:5433/postgres")]
    assert targets[0]["status"] == health.DEFAULT_STATUS and targets[1]["status"] == (200, 204)
    assert targets[0]["url"].endswith("token=s3cret")  # the request still carries the token
    assert targets[2]["check"] == "primary" and targets[2]["timeout"] == 10.0
    assert health.validate(_params(urls=["http://a/?q=1"], redact_query_strings=False))[0]["name"] == "http://a/?q=1"
    # only login_unix_socket: a socket endpoint
    assert health.validate(_params(urls=[], login_unix_socket="/run/pg"))[0]["name"] == "/run/pg:5432/postgres"


@pytest.mark.parametrize("url, redact, shown", [
    ("https://h.example/p?token=abc&x=1", True, "https://h.example/p?********"),
    ("https://h.example/p?token=abc", False, "https://h.example/p?token=abc"),
    ("https://user:pa55@h.example:8443/p", False, "https://user:********@h.example:8443/p"),
    ("https://user@h.example/p", True, "https://user@h.example/p"),
    ("http://h.example/plain", True, "http://h.example/plain"),
])
def test_display_url(url, redact, shown):
    assert health.display_url(url, redact) == shown


def test_url_secrets_for_no_log():
    urls = ["https://u:pa55word@h/p", {"url": "https://h/p?token=abcdef"}, "https://h/q?a=1", 42, {"name": "x"}]
    assert health.url_secrets(urls) == {"pa55word", "token=abcdef"}  # "a=1" is too short to mask everywhere
    assert health.url_secrets(urls, redact_query=False) == {"pa55word"}


def test_verdict_uses_the_share_of_targets_ok():
    three_of_five = [_result(str(i), i < 3) for i in range(5)]
    assert health.verdict(three_of_five, 0.5) == (True, 0.6)
    assert health.verdict(three_of_five, 0.6) == (True, 0.6)
    assert health.verdict(three_of_five, 0.7) == (False, 0.6)
    assert health.verdict([_result("a", False), _result("b", False)], 0.01) == (False, 0.0)
    assert health.verdict([_result("a", True)], 1.0) == (True, 1.0)


def test_summary_down_names_the_failed_targets_of_the_last_round():
    rounds = [_round("T1", _result("api", False, "HTTP 503 (accepted: 200-399)"), _result("db", True)),
              _round("T2", _result("api", False, "Connection refused"), _result("db", False, "timeout expired")),
              _round("T3", _result("api", False, "Connection refused"), _result("db", True))]
    summary, failure = health.summarize(rounds, "up", 1.0, "us-east-1")
    assert (summary["state"], summary["rounds_run"], summary["consecutive_failures"]) == ("down", 3, 3)
    assert summary["first_failure"] == "T1" and summary["healthy_ratio"] == 0.5
    assert failure.startswith("health check failed (expect=up): us-east-1 is down: 3 unhealthy round(s)")
    assert "round 3: api: Connection refused" in failure and "db" not in failure.split("round 3:")[1]
    assert health.summarize(rounds, "down", 1.0, "us-east-1")[1] is None
    assert health.summarize(rounds, "any", 1.0, "us-east-1")[1] is None


def test_summary_up_after_a_bad_round_and_the_failover_guard():
    rounds = [_round("T1", _result("api", False, "Connection refused"), _result("db", True)),
              _round("T2", _result("api", True), _result("db", True))]
    summary, failure = health.summarize(rounds, "down", 1.0, "us-east-1")
    assert (summary["state"], summary["consecutive_failures"], summary["first_failure"]) == ("up", 0, None)
    assert failure == "us-east-1 is healthy: 2 of 2 targets answered in round 2 (expect=down: it is not down)"
    assert health.summarize(rounds, "up", 1.0, "x")[1] is None


def test_failures_text_is_bounded():
    text = health.failures_text([_result("t%d" % i, False, "refused") for i in range(8)])
    assert text.count("refused") == health.MAX_LISTED and text.endswith("and 3 more")


def test_rounds_stop_at_the_first_healthy_round():
    """A target that comes up in round 2 (its probe answers from its 2nd call on)."""
    calls = {}

    def probe(target):
        calls[target["name"]] = calls.get(target["name"], 0) + 1
        ok = target["name"] == "steady" or calls[target["name"]] >= 2
        return {"ok": ok, "status": 200 if ok else 503, "error": None if ok else "HTTP 503", "latency_s": 0.0}

    targets = [{"kind": "http", "name": "steady"}, {"kind": "http", "name": "flappy"}]
    rounds = health.run_rounds(targets, probe, 5, 0.0, 1.0, 5.0)
    assert [r["healthy"] for r in rounds] == [False, True]
    assert calls == {"steady": 2, "flappy": 2}
    assert rounds[0]["targets"][1] == {"name": "flappy", "kind": "http", "ok": False, "status": 503,
                                       "error": "HTTP 503", "latency_s": 0.0}


def test_rounds_start_interval_apart():
    def probe(_target):
        return {"ok": False, "status": None, "error": "Connection refused", "latency_s": 0.0}

    t0 = time.monotonic()
    rounds = health.run_rounds([{"kind": "http", "name": "dead"}], probe, 3, 0.2, 1.0, 5.0)
    took = time.monotonic() - t0
    starts = [datetime.fromisoformat(r["started"].replace("Z", "+00:00")) for r in rounds]
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    assert len(rounds) == 3 and all(g >= 0.19 for g in gaps), gaps
    assert 0.4 <= took < 2.0


def test_probes_of_a_round_run_concurrently():
    """Each probe waits until all four are inside the barrier: run one after another, the first
    would wait in vain and the barrier would break."""
    barrier = threading.Barrier(4, timeout=5)

    def probe(_target):
        barrier.wait()
        return {"ok": True, "status": 200, "error": None, "latency_s": 0.0}

    results = health.run_round([{"kind": "http", "name": str(i)} for i in range(4)], probe, 10.0)
    assert [r["ok"] for r in results] == [True] * 4


def test_a_hung_probe_is_abandoned_and_an_exception_recorded():
    release = threading.Event()

    def probe(target):
        if target["name"] == "hung":
            release.wait(30)
        if target["name"] == "buggy":
            raise RuntimeError("boom")
        return {"ok": True, "status": 200, "error": None, "latency_s": 0.0}

    t0 = time.monotonic()
    try:
        results = health.run_round([{"kind": "http", "name": n} for n in ("fine", "hung", "buggy")], probe, 0.3)
    finally:
        release.set()
    assert time.monotonic() - t0 < 5
    by_name = {r["name"]: r for r in results}
    assert by_name["fine"]["ok"] is True
    assert by_name["hung"]["ok"] is False and "probe abandoned" in by_name["hung"]["error"]
    assert by_name["buggy"]["ok"] is False and by_name["buggy"]["error"] == "RuntimeError: boom"


@pytest.mark.parametrize("exc, text", [
    (URLError(ConnectionRefusedError(111, "Connection refused")), "Connection refused"),
    (URLError(socket.timeout("timed out")), "no answer within 2.5s (timed out)"),
    (TimeoutError("The read operation timed out"), "no answer within 2.5s (timed out)"),
    (URLError(socket.gaierror(-2, "Name or service not known")), "DNS lookup failed: Name or service not known"),
    (URLError("unknown url type: gopher"), "unknown url type: gopher"),
    (ValueError("bad\nsecond line"), "ValueError: bad"),
])
def test_describe_error(exc, text):
    assert health.describe_error(exc, 2.5) == text


def test_login_refused_is_told_apart_from_down():
    def refused(message):
        return postgres.classify_connect_error(message) == "login_refused"
    assert refused('FATAL:  password authentication failed for user "monitor"')
    assert refused('database "app" does not exist')
    assert not refused("Connection refused")
    assert not refused("timeout expired")
    assert not refused(None)


def test_check_result_warning_and_failure_carry_the_rounds():
    def probe(target):
        if target["kind"] == "postgres":
            return {"ok": False, "status": None, "latency_s": 0.0,
                    "error": 'password authentication failed for user "postgres"'}
        return {"ok": True, "status": 200, "error": None, "latency_s": 0.0}

    params = _params(urls=["http://a/"], login_host="db", login_password="hunter2", rounds=2,
                     min_healthy_ratio=0.5, expect="any")
    res = health.check(params, probe=probe)
    assert (res["state"], res["rounds_run"], res["healthy_ratio"], res["changed"]) == ("up", 1, 0.5, False)
    assert "refused the login" in res["warnings"][0] and "hunter2" not in repr(res)
    assert set(res["phases"]) == {"probe"} and res["duration_s"] >= 0

    with pytest.raises(FediflowError) as err:
        health.check(dict(params, min_healthy_ratio=1.0, expect="up", name="eu-west-1"), probe=probe, warn=lambda t: None)
    assert err.value.message.startswith("health check failed (expect=up): eu-west-1 is down: 2 unhealthy round(s)")
    partial = err.value.details["result"]
    assert partial["rounds_run"] == 2 and partial["state"] == "down" and "msg" not in partial
    assert "warnings" not in partial  # went to warn()
