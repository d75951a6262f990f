#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: incident
short_description: Open, update on a schedule, close an incident and tell people (Slack, email, SMS, status page)
version_added: 0.3.0
description:
  - "The runbook's communication plan: a first notification within 15 minutes, a status update every
    30 minutes (O(update_interval_s)), escalation by the outage's age (O(escalation_matrix), the same
    matrix as M(fediflow.dr.incident_notify)), to every channel of O(channels): Slack (incoming webhook), email
    (SES), SMS (SNS: phone numbers and/or a topic) and a status page (C(status.json) and C(index.html)
    published to S3)."
  - "An incident is a record (one JSON document) kept where a scheduled job can read it: a local file
    (O(store=file), O(path); mode 0600, written atomically) or an S3 object (O(store=s3), O(s3_bucket),
    O(s3_key); SSE-S3)."
  - "O(state=open) creates the record and sends the first notification (a record already open is left
    as it is). O(state=update), meant for a schedule, sends an update only when one is due: the escalation
    level rose, or O(update_interval_s) passed since the last update; otherwise it sends nothing.
    O(state=close) sends the resolution and closes the record. O(state=status) only reads."
  - "Never the same update twice: the run first claims the update by writing the record on the version it
    read (a file under an exclusive lock, S3 with C(If-Match) / C(If-None-Match) conditional writes), sends,
    then records each channel's delivery. A concurrent run that read the same version loses the claim and
    sends nothing; a channel that failed is retried by the next run, the others are not sent again. A run
    killed while sending leaves a claim whose lease expires (O(timeout) + 32 s); the next run re-sends the
    channels not recorded as delivered."
  - "The time from the outage's start to the first notification that got through is measured
    (RV(first_notification_s)), for the runbook's 15-minute objective."
  - The webhook URL is a secret; it never appears in the result, the record, errors or warnings.
  - Check mode reads the record and returns the update that would be sent (RV(update), RV(channels)) and the
    record that would be written (with C(--diff)); nothing is written or sent.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.aws
  - fediflow.dr.escalation
  - fediflow.dr.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The incident record before and after (JSON).
  idempotent:
    support: full
    details: A second run sends nothing until the next update is due; open and close of an incident already opened or closed change nothing.
options:
  state:
    description:
      - V(open) an incident (first notification), V(update) it when an update is due, V(close) it
        (resolution sent), or only report its V(status).
    type: str
    choices: [ open, update, close, status ]
    default: update
  store:
    description: Where the incident record is kept.
    type: str
    choices: [ file, s3 ]
    default: file
  path:
    description: The record's file with O(store=file) (its directory is created 0700).
    type: path
  s3_bucket:
    description: The record's bucket with O(store=s3) (private; its region is O(region)).
    type: str
  s3_key:
    description: The record's key with O(store=s3), for example C(incidents/current.json).
    type: str
  channels:
    description:
      - The channels to tell. Each needs its settings - V(slack) O(slack_webhook_url), V(email) O(ses_sender) and
        recipients, V(sms) O(sms_phone_numbers) or O(sms_topic_arn), V(status_page) O(status_page_bucket).
    type: list
    elements: str
    choices: [ slack, email, sms, status_page ]
    default: []
  subject:
    description: Title of the incident (needed to open it); every message starts with it.
    type: str
  msg:
    description:
      - The incident's summary (needed to open it). With O(state=update) or O(state=close), a new summary
        (for example what was resolved); the record's summary otherwise.
    type: str
  severity:
    description: Severity of a new incident.
    type: str
    choices: [ critical, major, minor, info ]
    default: critical
  outage_started:
    description:
      - When the outage started (ISO 8601 with a zone) when the incident is opened; now when omitted.
        The escalation level and the first-notification time are measured from it.
    type: str
  fields:
    description: "Facts shown as C(name: value) lines in every message, for example the regions."
    type: dict
  update_interval_s:
    description: Seconds between status updates (the runbook's 30 minutes); at least 60.
    type: int
    default: 1800
  notify:
    description:
      - Send the opening / resolution message. V(false) only records the incident (O(state=open)) or
        closes it quietly (O(state=close)).
    type: bool
    default: true
  notified_channels:
    description:
      - With O(state=open), channels that got the first notification already (for example from
        M(fediflow.dr.incident_notify) during a failover), at O(notified_at). They are recorded as delivered and
        not sent again; the other channels are.
    type: list
    elements: str
    choices: [ slack, email, sms, status_page ]
    default: []
  notified_at:
    description: When the first notification of O(notified_channels) went out (ISO 8601 with a zone).
    type: str
  slack_webhook_url:
    description: The Slack incoming webhook (a secret).
    type: str
  ses_sender:
    description: Email C(Source), a verified SES identity in O(region).
    type: str
  ses_recipients:
    description: Addresses that always get email, before those of the levels reached.
    type: list
    elements: str
  sms_phone_numbers:
    description: E.164 phone numbers (C(+15555550100)) that get each message as SMS through SNS C(Publish).
    type: list
    elements: str
  sms_topic_arn:
    description: An SNS topic that gets each message (its subscribers - SMS, email, chat - receive it).
    type: str
  status_page_bucket:
    description: The bucket of the status page (C(status.json) and C(index.html), content type C(text/html)).
    type: str
  status_page_prefix:
    description: Key prefix of the status page in O(status_page_bucket).
    type: str
    default: status
  fail_when:
    description:
      - V(all_failed) fails the task only when no channel got the update through; V(any_failed) when any failed;
        V(never) only warns (for a caller that must not stop, such as a failover).
      - A failed channel stays pending in the record either way and the next run retries it.
    type: str
    choices: [ any_failed, all_failed, never ]
    default: all_failed
  timeout:
    description: Seconds each channel may take, retries included.
    type: int
    default: 30
notes:
  - "One incident per record location: opening over a closed record starts a new incident (the closed
    one is replaced)."
  - "S3 conditional writes (C(If-None-Match) since August 2024, C(If-Match) since November 2024) make the
    claim atomic on AWS. moto accepts both but checks and writes in two steps, so two writes in the same
    instant can both pass there; the file store's lock is atomic everywhere."
seealso:
  - module: fediflow.dr.incident_notify
"""

EXAMPLES = r"""
- name: Open the incident (Slack and email got the first notification from the failover already)
  fediflow.dr.incident:
    state: open
    path: /var/lib/fediflow/incident.json
    subject: "Region failover us-east-1 -> eu-west-1"
    msg: "us-east-1 is unreachable; production runs in eu-west-1."
    outage_started: "2026-11-26T01:00:00Z"
    channels: [slack, email, sms, status_page]
    notified_channels: [slack, email]
    notified_at: "2026-11-26T01:04:10Z"
    slack_webhook_url: "{{ vault_slack_webhook_url }}"
    ses_sender: dr@fediflow.example
    ses_recipients: [sre@fediflow.example]
    sms_phone_numbers: ["+15555550100"]
    status_page_bucket: fediflow-status
    region: us-east-1

- name: The scheduled status update (sends only when one is due)
  fediflow.dr.incident:
    state: update
    store: s3
    s3_bucket: fediflow-incidents
    s3_key: incidents/current.json
    channels: [slack, status_page]
    slack_webhook_url: "{{ vault_slack_webhook_url }}"
    status_page_bucket: fediflow-status
    region: eu-west-1
  register: update

- name: Close it
  fediflow.dr.incident:
    state: close
    path: /var/lib/fediflow/incident.json
    msg: "Production is back in us-east-1."
    channels: [slack]
    slack_webhook_url: "{{ vault_slack_webhook_url }}"
"""

RETURN = r"""
status:
  description: The incident's status after the run - V(open), V(closed), or V(none) (no record).
  returned: always
  type: str
  sample: open
incident_id:
  description: The incident's id (from its start time).
  returned: always
  type: str
  sample: inc-20261126T010000Z
level:
  description: The escalation level reached (of the last update for a closed incident).
  returned: always
  type: str
  sample: technical lead
level_index:
  description: Index of RV(level) in O(escalation_matrix).
  returned: always
  type: int
  sample: 1
age_s:
  description: Seconds from the outage's start to now (to the close for a closed incident).
  returned: always
  type: float
  sample: 2710.2
next_update_due:
  description: When the next update is due (UTC), the interval or the next escalation level, whichever first; null when closed.
  returned: always
  type: str
  sample: "2026-11-26T01:59:10.000Z"
first_notification_s:
  description: Seconds from the outage's start to the first notification that got through (null before it).
  returned: always
  type: float
  sample: 250.4
why:
  description: Why this run sent (the update's reason) or did not send.
  returned: always
  type: str
  sample: "nothing due (next update by 2026-11-26T01:59:10.000Z)"
update:
  description: The update sent (or that would be sent) - C(seq), C(reason), C(level), C(subject), C(text); null when none.
  returned: always
  type: dict
  sample: {seq: 2, reason: interval, level: technical lead, subject: "[CRITICAL] Region failover - update #2", text: "..."}
channels:
  description: The channels this run sends to (or would, in check mode).
  returned: always
  type: list
  elements: str
  sample: [slack, email, sms, status_page]
sent:
  description: The channels that took the update.
  returned: always
  type: list
  elements: str
  sample: [slack, email, sms, status_page]
failed_channels:
  description: Channel -> error for the channels that failed (retried by the next run).
  returned: always
  type: dict
  sample: {}
incident:
  description: The incident record (after the run; what would be written in check mode). No secret.
  returned: always
  type: dict
store:
  description: Where the record is (file path or s3:// URL).
  returned: always
  type: str
  sample: s3://fediflow-incidents/incidents/current.json
phases:
  description: Seconds spent reading, claiming, sending and committing.
  returned: when something was sent
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import incident, notify
from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    spec = aws_common_argument_spec()
    spec.update(
        state={"type": "str", "default": "update", "choices": list(incident.STATES)},
        store={"type": "str", "default": "file", "choices": list(incident.STORES)},
        path={"type": "path"},
        s3_bucket={"type": "str"},
        s3_key={"type": "str", "no_log": False},
        channels={"type": "list", "elements": "str", "default": [], "choices": list(incident.CHANNELS)},
        subject={"type": "str"},
        msg={"type": "str"},
        severity={"type": "str", "default": "critical", "choices": list(notify.SEVERITIES)},
        outage_started={"type": "str"},
        fields={"type": "dict"},
        escalation_matrix=notify.matrix_argument_spec(),
        update_interval_s={"type": "int", "default": 1800},
        notify={"type": "bool", "default": True},
        notified_channels={"type": "list", "elements": "str", "default": [], "choices": list(incident.CHANNELS)},
        notified_at={"type": "str"},
        slack_webhook_url={"type": "str", "no_log": True},
        ses_sender={"type": "str"},
        ses_recipients={"type": "list", "elements": "str"},
        sms_phone_numbers={"type": "list", "elements": "str"},
        sms_topic_arn={"type": "str"},
        status_page_bucket={"type": "str"},
        status_page_prefix={"type": "str", "default": "status"},
        fail_when={"type": "str", "default": "all_failed", "choices": list(incident.FAIL_WHEN)},
        timeout={"type": "int", "default": 30},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_if=[["store", "file", ["path"]], ["store", "s3", ["s3_bucket", "s3_key"]]])
    run_module(module, incident.run, dict(module.params), check_mode=module.check_mode, warn=module.warn)


if __name__ == "__main__":
    main()
