#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: health_check
short_description: Probe health URLs and a PostgreSQL endpoint in rounds; decide whether a region is up or down
version_added: 0.2.0
description:
  - The runbook's health check (a probe every 30 seconds, three failures in a row and the region is
    down) and the checks after a failover (the application's health URLs answer, enough federation
    peers are reachable).
  - Probes every target in up to O(rounds) rounds that start O(interval) seconds apart, measured from
    the start of one round to the start of the next (a round that took longer is followed at once).
    The probes of a round run concurrently, one thread per target, so a round lasts about the longest
    time-out, not their sum; a probe still running one second after its time-out is recorded as failed.
  - A round is healthy when the share of targets that answered ok is at least O(min_healthy_ratio). The
    run stops at the first healthy round. RV(state) is V(up) when a round was healthy, else V(down)
    (O(rounds) unhealthy rounds in a row).
  - "Targets: each entry of O(urls) (an HTTP C(GET), redirects not followed, ok when the status code is
    accepted; a refused connection, time-out, DNS or TLS failure is recorded as text), and a PostgreSQL
    endpoint when O(login_host) or O(login_unix_socket) is given (ok when it connects and, with
    O(pg_check=primary), is not in recovery, so it accepts writes)."
  - O(expect) decides when the module fails. With V(down) it is the guard in front of a failover - it
    fails when the region answers.
  - Only reads, so RV(changed) is always false and check mode probes exactly like a normal run.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.postgres
  - fediflow.dr.attributes
attributes:
  check_mode:
    support: full
    details: Read-only - a check-mode run probes exactly like a normal one.
  diff_mode:
    support: N/A
    details: Nothing is changed, so there is no diff.
  idempotent:
    support: full
options:
  name:
    description:
      - What is being checked (a region, say), used in messages. Defaults to the target's name when there is
        one target, else C(the N targets).
    type: str
  urls:
    description:
      - HTTP(S) URLs to C(GET). Each entry is a URL or a dict with C(url) (required), C(name) (how the
        target is named in the result; default the URL, redacted) and C(status) (a list of accepted status
        codes; default every code from 200 to 399).
    type: list
    elements: raw
    default: []
  timeout:
    description: Seconds each HTTP probe waits for the connection and for the answer.
    type: float
    default: 5
  validate_certs:
    description: Verify the TLS certificates of V(https) URLs.
    type: bool
    default: true
  redact_query_strings:
    description:
      - Replace the query string of every URL with C(********) in the output (target names, messages, and the
        echoed options), since tokens often travel there. A password in a URL's userinfo is always masked.
    type: bool
    default: true
  rounds:
    description: How many rounds at most; this many unhealthy rounds in a row make the state V(down).
    type: int
    default: 3
  interval:
    description: Seconds from the start of one round to the start of the next.
    type: float
    default: 30
  min_healthy_ratio:
    description:
      - Share of targets (more than 0, at most 1) that must answer ok for a round to be healthy, for example
        V(0.5) for "at least half of the federation peers".
    type: float
    default: 1.0
  expect:
    description:
      - V(up) fails when the state is V(down), naming the targets that failed in the last round and why.
      - V(down) fails when the state is V(up) (the failover guard - do not fail over a region that answers).
      - V(any) never fails on the state; read RV(state).
    type: str
    choices: [ up, down, any ]
    default: up
  pg_check:
    description:
      - What makes the PostgreSQL endpoint ok. V(connect) - a session can be opened. V(primary) - a session
        can be opened and C(pg_is_in_recovery()) is false, so the node accepts writes.
      - Each probe waits at most O(connect_timeout) seconds for the connection.
    type: str
    choices: [ connect, primary ]
    default: primary
notes:
  - The PostgreSQL options (O(login_host) ...) are optional here - without O(login_host) and O(login_unix_socket)
    no PostgreSQL endpoint is probed. O(login_password) never appears in the output.
  - A PostgreSQL server that answers but refuses the login counts as failed, with a warning - a wrong login_*
    option must not pass for a region that is down.
  - HTTP probes use the proxy settings of the environment (E(https_proxy), E(no_proxy) ...), as M(ansible.builtin.uri) does.
  - Bad input (a URL that is not http(s), a status code out of range, O(rounds) below 1, O(interval) below 0,
    O(min_healthy_ratio) out of range, no target at all) is refused before anything is probed.
seealso:
  - module: fediflow.dr.pg_promote
  - module: fediflow.dr.route53_failover
"""

EXAMPLES = r"""
- name: Runbook health check of the primary region - every 30 s, 3 failures and it is down
  fediflow.dr.health_check:
    name: us-east-1
    urls:
      - https://api.us-east-1.fediflow.example/healthz
    login_host: db.us-east-1.internal
    login_password: "{{ vault_pg_monitor_password }}"
    login_user: monitor
    rounds: 3
    interval: 30
    expect: down        # fails (and stops the failover) while the region still answers
  register: primary_region

- name: After the failover - the application answers in the new region and its database takes writes
  fediflow.dr.health_check:
    name: eu-west-1
    urls:
      - url: https://api.eu-west-1.fediflow.example/healthz
        status: [200]
    login_host: db.eu-west-1.internal
    login_password: "{{ vault_pg_monitor_password }}"
    login_user: monitor
    rounds: 10
    interval: 6

- name: At least half of the federation peers are reachable
  fediflow.dr.health_check:
    name: federation
    urls:
      - {name: social.example, url: "https://social.example/.well-known/nodeinfo"}
      - {name: toot.example, url: "https://toot.example/.well-known/nodeinfo"}
      - {name: fedi.example, url: "https://fedi.example/.well-known/nodeinfo"}
    min_healthy_ratio: 0.5
    timeout: 10
    rounds: 2
    interval: 30
"""

RETURN = r"""
state:
  description: V(up) when some round was healthy, else V(down).
  returned: always
  type: str
  sample: down
expect:
  description: The value of O(expect).
  returned: always
  type: str
rounds_run:
  description: How many rounds were run (the run stops at the first healthy round).
  returned: always
  type: int
  sample: 3
consecutive_failures:
  description: Unhealthy rounds at the end of the run, in a row (0 when the state is V(up)).
  returned: always
  type: int
  sample: 3
healthy_ratio:
  description: Share of targets that answered ok in the last round.
  returned: always
  type: float
  sample: 0.5
first_failure:
  description:
    - When the trailing run of unhealthy rounds began - ISO 8601 UTC start time of its first round (the probes of a
      round start together). Null when the state is V(up).
  returned: always
  type: str
  sample: "2026-03-01T12:00:00.125Z"
rounds:
  description: Every round run, in order.
  returned: always
  type: list
  elements: dict
  contains:
    started:
      description: ISO 8601 UTC time the round started.
      type: str
    healthy:
      description: Whether the share of targets ok reached O(min_healthy_ratio).
      type: bool
    ratio:
      description: Share of targets ok in this round.
      type: float
    targets:
      description:
        - One entry per target - C(name), C(kind) (V(http) or V(postgres)), C(ok), C(status) (the HTTP status
          code, or the role the PostgreSQL node has, V(primary) or V(standby); null when nothing answered),
          C(error) (why it is not ok, else null) and C(latency_s).
      type: list
      elements: dict
  sample:
    - started: "2026-03-01T12:00:00.125Z"
      healthy: false
      ratio: 0.5
      targets:
        - {name: "https://api.us-east-1.example/healthz?********", kind: http, ok: false, status: 503,
           error: "HTTP 503 (accepted: 200-399)", latency_s: 0.012}
        - {name: "db.us-east-1.internal:5432/postgres", kind: postgres, ok: true, status: primary, error: null,
           latency_s: 0.031}
msg:
  description: One line - up or down, and why (the failed targets of the last round); on failure, why O(expect) is not met.
  returned: always
  type: str
phases:
  description: Seconds spent probing (C(probe)) and between rounds (C(wait)).
  returned: always
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import health
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module
from ansible_collections.fediflow.dr.plugins.module_utils.postgres import postgres_common_argument_spec


def main():
    spec = postgres_common_argument_spec()
    spec.update(
        name={"type": "str"},
        urls={"type": "list", "elements": "raw", "default": []},
        timeout={"type": "float", "default": 5.0},
        validate_certs={"type": "bool", "default": True},
        redact_query_strings={"type": "bool", "default": True},
        rounds={"type": "int", "default": 3},
        interval={"type": "float", "default": 30.0},
        min_healthy_ratio={"type": "float", "default": 1.0},
        expect={"type": "str", "default": "up", "choices": list(health.EXPECT)},
        pg_check={"type": "str", "default": "primary", "choices": list(health.PG_CHECKS)},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    # tokens in query strings and userinfo passwords are masked in all output, the echoed options included
    module.no_log_values.update(health.url_secrets(module.params["urls"], module.params["redact_query_strings"]))
    run_module(module, health.check, dict(module.params), check_mode=module.check_mode, warn=module.warn)


if __name__ == "__main__":
    main()
