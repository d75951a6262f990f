"""playbooks/recover.yml — the runbook's full system recovery, against the real lab (PostgreSQL,
moto S3, Redis per region, the region's Kubernetes API double, the federation peers double). Outcomes are checked
independently: the result file and report, the Kubernetes double's objects over HTTP, psycopg2.
Where a test must not move the lab's application, it points the role at a private Kubernetes API
double (no real API server can run here) with recover_kubeconfig."""
import json
import time
import urllib.request

import pytest

from lab_fixtures import ROOT, pg_role, playbook, rebuild_lab_unless_home, recap
from redis_fixtures import critical_keys, redis_value, region_redis

pytestmark = pytest.mark.slow  # long role / playbook runs: not in `make test-quick`


def _run(tmp_path, *extra, check=True):
    result = tmp_path / "recover.json"
    proc, took = playbook("recover.yml", "-e", "recover_result_file=%s" % result, *extra, check=check)
    data = json.loads(result.read_text()) if result.exists() else None
    return proc, data, took


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


@pytest.mark.restarts_lab
def test_after_a_failover_with_region_2_cache_flushed_recover_brings_the_critical_keys_back(lab, tmp_path):
    """The issue's end-to-end case: cache backup, planned failover to eu-west-1, region 2's Redis
    loses its data (made a primary and flushed), then recover.yml: every critical key is back with
    its type, value and TTL, compared with the redis client against what region 1 held at backup
    time. The integrity step is left to test_validate (its media check needs a backup in the new
    region first). Production is switched back afterwards and the lab rebuilt if it is not home."""
    primary, standby = lab["primary"], lab["standby"]
    patterns = primary["fediflow_redis_critical_patterns"]
    playbook("backup.yml", "--tags", "backup_cache")
    r1, r2 = region_redis(primary), region_redis(standby)
    expected = {key: (redis_value(r1, key), r1.pttl(key)) for key in critical_keys(r1, patterns)}
    read_at = time.monotonic()
    assert len(expected) >= 1000
    try:
        playbook("failover.yml", "-e", "target_region=%s" % standby["fediflow_region"], "-e", "force=true")
        assert pg_role(standby) == "primary"
        r2.replicaof("NO", "ONE")
        r2.flushall()
        assert not critical_keys(r2, patterns)

        _proc, result, _took = _run(tmp_path, "-e", "region=%s" % standby["fediflow_region"], "-e", "recover_validate=false")
        assert result["ok"], result
        counts = result["cache"]["counts"]
        assert counts["restored"] == len(expected) and counts["failed"] == 0, counts
        elapsed_ms = (time.monotonic() - read_at) * 1000
        wrong = []
        for key, ((kind, value), pttl) in expected.items():
            got_kind, got_value = redis_value(r2, key)
            got_pttl = r2.pttl(key)
            ttl_ok = got_pttl == -1 if pttl == -1 else pttl - elapsed_ms - 5000 <= got_pttl <= pttl
            if (got_kind, got_value) != (kind, value) or not ttl_ok:
                wrong.append((key, kind, got_kind, pttl, got_pttl))
        assert not wrong, wrong[:5]
        assert r2.info("replication")["role"] == "master"  # the region's cache takes writes now

        _proc, again, _took = _run(tmp_path, "-e", "region=%s" % standby["fediflow_region"], "-e", "recover_validate=false")
        assert again["ok"] and again["changed_steps"] == [] and again["cache"]["counts"]["already_present"] == len(expected)
    finally:
        if pg_role(standby) == "primary":
            playbook("failback.yml", "-e", "switch_back=true", check=False)
        playbook("lab_up.yml", check=False)  # region 2's Redis follows region 1 again
        rebuild_lab_unless_home(primary, standby, ROOT / "tests" / "output" / "recover-logs")
