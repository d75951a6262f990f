"""Region failover and failback (playbooks/failover.yml, failback.yml) against the real lab:
PostgreSQL primary (us-east-1) + streaming standby (eu-west-1), moto for Route53 and SES.

No Kubernetes API server or Slack can run on this machine: each region's Kubernetes API, the
application's health URL behind it, the federation peers and the Slack webhook are the lab's
local HTTP doubles (lab/roles/lab/files/lab_doubles.py). moto marks Route53 changes INSYNC at once,
so waiting for INSYNC is exercised by route53_failover's unit tier, not here.

These tests move production between the regions. Each one leaves the lab in its home roles, and
the module fixture rebuilds the lab when a failure left it elsewhere; they are marked
restarts_lab so they run after the tests that assume a steady lab.
"""
import json
import os
import shutil
import time
import urllib.request

import boto3
import psycopg2
import psycopg2.errors
import pytest

from failover_fixtures import FAST_DETECT, app_state as _app_state, dns as _dns, failover as _failover
from failover_fixtures import get_json as _get, one as _one
from lab_fixtures import (ROOT, lab_is_home, pg_connect, pg_role, pg_streaming, playbook, playbook_result, poll,
                          rebuild_lab_unless_home, recap, s3_endpoint)
from redis_fixtures import critical_keys, redis_value, region_redis
from watcher_fixtures import Watcher

pytestmark = pytest.mark.restarts_lab


def _ses_sent(hv):
    client = boto3.client("ses", endpoint_url=hv["fediflow_aws_endpoint_url"], region_name=hv["fediflow_region"],
                          aws_access_key_id=hv["fediflow_aws_access_key"],
                          aws_secret_access_key=hv["fediflow_aws_secret_key"])
    return int(client.get_send_quota()["SentLast24Hours"])


def _slack_texts(hv):
    reqs = _get("http://%s:%d/_requests" % (hv["lab_net_global_address"], hv["lab_slack_port"]))
    return [json.dumps(r.get("body")) for r in reqs if r["path"].startswith("/services/")]


def _stop_immediate(hv):
    import subprocess  # pylint: disable=import-outside-toplevel
    bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["runuser", "-u", "postgres", "--", bindir + "/pg_ctl", "stop", "-m", "immediate", "-w",
                    "-D", hv["fediflow_pg_data_dir"]], cwd="/", check=True, capture_output=True)


@pytest.fixture
def regions(lab):
    """The lab in its home roles before each test; rebuilt after one that left it elsewhere."""
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby), "the lab must start in its home roles"
    yield primary, standby
    rebuild_lab_unless_home(primary, standby, ROOT / "tests" / "output" / "failover-logs")


def _untouched(primary, standby, dns_before):
    assert pg_role(primary) == "primary" and pg_role(standby) == "standby" and pg_streaming(standby)
    assert _dns(primary) == dns_before
    assert _app_state(standby)[1] == "standby"
    assert _one(primary, "SHOW default_transaction_read_only", db="postgres") == "off"


def test_unknown_target_region_refused_before_anything(regions, tmp_path):
    primary, standby = regions
    dns_before = _dns(primary)
    proc, _took, _res = _failover(tmp_path, "-e", "target_region=mars-1", check=False)
    assert proc.returncode != 0
    assert "target_region must be exactly one region of the inventory" in proc.stdout
    assert "mars-1" in proc.stdout
    _untouched(primary, standby, dns_before)


def test_healthy_primary_region_is_not_failed_over_without_force(regions, tmp_path):
    primary, standby = regions
    dns_before = _dns(primary)
    proc, _took, res = _failover(tmp_path, "-e", "target_region=eu-west-1", *FAST_DETECT, check=False)
    assert proc.returncode != 0
    assert res["failed_step"] == "detect" and not res["ok"]
    assert "healthy" in res["error"] and "force=true" in res["next"]
    _untouched(primary, standby, dns_before)


def _scale(hv, name, replicas):
    req = urllib.request.Request(
        "%s/apis/apps/v1/namespaces/%s/deployments/%s/scale" % (hv["fediflow_k8s_api_url"], hv["fediflow_k8s_namespace"], name),
        data=json.dumps({"spec": {"replicas": replicas}}).encode(), method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"})
    urllib.request.urlopen(req, timeout=5).close()


def test_application_incident_alone_does_not_move_the_database(regions, tmp_path):
    """The us-east-1 app stops answering (api scaled to 0) while its database is healthy."""
    primary, standby = regions
    dns_before = _dns(primary)
    _scale(primary, "api", 0)
    try:
        proc, _took, res = _failover(tmp_path, "-e", "target_region=eu-west-1", *FAST_DETECT, check=False)
    finally:
        _scale(primary, "api", primary["fediflow_k8s_serving_replicas"]["api"])
    assert proc.returncode != 0 and res["failed_step"] == "detect"
    assert res["source_application"]["state"] == "down"
    _untouched(primary, standby, dns_before)


def test_replay_lag_above_the_bound_refused(regions, tmp_path):
    primary, standby = regions
    dns_before = _dns(primary)
    _one(standby, "SELECT pg_wal_replay_pause()", db="postgres")
    try:
        _one(primary, "CREATE TABLE IF NOT EXISTS dr_lag_probe (id serial PRIMARY KEY, pad text)")
        _one(primary, "INSERT INTO dr_lag_probe (pad) SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
        lsn = _one(primary, "SELECT pg_current_wal_lsn()::text", db="postgres")
        assert poll(lambda: _one(standby, "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (lsn,), db="postgres"), 30)
        proc, _took, res = _failover(tmp_path, "-e", "target_region=eu-west-1", "-e", "force=true",
                                     "-e", "region_failover_max_lag_bytes=65536", check=False)
    finally:
        _one(standby, "SELECT pg_wal_replay_resume()", db="postgres")
    assert proc.returncode != 0
    # refused before the source primary was stopped: production stays where it was
    assert res["failed_step"] == "fence" and "max_lag_bytes=65536" in res["error"], res["error"]
    _untouched(primary, standby, dns_before)


def _probe_rows(hv, marker):
    """Rows of ``marker`` in dr_failover_probe on that host; 0 while the table itself has not been replayed there
    (the CREATE TABLE just ran on the primary: a standby a moment behind does not have it yet)."""
    try:
        return _one(hv, "SELECT count(*) FROM dr_failover_probe WHERE v = %s", (marker,))
    except psycopg2.errors.UndefinedTable:
        return 0


def test_failover_after_the_primary_dies_then_failback(regions, tmp_path):
    primary, standby = regions
    slack_before, ses_before = len(_slack_texts(primary)), _ses_sent(standby)  # SES of the surviving region
    # rows committed before the kill, replayed on the standby (near-zero lag)
    _one(primary, "CREATE TABLE IF NOT EXISTS dr_failover_probe (id serial PRIMARY KEY, v text, at timestamptz DEFAULT now())")
    marker = "before-kill-%d" % time.time_ns()
    _one(primary, "INSERT INTO dr_failover_probe (v) SELECT %s FROM generate_series(1, 100)", (marker,))
    assert poll(lambda: _probe_rows(standby, marker) == 100, 30)

    watcher = Watcher([primary, standby]).start()
    try:
        assert poll(lambda: len(watcher.acks(primary["fediflow_region"])) >= 10, 30), watcher.records()[-3:]
        _stop_immediate(primary)
        # no fence method and nobody's word: unreachable is not down - refused before anything moved
        no_fence = ["-e", '{"fediflow_fence": {"method": "none"}}']
        proc, _took, refused = _failover(tmp_path, "-e", "target_region=eu-west-1", *FAST_DETECT, *no_fence, check=False)
        assert proc.returncode != 0 and refused["failed_step"] == "fence", refused
        assert "fediflow_fence" in refused["error"] and "-e source_confirmed_down=true" in refused["error"]
        assert refused["fence"]["method"] == "none" and not refused["fence"]["ok"]
        assert pg_role(standby) == "standby" and _dns(primary) == [primary["fediflow_app_endpoint"]]
        assert _app_state(standby)[1] == "standby"
        # the operator knows it is down (they stopped it): their word, recorded
        proc, _took, res = _failover(tmp_path, "-e", "target_region=eu-west-1", *FAST_DETECT, *no_fence,
                                     "-e", "source_confirmed_down=true")
        failed_over_at = time.time()
        assert poll(lambda: len(watcher.acks(standby["fediflow_region"])) >= 10, 30)
        summary = watcher.check(standby, lost_region=primary["fediflow_region"], lost_until=failed_over_at)
    finally:
        watcher.stop()
    assert not summary["two_writers"], summary["two_writers"][:3]
    # what the killed primary acknowledged but never streamed is at most a tail (asynchronous replication)
    assert summary["lost_is_tail"], summary["missing"][:5]
    assert res["ok"] and res["failed_step"] == ""
    assert [s["step"] for s in res["steps"]] == [
        "inspect", "detect", "fence", "dns", "promote", "kubernetes", "old_primary", "archive", "notify", "checks"]
    assert res["detection"]["state"] == "down" and res["detection"]["rounds_run"] == 3
    assert res["detection_controller"]["state"] == "down"
    assert res["fence"]["method"] == "confirmed_down" and res["fence"]["confirmed_down"] is True
    assert res["promotion"]["guards"]["split_brain"]["confirmed_down"] is True
    assert res["promotion"]["promoted"] is True
    assert res["old_primary"] == "stopped and marked a standby"
    assert res["dns"]["value_after"] == [standby["fediflow_app_endpoint"]]
    assert "points at %s" % standby["fediflow_app_endpoint"] in res["state"] and "activated" in res["state"]
    # the region-2 database has the rows and takes writes
    assert pg_role(standby) == "primary" and pg_role(primary) is None
    assert _one(standby, "SELECT count(*) FROM dr_failover_probe WHERE v = %s", (marker,)) == 100
    in_eu = "written-in-eu-%d" % time.time_ns()
    _one(standby, "INSERT INTO dr_failover_probe (v) VALUES (%s)", (in_eu,))
    # DNS, Kubernetes, notifications
    assert _dns(primary) == [standby["fediflow_app_endpoint"]]
    replicas, role = _app_state(standby)
    assert role == "primary" and replicas == standby["fediflow_k8s_serving_replicas"]
    # only the deployment already running (warm) is restarted; the ones scaled up from 0 start fresh
    assert res["kubernetes"]["restarted"] == ["streaming"]
    writes = [r for r in _get(standby["fediflow_k8s_api_url"] + "/_requests") if r["method"] in ("PATCH", "PUT")]
    assert any(r["path"].endswith("/deployments/streaming") and "restartedAt" in json.dumps(r["body"]) for r in writes)
    assert any(r["path"].endswith("/deployments/api/scale") for r in writes)
    texts = _slack_texts(primary)[slack_before:]
    assert len(texts) == 1 and "eu-west-1" in texts[0] and "us-east-1" in texts[0]
    assert _ses_sent(standby) == ses_before + 1
    assert res["checks"]["database_writable"] is True and res["checks"]["app"] == "up"
    assert res["checks"]["federation_ratio"] >= 0.5
    for secret in (primary["fediflow_pg_superuser_password"], primary["fediflow_aws_secret_key"], "lab-webhook-token"):
        assert secret not in proc.stdout and secret not in json.dumps(res)

    # a second run changes nothing (and sends nothing), also limited to the surviving region
    proc2, _took, res2 = _failover(tmp_path, "-e", "target_region=eu-west-1", "--limit", "pg-eu-west-1", *FAST_DETECT)
    assert all(c["changed"] == 0 for c in recap(proc2.stdout).values()), proc2.stdout[-3000:]
    assert res2["ok"] and res2["changed_steps"] == [] and res2["detection"]["skipped"]
    assert len(_slack_texts(primary)) == slack_before + 1

    # the lab refuses to come "up" the inventory's way while failed over
    up, _took = playbook("lab_up.yml", check=False)
    assert up.returncode != 0 and "the lab is failed over" in up.stdout

    # failback: us-east-1 rewound into a standby of eu-west-1, then production switched back
    back, _took = playbook("failback.yml", "-e", "switch_back=true")
    assert back.stdout.count("rewound with pg_rewind") == 2 and "cloned afresh" not in back.stdout
    assert lab_is_home(primary, standby)
    assert _one(primary, "SELECT count(*) FROM dr_failover_probe WHERE v = %s", (in_eu,)) == 1
    assert _dns(primary) == [primary["fediflow_app_endpoint"]]
    assert _app_state(primary)[1] == "primary" and _app_state(standby)[1] == "standby"
    assert _app_state(standby)[0] == standby["fediflow_k8s_standby_replicas"]
    again, _took = playbook("failback.yml", "-e", "switch_back=true")
    assert "is the primary already: nothing to fail back" in again.stdout
    assert all(c["changed"] == 0 for c in recap(again.stdout).values())


@pytest.fixture(scope="module")
def switchover(lab, tmp_path_factory):
    """One planned switchover to eu-west-1 (force, no detection) for the three tests below, in this
    order: what the switchover kept, a full-system recovery of region 2 run while production is
    there (its cache flushed), then the failback. Before it: a cache backup, and what region 1's Redis
    held at that moment (the recover test's expectation). After them, whatever happened: production
    back home, region 2's Redis a replica of region 1's again, the lab rebuilt if it is not home."""
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby), "the lab must start in its home roles"
    patterns = primary["fediflow_redis_critical_patterns"]
    playbook("backup.yml", "--tags", "backup_cache")
    r1 = region_redis(primary)
    expected = {key: (redis_value(r1, key), r1.pttl(key)) for key in critical_keys(r1, patterns)}
    read_at = time.monotonic()
    _one(primary, "CREATE TABLE IF NOT EXISTS dr_failover_probe (id serial PRIMARY KEY, v text, at timestamptz DEFAULT now())")
    marker = "planned-%d" % time.time_ns()
    _one(primary, "INSERT INTO dr_failover_probe (v) VALUES (%s)", (marker,))  # no wait for the standby
    work = tmp_path_factory.mktemp("switchover")
    # the steady write load of the split-brain watcher: a writer in each region, from before the switchover
    # to after the failback (test_failback_after_the_planned_switchover checks it)
    watcher = Watcher([primary, standby]).start()
    try:
        assert poll(lambda: len(watcher.acks(primary["fediflow_region"])) >= 10, 30), watcher.records()[-3:]
        _proc, _took, res = _failover(work, "-e", "target_region=eu-west-1", "-e", "force=true")
        yield {"primary": primary, "standby": standby, "result": res, "marker": marker, "patterns": patterns,
               "expected": expected, "read_at": read_at, "watcher": watcher}
    finally:
        watcher.stop()
        if pg_role(standby) == "primary":
            playbook("failback.yml", "-e", "switch_back=true", check=False)
        r2 = region_redis(standby)
        if r2.info("replication")["role"] != "slave":
            r2.replicaof(primary["fediflow_redis_host"], primary["fediflow_redis_port"])
            poll(lambda: r2.info("replication").get("master_link_status") == "up", 30)
        rebuild_lab_unless_home(primary, standby, ROOT / "tests" / "output" / "failover-logs")


def test_planned_switchover_loses_nothing(switchover):
    primary, standby, res = switchover["primary"], switchover["standby"], switchover["result"]
    assert res["ok"] and res["detection"]["skipped"] and res["fence"]["method"] == "stop", res["fence"]
    assert res["fence"]["checkpoint_lsn"] and res["promotion"]["guards"]["catch_up"]["status"] == "replayed"
    assert _one(standby, "SELECT count(*) FROM dr_failover_probe WHERE v = %s", (switchover["marker"],)) == 1
    assert pg_role(primary) is None and pg_role(standby) == "primary"


def test_after_a_failover_with_region_2_cache_flushed_recover_brings_the_critical_keys_back(switchover, tmp_path):
    """(From test_recover.py.) The runbook's end-to-end case: after the planned failover to eu-west-1 (a
    cache backup taken before it), region 2's Redis loses its data (made a primary and flushed), then
    recover.yml: every critical key is back with its type, value and TTL, compared with the redis client
    against what region 1 held at backup time. The integrity step is left to test_validate (its media check
    needs a backup in the new region first)."""
    standby, expected, patterns = switchover["standby"], switchover["expected"], switchover["patterns"]
    assert len(expected) >= 1000
    assert pg_role(standby) == "primary", "the switchover did not leave production in eu-west-1"
    r2 = region_redis(standby)
    r2.replicaof("NO", "ONE")
    r2.flushall()
    assert not critical_keys(r2, patterns)
    recover = ("recover.yml", "recover_result_file", tmp_path / "recover.json",
               "-e", "region=%s" % standby["fediflow_region"], "-e", "recover_validate=false")
    _proc, result, _took = playbook_result(*recover)
    assert result["ok"], result
    counts = result["cache"]["counts"]
    assert counts["restored"] == len(expected) and counts["failed"] == 0, counts
    elapsed_ms = (time.monotonic() - switchover["read_at"]) * 1000
    wrong = []
    for key, ((kind, value), pttl) in expected.items():
        got_kind, got_value = redis_value(r2, key)
        got_pttl = r2.pttl(key)
        ttl_ok = got_pttl == -1 if pttl == -1 else pttl - elapsed_ms - 5000 <= got_pttl <= pttl
        if (got_kind, got_value) != (kind, value) or not ttl_ok:
            wrong.append((key, kind, got_kind, pttl, got_pttl))
    assert not wrong, wrong[:5]
    assert r2.info("replication")["role"] == "master"  # the region's cache takes writes now
    _proc, again, _took = playbook_result(*recover)
    assert again["ok"] and again["changed_steps"] == [] and again["cache"]["counts"]["already_present"] == len(expected)


def test_after_the_switchover_backup_yml_unchanged_backs_up_the_new_primary(switchover):
    """The inventory still names us-east-1 the primary; backup.yml probes and backs up eu-west-1, the database that
    takes writes (its WAL archiving checked, a logical backup in its own region's ledger), and nothing on us-east-1."""
    primary, standby = switchover["primary"], switchover["standby"]
    assert pg_role(standby) == "primary" and pg_role(primary) != "primary"  # stopped, or a standby
    ledger = os.path.join(standby["fediflow_backup_dir"], "logical")
    before = set(os.listdir(ledger)) if os.path.isdir(ledger) else set()
    proc, _took = playbook("backup.yml", "-e", "backup_physical=false", "-e", "backup_media=false",
                           "-e", "backup_cache=false", "-e", "backup_config=false", "-e", "backup_logical_verify=list")
    assert "WAL archiving healthy" in proc.stdout
    counts = recap(proc.stdout)
    assert [c["changed"] for host, c in counts.items() if primary["fediflow_region"] in host] == [0]  # the standby: nothing
    new = sorted(set(os.listdir(ledger)) - before)
    assert len(new) == 1, new
    with open(os.path.join(ledger, new[0], "manifest.json"), encoding="utf-8") as handle:
        assert json.load(handle)["region"] == standby["fediflow_region"]


def _archived(hv, segment):
    conn = pg_connect(hv, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT coalesce(last_archived_wal, '') >= %s FROM pg_stat_archiver", (segment,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_after_the_switchover_pitr_in_region_2_reaches_a_time_after_it(switchover, tmp_path):
    """backup.yml unchanged backs up the new primary; its base backup and the new timeline's WAL and .history file,
    in every region's copy of the cluster's one archive, take region 2 to a time after the switchover: a restore
    beside the new primary (pitr_restore.yml, switch=false, paused at the target) holds the row committed before
    the target and not the one after it."""
    from doubles_fixtures import free_port  # pylint: disable=import-outside-toplevel
    from pair_fixtures import _as_pg, bindir  # pylint: disable=import-outside-toplevel
    primary, standby = switchover["primary"], switchover["standby"]
    assert pg_role(standby) == "primary", "the switchover did not leave production in eu-west-1"
    playbook("backup.yml", "-e", "backup_logical=false", "-e", "backup_media=false", "-e", "backup_cache=false",
             "-e", "backup_config=false")
    before, after = "pitr-before-%d" % time.time_ns(), "pitr-after-%d" % time.time_ns()
    _one(standby, "INSERT INTO dr_failover_probe (v) VALUES (%s)", (before,))
    target = _one(standby, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    _one(standby, "INSERT INTO dr_failover_probe (v) VALUES (%s)", (after,))
    segment = _one(standby, "SELECT pg_walfile_name(pg_switch_wal())", db="postgres")
    assert poll(lambda: _archived(standby, segment), 60), "segment %s not archived by the new primary" % segment
    timeline = int(segment[:8], 16)
    assert timeline >= 2
    for hv in (primary, standby):   # the new timeline's history in each region's copy of the archive
        s3 = boto3.client("s3", endpoint_url=s3_endpoint(hv), region_name=hv["fediflow_region"],
                          aws_access_key_id=hv["fediflow_aws_access_key"],
                          aws_secret_access_key=hv["fediflow_aws_secret_key"])
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=hv["fediflow_backup_bucket"],
                                                     Prefix="wal/%s/%08X" % (primary["fediflow_region"], timeline))
                .get("Contents", [])]
        assert "wal/%s/%08X.history" % (primary["fediflow_region"], timeline) in keys, (hv["fediflow_region"], keys)
    port = free_port()
    proc, _took = playbook("pitr_restore.yml", "-e", "pitr_restore_region=%s" % standby["fediflow_region"],
                           "-e", "pitr_restore_target_time=%s" % target, "-e", "pitr_restore_switch=false",
                           "-e", "pitr_restore_action=pause", "-e", "pitr_restore_restore_port=%d" % port,
                           "-e", "pitr_restore_inclusive=true", check=False)
    data_dir = standby["fediflow_pg_data_dir"]
    side = [os.path.join(os.path.dirname(data_dir), n) for n in os.listdir(os.path.dirname(data_dir))
            if n.startswith(os.path.basename(data_dir) + ".pitr-") and not n.endswith(".log")]
    try:
        assert proc.returncode == 0, proc.stdout[-3000:]
        import psycopg2  # pylint: disable=import-outside-toplevel
        from lab_fixtures import pg_tls  # pylint: disable=import-outside-toplevel
        conn = psycopg2.connect(host=standby["fediflow_pg_host"], port=port, user="postgres", dbname="fediflow",
                                password=standby["fediflow_pg_superuser_password"], **pg_tls(standby))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT v FROM dr_failover_probe WHERE v IN (%s, %s)", (before, after))
                assert [r[0] for r in cur.fetchall()] == [before]
                cur.execute("SELECT pg_get_wal_replay_pause_state()")
                assert cur.fetchone()[0] == "paused"
        finally:
            conn.close()
    finally:
        for path in side:
            _as_pg([os.path.join(bindir(), "pg_ctl"), "stop", "-D", path, "-m", "immediate", "-w"], check=False)
            shutil.rmtree(path, ignore_errors=True)
            if os.path.exists(path + ".log"):
                os.unlink(path + ".log")


def test_failback_after_the_planned_switchover(switchover):
    primary, standby = switchover["primary"], switchover["standby"]
    assert pg_role(standby) == "primary", "the switchover did not leave production in eu-west-1"
    watcher = switchover["watcher"]
    playbook("failback.yml", "-e", "switch_back=true")
    assert lab_is_home(primary, standby)
    back_at = time.time()
    assert poll(lambda: len(watcher.acks(primary["fediflow_region"], after=back_at)) >= 10, 30)
    # two planned switchovers under a steady write load: every acknowledged write is on the primary, and
    # never two regions writable at once
    summary = watcher.check(primary)
    assert summary["acked"][standby["fediflow_region"]] >= 10 and summary["acked"][primary["fediflow_region"]] >= 20
    assert not summary["missing"], "%d acknowledged writes lost: %s" % (len(summary["missing"]), summary["missing"][:5])
    assert not summary["two_writers"], summary["two_writers"][:3]
    print("switchover under load: acknowledged %s, lost 0, writers at once 0" % summary["acked"])
    for hv in (primary, standby):
        assert _one(hv, "SHOW default_transaction_read_only", db="postgres") == "off"
