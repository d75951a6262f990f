#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab_service
short_description: Run a detached service process with a pid file and a health URL
version_added: 0.1.0
description:
  - Starts a program (for example C(moto_server) or a test double) detached from Ansible,
    records its pid in O(pid_file), sends its output to O(log_file) and waits until
    O(health_url) answers with HTTP 2xx, with a deadline instead of a fixed sleep.
  - A service counts as started when the pid file names a live process whose command line is
    exactly O(argv) and, when O(health_url) is set, that URL answers. A process with another
    command line, or one that does not answer, is restarted.
  - The lab role uses it for the parts a cloud account would give a user (S3/Route53/SES
    through moto, the Kubernetes API and Slack doubles).
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  name:
    description: A name for the service, used in messages and results.
    type: str
    required: true
  argv:
    description:
      - The program and its arguments, as a list. No shell is involved.
      - Required when O(state=started).
    type: list
    elements: str
    default: []
  state:
    description: Whether the service should be running.
    type: str
    choices: [ started, stopped ]
    default: started
  pid_file:
    description: Path of the pid file. Its directory is created when missing.
    type: path
    required: true
  log_file:
    description:
      - Path of the file that receives the program's standard output and error.
      - Defaults to O(pid_file) with the extension C(.log).
    type: path
  health_url:
    description:
      - An HTTP URL that answers 2xx once the service is ready.
    type: str
  timeout:
    description: Seconds to wait for the health URL after starting, and for the process to exit when stopping.
    type: float
    default: 30
  environment:
    description:
      - Extra environment variables for the program. Values are not logged.
    type: dict
    default: {}
  chdir:
    description: Working directory of the program.
    type: path
    default: /
  netns:
    description:
      - LAB ONLY. Run the program inside this network namespace (C(ip netns exec NETNS ARGV...)),
        as the lab does for the services of a region's host (see M(fediflow.dr_lab.lab_network)).
      - A running process outside that namespace does not count as the service and is restarted.
      - The namespace must exist.
    type: str
    version_added: 0.3.0
  match_argv:
    description:
      - Restart a running service whose command line differs from O(argv).
      - Set V(false) for a service that keeps its state only in memory (such as moto), so that
        a healthy instance started from another checkout or virtualenv is left running.
    type: bool
    default: true
notes:
  - Stopping sends SIGTERM, waits up to O(timeout) seconds, then sends SIGKILL.
"""

EXAMPLES = r"""
- name: Start moto (S3, Route53, SES) on loopback
  fediflow.dr_lab.lab_service:
    name: moto
    argv: ["{{ ansible_playbook_python | dirname }}/moto_server", -H, 127.0.0.1, -p, "5000"]
    pid_file: /var/tmp/fediflow-lab/run/moto.pid
    health_url: http://127.0.0.1:5000/moto-api/

- name: Start the sshd of region us-east-1 inside its network namespace
  fediflow.dr_lab.lab_service:
    name: sshd-us-east-1
    argv: [/usr/sbin/sshd, -D, -e, -f, /var/tmp/fediflow-lab/ssh/us-east-1/sshd_config]
    netns: fdl0-us-east-1
    pid_file: /var/tmp/fediflow-lab/run/sshd-us-east-1.pid
    match_argv: false   # sshd rewrites its process title

- name: Stop it
  fediflow.dr_lab.lab_service:
    name: moto
    state: stopped
    pid_file: /var/tmp/fediflow-lab/run/moto.pid
"""

RETURN = r"""
name:
  description: The service name.
  returned: always
  type: str
state:
  description: The state after the run (the predicted one in check mode).
  returned: always
  type: str
  sample: started
pid:
  description: Process id of the running service, or null when stopped.
  returned: always
  type: int
  sample: 41233
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [ start ]
health_wait_s:
  description: Seconds spent waiting for O(health_url) after starting.
  returned: when the service was started
  type: float
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module

from ansible_collections.fediflow.dr_lab.plugins.module_utils import process


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "argv": {"type": "list", "elements": "str", "default": []},
            "state": {"type": "str", "choices": ["started", "stopped"], "default": "started"},
            "pid_file": {"type": "path", "required": True},
            "log_file": {"type": "path"},
            "health_url": {"type": "str"},
            "timeout": {"type": "float", "default": 30},
            "environment": {"type": "dict", "default": {}, "no_log": True},
            "chdir": {"type": "path", "default": "/"},
            "match_argv": {"type": "bool", "default": True},
            "netns": {"type": "str"},
        },
        required_if=[("state", "started", ("argv",))],
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be greater than 0, got %s" % params["timeout"])
    argv = params["argv"] or ["(not given)"]
    log_file = params["log_file"] or (params["pid_file"].rsplit(".", 1)[0] + ".log")
    run_module(module, process.ensure, params["name"], argv, params["pid_file"], log_file,
               state=params["state"], health_url=params["health_url"], timeout=params["timeout"],
               env={k: str(v) for k, v in params["environment"].items()}, chdir=params["chdir"],
               check_mode=module.check_mode, match_argv=params["match_argv"], netns=params["netns"])


if __name__ == "__main__":
    main()
