# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The application side of a region failover in the surviving region's cluster (``k8s_failover``).

The runbook step: scale the deployments (``api`` to 5, ``worker`` to 3), merge keys into the
application's configmap (``DATABASE_ROLE=primary``) and rollout-restart the deployments that
were already running so their pods read the new configuration.

Everything is read first (every named deployment and the configmap must exist, else nothing is
written), the change is computed as plain data (``plan``, pure and unit-tested with dicts), then
written in a fixed order: configmap patch, scales, restarts. A write that fails midway raises
with what was done and what was not. Then, with ``wait``, the touched deployments are polled
until rolled out (``rollout_state``, the checks of ``kubectl rollout status``) or the deadline.

The official ``kubernetes`` client is imported guarded: this file imports without it, and
``HAS_KUBERNETES`` tells the module to fail with ``missing_required_lib``.
"""

from __future__ import annotations

import json
import os
import re
import traceback
from datetime import datetime, timezone

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer, wait_until
from ansible_collections.fediflow.dr.plugins.module_utils.common import mask as scrub  # API error bodies, client messages

try:
    from kubernetes import client as k8s_client, config as k8s_config
    from kubernetes.client.rest import ApiException
except ImportError:
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None


def _client_version():
    try:
        import kubernetes  # pylint: disable=import-outside-toplevel
        return str(getattr(kubernetes, "__version__", "of unknown version"))
    except ImportError:
        return "(missing)"


RESTART_MODES = ("on_change", "always", "never")
RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
PHASES = ("read", "configmap", "scale", "restart", "wait")
MAX_REPLICAS = 2147483647
REQUEST_TIMEOUT = (10, 60)  # connect, read (seconds) for every API call
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MIN_CLIENT = "30.1.0"  # the oldest kubernetes client the collection is tested with (requirements.txt)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


# ---------------------------------------------------------------- pure helpers

def _replica_count(name, value):
    if isinstance(value, bool):
        raise FediflowError("replicas.%s must be an integer >= 0, got %s" % (name, value))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 0 <= value <= MAX_REPLICAS:
        raise FediflowError("replicas.%s must be an integer >= 0, got %r" % (name, value))
    return value


def _check_name(option, name):
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise FediflowError("%s: '%s' is not a Kubernetes object name (lower case letters, digits, '-' and '.')"
                            % (option, name))


def validate(p):
    """Refuse bad input before any API call (messages name the option); returns the wanted state:
    ``{namespace, replicas {name: int}, names [every deployment named], restart_names, configmap,
    configmap_data, restart, wait, wait_timeout}``."""
    namespace = p.get("namespace")
    if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace):
        raise FediflowError("namespace must be a Kubernetes namespace name (a DNS label), got %r" % (namespace,))
    replicas = {}
    for name, value in (p.get("replicas") or {}).items():
        _check_name("replicas", name)
        replicas[name] = _replica_count(name, value)
    restart = p.get("restart") or "on_change"
    if restart not in RESTART_MODES:
        raise FediflowError("restart must be one of %s, got '%s'" % (", ".join(RESTART_MODES), restart))
    listed = p.get("restart_deployments")
    restart_names = list(replicas) if listed is None else list(dict.fromkeys(listed))
    for name in restart_names:
        _check_name("restart_deployments", name)
    configmap, data = p.get("configmap"), p.get("configmap_data")
    if bool(configmap) != (data is not None):
        raise FediflowError("configmap and configmap_data go together: give both or neither")
    if configmap:
        _check_name("configmap", configmap)
        if not data:
            raise FediflowError("configmap_data must name at least one key to set in configmap '%s'" % configmap)
        for key, value in data.items():
            if not isinstance(key, str) or len(key) > 253 or not _CONFIGMAP_KEY.match(key):
                raise FediflowError("configmap_data: '%s' is not a configmap key (letters, digits, '-', '_', '.')" % key)
            if not isinstance(value, str):
                raise FediflowError("configmap_data.%s must be a string (quote it), got %s"
                                    % (key, type(value).__name__))
    timeout = p.get("wait_timeout")
    if timeout is None or isinstance(timeout, bool) or timeout < 1:
        raise FediflowError("wait_timeout must be at least 1 second, got %s" % (timeout,))
    names = list(dict.fromkeys(list(replicas) + restart_names))
    if not names and not configmap:
        raise FediflowError("nothing to do: give replicas, configmap + configmap_data, or restart_deployments")
    return {"namespace": namespace, "replicas": replicas, "names": names, "restart_names": restart_names,
            "configmap": configmap or None, "configmap_data": dict(data or {}), "restart": restart,
            "wait": p.get("wait", True) is not False, "wait_timeout": timeout}


def spec_replicas(deployment):
    """spec.replicas as the API server defaults it (1 when absent)."""
    value = (deployment.get("spec") or {}).get("replicas")
    return 1 if value is None else value


def restarted_at(deployment):
    annotations = ((((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {})
                   .get("annotations") or {})
    return annotations.get(RESTART_ANNOTATION)


def plan(want, deployments, configmap):
    """What to write, as plain data. ``deployments`` maps every name of ``want['names']`` to the
    Deployment read (a dict as the API returns it), ``configmap`` is the ConfigMap read (or None
    when ``want`` names none).

    A deployment is restarted when it is listed for restarts, was running before (> 0 replicas)
    and still runs after, and - for ``on_change`` - the configmap data changes in this run.
    Pods of a deployment scaled up from 0 start with the new configuration anyway.
    """
    cm = None
    if want["configmap"]:
        data = (configmap or {}).get("data") or {}
        wanted = want["configmap_data"]
        cm = {"name": want["configmap"], "before": {k: data.get(k) for k in wanted}, "after": dict(wanted),
              "patch": {k: v for k, v in wanted.items() if data.get(k) != v}}
        cm["changed"] = bool(cm["patch"])
    config_changed = bool(cm and cm["changed"])
    restartable = set(want["restart_names"])
    steps = {}
    for name in want["names"]:
        before = spec_replicas(deployments[name])
        after = want["replicas"].get(name, before)
        restart = (name in restartable and before > 0 and after > 0
                   and (want["restart"] == "always" or (want["restart"] == "on_change" and config_changed)))
        steps[name] = {"replicas_before": before, "replicas_after": after, "scale": before != after,
                       "restart": restart, "restarted_at": restarted_at(deployments[name])}
    changed = config_changed or any(s["scale"] or s["restart"] for s in steps.values())
    return {"configmap": cm, "deployments": steps, "changed": changed}


def restart_stamp(now, current=None):
    """The ``restartedAt`` value, kubectl's RFC 3339 time; with sub-seconds when it would equal the
    current one (a restart within the same second must still change the pod template)."""
    stamp = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if stamp == current:
        stamp = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp


def write_steps(the_plan):
    """The writes in order: (phase, name, label). Configmap first, then scales, then restarts."""
    steps = []
    cm = the_plan["configmap"]
    if cm and cm["changed"]:
        steps.append(("configmap", cm["name"], "configmap %s: set %s" % (cm["name"], ", ".join(sorted(cm["patch"])))))
    for name, dep in the_plan["deployments"].items():
        if dep["scale"]:
            steps.append(("scale", name, "deployment %s: scale %d -> %d"
                          % (name, dep["replicas_before"], dep["replicas_after"])))
    for name, dep in the_plan["deployments"].items():
        if dep["restart"]:
            steps.append(("restart", name, "deployment %s: rollout restart" % name))
    return steps


def diff_of(the_plan, stamps):
    """--diff: replicas (and the restart annotation of restarted deployments) and the named configmap keys."""
    before = {"deployments": {}}
    after = {"deployments": {}}
    for name, dep in the_plan["deployments"].items():
        before["deployments"][name] = {"replicas": dep["replicas_before"]}
        after["deployments"][name] = {"replicas": dep["replicas_after"]}
        if name in stamps:
            before["deployments"][name]["restartedAt"] = dep["restarted_at"]
            after["deployments"][name]["restartedAt"] = stamps[name]
    cm = the_plan["configmap"]
    if cm:
        before["configmap"] = {cm["name"]: {k: v for k, v in cm["before"].items() if v is not None}}
        after["configmap"] = {cm["name"]: dict(cm["after"])}
    return {"before": before, "after": after}


def rollout_state(deployment):
    """``(state, detail)`` with state ``done``, ``progressing`` or ``failed`` - the checks of
    ``kubectl rollout status``: the controller has seen the latest generation, every replica is
    updated, ready and available, and no old replica is left."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    wanted = spec_replicas(deployment)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "failed", "progress deadline exceeded: %s" % (cond.get("message") or "no progress")
    observed, generation = status.get("observedGeneration") or 0, meta.get("generation") or 0
    if observed < generation:
        return "progressing", "generation %d not observed yet (at %d)" % (generation, observed)
    updated = status.get("updatedReplicas") or 0
    total = status.get("replicas") or 0
    ready = status.get("readyReplicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < wanted:
        return "progressing", "%d of %d replicas updated" % (updated, wanted)
    if total > updated:
        return "progressing", "%d old replicas pending termination" % (total - updated)
    if ready < wanted or available < wanted:
        return "progressing", "%d of %d updated replicas ready, %d available" % (ready, wanted, available)
    return "done", "rolled out (%d replicas)" % wanted


def wait_rollout(get, names, timeout, interval=0.2, max_interval=2.0):
    """Poll ``get(name)`` (the Deployment as a dict) for every name until each is rolled out, one
    rolls out ``failed``, or ``timeout`` seconds pass. Returns ``({name: (state, detail)}, waited_s)``."""
    states = {name: ("progressing", "not read yet") for name in names}

    def all_done():
        for name in names:
            if states[name][0] == "progressing":
                states[name] = rollout_state(get(name))
        if any(state == "failed" for state, _detail in states.values()):
            return True
        return all(state == "done" for state, _detail in states.values())

    waited = wait_until(all_done, timeout, interval=interval, max_interval=max_interval)[1]
    return states, waited


# ---------------------------------------------------------------- Kubernetes API

def k8s_auth_argument_spec():
    """Connection options, named as kubernetes.core names them."""
    return {
        "kubeconfig": {"type": "path"},
        "context": {"type": "str"},
        "host": {"type": "str"},
        "api_key": {"type": "str", "no_log": True},
        "validate_certs": {"type": "bool", "default": True, "aliases": ["verify_ssl"]},
        "ca_cert": {"type": "path", "aliases": ["ssl_ca_cert"]},
    }


def _default_kubeconfig_exists():
    paths = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return any(os.path.exists(os.path.expanduser(path)) for path in paths.split(os.pathsep) if path)


def connect(p):
    """An ApiClient: O(host) alone is a direct connection; otherwise the kubeconfig (O(kubeconfig),
    KUBECONFIG, ~/.kube/config; exec/OIDC auth included) with host/api_key/ca_cert given here
    overriding it; with no kubeconfig at all inside a pod, the in-cluster service account."""
    if not HAS_KUBERNETES:
        raise FediflowError("the python 'kubernetes' client is required on the host running k8s_failover")
    secrets = [p.get("api_key")]
    cfg = k8s_client.Configuration()
    explicit = p.get("kubeconfig") or p.get("context")
    try:
        if p.get("host") and not explicit:
            cfg.host = p["host"]
        elif not explicit and not _default_kubeconfig_exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=cfg)
        else:
            k8s_config.load_kube_config(config_file=p.get("kubeconfig") or None, context=p.get("context") or None,
                                        client_configuration=cfg)
    except Exception as exc:  # pylint: disable=broad-except  # ConfigException, OSError, YAML errors...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise FediflowError("kubeconfig %s (context %s) is not usable: %s; set kubeconfig, or host and api_key"
                            % (p.get("kubeconfig") or "(default)", p.get("context") or "(current)",
                               scrub(first, secrets)))
    if p.get("host"):
        cfg.host = p["host"]
    if p.get("api_key"):
        cfg.api_key = {"BearerToken": p["api_key"]}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        cfg.refresh_api_key_hook = None  # a token given here is not refreshed from the kubeconfig's exec plugin
    if p.get("ca_cert"):
        cfg.ssl_ca_cert = p["ca_cert"]
    if p.get("validate_certs") is False:
        cfg.verify_ssl = False
    return k8s_client.ApiClient(configuration=cfg)


class KubeError(FediflowError):
    """A failed API call: ``status`` is the HTTP status (None when the server was not reached)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class Cluster:
    """The handful of namespaced calls the step needs, each returning the JSON the API answered."""

    def __init__(self, api_client, namespace, secrets=()):
        self.api_client = api_client
        self.namespace = namespace
        self.secrets = [s for s in secrets if s]
        self.apps = k8s_client.AppsV1Api(api_client)
        self.core = k8s_client.CoreV1Api(api_client)

    def _call(self, what, method, *args, **kwargs):
        try:
            response = method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            if not exc.status:  # the client's wrapper of TLS / protocol errors
                raise KubeError("%s: cannot talk to the Kubernetes API: %s" % (what, scrub(exc.reason, self.secrets)))
            detail = ""
            try:
                detail = json.loads(exc.body).get("message") or ""
            except (TypeError, ValueError, AttributeError):
                pass
            text = "%s: %s %s" % (what, exc.status, exc.reason or "")
            if detail:
                text += " (%s)" % detail[:300]
            raise KubeError(scrub(text, self.secrets), status=exc.status)
        except TypeError as exc:
            if "_content_type" not in str(exc):
                raise
            # an older client (e.g. Debian 12's python3-kubernetes 22.6) cannot choose the patch's content type
            raise KubeError("%s: the kubernetes Python client %s on this host cannot send a merge patch (no "
                            "_content_type); install kubernetes >= %s, or run this step where it is (the "
                            "controller: the roles' *_api_host)" % (what, _client_version(), MIN_CLIENT))
        except Exception as exc:  # pylint: disable=broad-except  # urllib3: refused, time-out, DNS
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise KubeError("%s: the Kubernetes API at %s is unreachable: %s"
                            % (what, self.api_client.configuration.host, scrub(first, self.secrets)))
        return json.loads(response.data or b"{}")

    def get_deployment(self, name):
        return self._call("GET deployment %s/%s" % (self.namespace, name),
                          self.apps.read_namespaced_deployment, name, self.namespace)

    def get_configmap(self, name):
        return self._call("GET configmap %s/%s" % (self.namespace, name),
                          self.core.read_namespaced_config_map, name, self.namespace)

    def patch_configmap(self, name, data):
        return self._call("PATCH configmap %s/%s" % (self.namespace, name),
                          self.core.patch_namespaced_config_map, name, self.namespace, {"data": data},
                          _content_type=MERGE_PATCH)

    def scale(self, name, replicas):
        return self._call("PATCH deployment %s/%s/scale" % (self.namespace, name),
                          self.apps.patch_namespaced_deployment_scale, name, self.namespace,
                          {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH)

    def restart(self, name, stamp):
        body = {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: stamp}}}}}
        return self._call("PATCH deployment %s/%s" % (self.namespace, name),
                          self.apps.patch_namespaced_deployment, name, self.namespace, body,
                          _content_type=STRATEGIC_MERGE_PATCH)

    def close(self):
        self.api_client.close()


# ---------------------------------------------------------------- the module's entry point

def ensure(p, check_mode=False, cluster=None):
    """Scale, patch the configmap, restart, wait (see the module documentation); a plain dict back."""
    timer = Timer()
    timer.phases.update(dict.fromkeys(PHASES, 0.0))
    want = validate(p)
    result = {"changed": False, "namespace": want["namespace"], "deployments": {}, "restarted": [],
              "actions": [], "phases": timer.phases}
    own = cluster is None
    if own:
        with timer.phase("read"):
            cluster = Cluster(connect(p), want["namespace"], secrets=[p.get("api_key")])
    try:
        return _run(want, cluster, check_mode, timer, result)
    finally:
        if own:
            cluster.close()


def _read(want, cluster):
    deployments, missing, configmap = {}, [], None
    for name in want["names"]:
        try:
            deployments[name] = cluster.get_deployment(name)
        except KubeError as exc:
            if exc.status != 404:
                raise FediflowError("%s; nothing was changed" % exc.message)
            missing.append("deployment '%s'" % name)
    if want["configmap"]:
        try:
            configmap = cluster.get_configmap(want["configmap"])
        except KubeError as exc:
            if exc.status != 404:
                raise FediflowError("%s; nothing was changed" % exc.message)
            missing.append("configmap '%s'" % want["configmap"])
    if missing:
        raise FediflowError("not found in namespace '%s': %s; nothing was changed"
                            % (want["namespace"], ", ".join(missing)))
    return deployments, configmap


def _run(want, cluster, check_mode, timer, result):
    with timer.phase("read"):
        deployments, configmap = _read(want, cluster)
    the_plan = plan(want, deployments, configmap)
    now = datetime.now(timezone.utc)
    stamps = {name: restart_stamp(now, dep["restarted_at"])
              for name, dep in the_plan["deployments"].items() if dep["restart"]}
    steps = write_steps(the_plan)
    ready = {name: rollout_state(obj)[0] == "done" for name, obj in deployments.items()}
    _fill(result, the_plan, done=None, ready=ready)
    result["diff"] = diff_of(the_plan, stamps)
    result["changed"] = the_plan["changed"]
    if check_mode or not steps:
        result["actions"] = [label for _phase, _name, label in steps] if check_mode else []
        result["duration_s"] = timer.elapsed()
        return result

    done = []
    for index, (phase, name, label) in enumerate(steps):
        try:
            with timer.phase(phase):
                if phase == "configmap":
                    cluster.patch_configmap(name, the_plan["configmap"]["patch"])
                elif phase == "scale":
                    cluster.scale(name, the_plan["deployments"][name]["replicas_after"])
                else:
                    cluster.restart(name, stamps[name])
        except FediflowError as exc:
            pending = [lbl for _p, _n, lbl in steps[index:]]
            _fill(result, the_plan, done=done, ready=ready)
            result.update(changed=bool(done), actions=[lbl for _p, _n, lbl in done], pending=pending,
                          duration_s=timer.elapsed())
            hint = ""
            if want["restart"] == "on_change" and any(p == "configmap" for p, _n, _l in done) \
                    and any(p == "restart" for p, _n, _l in steps[index:]):
                hint = " The configmap is already changed: to finish, run again with restart=always."
            raise FediflowError("%s failed: %s. Done: %s. Not done: %s.%s"
                                % (label, exc.message, "; ".join(result["actions"]) or "nothing",
                                   "; ".join(pending), hint), result=result)
        done.append((phase, name, label))
    result["actions"] = [label for _phase, _name, label in steps]
    _fill(result, the_plan, done=done, ready=ready)

    touched = [name for name, dep in the_plan["deployments"].items() if dep["scale"] or dep["restart"]]
    if touched:
        with timer.phase("wait"):
            timeout = want["wait_timeout"] if want["wait"] else 0
            try:
                states, waited = wait_rollout(cluster.get_deployment, touched, timeout)
            except FediflowError as exc:
                result["duration_s"] = timer.elapsed()
                raise FediflowError("%s, but reading the rollout status failed: %s"
                                    % ("; ".join(result["actions"]), exc.message), result=result)
        result["waited_s"] = waited
        for name, (state, _detail) in states.items():
            result["deployments"][name]["ready"] = state == "done"
        if want["wait"]:
            late = ["%s (%s)" % (name, detail) for name, (state, detail) in states.items() if state != "done"]
            if late:
                result["duration_s"] = timer.elapsed()
                failed = any(state == "failed" for state, _detail in states.values())
                raise FediflowError("%s, but %s: %s" % (
                    "; ".join(result["actions"]),
                    "the rollout failed" if failed else "not rolled out within wait_timeout=%ss" % want["wait_timeout"],
                    ", ".join(late)), result=result)
    result["duration_s"] = timer.elapsed()
    return result


def _fill(result, the_plan, done, ready):
    """The per-deployment and configmap results: as planned (``done`` None), or as far as the
    writes in ``done`` (a list of (phase, name, label)) got."""
    did = None if done is None else {(phase, name) for phase, name, _label in done}
    cm = the_plan["configmap"]
    if cm:
        changed = cm["changed"] and (did is None or ("configmap", cm["name"]) in did)
        result["configmap"] = {"name": cm["name"], "changed": changed, "before": dict(cm["before"]),
                               "after": dict(cm["after"]) if changed or not cm["changed"] else dict(cm["before"])}
    result["restarted"] = []
    for name, dep in the_plan["deployments"].items():
        scaled = dep["scale"] and (did is None or ("scale", name) in did)
        restarted = dep["restart"] and (did is None or ("restart", name) in did)
        touched = did is not None and (scaled or restarted)
        result["deployments"][name] = {
            "replicas_before": dep["replicas_before"],
            "replicas_after": dep["replicas_after"] if scaled else dep["replicas_before"],
            "restarted": restarted,
            "ready": False if touched else ready[name]}
        if restarted:
            result["restarted"].append(name)
