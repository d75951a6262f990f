#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: incident_notify
short_description: Send an incident notification to Slack and email (SES), escalated by the outage's age
version_added: 0.2.0
description:
  - Sends one message to a Slack incoming webhook (O(slack_webhook_url)) and/or as an email through
    Amazon SES C(SendEmail) (O(ses_sender), O(ses_recipients)). At least one channel is needed.
  - "The escalation level comes from the outage's age (now minus O(outage_started)) and
    O(escalation_matrix): the last level whose C(after_s) the age has reached. The runbook's
    matrix is the default: 0-30 min on-call, 30-60 min technical lead, from 60 min engineering
    manager, from 2 h executive team (29:59 is on-call, 30:00 technical lead)."
  - Email goes to O(ses_recipients) plus the C(recipients) of every level reached so far, each
    address once.
  - "The text, the same for both channels: C([SEVERITY] subject), the level with the outage's age,
    O(msg), then one C(name: value) line per entry of O(fields)."
  - "Slack: C(POST {\"text\": ...}) with Python's C(urllib). HTTP 429 is retried after its
    C(Retry-After), 5xx and no answer with exponential back-off (0.5 s, 1 s, 2 s ... at most 8 s),
    until O(timeout); any other 4xx is final for that channel. SES: throttling, 5xx and no answer
    are retried the same way; a refusal (unverified sender, bad credentials) is final."
  - Both channels are sent at the same time, each within its own O(timeout) (retries included),
    so the module takes about O(timeout) at most. A channel still waiting for an answer 2 s past
    its deadline is reported as failed (its message may still arrive) and no longer waited for.
  - "A failed channel is listed in RV(channels) with its error and gives a warning. With
    O(fail_when=all_failed) (the default) the module fails only when no channel got the message
    through: a notification problem must not abort a failover that another channel reported."
  - The webhook URL is a secret; it never appears in the result, errors or warnings.
  - Check mode sends nothing and returns what would be sent (C(changed=true), as a notification would be sent).
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
    details: The diff shows the channels, the email recipients and the text sent (or that would be sent).
  idempotent:
    support: none
    details: Every run sends a notification, as every run of an incident update should.
options:
  subject:
    description: Subject of the notification (the email's subject after the C([SEVERITY]) prefix).
    type: str
    required: true
  msg:
    description: The body text (named as in M(community.general.slack)).
    type: str
    required: true
  severity:
    description: Severity of the incident, shown as C([CRITICAL]) etc. in front of the subject.
    type: str
    choices: [ critical, major, minor, info ]
    default: critical
  outage_started:
    description:
      - When the outage started, ISO 8601 with a time zone, for example C(2026-11-26T01:00:00Z) or
        C(2026-11-26T02:00:00+01:00). A time without a zone is refused.
      - A time more than 5 minutes in the future is refused; less is taken as clock skew (age 0).
      - When omitted, now (age 0, the first level).
    type: str
  slack_webhook_url:
    description:
      - URL of the Slack incoming webhook. It is the secret that lets anyone post to the channel.
    type: str
  ses_sender:
    description:
      - Email C(Source), a verified SES identity in O(region) (for example C(FediFlow DR <dr@fediflow.example>)).
        Enables the email channel.
    type: str
  ses_recipients:
    description:
      - Email addresses that always get the notification, before those of the levels reached. Needs O(ses_sender).
      - At most 50 addresses in all (SES's limit per message).
    type: list
    elements: str
  fields:
    description:
      - "Extra facts shown as C(name: value) lines, in order, for example the regions or the RTO so far."
      - Values are strings or numbers.
    type: dict
  fail_when:
    description:
      - V(all_failed) fails the task only when every channel failed; V(any_failed) when any did.
      - A failed channel gives a warning either way.
    type: str
    choices: [ any_failed, all_failed ]
    default: all_failed
  timeout:
    description: Seconds each channel may take, retries included.
    type: int
    default: 30
notes:
  - O(region) (or E(AWS_REGION)) is needed for email; SES is a regional service.
  - While an SES account is in the sandbox, recipients must be verified identities too.
  - Slack's webhooks are C(https://hooks.slack.com/services/...); C(http://) URLs are accepted for local receivers.
  - "This module was named C(fediflow.dr.notify) before 0.3.0: C(notify) is a task keyword, so the module could not
    be called by its short name. The old name still works, with a deprecation warning, until 1.0.0."
seealso:
  - module: community.general.slack
  - module: community.aws.ses_identity
"""

EXAMPLES = r"""
- name: Tell people the failover started
  fediflow.dr.incident_notify:
    subject: "Region failover to eu-west-1 started"
    msg: "us-east-1 is unreachable; the database is being promoted in eu-west-1."
    severity: critical
    outage_started: "{{ incident_started }}"   # e.g. 2026-11-26T01:00:00Z
    slack_webhook_url: "{{ vault_slack_webhook_url }}"
    region: us-east-1
    ses_sender: "FediFlow DR <dr@fediflow.example>"
    ses_recipients: [sre@fediflow.example]
    escalation_matrix:
      - {after_s: 0, level: on-call, recipients: [oncall@fediflow.example]}
      - {after_s: 1800, level: technical lead, recipients: [lead@fediflow.example]}
      - {after_s: 3600, level: engineering manager, recipients: [em@fediflow.example]}
      - {after_s: 7200, level: executive team, recipients: [exec@fediflow.example]}
    fields:
      from_region: us-east-1
      to_region: eu-west-1
      rto_so_far: "{{ rto_so_far }}"
  register: note

- name: A status update to Slack only; fail the play if it does not get through
  fediflow.dr.incident_notify:
    subject: "Failover complete"
    msg: "Writes are served from eu-west-1."
    severity: major
    outage_started: "{{ incident_started }}"
    slack_webhook_url: "{{ vault_slack_webhook_url }}"
    fail_when: any_failed
"""

RETURN = r"""
level:
  description: The escalation level reached.
  returned: always
  type: str
  sample: technical lead
level_index:
  description: Index of the level in O(escalation_matrix), from 0.
  returned: always
  type: int
  sample: 1
elapsed_s:
  description: The outage's age in seconds when the notification was sent.
  returned: always
  type: float
  sample: 2530.4
outage_started:
  description: O(outage_started) in UTC (now when it was omitted).
  returned: always
  type: str
  sample: "2026-11-26T01:00:00Z"
severity:
  description: The severity.
  returned: always
  type: str
  sample: critical
recipients:
  description: The email recipients - O(ses_recipients) plus those of the levels reached, each once.
  returned: always
  type: list
  elements: str
  sample: [sre@fediflow.example, oncall@fediflow.example, lead@fediflow.example]
subject:
  description: The email subject (O(subject) with the severity in front).
  returned: always
  type: str
  sample: "[CRITICAL] Region failover to eu-west-1 started"
text:
  description:
    - The rendered message, as sent by email (Slack gets it with C(&), C(<) and C(>) escaped). No secret.
  returned: always
  type: str
  sample: |-
    [CRITICAL] Region failover to eu-west-1 started
    Escalation: technical lead - outage age 42m 10s (since 2026-11-26T01:00:00Z)

    us-east-1 is unreachable; the database is being promoted in eu-west-1.

    from_region: us-east-1
channels:
  description:
    - The outcome per configured channel (a channel not configured is absent).
    - In check mode C(ok) is null and C(attempts) 0.
  returned: always
  type: dict
  contains:
    slack:
      description: >-
        C(ok) (the webhook took the message), C(status) (last HTTP status, null without an answer),
        C(attempts), C(error) (null when ok; never holds the URL).
      type: dict
      returned: with O(slack_webhook_url)
      sample: {ok: true, status: 200, attempts: 3, error: null}
    ses:
      description: C(ok), C(message_id) (SES's id of the sent message), C(attempts), C(error) (null when ok).
      type: dict
      returned: with O(ses_sender)
      sample: {ok: true, message_id: 0100018c-example, attempts: 1, error: null}
phases:
  description: Seconds each channel took (they run at the same time).
  returned: when something was sent
  type: dict
  sample: {slack: 1.52, ses: 0.08}
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import notify
from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    spec = aws_common_argument_spec()
    spec.update(
        subject={"type": "str", "required": True},
        msg={"type": "str", "required": True},
        severity={"type": "str", "default": "critical", "choices": list(notify.SEVERITIES)},
        outage_started={"type": "str"},
        escalation_matrix=notify.matrix_argument_spec(),
        slack_webhook_url={"type": "str", "no_log": True},
        ses_sender={"type": "str"},
        ses_recipients={"type": "list", "elements": "str"},
        fields={"type": "dict"},
        fail_when={"type": "str", "default": "all_failed", "choices": list(notify.FAIL_WHEN)},
        timeout={"type": "int", "default": 30},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_one_of=[["slack_webhook_url", "ses_sender"]],
                           required_by={"ses_recipients": "ses_sender"})
    run_module(module, notify.send, dict(module.params), check_mode=module.check_mode, warn=module.warn)


if __name__ == "__main__":
    main()
