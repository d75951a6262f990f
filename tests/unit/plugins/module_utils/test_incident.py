# -*- coding: utf-8 -*-
"""incident's decisions as plain data: escalation boundaries through the incident's age, when an
update is due (interval, level change, nothing), the claim / commit of an update with per-channel
delivery markers, input refusals naming the option, and the file store (0600, atomic replace,
compare-and-swap) on the real filesystem. No channel is contacted here (the runs below have no
channel, or fail before sending), except SNS's retry policy, driven by a scripted stand-in client
(the last test); sending runs against the Slack double and a private moto_server in
tests/integration/test_incident.py.
"""
from __future__ import annotations

import json
import os
import stat
import threading
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import incident, notify
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

START = datetime(2026, 11, 26, 1, 0, 0, tzinfo=timezone.utc)
TOKEN = "xoxbSECRETtoken0123456789"
# the lab inventory's matrix (inventories/lab/group_vars/all/main.yml)
MATRIX = [{"after_s": 0, "level": "on-call engineer", "recipients": []},
          {"after_s": 1800, "level": "technical lead", "recipients": ["tech-lead@fediflow-lab.example"]},
          {"after_s": 3600, "level": "engineering manager", "recipients": ["eng-manager@fediflow-lab.example"]},
          {"after_s": 7200, "level": "executive team", "recipients": ["exec@fediflow-lab.example"]}]


def _at(seconds):
    return START + timedelta(seconds=seconds)


def _params(tmp_path=None, **kw):
    params = {"state": "update", "store": "file", "path": str(tmp_path / "incident.json") if tmp_path else "/x/i.json",
              "channels": ["slack", "email"], "subject": "Region failover", "msg": "us-east-1 is down",
              "outage_started": "2026-11-26T01:00:00Z", "escalation_matrix": MATRIX, "update_interval_s": 1800,
              "slack_webhook_url": "https://hooks.slack.example/services/T0/B0/" + TOKEN,
              "ses_sender": "dr@fediflow.example", "ses_recipients": ["oncall@fediflow.example"], "timeout": 5}
    params.update(kw)
    return params


def _cfg(now=START, **kw):
    return incident.validate(_params(**kw), now)


def _opened(now=START, channels=("slack", "email")):
    """A record as open leaves it when every channel took the first notification at ``now``."""
    cfg = _cfg(now, state="open", channels=list(channels))
    plan = incident.decide(None, now, cfg)
    assert plan["action"] == "send" and plan["channels"] == list(channels)
    outcome = {c: {"ok": True} for c in channels}
    return incident.commit(plan["record"], outcome, {c: now + timedelta(seconds=2) for c in channels}, cfg, now)


# ---------------------------------------------------------------- escalation and due

@pytest.mark.parametrize("age, level", [
    (29 * 60 + 59, "on-call engineer"), (30 * 60, "technical lead"), (59 * 60 + 59, "technical lead"),
    (60 * 60, "engineering manager"), (2 * 3600 - 1, "engineering manager"), (2 * 3600, "executive team"),
])
def test_escalation_boundaries_of_an_incident(age, level):
    record = _opened()
    cfg = _cfg(_at(age))
    summary = incident._summary(record, _at(age), cfg)  # pylint: disable=protected-access
    assert summary["level"] == level and summary["age_s"] == age


def test_nothing_due_before_the_interval_then_due_at_it():
    record = _opened()
    # the level rises at 30:00 as well: a short interval separates the two reasons
    cfg = _cfg(update_interval_s=600)
    assert incident.due(record, _at(599), cfg) is None
    assert incident.decide(record, _at(599), dict(cfg, state="update"))["action"] == "none"
    assert incident.due(record, _at(600), cfg) == "interval"
    assert incident.next_due(record, _at(100), cfg) == _at(600)


def test_a_level_change_is_due_at_once_and_the_next_level_bounds_next_due():
    record = _opened()
    cfg = _cfg(update_interval_s=3000)
    assert incident.next_due(record, _at(60), cfg) == _at(1800)  # the level comes before the interval
    assert incident.due(record, _at(1799), cfg) is None
    assert incident.due(record, _at(1800), cfg) == "level: technical lead"


def test_update_claims_then_commit_marks_each_channel():
    record = _opened()
    cfg = _cfg(_at(1800))
    plan = incident.decide(record, _at(1800), cfg)
    pending = plan["pending"]
    assert plan["why"] == "level: technical lead" and pending["seq"] == 2 and pending["lease_until"]
    assert pending["subject"] == "[CRITICAL] Region failover - update #2"
    assert "Escalation: technical lead - outage age 30m 00s" in pending["text"]
    assert TOKEN not in json.dumps(plan["record"])
    # slack took it, email failed: email stays pending, slack is not sent again
    after = incident.commit(plan["record"], {"slack": {"ok": True}, "email": {"ok": False, "error": "SES down"}},
                            {"slack": _at(1801), "email": _at(1801)}, cfg, _at(1802))
    assert after["pending"]["delivered"] == {"slack": "2026-11-26T01:30:01.000Z"}
    assert after["pending"]["failed"] == {"email": "SES down"} and after["pending"]["lease_until"] is None
    assert after["last_update"]["seq"] == 2
    retry = incident.decide(after, _at(1900), _cfg(_at(1900)))
    assert retry["why"] == "retry of update #2" and retry["channels"] == ["email"]
    assert retry["pending"]["text"] == pending["text"]  # the same update, not a new one
    done = incident.commit(retry["record"], {"email": {"ok": True}}, {"email": _at(1901)}, cfg, _at(1901))
    assert done["pending"] is None and [u["seq"] for u in done["updates"]] == [1, 2]
    assert incident.decide(done, _at(1902), _cfg(_at(1902)))["action"] == "none"


def test_a_claim_in_flight_blocks_other_runs_until_its_lease_expires():
    record = _opened()
    plan = incident.decide(record, _at(1800), _cfg(_at(1800)))
    claimed = plan["record"]
    assert incident.decide(claimed, _at(1801), _cfg(_at(1801)))["action"] == "none"
    with pytest.raises(FediflowError, match="another run is sending update #2"):
        incident.decide(claimed, _at(1801), _cfg(_at(1801), state="close"))
    late = incident.decide(claimed, _at(1800 + 5 + 33), _cfg(_at(1800 + 38)))
    assert late["why"] == "retry of update #2" and late["channels"] == ["slack", "email"]


def test_first_notification_time_and_notified_channels():
    cfg = _cfg(_at(300), state="open", channels=["slack", "email", "status_page"], status_page_bucket="status",
               notified_channels=["slack", "email"], notified_at="2026-11-26T01:04:10Z")
    plan = incident.decide(None, _at(300), cfg)
    assert plan["channels"] == ["status_page"]
    after = incident.commit(plan["record"], {"status_page": {"ok": True}}, {"status_page": _at(301)}, cfg, _at(301))
    assert after["first_notification_s"] == 250.0 and after["pending"] is None
    assert incident.decide(after, _at(302), dict(cfg, state="open"))["action"] == "none"  # open again: no change


def test_close_then_nothing_more():
    record = _opened()
    plan = incident.decide(record, _at(4000), _cfg(_at(4000), state="close", msg="Back in us-east-1"))
    assert plan["pending"]["subject"] == "[CRITICAL] Resolved: Region failover"
    closed = incident.commit(plan["record"], {"slack": {"ok": True}, "email": {"ok": True}},
                             {"slack": _at(4001), "email": _at(4001)}, _cfg(), _at(4001))
    assert closed["status"] == "closed" and closed["summary"] == "Back in us-east-1"
    for state in ("update", "close"):
        assert incident.decide(closed, _at(9000), _cfg(_at(9000), state=state))["action"] == "none"
    doc = incident.status_document(closed, _at(4001))
    assert doc["status"] == "resolved" and doc["updates"][0]["subject"].endswith("Resolved: Region failover")
    page = incident.status_html(dict(doc, title="<script>x</script>"))
    assert "<script>x" not in page and "&lt;script&gt;" in page


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("kw, message", [
    ({"channels": ["slack", "pager"]}, r"channels\[1\] 'pager' is not a channel"),
    ({"slack_webhook_url": None}, "channels includes slack but slack_webhook_url is not set"),
    ({"slack_webhook_url": "hooks.slack.example/x"}, "slack_webhook_url must be an https:// URL"),
    ({"ses_sender": None}, "channels includes email but ses_sender is not set"),
    ({"channels": ["sms"]}, "channels includes sms but neither sms_phone_numbers nor sms_topic_arn"),
    ({"channels": ["sms"], "sms_phone_numbers": ["5550100"]}, r"sms_phone_numbers\[0\] '5550100' is not an E.164"),
    ({"channels": ["sms"], "sms_topic_arn": "topic"}, "sms_topic_arn 'topic' is not an SNS topic ARN"),
    ({"channels": ["status_page"]}, "channels includes status_page but status_page_bucket is not set"),
    ({"escalation_matrix": [{"after_s": 60, "level": "a"}]}, r"escalation_matrix\[0\].after_s must be 0"),
    ({"escalation_matrix": [{"after_s": 0, "level": "a"}, {"after_s": 0, "level": "b"}]}, "without repeats"),
    ({"update_interval_s": 10}, "update_interval_s must be a whole number of seconds >= 60"),
    ({"store": "s3"}, "store=s3 needs s3_bucket and s3_key"),
    ({"path": None}, "store=file needs path"),
    ({"state": "open", "msg": ""}, "state=open needs subject and msg"),
    ({"notified_channels": ["slack"]}, "notified_channels needs notified_at"),
])
def test_bad_input_is_refused_naming_the_option(kw, message):
    with pytest.raises(FediflowError, match=message) as err:
        incident.validate(_params(**kw), START)
    assert TOKEN not in str(err.value)


def test_bad_input_touches_no_store(tmp_path):
    with pytest.raises(FediflowError, match="pager"):
        incident.run(_params(tmp_path, state="open", channels=["pager"]), now=START)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the file store and run()

def test_file_store_0600_atomic_and_compare_and_swap(tmp_path):
    store = incident.FileStore(str(tmp_path / "sub" / "incident.json"))
    assert store.load() == (None, None)
    record = _opened()
    version = store.save(record, None)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.load() == (record, version)
    with pytest.raises(incident.Conflict):
        store.save(record, None)  # someone created it meanwhile
    with pytest.raises(incident.Conflict):
        store.save(record, "0" * 64)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["incident.json", "incident.json.lock"]  # no temp left


def test_concurrent_claims_on_one_file_let_one_run_win(tmp_path):
    store = incident.FileStore(str(tmp_path / "incident.json"))
    version = store.save(_opened(), None)
    wins, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        try:
            store.save(dict(_opened(), summary=threading.current_thread().name), version)
            wins.append(1)
        except incident.Conflict:
            pass
    threads = [threading.Thread(target=claim) for _thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1


class _LosesTheFirstClaim(incident.FileStore):
    """A file store where another run claims the update between this run's read and its first save."""

    def __init__(self, path, rival):
        super().__init__(path)
        self.rival, self.lost = rival, False

    def save(self, record, expected):
        if not self.lost:
            self.lost = True
            incident.FileStore(self.path).save(self.rival, expected)
        return super().save(record, expected)


def test_a_run_that_loses_the_claim_to_another_reports_no_change(tmp_path):
    path = str(tmp_path / "incident.json")
    incident.FileStore(path).save(_opened(), None)
    now = _at(1800)
    rival = incident.decide(incident.FileStore(path).load()[0], now, _cfg(now, channels=[]))["record"]
    assert rival["pending"]["lease_until"]  # the other run holds the lease while it sends update #2
    store = _LosesTheFirstClaim(path, rival)
    res = incident.run(_params(tmp_path, channels=[]), now=now, store=store)
    assert store.lost and res["why"].startswith("another run is sending update #2"), res
    assert not res["changed"] and res["update"] is None and "diff" not in res, res


def test_run_open_quietly_then_status_then_nothing_due(tmp_path):
    quiet = _params(tmp_path, state="open", notify=False)
    res = incident.run(quiet, now=START)
    assert res["changed"] and res["status"] == "open" and res["channels"] == [] and res["sent"] == []
    assert res["incident_id"] == "inc-20261126T010000Z" and res["first_notification_s"] is None
    again = incident.run(quiet, now=_at(10))
    assert not again["changed"] and again["why"].startswith("nothing due")
    status = incident.run(_params(tmp_path, state="status"), now=_at(1900))
    assert status["level"] == "technical lead" and status["age_s"] == 1900 and not status["changed"]
    on_disk = json.loads((tmp_path / "incident.json").read_text())
    assert on_disk["updates"][0]["delivered"] == {} and TOKEN not in json.dumps(on_disk)


def test_check_mode_predicts_and_writes_nothing(tmp_path):
    incident.run(_params(tmp_path, state="open", notify=False), now=START)
    before = (tmp_path / "incident.json").read_bytes()
    res = incident.run(_params(tmp_path), check_mode=True, now=_at(1800))
    assert res["changed"] and res["channels"] == ["slack", "email"] and res["update"]["seq"] == 2
    assert res["sent"] == [] and json.loads(res["diff"]["after"])["pending"]["seq"] == 2
    assert (tmp_path / "incident.json").read_bytes() == before


def test_corrupt_record_is_named(tmp_path):
    (tmp_path / "incident.json").write_text("{not json")
    with pytest.raises(FediflowError, match="incident record .*incident.json is not JSON"):
        incident.run(_params(tmp_path), now=START)


def test_sms_text_is_cut():
    assert len(notify.sms_text("x" * 2000)) == notify.SMS_MAX


class ClientError(Exception):
    """Shaped like botocore's ClientError (notify matches error classes by name)."""

    def __init__(self, code, status):
        super().__init__(code)
        self.response = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def test_sns_publishes_each_target_retries_throttling_and_names_a_refusal():
    """A scripted stand-in for the SNS client (the real SNS is moto, in the integration tier): the
    retry policy and per-target outcome are what is tested here."""
    calls = []

    class SNS:
        def publish(self, **kw):
            calls.append(kw)
            if len(calls) == 1:
                raise ClientError("Throttling", 400)
            if kw.get("PhoneNumber") == "+15555550199":
                raise ClientError("InvalidParameter", 400)
            return {"MessageId": "m%d" % len(calls)}

    topic = "arn:aws:sns:us-east-1:123456789012:incidents"
    res = notify.send_sns(SNS(), ["+15555550100", "+15555550199"], topic, "subj", "x" * 600, 5, sleep=lambda s: None)
    assert not res["ok"] and set(res["message_ids"]) == {"+15555550100", topic}
    assert "+15555550199 (InvalidParameter" in res["error"] and res["attempts"] == 4
    assert len(calls[0]["Message"]) == notify.SMS_MAX and calls[-1]["Subject"] == "subj"
    assert calls[0]["MessageAttributes"]["AWS.SNS.SMS.SMSType"]["StringValue"] == "Transactional"
