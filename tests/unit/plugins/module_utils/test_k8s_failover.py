# -*- coding: utf-8 -*-
"""k8s_failover's planning as plain data: input validation, the plan (scales, configmap keys,
which deployments restart), the write order, the diff, kubectl's rollout checks and the polling
loop. Deployments and configmaps are dicts shaped as the Kubernetes API returns them.

The API calls themselves run against the lab's Kubernetes double in the integration tier. The
double is always rolled out at once, so the polling loop is exercised here with a plain function
that returns the Deployment a real controller would show step by step.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import k8s_failover as kf
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def _params(**kw):
    params = {"namespace": "fediflow", "replicas": {"api": 5, "worker": 3}, "configmap": "app-config",
              "configmap_data": {"DATABASE_ROLE": "primary"}, "restart": "on_change", "restart_deployments": None,
              "wait": True, "wait_timeout": 120}
    params.update(kw)
    return params


def _dep(replicas, generation=1, observed=None, updated=None, ready=None, available=None, total=None,
         restarted=None, conditions=None):
    template = {"metadata": {"annotations": {kf.RESTART_ANNOTATION: restarted}}} if restarted else {}
    status = {"observedGeneration": generation if observed is None else observed,
              "replicas": replicas if total is None else total,
              "updatedReplicas": replicas if updated is None else updated,
              "readyReplicas": replicas if ready is None else ready,
              "availableReplicas": replicas if available is None else available}
    if conditions:
        status["conditions"] = conditions
    return {"metadata": {"name": "x", "generation": generation},
            "spec": {"replicas": replicas, "template": template}, "status": status}


def _cm(**data):
    return {"metadata": {"name": "app-config"}, "data": data}


def _plan(params=None, deps=None, cm=None):
    want = kf.validate(params or _params())
    deps = deps or {"api": _dep(2), "worker": _dep(1)}
    return kf.plan(want, deps, _cm(DATABASE_ROLE="standby", REGION="eu-west-1") if cm is None else cm)


@pytest.mark.parametrize("kw, message", [
    ({"namespace": "Fediflow"}, "namespace must be"),
    ({"namespace": ""}, "namespace must be"),
    ({"replicas": {"api": -1}}, r"replicas.api must be an integer >= 0"),
    ({"replicas": {"api": "five"}}, r"replicas.api must be an integer"),
    ({"replicas": {"api": True}}, r"replicas.api must be an integer"),
    ({"replicas": {"api": 2.5}}, r"replicas.api must be an integer"),
    ({"replicas": {"api/scale": 1}}, "replicas: 'api/scale' is not a Kubernetes object name"),
    ({"restart_deployments": ["Web"]}, "restart_deployments: 'Web'"),
    ({"configmap_data": None}, "configmap and configmap_data go together"),
    ({"configmap": None}, "configmap and configmap_data go together"),
    ({"configmap_data": {}}, "configmap_data must name at least one key"),
    ({"configmap_data": {"PORT": 5432}}, r"configmap_data.PORT must be a string \(quote it\), got int"),
    ({"configmap_data": {"bad key": "x"}}, "'bad key' is not a configmap key"),
    ({"restart": "sometimes"}, "restart must be one of on_change, always, never"),
    ({"wait_timeout": 0}, "wait_timeout must be at least 1"),
    ({"replicas": {}, "configmap": None, "configmap_data": None}, "nothing to do"),
])
def test_bad_input_is_refused_naming_the_option(kw, message):
    with pytest.raises(FediflowError, match=message):
        kf.validate(_params(**kw))


def test_validate_normalizes():
    want = kf.validate(_params(replicas={"api": "5", "worker": 0}, restart_deployments=["web", "api", "web"]))
    assert want["replicas"] == {"api": 5, "worker": 0}
    assert want["restart_names"] == ["web", "api"]
    assert want["names"] == ["api", "worker", "web"]  # every deployment read, replicas first
    assert kf.validate(_params())["restart_names"] == ["api", "worker"]  # default: the keys of replicas
    assert kf.validate(_params(restart_deployments=[]))["restart_names"] == []


def test_failover_plan_scales_patches_one_key_and_restarts_running_deployments():
    plan = _plan()
    assert plan["changed"] is True
    assert plan["configmap"] == {"name": "app-config", "before": {"DATABASE_ROLE": "standby"},
                                 "after": {"DATABASE_ROLE": "primary"}, "patch": {"DATABASE_ROLE": "primary"},
                                 "changed": True}  # REGION is neither read into the plan nor patched
    assert plan["deployments"]["api"] == {"replicas_before": 2, "replicas_after": 5, "scale": True,
                                          "restart": True, "restarted_at": None}
    assert plan["deployments"]["worker"]["restart"] is True
    assert [label for _phase, _name, label in kf.write_steps(plan)] == [
        "configmap app-config: set DATABASE_ROLE", "deployment api: scale 2 -> 5", "deployment worker: scale 1 -> 3",
        "deployment api: rollout restart", "deployment worker: rollout restart"]


def test_everything_matching_plans_nothing():
    plan = _plan(deps={"api": _dep(5), "worker": _dep(3)}, cm=_cm(DATABASE_ROLE="primary"))
    assert plan["changed"] is False
    assert kf.write_steps(plan) == []


def test_on_change_does_not_restart_when_only_replicas_change():
    plan = _plan(cm=_cm(DATABASE_ROLE="primary"))
    assert plan["changed"] is True
    assert [phase for phase, _n, _l in kf.write_steps(plan)] == ["scale", "scale"]


def test_scaled_from_zero_or_to_zero_is_not_restarted():
    plan = _plan(_params(replicas={"api": 5, "worker": 0}), deps={"api": _dep(0), "worker": _dep(2)})
    assert plan["deployments"]["api"]["restart"] is False  # fresh pods read the new configmap anyway
    assert plan["deployments"]["worker"]["restart"] is False  # no pods left to restart
    assert plan["changed"] is True


def test_restart_modes():
    matching = {"deps": {"api": _dep(5), "worker": _dep(3)}, "cm": _cm(DATABASE_ROLE="primary")}
    always = _plan(_params(restart="always"), **matching)
    assert always["changed"] is True and [n for p, n, _l in kf.write_steps(always)] == ["api", "worker"]
    never = _plan(_params(restart="never"))
    assert not any(d["restart"] for d in never["deployments"].values())
    assert [p for p, _n, _l in kf.write_steps(never)] == ["configmap", "scale", "scale"]


def test_restart_deployments_beyond_replicas_are_read_and_kept_at_their_count():
    params = _params(replicas={"api": 5}, restart_deployments=["api", "web"])
    plan = _plan(params, deps={"api": _dep(2), "web": _dep(4)})
    assert plan["deployments"]["web"] == {"replicas_before": 4, "replicas_after": 4, "scale": False,
                                          "restart": True, "restarted_at": None}
    only_listed = _plan(_params(restart_deployments=["worker"]))
    assert [n for n, d in only_listed["deployments"].items() if d["restart"]] == ["worker"]


def test_absent_key_and_absent_replicas():
    dep = _dep(1)
    del dep["spec"]["replicas"]  # the API server defaults it to 1
    plan = _plan(_params(configmap_data={"DATABASE_ROLE": "primary", "FAILOVER": "yes"}),
                 deps={"api": _dep(2), "worker": dep}, cm=_cm(DATABASE_ROLE="primary"))
    assert plan["deployments"]["worker"]["replicas_before"] == 1
    assert plan["configmap"]["before"] == {"DATABASE_ROLE": "primary", "FAILOVER": None}
    assert plan["configmap"]["patch"] == {"FAILOVER": "yes"}


def test_configmap_without_data_field():
    plan = _plan(cm={"metadata": {"name": "app-config"}})
    assert plan["configmap"]["patch"] == {"DATABASE_ROLE": "primary"}


def test_diff_shows_replicas_named_keys_and_restart_annotation():
    plan = _plan(_params(configmap_data={"DATABASE_ROLE": "primary", "FAILOVER": "yes"}),
                 deps={"api": _dep(2, restarted="2026-01-01T00:00:00Z"), "worker": _dep(3)})
    diff = kf.diff_of(plan, {"api": "2026-11-26T10:00:00Z"})
    assert diff["before"] == {"deployments": {"api": {"replicas": 2, "restartedAt": "2026-01-01T00:00:00Z"},
                                              "worker": {"replicas": 3}},
                              "configmap": {"app-config": {"DATABASE_ROLE": "standby"}}}
    assert diff["after"] == {"deployments": {"api": {"replicas": 5, "restartedAt": "2026-11-26T10:00:00Z"},
                                             "worker": {"replicas": 3}},
                             "configmap": {"app-config": {"DATABASE_ROLE": "primary", "FAILOVER": "yes"}}}
    assert "eu-west-1" not in repr(diff) and "eu-west-1" not in repr(plan)


def test_restart_stamp_is_rfc3339_and_always_changes_the_template():
    now = datetime(2026, 11, 26, 10, 0, 0, 250000, tzinfo=timezone.utc)
    assert kf.restart_stamp(now) == "2026-11-26T10:00:00Z"
    assert kf.restart_stamp(now, "2026-11-26T10:00:00Z") == "2026-11-26T10:00:00.250000Z"


@pytest.mark.parametrize("dep, state, detail", [
    (_dep(5), "done", "rolled out"),
    (_dep(0), "done", "rolled out (0 replicas)"),
    (_dep(5, generation=3, observed=2), "progressing", "generation 3 not observed"),
    (_dep(5, updated=2), "progressing", "2 of 5 replicas updated"),
    (_dep(5, total=7), "progressing", "2 old replicas pending termination"),
    (_dep(5, ready=4), "progressing", "4 of 5 updated replicas ready"),
    (_dep(5, available=3), "progressing", "3 available"),
    (_dep(5, conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                          "message": 'ReplicaSet "api-1" has timed out progressing.'}]), "failed", "timed out"),
])
def test_rollout_state_follows_kubectl_rollout_status(dep, state, detail):
    got_state, got_detail = kf.rollout_state(dep)
    assert got_state == state and detail in got_detail


def test_rollout_state_with_empty_status():
    fresh = {"metadata": {"generation": 1}, "spec": {"replicas": 2}}
    assert kf.rollout_state(fresh)[0] == "progressing"


def test_wait_rollout_polls_until_every_deployment_is_rolled_out():
    steps = {"api": [_dep(5, generation=2, observed=1), _dep(5, generation=2, updated=3, total=7),
                     _dep(5, generation=2)],
             "worker": [_dep(3)]}
    reads = []

    def get(name):
        reads.append(name)
        seq = steps[name]
        return seq.pop(0) if len(seq) > 1 else seq[0]

    states, waited = kf.wait_rollout(get, ["api", "worker"], timeout=10, interval=0.01)
    assert states == {"api": ("done", "rolled out (5 replicas)"), "worker": ("done", "rolled out (3 replicas)")}
    assert reads == ["api", "worker", "api", "api"]  # a rolled-out deployment is not read again
    assert waited < 10


def test_wait_rollout_gives_up_at_the_deadline_and_stops_on_failure():
    states, waited = kf.wait_rollout(lambda name: _dep(5, ready=1), ["api"], timeout=0.3, interval=0.05)
    assert states["api"][0] == "progressing" and 0.3 <= waited < 2
    failed = _dep(5, updated=1, conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}])
    states, waited = kf.wait_rollout(lambda name: failed if name == "api" else _dep(1, ready=0),
                                     ["api", "worker"], timeout=30, interval=0.05)
    assert states["api"][0] == "failed" and waited < 1


def test_one_read_without_wait():
    states, waited = kf.wait_rollout(lambda name: _dep(5, ready=1), ["api"], timeout=0)
    assert states["api"][0] == "progressing" and waited < 0.5


def test_scrub_masks_secrets():
    assert kf.scrub("401 for token abc.def.ghi", ["abc.def.ghi", None, ""]) == "401 for token ********"


def test_auth_spec_marks_the_token_no_log():
    spec = kf.k8s_auth_argument_spec()
    assert spec["api_key"]["no_log"] is True
    assert spec["validate_certs"]["default"] is True


def test_an_old_client_without_content_type_is_named_not_called_unreachable():
    """Debian 12's python3-kubernetes 22.6 has no _content_type: the step says which client, what it needs."""
    cluster = kf.Cluster.__new__(kf.Cluster)
    cluster.namespace, cluster.secrets = "fediflow", ()

    def old_patch(*_args, **kwargs):
        if "_content_type" in kwargs:
            raise TypeError("Got an unexpected keyword argument '_content_type' to method patch_namespaced_config_map")
        raise AssertionError("not reached")
    with pytest.raises(kf.KubeError) as err:
        cluster._call("PATCH configmap fediflow/app-config", old_patch, "app-config", "fediflow", {"data": {}},
                      _content_type=kf.MERGE_PATCH)
    assert "cannot send a merge patch" in str(err.value) and kf.MIN_CLIENT in str(err.value)
    assert "unreachable" not in str(err.value)
