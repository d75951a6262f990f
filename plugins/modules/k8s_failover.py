#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_failover
short_description: Make the surviving region's application the primary - scale, configmap, rollout restart
version_added: 0.2.0
description:
  - The Kubernetes part of a region failover, in one call through the official C(kubernetes) Python client -
    scale the deployments of O(replicas), merge O(configmap_data) into the configmap O(configmap) (for
    example C(DATABASE_ROLE=primary)), rollout-restart the deployments that were already running, and wait
    until they are rolled out.
  - Everything is read first. Every deployment named in O(replicas) or O(restart_deployments) and the
    configmap must exist in O(namespace); otherwise the module fails naming the missing ones and writes
    nothing.
  - "The writes, in this order: one merge patch of the configmap with the keys whose value differs; the
    scale subresource of each deployment whose C(spec.replicas) differs; a rollout restart of each deployment
    to restart, done as C(kubectl rollout restart) does it (the pod template annotation
    C(kubectl.kubernetes.io/restartedAt) set to the current time)."
  - "Which deployments are restarted (O(restart)): those of O(restart_deployments) that had more than 0
    replicas before and keep more than 0 after; with V(on_change) only when the configmap data changes in
    this run, with V(always) on every run, with V(never) none. A deployment scaled up from 0 starts fresh pods
    that read the new configuration anyway."
  - Nothing is written when the replicas and the configmap keys already match (C(changed=false)), so a
    second run changes nothing. Check mode reads and reports what would be written.
  - A write that fails midway makes the module fail with what was done and what was not (RV(actions),
    RV(pending)); the objects keep what was written. Run again to finish - it re-reads and writes only what
    is left. With O(restart=on_change), a configmap already changed by the failed run no longer triggers
    restarts, so finish with O(restart=always).
  - "With O(wait), the touched deployments (scaled or restarted) are polled until rolled out, as
    C(kubectl rollout status) checks it: C(status.observedGeneration) >= C(metadata.generation), updated,
    ready and available replicas equal to C(spec.replicas), no old replica left. A rollout whose
    C(Progressing) condition says C(ProgressDeadlineExceeded) fails at once."
  - Only the keys named in O(configmap_data) are read into the result and the diff; other values of the
    configmap, and O(api_key), never appear in the output.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  kubeconfig:
    description:
      - Path to the kubeconfig. Defaults to E(KUBECONFIG), else C(~/.kube/config). Its authentication
        (tokens, client certificates, C(exec) plugins such as C(aws eks get-token), OIDC) is used as
        C(kubectl) uses it.
      - When neither O(kubeconfig), O(context) nor O(host) is given and there is no kubeconfig, the
        in-cluster service account is used (the module runs in a pod).
    type: path
  context:
    description: Context of the kubeconfig to use. Defaults to its current context.
    type: str
  host:
    description:
      - URL of the Kubernetes API server. Without O(kubeconfig) and O(context), the module connects to it
        directly with O(api_key), O(validate_certs) and O(ca_cert); with them, it overrides the kubeconfig's server.
    type: str
  api_key:
    description:
      - Bearer token to authenticate with. Overrides the kubeconfig's credentials.
    type: str
  validate_certs:
    description:
      - Verify the API server's TLS certificate. V(false) turns verification off; V(true) keeps what the
        kubeconfig says (C(insecure-skip-tls-verify)).
    type: bool
    default: true
    aliases: [ verify_ssl ]
  ca_cert:
    description: CA certificate bundle to verify the API server with. Overrides the kubeconfig's.
    type: path
    aliases: [ ssl_ca_cert ]
  namespace:
    description: Namespace of the deployments and the configmap.
    type: str
    required: true
  replicas:
    description:
      - "Deployments to scale - name to number of replicas (an integer >= 0), for example C({api: 5, worker: 3})."
    type: dict
  configmap:
    description: Name of the application's configmap to merge O(configmap_data) into. Needs O(configmap_data).
    type: str
  configmap_data:
    description:
      - Keys to set in the configmap's C(data) (values are strings); other keys are kept. Needs O(configmap).
    type: dict
  restart:
    description:
      - When to rollout-restart the deployments of O(restart_deployments) (see the description).
    type: str
    choices: [ on_change, always, never ]
    default: on_change
  restart_deployments:
    description:
      - Deployments to restart. Defaults to the deployments of O(replicas). An empty list restarts none.
    type: list
    elements: str
  wait:
    description:
      - Wait until every scaled or restarted deployment is rolled out. With V(false), RV(deployments) still
        reports whether each one is rolled out right after the writes.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait with O(wait).
    type: int
    default: 120
requirements:
  - kubernetes >= 30.1.0 (the official Python client) on the host running the module. Older clients (e.g.
    Debian 12's python3-kubernetes 22.6) cannot choose a patch's content type; the module says so and changes nothing.
notes:
  - "Permissions needed in O(namespace): C(get) on deployments and configmaps; C(patch) on configmaps,
    deployments and deployments/scale for what changes."
  - No pod is read or deleted; a rollout restart lets the deployment controller replace the pods within the
    deployment's rolling-update limits.
seealso:
  - module: kubernetes.core.k8s_scale
  - module: kubernetes.core.k8s
  - name: kubectl rollout restart
    description: How kubectl restarts a deployment.
    link: https://kubernetes.io/docs/reference/kubectl/generated/kubectl_rollout/kubectl_rollout_restart/
"""

EXAMPLES = r"""
- name: Make eu-west-1 the primary application region
  fediflow.dr.k8s_failover:
    kubeconfig: /etc/fediflow/kubeconfig-eu-west-1
    context: fediflow-eu-west-1
    namespace: fediflow
    replicas:
      api: 5
      worker: 3
    configmap: app-config
    configmap_data:
      DATABASE_ROLE: primary
  register: app_failover

- name: Same, with a service-account token, restarting the web front end too
  fediflow.dr.k8s_failover:
    host: https://api.k8s.eu-west-1.fediflow.example:6443
    api_key: "{{ vault_k8s_failover_token }}"
    ca_cert: /etc/fediflow/eu-west-1-ca.pem
    namespace: fediflow
    replicas: {api: 5, worker: 3}
    configmap: app-config
    configmap_data: {DATABASE_ROLE: primary}
    restart_deployments: [api, worker, web]
    wait_timeout: 300

- name: Scale only, no restarts
  fediflow.dr.k8s_failover:
    namespace: fediflow
    replicas: {api: 5, worker: 3}
    restart: never
"""

RETURN = r"""
namespace:
  description: The namespace.
  returned: always
  type: str
  sample: fediflow
deployments:
  description: Per deployment named in O(replicas) or O(restart_deployments).
  returned: always
  type: dict
  contains:
    replicas_before:
      description: C(spec.replicas) before the run.
      type: int
    replicas_after:
      description: C(spec.replicas) after the run (would be, in check mode).
      type: int
    restarted:
      description: Whether it was rollout-restarted (would be, in check mode).
      type: bool
    ready:
      description:
        - Whether it is rolled out - after the wait for the ones touched, as read before the writes for the
          others (and for all, in check mode).
      type: bool
  sample: {api: {replicas_before: 2, replicas_after: 5, restarted: true, ready: true},
           worker: {replicas_before: 1, replicas_after: 3, restarted: true, ready: true}}
configmap:
  description: The configmap's keys named in O(configmap_data), before and after (null before when absent).
  returned: when O(configmap) is given
  type: dict
  contains:
    name:
      description: Name of the configmap.
      type: str
    changed:
      description: Whether it was patched (would be, in check mode).
      type: bool
    before:
      description: The named keys before the run.
      type: dict
    after:
      description: The named keys after the run.
      type: dict
  sample: {name: app-config, changed: true, before: {DATABASE_ROLE: standby}, after: {DATABASE_ROLE: primary}}
restarted:
  description: Deployments rollout-restarted (that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [api, worker]
actions:
  description: The writes done (that would be done, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["configmap app-config: set DATABASE_ROLE", "deployment api: scale 2 -> 5", "deployment worker: scale 1 -> 3",
           "deployment api: rollout restart", "deployment worker: rollout restart"]
pending:
  description: The writes not done because an earlier one failed.
  returned: when a write failed
  type: list
  elements: str
waited_s:
  description: Seconds spent polling the rollout.
  returned: when a deployment was scaled or restarted
  type: float
phases:
  description: Seconds spent per phase (read, configmap, scale, restart, wait).
  returned: always
  type: dict
  sample: {read: 0.021, configmap: 0.004, scale: 0.008, restart: 0.009, wait: 0.006}
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.fediflow.dr.plugins.module_utils import k8s_failover
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    spec = k8s_failover.k8s_auth_argument_spec()
    spec.update(
        namespace={"type": "str", "required": True},
        replicas={"type": "dict"},
        configmap={"type": "str"},
        configmap_data={"type": "dict"},
        restart={"type": "str", "default": "on_change", "choices": list(k8s_failover.RESTART_MODES)},
        restart_deployments={"type": "list", "elements": "str"},
        wait={"type": "bool", "default": True},
        wait_timeout={"type": "int", "default": 120},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_together=[["configmap", "configmap_data"]])
    if not k8s_failover.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=k8s_failover.KUBERNETES_IMPORT_ERROR,
                         duration_s=0.0)
    run_module(module, k8s_failover.ensure, dict(module.params), check_mode=module.check_mode)


if __name__ == "__main__":
    main()
