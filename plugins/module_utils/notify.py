# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incident notifications to a Slack incoming webhook, to email through SES (``notify``) and,
for the comms role's incident updates (``incident``), to SMS through SNS.

The escalation level comes from the outage's age and the runbook's matrix (``escalation``,
a pure function the comms role's scheduled status updates reuse). Everything that decides
what is sent (validation, level, recipients, the rendered text, the retry policy) is plain
data and unit-tested without a network; the sending itself runs against the Slack double
and moto in the integration tier.

Each channel has its own deadline (``timeout``, retries included) and all are sent at the
same time (``run_channels``), so a notification never holds a failover up for longer than ``timeout``. The
webhook URL is the secret: it never appears in the result, an error or a warning.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from email.utils import parseaddr
from urllib.parse import urlsplit

from ansible_collections.fediflow.dr.plugins.module_utils import aws
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer, backoff_delay, redact, retry

SEVERITIES = ("critical", "major", "minor", "info")
FAIL_WHEN = ("any_failed", "all_failed")
# the runbook's escalation matrix: 0-30 min on-call, 30-60 min technical lead,
# 60+ min engineering manager, 2 h+ executive team
DEFAULT_MATRIX = (
    {"after_s": 0, "level": "on-call"},
    {"after_s": 1800, "level": "technical lead"},
    {"after_s": 3600, "level": "engineering manager"},
    {"after_s": 7200, "level": "executive team"},
)
SES_MAX_RECIPIENTS = 50  # SES SendEmail: at most 50 recipients per message
FUTURE_SKEW_S = 300  # an outage_started up to this far ahead is clock skew (age 0); further is an error
MAX_BACKOFF_S = 8.0
GRACE_S = 2.0  # past its deadline, a channel stuck in a call (an SES read can block 60 s) is abandoned
SES_RETRY_CODES = frozenset({
    "Throttling", "ThrottlingException", "TooManyRequestsException", "ServiceUnavailable",
    "ServiceUnavailableException", "InternalFailure", "InternalError", "RequestTimeout",
    "RequestTimeoutException", "RequestLimitExceeded"})
SES_RETRY_BOTOCORE = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ProxyConnectionError"})
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
SMS_MAX = 480  # characters of an SMS update (three concatenated parts)


MATRIX_OPTIONS = {
    "after_s": {"type": "int", "required": True},
    "level": {"type": "str", "required": True},
    "recipients": {"type": "list", "elements": "str"},
}


def matrix_argument_spec():
    """The ``escalation_matrix`` option of the modules that escalate (notify, incident)."""
    return {"type": "list", "elements": "dict", "options": MATRIX_OPTIONS,
            "default": [dict(entry) for entry in DEFAULT_MATRIX]}


# ---------------------------------------------------------------- pure helpers

def parse_started(text, now):
    """``outage_started`` (ISO 8601 with a zone, e.g. 2026-11-26T01:00:00Z) as an aware datetime;
    ``now`` when empty. A bare local time is refused: its age would depend on the host's zone."""
    if text is None or str(text).strip() == "":
        return now
    raw = str(text).strip()
    iso = raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise FediflowError("outage_started '%s' is not an ISO 8601 time, e.g. 2026-11-26T01:00:00Z" % raw)
    if when.tzinfo is None or when.utcoffset() is None:
        raise FediflowError("outage_started '%s' has no time zone: add Z or an offset such as +01:00 "
                            "(a bare local time depends on the host's zone)" % raw)
    if (when - now).total_seconds() > FUTURE_SKEW_S:
        raise FediflowError("outage_started '%s' is %ds in the future" % (raw, (when - now).total_seconds()))
    return when


def is_address(text):
    """An email address, optionally with a display name (``Name <a@b.example>``)."""
    address = parseaddr(str(text or ""))[1]
    return bool(address) and bool(_ADDRESS.match(address)) and address.split("@")[1].strip(".") != ""


def _address(text):
    return parseaddr(text)[1]


def check_list(values, option, valid, one, many):
    """``values`` (None: empty) as a list of strings each ``valid``; refused naming ``option`` and the entry."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise FediflowError("%s must be a list of %s" % (option, many))
    for i, value in enumerate(values):
        if not isinstance(value, str) or not valid(value):
            raise FediflowError("%s[%d] '%s' is not %s" % (option, i, value, one))
    return list(values)


def check_addresses(values, option):
    return check_list(values, option, is_address, "an email address", "email addresses")


def validate_matrix(matrix):
    """The escalation matrix as a list of {after_s, level, recipients}; refused unless it starts at
    after_s 0 and is strictly ascending. ``None`` is the runbook's matrix."""
    if matrix is None:
        return [dict(entry, recipients=[]) for entry in DEFAULT_MATRIX]
    if not isinstance(matrix, (list, tuple)) or not matrix:
        raise FediflowError("escalation_matrix must be a non-empty list of {after_s, level, recipients}")
    out = []
    for i, entry in enumerate(matrix):
        where = "escalation_matrix[%d]" % i
        if not isinstance(entry, dict):
            raise FediflowError("%s must be a dict with after_s, level and optional recipients" % where)
        unknown = sorted(set(entry) - {"after_s", "level", "recipients"})
        if unknown:
            raise FediflowError("%s has unknown keys: %s" % (where, ", ".join(unknown)))
        after = entry.get("after_s")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise FediflowError("%s.after_s must be a whole number of seconds >= 0, got %r" % (where, after))
        level = entry.get("level")
        if not isinstance(level, str) or not level.strip():
            raise FediflowError("%s.level must name the level, e.g. 'technical lead'" % where)
        if i == 0 and after != 0:
            raise FediflowError("escalation_matrix[0].after_s must be 0 (the first level applies from the start "
                                "of the outage), got %d" % after)
        if i and after <= out[-1]["after_s"]:
            raise FediflowError("escalation_matrix must be sorted by after_s, ascending and without repeats: "
                                "entry %d (after_s=%d) comes after entry %d (after_s=%d)"
                                % (i, after, i - 1, out[-1]["after_s"]))
        recipients = check_addresses(entry.get("recipients"), where + ".recipients")
        out.append({"after_s": after, "level": level.strip(), "recipients": recipients})
    return out


def escalation(elapsed_s, matrix=DEFAULT_MATRIX):
    """(index, entry) of the level reached after ``elapsed_s`` seconds of outage: the last entry
    whose after_s is <= the age. ``matrix`` is validated (sorted, starting at 0)."""
    index = 0
    for i, entry in enumerate(matrix):
        if elapsed_s >= entry["after_s"]:
            index = i
    return index, matrix[index]


def email_recipients(ses_recipients, matrix, index):
    """``ses_recipients`` plus the recipients of every level reached (0..index), each address once
    (compared without case), in that order."""
    out, seen = [], set()
    for value in list(ses_recipients or []) + [r for entry in matrix[:index + 1] for r in entry.get("recipients") or []]:
        key = _address(value).lower()
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def format_age(seconds):
    """1h 02m 05s / 42m 10s / 9s."""
    total = int(max(0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return "%dh %02dm %02ds" % (hours, minutes, secs)
    if minutes:
        return "%dm %02ds" % (minutes, secs)
    return "%ds" % secs


def iso_utc(when):
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_fields(fields):
    """``fields`` as an ordered list of (key, text); scalars become text, containers are refused."""
    if fields is None:
        return []
    if not isinstance(fields, dict):
        raise FediflowError("fields must be a dict of name: value")
    out = []
    for key, value in fields.items():
        if isinstance(value, (dict, list, tuple, set)):
            raise FediflowError("fields.%s must be a string or a number, not a %s" % (key, type(value).__name__))
        out.append((str(key), "" if value is None else str(value)))
    return out


def render(subject, body, severity, level, elapsed_s, started, fields):
    """(email subject, message text) - the same text goes to Slack and email."""
    title = "[%s] %s" % (severity.upper(), subject.strip())
    lines = [title,
             "Escalation: %s - outage age %s (since %s)" % (level, format_age(elapsed_s), iso_utc(started)),
             "", body.rstrip()]
    if fields:
        lines.append("")
        lines.extend("%s: %s" % (key, value) for key, value in fields)
    return title, "\n".join(lines)


def slack_escape(text):
    """Slack's three control characters (&, <, >) as its docs say to send them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def url_secrets(url):
    """What to mask wherever the webhook URL could show: the URL and its path (the token)."""
    if not url:
        return []
    out = [url]
    path = urlsplit(url).path.rstrip("/")
    if path:
        out.append(path)
        token = path.rsplit("/", 1)[-1]
        if len(token) >= 8:  # Slack's /services/T.../B.../TOKEN: the last part is the secret
            out.append(token)
    return out


def retry_delay(status, retry_after, attempt):
    """Seconds to wait before the next Slack attempt after answer ``status`` (None: no answer),
    or None when the answer is final. 429 honours Retry-After (seconds); 5xx and no answer back
    off exponentially (0.5 s, 1 s, 2 s ... at most MAX_BACKOFF_S)."""
    if status is not None and status != 429 and status < 500:
        return None
    backoff = backoff_delay(attempt, cap=MAX_BACKOFF_S)
    if status == 429 and retry_after is not None:
        try:
            return max(0.0, float(str(retry_after).strip()))
        except ValueError:
            return backoff
    return backoff


def check_webhook_url(url):
    """The webhook URL looks like one (its value is never shown: it is a secret)."""
    parts = urlsplit(str(url))
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise FediflowError("slack_webhook_url must be an https:// URL (the value is not shown: it is a secret)")
    return url


def validate(p, now):
    """Refuse bad input before anything is sent; a normalized plan back."""
    if not str(p.get("subject") or "").strip():
        raise FediflowError("subject must not be empty")
    if not str(p.get("msg") or "").strip():
        raise FediflowError("msg must not be empty (it is the body of the notification)")
    severity = p.get("severity") or "critical"
    if severity not in SEVERITIES:
        raise FediflowError("severity must be one of %s, got '%s'" % (", ".join(SEVERITIES), severity))
    fail_when = p.get("fail_when") or "all_failed"
    if fail_when not in FAIL_WHEN:
        raise FediflowError("fail_when must be one of %s, got '%s'" % (", ".join(FAIL_WHEN), fail_when))
    timeout = p.get("timeout") if p.get("timeout") is not None else 30
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise FediflowError("timeout must be at least 1 second, got %r" % (timeout,))
    url = p.get("slack_webhook_url")
    if url is not None:
        check_webhook_url(url)
    sender = p.get("ses_sender")
    if sender is not None and not is_address(sender):
        raise FediflowError("ses_sender '%s' is not an email address" % sender)
    ses_recipients = check_addresses(p.get("ses_recipients"), "ses_recipients")
    if ses_recipients and not sender:
        raise FediflowError("ses_recipients is set but ses_sender is not: email needs ses_sender "
                            "(a verified SES identity)")
    if not url and not sender:
        raise FediflowError("no channel to notify: set slack_webhook_url, or ses_sender with ses_recipients, "
                            "or both")
    matrix = validate_matrix(p.get("escalation_matrix"))
    started = parse_started(p.get("outage_started"), now)
    elapsed = max(0.0, (now - started).total_seconds())
    index, entry = escalation(elapsed, matrix)
    recipients = email_recipients(ses_recipients, matrix, index)
    if sender and not recipients:
        raise FediflowError("ses_sender is set but nobody is to be emailed: set ses_recipients, or recipients "
                            "on the escalation_matrix level reached (%s)" % entry["level"])
    if len(recipients) > SES_MAX_RECIPIENTS:
        raise FediflowError("%d email recipients (ses_recipients plus escalation_matrix levels reached): SES "
                            "takes at most %d per message" % (len(recipients), SES_MAX_RECIPIENTS))
    fields = check_fields(p.get("fields"))
    title, text = render(str(p["subject"]), str(p["msg"]), severity, entry["level"], elapsed, started, fields)
    secrets = url_secrets(url)
    return {
        "severity": severity, "fail_when": fail_when, "timeout": timeout, "url": url, "sender": sender,
        "matrix": matrix, "started": started, "elapsed_s": round(elapsed, 3), "level_index": index,
        "level": entry["level"], "recipients": recipients, "title": title,
        "text": redact([text], secrets)[0], "secrets": secrets,
    }


def decide(channels, fail_when):
    """The failure message (or None) for the channel outcomes {name: {ok, error}}."""
    failed = [name for name, res in channels.items() if not res.get("ok")]
    if not failed:
        return None
    if fail_when == "all_failed" and len(failed) < len(channels):
        return None
    errors = "; ".join("%s: %s" % (name, channels[name].get("error")) for name in failed)
    if len(failed) == len(channels):
        return "the notification got through on no channel - %s" % errors
    return "the notification failed on %s (fail_when=any_failed) - %s" % (", ".join(failed), errors)


# ---------------------------------------------------------------- Slack

def _read_body(resp_or_err):
    try:
        return resp_or_err.read(2048).decode("utf-8", "replace").strip()
    except Exception:  # pylint: disable=broad-except
        return ""


class SlackAnswer(Exception):
    """One Slack attempt that did not deliver: ``status`` (None: no answer), ``retry_after`` (its header),
    ``last`` (what it said, for the message)."""

    def __init__(self, status, last, retry_after=None):
        super().__init__(last)
        self.status, self.last, self.retry_after = status, last, retry_after


def post_slack(url, text, timeout, secrets, sleep=time.sleep):
    """POST {"text": ...} to the webhook until Slack takes it, a final answer comes, or ``timeout``
    seconds (retries included) pass. {ok, status, attempts, error}; ``error`` never holds the URL."""
    deadline = time.monotonic() + timeout
    data = json.dumps({"text": slack_escape(text)}).encode("utf-8")
    opener = urllib.request.build_opener()  # honours *_proxy from the environment
    answered = {"status": None}

    def attempt():
        status, body, retry_after = None, "", None
        answered["status"] = None
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8",
                                              "User-Agent": "fediflow.dr.notify"})
        try:
            # stdlib only, so this stays usable without Ansible (hence not ansible's open_url)
            with opener.open(req, timeout=max(0.1, deadline - time.monotonic())) as resp:
                status, body = resp.status, _read_body(resp)
        except urllib.error.HTTPError as exc:
            status, body, retry_after = exc.code, _read_body(exc), exc.headers.get("Retry-After")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SlackAnswer(None, "no answer (%s)" % (getattr(exc, "reason", None) or exc))
        answered["status"] = status
        if not 200 <= status < 300:
            raise SlackAnswer(status, "HTTP %d %s" % (status, body[:200]), retry_after)
        return status

    done = retry(attempt, deadline=deadline, sleep=sleep,
                 retryable=lambda exc: isinstance(exc, SlackAnswer) and retry_delay(exc.status, None, 1) is not None,
                 backoff=lambda n, exc: retry_delay(exc.status, exc.retry_after, n))
    res = {"ok": done.ok, "status": answered["status"], "attempts": done.attempts, "error": None}
    if done.ok:
        return res
    if not isinstance(done.error, SlackAnswer):
        raise done.error
    last = done.error.last
    if done.stopped == "final":
        res["error"] = redact(["Slack refused the message (%s), not retried: check slack_webhook_url "
                               "(revoked or mistyped webhook) and the payload" % last.strip()], secrets)[0]
        return res
    if done.error.status == 429 and done.error.retry_after is not None:
        last += " (Retry-After %ss is past the deadline)" % done.error.retry_after
    res["error"] = redact(["Slack did not take the message within timeout=%ss (%d attempts); last: %s"
                           % (timeout, done.attempts, last.strip())], secrets)[0]
    return res


# ---------------------------------------------------------------- SES

def _class_names(exc):
    return {cls.__name__ for cls in type(exc).__mro__}


def channel_client(service, p, needs_region_for):
    """An AWS client of a channel, made before anything is sent so a bad region or profile refuses the run."""
    try:
        return aws.client(service, p, max_attempts=1)  # the retries are ours, bounded by timeout
    except FediflowError:
        raise
    except Exception as exc:  # pylint: disable=broad-except
        names = _class_names(exc)
        if "NoRegionError" in names:
            raise FediflowError("region is needed for %s: set region or AWS_REGION" % needs_region_for)
        if "ProfileNotFound" in names:
            raise FediflowError("profile '%s' is not in the AWS config files" % p.get("profile"))
        if "BotoCoreError" in names:
            raise FediflowError("cannot set up the %s client: %s" % (service.upper(), exc))
        raise


def ses_client(p):
    return channel_client("ses", p, "SES email (ses_sender)")


def _aws_retryable(exc):
    """Throttling, a 5xx or no answer is tried again (a quota is not: it does not pass in seconds)."""
    names = _class_names(exc)
    if "ClientError" in names:
        code, message = aws.error_text(exc)
        return (code in SES_RETRY_CODES or (aws.error_status(exc) or 0) >= 500) and "quota" not in message.lower()
    return bool(names & SES_RETRY_BOTOCORE)


def aws_retrying(call, timeout, refusal, service, sleep=time.sleep):
    """``call()`` (one AWS request) with our own retries (throttling, 5xx, no answer) until ``timeout``
    seconds pass; ``refusal(code, message)`` words a final refusal. {ok, answer, attempts, error}."""
    done = retry(call, deadline=time.monotonic() + timeout, retryable=_aws_retryable, sleep=sleep,
                 backoff=lambda n, _exc: backoff_delay(n, cap=MAX_BACKOFF_S))
    res = {"ok": done.ok, "answer": done.value, "attempts": done.attempts, "error": None}
    if done.ok:
        return res
    exc = done.error
    names = _class_names(exc)
    if "ClientError" in names:
        code, message = aws.error_text(exc)
        if done.stopped == "final":
            res["error"] = refusal(code, message)
            return res
        last = "%s: %s" % (code, message)
    elif names & SES_RETRY_BOTOCORE:
        last = "no answer (%s)" % exc
    elif "NoCredentialsError" in names or "PartialCredentialsError" in names:
        res["error"] = ("no AWS credentials for %s: set access_key and secret_key, profile, or "
                        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" % service)
        return res
    elif "BotoCoreError" in names:
        res["error"] = "%s call failed: %s" % (service, exc)
        return res
    else:
        raise exc
    res["error"] = "%s did not take the message within timeout=%ss (%d attempts); last: %s" % (
        service, timeout, done.attempts, last)
    return res


def send_ses(client, sender, recipients, subject, text, timeout, region, sleep=time.sleep):
    """SendEmail with our own retries (throttling, 5xx, no answer) until ``timeout``. {ok, message_id,
    attempts, error}."""
    res = aws_retrying(
        lambda: client.send_email(
            Source=sender, Destination={"ToAddresses": list(recipients)},
            Message={"Subject": {"Data": subject, "Charset": "UTF-8"},
                     "Body": {"Text": {"Data": text, "Charset": "UTF-8"}}}),
        timeout, lambda code, message: ses_refusal(code, message, sender, region), "SES", sleep=sleep)
    answer = res.pop("answer") or {}
    res["message_id"] = answer.get("MessageId") if res["ok"] else None
    return res


def ses_refusal(code, message, sender, region):
    """One line a person can act on for an SES refusal."""
    where = "region %s" % region if region else "the client's region"
    if code == "MessageRejected" and "not verified" in message.lower():
        return ("SES rejected the message (%s: %s): ses_sender '%s' must be a verified identity in %s, and while "
                "the account is in the SES sandbox so must every recipient" % (code, message, sender, where))
    if code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                "AccessDenied", "AccessDeniedException"):
        return "SES refused the credentials (%s: %s): check access_key / secret_key / profile and ses:SendEmail" % (
            code, message)
    return "SES refused the message (%s: %s)" % (code, message)


# ---------------------------------------------------------------- SMS (SNS)

def check_phone_numbers(values, option):
    """E.164 numbers (+ and 8-15 digits), as SNS Publish takes them."""
    return check_list(values, option, _E164.match, "an E.164 phone number (+ and 8 to 15 digits, e.g. +15555550100)",
                      "E.164 phone numbers, e.g. +15555550100")


def check_topic_arn(value, option):
    if value and not _TOPIC_ARN.match(str(value)):
        raise FediflowError("%s '%s' is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)" % (option, value))
    return value or None


def sms_text(text):
    """An SMS is short: the text cut to SMS_MAX characters (SNS takes 1600 bytes; carriers split at 160)."""
    return text if len(text) <= SMS_MAX else text[:SMS_MAX - 1] + "\u2026"


def sns_client(p):
    return channel_client("sns", p, "SMS through SNS")


def send_sns(client, phone_numbers, topic_arn, subject, text, timeout, sleep=time.sleep):
    """SNS Publish to each phone number (SMS) and to the topic, with our retries, all within ``timeout``.
    {ok (every target took it), message_ids {target: id}, attempts, error}."""
    deadline = time.monotonic() + timeout
    res = {"ok": True, "message_ids": {}, "attempts": 0, "error": None}
    errors = []
    targets = [("PhoneNumber", number) for number in phone_numbers or []]
    if topic_arn:
        targets.append(("TopicArn", topic_arn))
    for kind, target in targets:
        kwargs = {kind: target, "Message": sms_text(text)}
        if kind == "TopicArn":
            kwargs["Subject"] = subject[:100]  # email subscribers of the topic see it; SNS takes <= 100
        else:
            kwargs["MessageAttributes"] = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
        one = aws_retrying(lambda kw=kwargs: client.publish(**kw), max(0.1, deadline - time.monotonic()),
                           lambda code, message: "SNS refused the message to %s (%s: %s)" % (target, code, message),
                           "SNS", sleep=sleep)
        res["attempts"] += one["attempts"]
        if one["ok"]:
            res["message_ids"][target] = (one["answer"] or {}).get("MessageId")
        else:
            errors.append(one["error"])
    if errors:
        res.update(ok=False, error="; ".join(errors))
    return res


def run_channels(jobs, timeout, secrets=()):
    """Run the channel jobs {name: callable -> {ok, error, ...}} at the same time, each bounded by
    ``timeout`` (+ GRACE_S); a job still running then is reported failed, not waited for.
    ({name: outcome with error redacted}, {name: seconds})."""
    outcome, spent, threads = {}, {}, {}
    start = time.monotonic()
    for name, job in jobs.items():
        threads[name] = threading.Thread(target=_run_channel, args=(job, outcome, name, spent), daemon=True)
        threads[name].start()
    grace = start + timeout + GRACE_S
    for name, thread in threads.items():
        thread.join(max(0.0, grace - time.monotonic()))
        if thread.is_alive() or name not in outcome:
            outcome[name] = {"ok": False, "error": "%s did not answer within timeout=%ss; the message may still "
                                                   "be delivered" % (name, timeout)}
        spent.setdefault(name, round(time.monotonic() - start, 3))
        if outcome[name].get("error"):
            outcome[name] = dict(outcome[name], error=redact([outcome[name]["error"]], secrets)[0])
    return outcome, spent


# ---------------------------------------------------------------- the module's entry point

def _diff_text(plan):
    head = []
    if plan["url"]:
        head.append("slack: webhook")
    if plan["sender"]:
        head.append("email from: %s" % plan["sender"])
        head.append("email to: %s" % ", ".join(plan["recipients"]))
        head.append("subject: %s" % plan["title"])
    return "\n".join(head + ["", plan["text"], ""])


def _run_channel(job, out, name, spent):
    t0 = time.monotonic()
    try:
        out[name] = job()
    except Exception as exc:  # pylint: disable=broad-except
        out[name] = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
    spent[name] = round(time.monotonic() - t0, 3)


def send(p, check_mode=False, warn=None, now=None, ses=None):
    """Send the notification (see the module documentation); a plain dict back.

    ``now`` (aware datetime) is for scheduled callers and tests; ``ses`` an SES client to use.
    ``warn`` receives warning sentences (the module passes ``module.warn``); without it they are
    collected in the result's ``warnings`` list.
    """
    timer = Timer()
    now = now or datetime.now(timezone.utc)
    plan = validate(p, now)
    result = {
        "changed": True, "level": plan["level"], "level_index": plan["level_index"],
        "elapsed_s": plan["elapsed_s"], "outage_started": iso_utc(plan["started"]),
        "severity": plan["severity"], "recipients": plan["recipients"], "subject": plan["title"],
        "text": plan["text"], "channels": {},
        "diff": {"before": "", "after": _diff_text(plan)},
    }
    if warn is None:
        def warn(text):
            result.setdefault("warnings", []).append(text)
    jobs = {}
    if plan["url"]:
        result["channels"]["slack"] = {"ok": None, "status": None, "attempts": 0, "error": None}
        jobs["slack"] = lambda: post_slack(plan["url"], plan["text"], plan["timeout"], plan["secrets"])
    if plan["sender"]:
        result["channels"]["ses"] = {"ok": None, "message_id": None, "attempts": 0, "error": None}
        if not check_mode:
            client = ses if ses is not None else ses_client(p)
            region = getattr(getattr(client, "meta", None), "region_name", None) or p.get("region")
            jobs["ses"] = lambda: send_ses(client, plan["sender"], plan["recipients"], plan["title"], plan["text"],
                                           plan["timeout"], region)
    if check_mode:
        result["duration_s"] = timer.elapsed()
        return result

    # both channels at once, each bounded by its own deadline; a call that hangs past it
    # (an SES read can block longer than timeout) is reported, not waited for
    outcome, spent = run_channels(jobs, plan["timeout"], plan["secrets"])
    for name in jobs:
        timer.phases[name] = spent[name]
        res = dict(result["channels"][name], **outcome[name])
        res["error"] = res.get("error") or None
        result["channels"][name] = res

    channels = result["channels"]
    result["changed"] = any(res["ok"] for res in channels.values())
    result.update(duration_s=timer.elapsed(), phases=timer.phases)
    failure = decide(channels, plan["fail_when"])
    if failure:
        raise FediflowError(redact([failure], plan["secrets"])[0], result=result)
    for name, res in channels.items():  # a failure the task does not fail on must still be seen
        if not res["ok"]:
            warn("the %s notification failed (others got through): %s" % (name, res["error"]))
    return result
