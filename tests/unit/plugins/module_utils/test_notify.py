# -*- coding: utf-8 -*-
"""notify's decisions as plain data: the escalation matrix and its boundaries, recipients, the
rendered text, input refusals, the retry policy. The Slack loop runs against a real HTTP server
on loopback (http.server in a thread, answering what each test scripts); SES runs against moto
in the integration tier.
"""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import notify
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

START = datetime(2026, 11, 26, 1, 0, 0, tzinfo=timezone.utc)
TOKEN = "xoxbSECRETtoken0123456789"


def _params(**kw):
    params = {"subject": "Failover started", "msg": "us-east-1 is down", "severity": "critical",
              "outage_started": "2026-11-26T01:00:00Z", "escalation_matrix": None,
              "slack_webhook_url": "https://hooks.slack.example/services/T0/B0/" + TOKEN,
              "ses_sender": None, "ses_recipients": None, "fields": None, "fail_when": "all_failed", "timeout": 30}
    params.update(kw)
    return params


def _at(seconds):
    return START + timedelta(seconds=seconds)


MATRIX = [{"after_s": 0, "level": "on-call", "recipients": ["oncall@fediflow.example"]},
          {"after_s": 1800, "level": "technical lead", "recipients": ["lead@fediflow.example"]},
          {"after_s": 3600, "level": "engineering manager", "recipients": ["em@fediflow.example"]},
          {"after_s": 7200, "level": "executive team", "recipients": ["exec@fediflow.example"]}]


# ---------------------------------------------------------------- escalation

@pytest.mark.parametrize("age, index, level", [
    (0, 0, "on-call"), (29 * 60 + 59, 0, "on-call"), (1799.999, 0, "on-call"),
    (30 * 60, 1, "technical lead"), (59 * 60 + 59, 1, "technical lead"),
    (60 * 60, 2, "engineering manager"), (7199, 2, "engineering manager"),
    (2 * 3600, 3, "executive team"), (3 * 86400, 3, "executive team"),
])
def test_runbook_matrix_boundaries(age, index, level):
    assert notify.escalation(age) == (index, notify.DEFAULT_MATRIX[index])
    assert notify.escalation(age)[1]["level"] == level


@pytest.mark.parametrize("started, now, level", [
    ("2026-11-26T01:00:00Z", _at(29 * 60 + 59), "on-call"),
    ("2026-11-26T01:00:00Z", _at(30 * 60), "technical lead"),
    ("2026-11-26T01:00:00Z", _at(59 * 60 + 59), "technical lead"),
    ("2026-11-26T01:00:00Z", _at(60 * 60), "engineering manager"),
    ("2026-11-26T01:00:00Z", _at(2 * 3600), "executive team"),
    ("2026-11-26T02:30:00+01:00", _at(3600), "technical lead"),  # 01:30Z, 30 min before now
    ("2026-11-25T20:00:00-05:00", _at(0), "on-call"),            # = START
])
def test_level_from_outage_started(started, now, level):
    plan = notify.validate(_params(outage_started=started), now)
    assert plan["level"] == level
    assert plan["elapsed_s"] == (now - notify.parse_started(started, now)).total_seconds()


def test_outage_started_defaults_to_now():
    plan = notify.validate(_params(outage_started=None), _at(5000))
    assert plan["elapsed_s"] == 0 and plan["level_index"] == 0 and plan["started"] == _at(5000)


@pytest.mark.parametrize("started, message", [
    ("2026-11-26T01:00:00", "has no time zone"),
    ("2026-11-26", "has no time zone"),
    ("yesterday at one", "not an ISO 8601 time"),
    ("2026-11-26T01:10:00Z", "in the future"),
])
def test_outage_started_refused(started, message):
    with pytest.raises(FediflowError, match="outage_started .*%s" % message):
        notify.parse_started(started, START)


def test_small_clock_skew_is_age_zero():
    plan = notify.validate(_params(outage_started="2026-11-26T01:02:00Z"), START)
    assert plan["elapsed_s"] == 0 and plan["level"] == "on-call"


def test_custom_matrix_and_recipients_of_levels_reached():
    matrix = notify.validate_matrix(MATRIX)
    assert notify.email_recipients(["SRE@fediflow.example", "lead@fediflow.example"], matrix, 1) == [
        "SRE@fediflow.example", "lead@fediflow.example", "oncall@fediflow.example"]
    assert notify.email_recipients(["sre@fediflow.example"], matrix, 3)[-1] == "exec@fediflow.example"
    assert notify.email_recipients([], matrix, 0) == ["oncall@fediflow.example"]
    two = notify.validate_matrix([{"after_s": 0, "level": "a"}, {"after_s": 60, "level": "b", "recipients": None}])
    assert notify.escalation(59, two)[0] == 0 and notify.escalation(60, two)[0] == 1
    assert two[1]["recipients"] == []


def test_default_matrix_has_no_recipients():
    matrix = notify.validate_matrix(None)
    assert [e["after_s"] for e in matrix] == [0, 1800, 3600, 7200]
    assert all(e["recipients"] == [] for e in matrix)


@pytest.mark.parametrize("matrix, message", [
    ([], "non-empty list"),
    ([{"after_s": 60, "level": "a"}], r"escalation_matrix\[0\].after_s must be 0"),
    ([{"after_s": 0, "level": "a"}, {"after_s": 3600, "level": "b"}, {"after_s": 1800, "level": "c"}],
     "sorted by after_s.*entry 2 .after_s=1800"),
    ([{"after_s": 0, "level": "a"}, {"after_s": 0, "level": "b"}], "without repeats"),
    ([{"after_s": -1, "level": "a"}], ">= 0"),
    ([{"after_s": True, "level": "a"}], "whole number"),
    ([{"after_s": "0", "level": "a"}], "whole number"),
    ([{"after_s": 0, "level": " "}], r"escalation_matrix\[0\].level"),
    ([{"after_s": 0, "level": "a", "recipients": ["not-an-address"]}],
     r"escalation_matrix\[0\].recipients\[0\] 'not-an-address'"),
    ([{"after_s": 0, "level": "a", "escalate": True}], "unknown keys: escalate"),
    (["on-call"], r"escalation_matrix\[0\] must be a dict"),
])
def test_bad_matrix_is_refused(matrix, message):
    with pytest.raises(FediflowError, match=message):
        notify.validate_matrix(matrix)


# ---------------------------------------------------------------- input

@pytest.mark.parametrize("kw, message", [
    ({"subject": " "}, "subject must not be empty"),
    ({"msg": ""}, "msg must not be empty"),
    ({"severity": "sev1"}, "severity must be one of"),
    ({"fail_when": "never"}, "fail_when must be one of"),
    ({"timeout": 0}, "timeout must be at least 1"),
    ({"slack_webhook_url": None}, "no channel to notify"),
    ({"slack_webhook_url": "ftp://x/" + TOKEN}, "slack_webhook_url must be an https:// URL"),
    ({"ses_recipients": ["a@fediflow.example"]}, "ses_recipients is set but ses_sender is not"),
    ({"ses_sender": "dr@fediflow.example"}, "nobody is to be emailed.*on-call"),
    ({"ses_sender": "dr at fediflow"}, "ses_sender 'dr at fediflow' is not an email address"),
    ({"ses_sender": "d@x.example", "ses_recipients": ["ok@x.example", "nope"]}, r"ses_recipients\[1\] 'nope'"),
    ({"ses_sender": "d@x.example", "ses_recipients": ["r%d@x.example" % i for i in range(51)]}, "at most 50"),
    ({"fields": {"regions": ["a", "b"]}}, "fields.regions must be a string or a number"),
])
def test_bad_input_is_refused(kw, message):
    with pytest.raises(FediflowError, match=message) as err:
        notify.validate(_params(**kw), START)
    assert TOKEN not in err.value.message


def test_sender_with_display_name_and_matrix_recipients_only():
    plan = notify.validate(_params(ses_sender="FediFlow DR <dr@fediflow.example>", escalation_matrix=MATRIX,
                                   slack_webhook_url=None), _at(45 * 60))
    assert plan["recipients"] == ["oncall@fediflow.example", "lead@fediflow.example"]
    assert plan["url"] is None and plan["sender"] == "FediFlow DR <dr@fediflow.example>"


def test_rendered_text():
    plan = notify.validate(_params(fields={"from_region": "us-east-1", "to_region": "eu-west-1", "rto_min": 12},
                                   severity="major"), _at(3725))
    assert plan["title"] == "[MAJOR] Failover started"
    assert plan["text"].splitlines() == [
        "[MAJOR] Failover started",
        "Escalation: engineering manager - outage age 1h 02m 05s (since 2026-11-26T01:00:00Z)",
        "", "us-east-1 is down", "",
        "from_region: us-east-1", "to_region: eu-west-1", "rto_min: 12"]


def test_text_never_holds_the_webhook():
    url = "https://hooks.slack.example/services/T0/B0/" + TOKEN
    plan = notify.validate(_params(msg="posted to %s" % url), START)
    assert TOKEN not in plan["text"] and "hooks.slack.example" not in plan["text"]


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (9.9, "9s"), (2530, "42m 10s"), (3725, "1h 02m 05s"),
                                           (-3, "0s")])
def test_format_age(seconds, text):
    assert notify.format_age(seconds) == text


def test_slack_escape():
    assert notify.slack_escape("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"


# ---------------------------------------------------------------- retry policy and outcome

@pytest.mark.parametrize("status, retry_after, attempt, delay", [
    (429, "3", 1, 3.0), (429, "soon", 2, 1.0), (429, None, 1, 0.5),
    (500, None, 1, 0.5), (503, None, 2, 1.0), (502, None, 3, 2.0), (500, None, 10, notify.MAX_BACKOFF_S),
    (None, None, 1, 0.5),
    (400, None, 1, None), (403, None, 1, None), (404, None, 1, None), (410, None, 1, None), (302, None, 1, None),
])
def test_retry_delay(status, retry_after, attempt, delay):
    assert notify.retry_delay(status, retry_after, attempt) == delay


@pytest.mark.parametrize("oks, fail_when, fails", [
    ({"slack": True, "ses": True}, "any_failed", False),
    ({"slack": False, "ses": True}, "all_failed", False),
    ({"slack": False, "ses": True}, "any_failed", "failed on slack (fail_when=any_failed) - slack: boom"),
    ({"slack": False, "ses": False}, "all_failed", "on no channel - slack: boom; ses: boom"),
    ({"slack": False}, "any_failed", "on no channel - slack: boom"),
])
def test_decide(oks, fail_when, fails):
    channels = {name: {"ok": ok, "error": None if ok else "boom"} for name, ok in oks.items()}
    message = notify.decide(channels, fail_when)
    assert bool(message) == bool(fails)
    if fails:
        assert fails in message


def test_url_secrets():
    url = "https://hooks.slack.example/services/T0/B0/" + TOKEN
    assert notify.url_secrets(url) == [url, "/services/T0/B0/" + TOKEN, TOKEN]
    assert notify.url_secrets(None) == []


# ---------------------------------------------------------------- Slack against a real local server

class _Scripted(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 pylint: disable=invalid-name
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server.posts.append({"path": self.path, "body": json.loads(body)})
        status, text, headers = server.script.pop(0) if server.script else (200, "ok", {})
        text = text.replace("{path}", self.path)  # a proxy that echoes the URL
        data = text.encode()
        self.send_response(status)
        for key, value in dict(headers, **{"Content-Length": str(len(data))}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.posts, server.script = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = "http://127.0.0.1:%d/services/T0/B0/%s" % (server.server_address[1], TOKEN)
    yield server
    server.shutdown()
    server.server_close()


def test_slack_retries_5xx_and_429_then_delivers(receiver):
    receiver.script[:] = [(503, "busy", {}), (429, "slow down", {"Retry-After": "0"})]
    res = notify.post_slack(receiver.url, "a < b", 10, notify.url_secrets(receiver.url))
    assert res == {"ok": True, "status": 200, "attempts": 3, "error": None}
    assert len(receiver.posts) == 3 and receiver.posts[-1]["body"] == {"text": "a &lt; b"}


def test_slack_4xx_is_final_and_redacted(receiver):
    receiver.script[:] = [(404, "no_service for {path}", {})]
    res = notify.post_slack(receiver.url, "x", 10, notify.url_secrets(receiver.url))
    assert not res["ok"] and res["status"] == 404 and res["attempts"] == 1
    assert "HTTP 404 no_service" in res["error"] and "not retried" in res["error"]
    assert TOKEN not in res["error"] and "/services/" not in res["error"]


def test_slack_retry_after_past_the_deadline_stops(receiver):
    receiver.script[:] = [(429, "rate_limited", {"Retry-After": "30"})]
    res = notify.post_slack(receiver.url, "x", 2, notify.url_secrets(receiver.url))
    assert not res["ok"] and res["attempts"] == 1 and "Retry-After 30s is past the deadline" in res["error"]


def test_slack_no_answer_is_retried_until_the_deadline(receiver):
    url = receiver.url
    receiver.shutdown()
    receiver.server_close()  # nothing listens on that port any more
    res = notify.post_slack(url, "x", 1, notify.url_secrets(url))
    assert not res["ok"] and res["status"] is None and res["attempts"] >= 2
    assert "timeout=1s" in res["error"] and TOKEN not in res["error"]


def test_check_mode_sends_nothing(receiver):
    res = notify.send(_params(slack_webhook_url=receiver.url), check_mode=True, now=_at(45 * 60))
    assert res["changed"] and res["level"] == "technical lead" and res["level_index"] == 1
    assert res["channels"] == {"slack": {"ok": None, "status": None, "attempts": 0, "error": None}}
    assert receiver.posts == [] and TOKEN not in json.dumps(res)


def test_send_fails_when_no_channel_got_through(receiver):
    receiver.script[:] = [(400, "invalid_payload", {})]
    with pytest.raises(FediflowError, match="got through on no channel - slack: Slack refused") as err:
        notify.send(_params(slack_webhook_url=receiver.url), now=_at(10))
    partial = err.value.details["result"]
    assert partial["changed"] is False and partial["channels"]["slack"]["status"] == 400
    assert len(receiver.posts) == 1 and TOKEN not in json.dumps(partial) + err.value.message


def test_send_delivers(receiver):
    res = notify.send(_params(slack_webhook_url=receiver.url, fields={"to": "eu-west-1"}), now=_at(7200))
    assert res["changed"] and res["level"] == "executive team" and "warnings" not in res
    assert res["channels"]["slack"] == {"ok": True, "status": 200, "attempts": 1, "error": None}
    assert receiver.posts[0]["body"]["text"] == res["text"] and res["phases"]["slack"] >= 0
    assert receiver.posts[0]["path"].endswith(TOKEN) and TOKEN not in json.dumps(res)
