"""fediflow.dr.incident_notify driven through ansible like a user does, without the shared lab.

Slack is a local double (the lab's webhook receiver, started on a free port for each test:
no real Slack can be reached from here); its test-only POST /_fail makes the next posts fail.
SES is a private moto_server started on a free port for this file. What was delivered is
checked independently of the module's result: the double's request record, and the messages
moto's SES backend holds (GET /moto-api/data.json, ses -> Message).
The module's old name, fediflow.dr.notify, is a deprecated redirect (meta/runtime.yml plugin_routing):
a playbook that still uses it sends the same message, with a deprecation warning.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from doubles_fixtures import start_moto
from lab_fixtures import BIN, ROOT, ansible_env, module

MODULE = "fediflow.dr.incident_notify"
TOKEN = "tok%s" % uuid.uuid4().hex
SENDER = "dr@fediflow.example"
REGION = "us-east-1"
MATRIX = [{"after_s": 0, "level": "on-call", "recipients": ["oncall@fediflow.example"]},
          {"after_s": 1800, "level": "technical lead", "recipients": ["lead@fediflow.example"]},
          {"after_s": 3600, "level": "engineering manager", "recipients": ["em@fediflow.example"]},
          {"after_s": 7200, "level": "executive team", "recipients": ["exec@fediflow.example"]}]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A private moto_server on a free loopback port (not the lab's), the sender verified in SES."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    ses = boto3.client("ses", region_name=REGION, endpoint_url=server.url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ses.verify_email_identity(EmailAddress=SENDER)
    yield {"url": server.url, "ses": ses}
    server.stop()


def sent_mail(moto, subject_part):
    """The messages moto's SES backend holds whose subject contains ``subject_part``."""
    with urllib.request.urlopen(moto["url"] + "/moto-api/data.json", timeout=10) as resp:
        data = json.load(resp)
    return [m for m in data.get("ses", {}).get("Message", []) if subject_part in m["subject"]]


def webhook(double):
    return "%s/services/T0TEST/B0TEST/%s" % (double.url, TOKEN)


def fail_next(double, count, status):
    req = urllib.request.Request(double.url + "/_fail", data=json.dumps({"count": count, "status": status}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=5).close()


def posts(double):
    return [r for r in double.requests() if r["path"].startswith("/services/")]


def ago(minutes):
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def args(double=None, moto=None, **kw):
    tag = uuid.uuid4().hex[:10]
    out = {"subject": "Failover to eu-west-1 %s" % tag, "msg": "us-east-1 is unreachable.", "timeout": 15}
    if double is not None:
        out["slack_webhook_url"] = webhook(double)
    if moto is not None:
        out.update(ses_sender=SENDER, ses_recipients=["sre@fediflow.example"], region=REGION,
                   endpoint_url=moto["url"], access_key="testing", secret_key="testing")
    out.update(kw)
    return tag, out


def run(name_args, **kw):
    """The module's result; the webhook token must never be in it (message, errors, warnings)."""
    res = module(MODULE, name_args, **kw)
    assert TOKEN not in json.dumps(res), res
    return res


def test_both_channels_get_the_right_level_and_recipients(slack_double, moto):
    tag, a = args(slack_double, moto, outage_started=ago(45), escalation_matrix=MATRIX, severity="major",
                  fields={"from_region": "us-east-1", "to_region": "eu-west-1", "rto_so_far": "12m"})
    res = run(a)
    assert res["changed"] and not res.get("failed") and not res.get("warnings"), res
    assert res["level"] == "technical lead" and res["level_index"] == 1
    assert 45 * 60 - 5 <= res["elapsed_s"] <= 45 * 60 + 120
    expected = ["sre@fediflow.example", "oncall@fediflow.example", "lead@fediflow.example"]
    assert res["recipients"] == expected
    assert res["channels"]["slack"] == {"ok": True, "status": 200, "attempts": 1, "error": None}
    assert res["channels"]["ses"]["ok"] and res["channels"]["ses"]["attempts"] == 1
    assert res["duration_s"] > 0

    got = posts(slack_double)
    assert len(got) == 1 and got[0]["path"].endswith(TOKEN)
    text = got[0]["body"]["text"]
    assert text.startswith("[MAJOR] Failover to eu-west-1 %s\nEscalation: technical lead - outage age 4" % tag), text
    assert "from_region: us-east-1\nto_region: eu-west-1\nrto_so_far: 12m" in text

    mail = sent_mail(moto, tag)
    assert len(mail) == 1, mail
    assert mail[0]["id"] == res["channels"]["ses"]["message_id"]
    assert mail[0]["source"] == SENDER and mail[0]["subject"] == "[MAJOR] Failover to eu-west-1 %s" % tag
    assert mail[0]["destinations"]["ToAddresses"] == expected
    assert mail[0]["body"] == text == res["text"]


def test_default_matrix_escalates_to_executives_after_two_hours(slack_double):
    res = run(args(slack_double, outage_started=ago(121))[1])
    assert res["level"] == "executive team" and res["level_index"] == 3 and res["recipients"] == []
    assert "Escalation: executive team - outage age 2h 01m" in posts(slack_double)[0]["body"]["text"]


def test_slack_500_twice_then_ok(slack_double):
    fail_next(slack_double, 2, 500)
    res = run(args(slack_double)[1])
    assert res["changed"] and res["channels"]["slack"] == {"ok": True, "status": 200, "attempts": 3, "error": None}
    assert [p["status"] for p in posts(slack_double)] == [500, 500, 200]


def test_slack_429_waits_for_retry_after(slack_double):
    fail_next(slack_double, 1, 429)  # the double says Retry-After: 1
    res = run(args(slack_double)[1])
    assert res["channels"]["slack"]["attempts"] == 2 and res["channels"]["slack"]["ok"]
    first, second = posts(slack_double)
    assert (first["status"], second["status"]) == (429, 200)
    assert second["ts"] - first["ts"] >= 0.95


def test_slack_refusing_with_ses_ok_warns_or_fails_by_fail_when(slack_double, moto):
    fail_next(slack_double, 100, 400)
    tag, a = args(slack_double, moto)
    res = run(a)
    assert not res.get("failed") and res["changed"], res
    slack = res["channels"]["slack"]
    assert not slack["ok"] and slack["status"] == 400 and slack["attempts"] == 1  # a 400 is not retried
    assert "HTTP 400" in slack["error"] and res["channels"]["ses"]["ok"]
    assert any("slack notification failed" in w and "HTTP 400" in w for w in res["warnings"]), res.get("warnings")
    assert len(sent_mail(moto, tag)) == 1

    tag, a = args(slack_double, moto, fail_when="any_failed")
    res = run(a)
    assert res["failed"] and "failed on slack (fail_when=any_failed)" in res["msg"], res
    assert res["changed"] and res["channels"]["ses"]["ok"]  # the email did go out
    assert len(sent_mail(moto, tag)) == 1
    assert [p["status"] for p in posts(slack_double)] == [400, 400]


def test_an_ses_endpoint_that_never_answers_does_not_hold_the_run(slack_double):
    """A black-holed endpoint (connections accepted, never answered): the SES client's own read
    time-out is 60 s, the module gives up at timeout + 2 s and Slack's message still counts."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        _tag, a = args(slack_double, timeout=2, ses_sender=SENDER, ses_recipients=["sre@fediflow.example"],
                       region=REGION, endpoint_url="http://127.0.0.1:%d" % silent.getsockname()[1],
                       access_key="testing", secret_key="testing")
        t0 = time.monotonic()
        res = run(a)
        took = time.monotonic() - t0
    assert not res.get("failed") and res["channels"]["slack"]["ok"], res
    assert not res["channels"]["ses"]["ok"] and "did not answer within timeout=2s" in res["channels"]["ses"]["error"]
    assert res["duration_s"] < 2 + 2 + 1 and took < 20, (res["duration_s"], took)


def test_unverified_sender_is_named(moto):
    tag, a = args(moto=moto, ses_sender="nobody@unverified.example")
    res = run(a)
    assert res["failed"] and not res["changed"], res
    assert "ses_sender 'nobody@unverified.example' must be a verified identity in region us-east-1" in res["msg"]
    assert res["channels"]["ses"]["attempts"] == 1 and sent_mail(moto, tag) == []


@pytest.mark.parametrize("drop, extra, message", [
    (("slack_webhook_url", "ses_sender", "ses_recipients"), {},
     "one of the following is required: slack_webhook_url, ses_sender"),
    (("ses_sender",), {}, "missing parameter(s) required by 'ses_recipients': ses_sender"),
    ((), {"ses_recipients": [], "escalation_matrix": [{"after_s": 0, "level": "on-call"}]},
     "ses_sender is set but nobody is to be emailed"),
    ((), {"escalation_matrix": [{"after_s": 0, "level": "a"}, {"after_s": 0, "level": "b"}]},
     "escalation_matrix must be sorted by after_s"),
    ((), {"outage_started": "2026-11-26T01:00:00"}, "has no time zone"),
    ((), {"slack_webhook_url": "hooks.slack.com/services/T/B/" + TOKEN}, "slack_webhook_url must be an https:// URL"),
])
def test_bad_channel_config_is_refused_before_sending(slack_double, moto, drop, extra, message):
    tag, a = args(slack_double, moto, **extra)
    for key in drop:
        a.pop(key)
    res = run(a)
    assert res["failed"] and message in res["msg"], res
    assert posts(slack_double) == [] and sent_mail(moto, tag) == []


def test_check_mode_sends_nothing(slack_double, moto):
    tag, a = args(slack_double, moto, outage_started=ago(61), escalation_matrix=MATRIX)
    res = run(a, check_mode=True, diff=True)
    assert res["changed"] and not res.get("failed") and res["level"] == "engineering manager", res
    assert res["channels"]["slack"]["attempts"] == 0 and res["channels"]["ses"]["ok"] is None
    assert "lead@fediflow.example" in res["recipients"] and "em@fediflow.example" in res["recipients"]
    assert "email to: sre@fediflow.example, oncall@" in res["diff"]["after"] and tag in res["diff"]["after"]
    assert posts(slack_double) == [] and sent_mail(moto, tag) == []


def play(tmp_path, task):
    """ansible-playbook of one task on localhost (the task written to a 0600 file: it holds the webhook URL)."""
    book = tmp_path / "play.yml"
    doc = [{"name": "Notify", "hosts": "localhost", "gather_facts": False, "collections": ["fediflow.dr"],
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [task]}]
    fd = os.open(book, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(doc, handle)  # JSON is YAML
    env = ansible_env()
    env["ANSIBLE_DEPRECATION_WARNINGS"] = "1"
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(book)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert TOKEN not in out, out
    return proc.returncode, " ".join(out.split())  # one line: the warning text is wrapped at the terminal width


@pytest.mark.parametrize("action", ["fediflow.dr.notify", "notify"])
def test_the_old_name_still_sends_with_a_deprecation_warning(slack_double, tmp_path, action):
    """fediflow.dr.notify routes to incident_notify and says it is deprecated. Its short name never worked:
    `notify:` is the task keyword (handlers), so a task with only it has no action at all."""
    tag, a = args(slack_double)
    rc, out = play(tmp_path, {"name": "The old name", action: a})
    if action == "notify":
        assert rc != 0 and posts(slack_double) == [], out
        return
    assert rc == 0 and "ok=1 changed=1" in out, out
    assert "fediflow.dr.notify has been deprecated" in out and "Use fediflow.dr.incident_notify instead" in out, out
    assert "will be removed from collection 'fediflow.dr' version 1.0.0" in out, out
    got = posts(slack_double)
    assert len(got) == 1 and tag in got[0]["body"]["text"]


@pytest.mark.parametrize("action", ["fediflow.dr.incident_notify", "incident_notify"])
def test_the_new_name_sends_without_a_warning_also_by_its_short_name(slack_double, tmp_path, action):
    tag, a = args(slack_double)
    rc, out = play(tmp_path, {"name": "The new name", action: a})
    assert rc == 0 and "ok=1 changed=1" in out, out
    assert "DEPRECATION WARNING" not in out and "fediflow.dr.notify" not in out, out
    got = posts(slack_double)
    assert len(got) == 1 and tag in got[0]["body"]["text"]
