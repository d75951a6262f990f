"""playbooks/recover.yml — the runbook's full system recovery, against the real lab (PostgreSQL,
moto S3, Redis per region, the region's Kubernetes API double, the federation peers double). Outcomes are checked
independently: the result file and report, the Kubernetes double's objects over HTTP, psycopg2.
Where a test must not move the lab's application, it points the role at a private Kubernetes API
double (no real API server can run here) with recover_kubeconfig. The end-to-end case (region 2's
cache flushed after a planned failover, recover brings the critical keys back) runs in
test_failover.py, during the one planned switchover of the session's failover tests."""
import json
import urllib.request

import pytest

from lab_fixtures import pg_role, playbook_result, recap

pytestmark = pytest.mark.slow  # long role / playbook runs: not in `make test-quick`


def _run(tmp_path, *extra, check=True):
    return playbook_result("recover.yml", "recover_result_file", tmp_path / "recover.json", *extra, check=check)


def _objects(url, kind, name):
    path = {"configmap": "/api/v1/namespaces/fediflow/configmaps/%s", "deployment": "/apis/apps/v1/namespaces/fediflow/deployments/%s"}[kind]
    with urllib.request.urlopen(url + path % name, timeout=5) as resp:
        return json.loads(resp.read())


def test_recovers_the_serving_region_in_the_runbooks_order_then_changes_nothing(lab, tmp_path):
    primary = lab["primary"]
    proc, result, _took = _run(tmp_path, "-e", "recover_cache=false", "-e", "recover_validate=false")
    assert result["ok"] and result["region"] == primary["fediflow_region"], result
    assert [s["name"] for s in result["steps"]] == ["infrastructure", "database", "cache", "federation", "application", "integrity"]
    assert all(s["ok"] and s["end"] >= s["start"] for s in result["steps"]), result["steps"]
    steps = {s["name"]: s for s in result["steps"]}
    assert steps["database"]["details"]["role"] == "primary" and not result["degraded"]
    assert steps["federation"]["details"]["healthy_ratio"] >= 0.5
    assert steps["cache"]["skipped"] and steps["integrity"]["skipped"]
    report = json.loads(open(result["report"]["json"], encoding="utf-8").read())
    assert [s["name"] for s in report["steps"]] == [s["name"] for s in result["steps"]]
    # the serving region's application was already up: a second run changes nothing at all
    proc, again, _took = _run(tmp_path, "-e", "recover_cache=false", "-e", "recover_validate=false")
    assert again["ok"] and again["changed_steps"] == []
    assert all(c["changed"] == 0 for c in recap(proc.stdout).values()), recap(proc.stdout)


def test_unknown_region_is_refused_before_anything(lab, tmp_path):
    proc, result, _took = _run(tmp_path, "-e", "region=mars-north-1", check=False)
    assert proc.returncode != 0 and result is None
    assert "recover_region" in proc.stdout and "mars-north-1" in proc.stdout and "Nothing was touched" in proc.stdout


def test_standby_region_serves_read_only_or_stops_when_not_allowed(lab, tmp_path, k8s_double, kubeconfig):
    """The runbook's 'primary, else replica': a region whose database is a standby. On a private
    Kubernetes double (the lab's application must not move)."""
    standby = lab["standby"]
    assert pg_role(standby) == "standby"
    common = ["-e", "region=%s" % standby["fediflow_region"], "-e", "recover_kubeconfig=%s" % kubeconfig,
              "-e", "recover_cache=false", "-e", "recover_validate=false", "-e", "recover_check_bucket=false"]
    proc, result, _took = _run(tmp_path, *common, "-e", "recover_allow_replica=false", check=False)
    assert proc.returncode != 0 and not result["ok"] and result["failed_step"] == "database", result
    assert "recover_allow_replica is false" in result["error"]
    assert _objects(k8s_double.url, "configmap", "app-config")["data"]["DATABASE_ROLE"] == "standby"  # untouched

    proc, result, _took = _run(tmp_path, *common, "-e", '{"recover_k8s_replicas": {"api": 2, "worker": 1}}')
    assert result["ok"] and result["degraded"] and result["database_role"] == "replica", result
    assert "promote it" in result["next"]
    assert _objects(k8s_double.url, "configmap", "app-config")["data"]["DATABASE_ROLE"] == "replica"
    assert pg_role(standby) == "standby"  # recovery never promotes: that is failover.yml's decision
