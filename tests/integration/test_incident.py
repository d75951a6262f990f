"""fediflow.dr.incident and playbooks/incident_update.yml driven through ansible like a user does,
without the shared lab.

Faked: Slack is the lab's webhook receiver double (started on a free port per test; POST /_fail
makes the next posts fail); SES, SNS and S3 are a private moto_server on a free port for this file.
What was delivered is checked independently of the module's result, over HTTP only (moto runs in
server mode): the double's request record; moto's backend models at GET /moto-api/data.json -
``ses.Message`` (every email), ``sns.SMS`` (every SMS to a phone number); the SES quota's
SentLast24Hours; the status page fetched as a browser would (GET /bucket/key, its Content-Type).
Times in the past are made by writing the incident record with older times (the module has no
clock override): ``shift()`` moves every time in the record back.
"""
import json
import os
import stat
import subprocess
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from doubles_fixtures import start_moto
from lab_fixtures import BIN, ROOT, ansible_env, module, playbook

MODULE = "fediflow.dr.incident"
TOKEN = "tok%s" % uuid.uuid4().hex
SENDER = "dr@fediflow.example"
REGION = "us-east-1"
PHONE = "+15555550142"
PAGE_BUCKET = "fediflow-test-status"
RECORD_BUCKET = "fediflow-test-incidents"
MATRIX = [{"after_s": 0, "level": "on-call engineer", "recipients": []},
          {"after_s": 1800, "level": "technical lead", "recipients": ["tech-lead@fediflow.example"]},
          {"after_s": 3600, "level": "engineering manager", "recipients": ["eng-manager@fediflow.example"]},
          {"after_s": 7200, "level": "executive team", "recipients": ["exec@fediflow.example"]}]
AWS = {"region": REGION, "access_key": "testing", "secret_key": "testing"}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A private moto_server: the SES sender verified, the status page and record buckets made."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    kw = dict(region_name=REGION, endpoint_url=server.url, aws_access_key_id="testing", aws_secret_access_key="testing")
    boto3.client("ses", **kw).verify_email_identity(EmailAddress=SENDER)
    s3 = boto3.client("s3", **kw)
    for bucket in (PAGE_BUCKET, RECORD_BUCKET):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_policy(Bucket=PAGE_BUCKET, Policy=json.dumps(public_read(PAGE_BUCKET)))
    yield {"server": server, "url": server.url, "ses": boto3.client("ses", **kw), "s3": s3}
    server.stop()


def public_read(bucket):
    """The status page is public: anyone may GET its objects (the record's bucket stays private)."""
    statement = {"Sid": "PublicStatusPage", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                 "Resource": "arn:aws:s3:::%s/*" % bucket}
    return {"Version": "2012-10-17", "Statement": [statement]}


def observed(moto, double, tag):
    """What went out about the incident ``tag``: (slack texts, emails, SMS texts), each seen outside the module."""
    data = moto["server"].data()
    mails = [m for m in data.get("ses", {}).get("Message", []) if tag in m["subject"]]
    sms = [m for m in data.get("sns", {}).get("SMS", []) if tag in m["message"]]
    slack = [r["body"]["text"] for r in double.requests()  # taken (200); a post the double failed is not delivered
             if r["path"].startswith("/services/") and r["status"] == 200 and tag in r["body"]["text"]]
    return slack, mails, sms


def args(tmp_path, double, moto, **kw):
    tag = uuid.uuid4().hex[:10]
    out = {"path": str(tmp_path / "incident.json"), "channels": ["slack", "email", "sms", "status_page"],
           "subject": "Region failover %s" % tag, "msg": "us-east-1 is unreachable.", "escalation_matrix": MATRIX,
           "slack_webhook_url": "%s/services/T0TEST/B0TEST/%s" % (double.url, TOKEN),
           "ses_sender": SENDER, "ses_recipients": ["sre@fediflow.example"], "sms_phone_numbers": [PHONE],
           "status_page_bucket": PAGE_BUCKET, "status_page_prefix": "status-%s" % tag, "endpoint_url": moto["url"],
           "timeout": 10}
    out.update(AWS)
    out.update(kw)
    return tag, out


def run(a, **kw):
    res = module(MODULE, a, **kw)
    assert TOKEN not in json.dumps(res), res
    return res


def ago(minutes):
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def shift(path, minutes):
    """Rewrite the record with every time ``minutes`` earlier (as if written that long ago)."""
    def back(value):
        if isinstance(value, dict):
            return {k: back(v) for k, v in value.items()}
        if isinstance(value, list):
            return [back(v) for v in value]
        if isinstance(value, str) and len(value) >= 20 and value[4] == "-" and value[10] == "T" and value.endswith("Z"):
            when = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
            return (when - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return value
    path.write_text(json.dumps(back(json.loads(path.read_text())), indent=2))


def quota(moto):
    return moto["ses"].get_send_quota()["SentLast24Hours"]


def page(moto, prefix, name):
    with urllib.request.urlopen("%s/%s/%s/%s" % (moto["url"], PAGE_BUCKET, prefix, name), timeout=10) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def test_open_tells_every_channel_once_and_measures_the_first_notification(tmp_path, slack_double, moto):
    tag, a = args(tmp_path, slack_double, moto, state="open", outage_started=ago(5))
    sent_before = quota(moto)
    res = run(a)
    assert res["changed"] and not res.get("failed") and res["sent"] == ["slack", "email", "sms", "status_page"], res
    assert res["status"] == "open" and res["level"] == "on-call engineer" and res["update"]["seq"] == 1
    assert 300 <= res["first_notification_s"] < 300 + 120, res["first_notification_s"]
    slack, mails, sms = observed(moto, slack_double, tag)
    assert len(slack) == 1 and slack[0].startswith("[CRITICAL] Region failover %s\nEscalation: on-call engineer" % tag)
    assert len(mails) == 1 and mails[0]["destinations"]["ToAddresses"] == ["sre@fediflow.example"]
    assert len(sms) == 1 and sms[0]["phone_number"] == PHONE and quota(moto) == sent_before + 1
    ctype, body = page(moto, "status-%s" % tag, "index.html")
    assert ctype.startswith("text/html") and "Region failover %s" % tag in body and "investigating" in body
    ctype, body = page(moto, "status-%s" % tag, "status.json")
    doc = json.loads(body)
    assert ctype == "application/json" and doc["status"] == "investigating" and doc["incident"] == res["incident_id"]
    record = tmp_path / "incident.json"
    assert stat.S_IMODE(os.stat(record).st_mode) == 0o600
    assert TOKEN not in record.read_text() and json.loads(record.read_text())["pending"] is None

    again = run(a)  # open again: the incident exists, nothing is sent
    assert not again["changed"] and again["incident_id"] == res["incident_id"]
    nothing = run(dict(a, state="update"))  # the scheduled run right after: nothing due
    assert not nothing["changed"] and nothing["why"].startswith("nothing due") and nothing["sent"] == []
    assert [len(x) for x in observed(moto, slack_double, tag)] == [1, 1, 1] and quota(moto) == sent_before + 1


def test_an_update_is_due_after_the_interval(tmp_path, slack_double, moto):
    tag, a = args(tmp_path, slack_double, moto, state="open", outage_started=ago(64))
    assert run(a)["level"] == "engineering manager"
    shift(tmp_path / "incident.json", 29)  # last update 29 min ago, outage 93 min: same level
    res = run(dict(a, state="update"))
    assert not res["changed"] and [len(x) for x in observed(moto, slack_double, tag)] == [1, 1, 1]
    shift(tmp_path / "incident.json", 1)  # 30 min ago now
    check = run(dict(a, state="update"), check_mode=True, diff=True)
    assert check["changed"] and check["channels"] == ["slack", "email", "sms", "status_page"] and check["sent"] == []
    assert [len(x) for x in observed(moto, slack_double, tag)] == [1, 1, 1]  # check mode sent nothing
    res = run(dict(a, state="update"))
    assert res["changed"] and res["why"] == "interval" and res["update"]["seq"] == 2, res
    slack, mails, sms = observed(moto, slack_double, tag)
    assert len(slack) == len(mails) == len(sms) == 2 and "update #2" in slack[1]
    assert mails[1]["destinations"]["ToAddresses"] == [
        "sre@fediflow.example", "tech-lead@fediflow.example", "eng-manager@fediflow.example"]
    assert not run(dict(a, state="update"))["changed"]


def test_a_level_change_sends_at_once_and_a_failed_channel_is_retried_alone(tmp_path, slack_double, moto):
    tag, a = args(tmp_path, slack_double, moto, state="open", outage_started=ago(25))
    run(a)
    shift(tmp_path / "incident.json", 6)  # outage 31 min, last update 6 min ago: technical lead now
    req = urllib.request.Request(slack_double.url + "/_fail", data=json.dumps({"count": 1, "status": 400}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=5).close()
    res = run(dict(a, state="update"))
    assert res["why"] == "level: technical lead" and res["sent"] == ["email", "sms", "status_page"], res
    assert "slack" in res["failed_channels"] and any("slack update failed" in w for w in res["warnings"])
    emails_before = quota(moto)
    retry = run(dict(a, state="update"))
    assert retry["why"] == "retry of update #2" and retry["channels"] == ["slack"] and retry["sent"] == ["slack"]
    slack, mails, sms = observed(moto, slack_double, tag)
    assert len(slack) == 2 and "Escalation: technical lead" in slack[1] and "update #2" in slack[1]
    assert len(mails) == len(sms) == 2 and quota(moto) == emails_before  # email and SMS were not sent again
    assert not run(dict(a, state="update"))["changed"]


def test_concurrent_scheduled_runs_send_one_update(tmp_path, slack_double, moto):
    tag, a = args(tmp_path, slack_double, moto, state="open", outage_started=ago(64), channels=["slack"])
    run(a)
    shift(tmp_path / "incident.json", 31)
    argv = [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", MODULE,
            "-a", json.dumps(dict(a, state="update")), "-e", "ansible_python_interpreter=%s" % (BIN / "python")]
    procs = [subprocess.Popen(argv, cwd=ROOT, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _run in range(4)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    slack, _mails, _sms = observed(moto, slack_double, tag)
    assert len(slack) == 2 and "update #2" in slack[1], slack
    assert sum("changed: true" in out for out in outputs) == 1, outputs


def test_close_then_nothing_and_the_page_says_resolved(tmp_path, slack_double, moto):
    tag, a = args(tmp_path, slack_double, moto, state="open", outage_started=ago(3))
    run(a)
    res = run(dict(a, state="close", msg="Production is back in us-east-1."))
    assert res["changed"] and res["status"] == "closed" and res["update"]["reason"] == "resolved"
    assert not run(dict(a, state="close"))["changed"] and not run(dict(a, state="update"))["changed"]
    slack, mails, sms = observed(moto, slack_double, tag)
    assert len(slack) == len(mails) == len(sms) == 2 and "Resolved: Region failover" in slack[1]
    doc = json.loads(page(moto, "status-%s" % tag, "status.json")[1])
    assert doc["status"] == "resolved" and doc["summary"] == "Production is back in us-east-1."


def test_s3_store_keeps_the_record_private_and_encrypted(tmp_path, slack_double, moto):
    key = "incidents/%s.json" % uuid.uuid4().hex[:8]
    tag, a = args(tmp_path, slack_double, moto, state="open", outage_started=ago(2), channels=["slack"],
                  store="s3", s3_bucket=RECORD_BUCKET, s3_key=key)
    del a["path"]
    res = run(a)
    assert res["changed"] and res["store"] == "s3://%s/%s" % (RECORD_BUCKET, key)
    head = moto["s3"].head_object(Bucket=RECORD_BUCKET, Key=key)
    assert head["ServerSideEncryption"] == "AES256" and head["ContentType"] == "application/json"
    record = json.loads(moto["s3"].get_object(Bucket=RECORD_BUCKET, Key=key)["Body"].read())
    assert record["id"] == res["incident_id"] and TOKEN not in json.dumps(record)
    assert not run(dict(a, state="update"))["changed"]
    assert len(observed(moto, slack_double, tag)[0]) == 1
    missing = run(dict(a, s3_bucket="no-such-incident-bucket"))
    assert missing["failed"] and "s3_bucket 'no-such-incident-bucket' does not exist" in missing["msg"]


@pytest.mark.parametrize("change, message", [
    ({"channels": ["slack", "pager"]}, "channels"),
    ({"slack_webhook_url": None}, "channels includes slack but slack_webhook_url is not set"),
    ({"escalation_matrix": [{"after_s": 60, "level": "a"}]}, "escalation_matrix[0].after_s must be 0"),
    ({"escalation_matrix": [{"after_s": 0, "level": "a"}, {"after_s": 0, "level": "b"}]}, "escalation_matrix must be sorted"),
    ({"sms_phone_numbers": ["555-0100"]}, "sms_phone_numbers[0] '555-0100' is not an E.164"),
])
def test_bad_input_is_refused_and_nothing_is_sent(tmp_path, slack_double, moto, change, message):
    tag, a = args(tmp_path, slack_double, moto, state="open")
    a.update(change)
    a = {k: v for k, v in a.items() if v is not None}
    sent_before = quota(moto)
    res = run(a)
    assert res["failed"] and message in res["msg"], res
    assert [len(x) for x in observed(moto, slack_double, tag)] == [0, 0, 0] and quota(moto) == sent_before
    assert not (tmp_path / "incident.json").exists()


def said(proc):
    """The play's output with YAML's line wrapping undone."""
    return " ".join(proc.stdout.split())


@pytest.mark.slow
def test_the_scheduled_playbook(tmp_path, slack_double, moto):
    """playbooks/incident_update.yml with the lab inventory's comms variables, pointed by -e at the
    private moto, the Slack double and a record under tmp_path."""
    tag = uuid.uuid4().hex[:10]
    extra = {"fediflow_aws_endpoint_url": moto["url"], "fediflow_aws_access_key": "testing",
             "fediflow_aws_secret_key": "testing", "fediflow_comms_region": REGION,
             "fediflow_slack_webhook_url": "%s/services/T0TEST/B0TEST/%s" % (slack_double.url, TOKEN),
             "fediflow_ses_sender": SENDER, "fediflow_status_page_bucket": PAGE_BUCKET,
             "fediflow_incident_path": str(tmp_path / "incident.json")}
    e = ["-e", json.dumps(extra)]
    proc, _took = playbook("incident_update.yml", *e)
    assert "incident none (none): no open incident" in said(proc), proc.stdout
    proc, _took = playbook("incident_update.yml", *e, "-e", json.dumps({
        "incident_state": "open", "comms_subject": "Drill %s" % tag, "comms_msg": "A drill.",
        "comms_outage_started": ago(1)}))
    assert "sent to slack, email, sms, status_page" in said(proc), proc.stdout
    proc, _took = playbook("incident_update.yml", *e)
    assert "nothing due" in said(proc) and "sent to no channel" in said(proc), said(proc)
    proc, _took = playbook("incident_update.yml", *e, "-e", "incident_state=status")
    assert "level on-call engineer" in said(proc)
    slack, mails, sms = observed(moto, slack_double, tag)
    assert len(slack) == len(mails) == len(sms) == 1
    assert mails[0]["destinations"]["ToAddresses"] == ["oncall@fediflow-lab.example"]  # the lab's recipients
    proc, _took = playbook("incident_update.yml", *e, "-e", "incident_state=nonsense", check=False)
    assert proc.returncode != 0 and "incident_state must be open, update, close or status" in said(proc)


S3_CAS = r"""
import json, sys
import boto3
from ansible_collections.fediflow.dr.plugins.module_utils import incident
url, bucket, key = sys.argv[1:4]
client = boto3.client("s3", region_name="us-east-1", endpoint_url=url,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
store = incident.S3Store({}, bucket, key, client=client)
record = {"schema": incident.SCHEMA, "id": "inc-cas", "n": 1}
out = {}
def attempt(name, rec, version):
    try:
        out[name] = store.save(rec, version)
    except incident.Conflict:
        out[name] = "conflict"
attempt("create", record, None)
attempt("create_again", record, None)
attempt("replace", dict(record, n=2), out["create"])
attempt("replace_stale", dict(record, n=3), out["create"])
out["stored"] = store.load()[0]["n"]
print(json.dumps(out))
"""


def test_s3_store_compare_and_swap_on_moto(moto):
    """The S3 store's conditional writes, driven directly (module_utils from the collection copy, boto3 to
    the private moto): a create over an existing record and a replace on a stale ETag are conflicts, so a
    claim that lost the race writes nothing. On AWS these checks are atomic; moto checks then writes."""
    key = "incidents/cas-%s.json" % uuid.uuid4().hex[:8]
    env = dict(ansible_env(), PYTHONPATH=str(ROOT / ".build" / "collections"))
    proc = subprocess.run([str(BIN / "python"), "-c", S3_CAS, moto["url"], RECORD_BUCKET, key], env=env,
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["create"].startswith('"') and out["create_again"] == "conflict"
    assert out["replace"] not in ("conflict", out["create"]) and out["replace_stale"] == "conflict"
    assert out["stored"] == 2


def test_never_lets_the_play_go_on_when_the_record_cannot_be_written(tmp_path, slack_double, moto):
    """comms_fail_when=never (what region_failover and failback.yml pass): a missing record bucket is said, not
    raised; without it the play fails naming the bucket."""
    extra = {"fediflow_aws_endpoint_url": moto["url"], "fediflow_aws_access_key": "testing",
             "fediflow_aws_secret_key": "testing", "fediflow_comms_region": REGION, "fediflow_comms_channels": ["slack"],
             "fediflow_slack_webhook_url": "%s/services/T0TEST/B0TEST/%s" % (slack_double.url, TOKEN),
             "fediflow_incident_store": "s3", "fediflow_incident_s3_bucket": "no-such-incident-bucket",
             "incident_state": "open", "comms_subject": "S", "comms_msg": "M"}
    proc, _took = playbook("incident_update.yml", "-e", json.dumps(dict(extra, comms_fail_when="never")), check=False)
    assert proc.returncode == 0 and "the play goes on (comms_fail_when=never)" in said(proc), said(proc)
    assert "no-such-incident-bucket'' does not exist" in said(proc)  # YAML doubles the quotes
    proc, _took = playbook("incident_update.yml", "-e", json.dumps(extra), check=False)
    assert proc.returncode != 0 and "s3_bucket" in said(proc) and "no-such-incident-bucket" in said(proc)
    assert "does not exist (the incident record" in said(proc)
    assert [r for r in slack_double.requests() if r["path"].startswith("/services/")] == []
