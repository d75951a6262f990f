"""One writable primary, always: a real partition of the primary region (lab/playbooks/lab_region.yml
state=partitioned: its processes keep running, nothing outside reaches it), a failover refused without
a fence, the lab's fence (fediflow.dr_lab.lab_fence through the lab's control plane), the partition healed,
the failback - with the split-brain watcher (watcher_fixtures.py) writing in both regions throughout,
as each region's own application would.

The lab's fence acts on the region's network namespace from the controller, as a cloud API stops an
instance it cannot reach; what a cloud API really does (aws_ec2) is tested against moto elsewhere.
"""
import os
import time

import psycopg2
import pytest

from failover_fixtures import FAST_DETECT, app_state, dns, failover
from lab_fixtures import lab_is_home, lab_region, pg_connect, pg_role, playbook, poll, rebuild_lab_unless_home
from watcher_fixtures import Watcher

pytestmark = pytest.mark.restarts_lab


@pytest.fixture
def home(lab):
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby), "the lab must start in its home roles"
    yield primary, standby
    for hv in (primary, standby):
        lab_region(hv, "up")
    if pg_role(standby) == "primary":
        playbook("failback.yml", "-e", "switch_back=true", check=False)
    rebuild_lab_unless_home(primary, standby)


def test_a_partitioned_primary_is_fenced_before_the_promotion_and_stays_fenced_when_healed(home, tmp_path):
    primary, standby = home
    region1, region2 = primary["fediflow_region"], standby["fediflow_region"]
    watcher = Watcher([primary, standby]).start()
    try:
        assert poll(lambda: len(watcher.acks(region1)) >= 10, 30), watcher.records()[-3:]
        dns_before = dns(primary)
        partitioned_at = time.time()
        lab_region(primary, "partitioned")
        # alive behind the partition: region 1's own application still writes there - the danger is real
        assert poll(lambda: len(watcher.acks(region1, after=partitioned_at + 0.5)) >= 5, 30)

        # no fence and nobody's word: refused before anything moved, naming both ways forward
        proc, _took, refused = failover(tmp_path, "-e", "target_region=%s" % region2, *FAST_DETECT,
                                        "-e", '{"fediflow_fence": {"method": "none"}}', check=False)
        assert proc.returncode != 0 and refused["failed_step"] == "fence", refused
        assert "not the same as down" in refused["error"] and "-e source_confirmed_down=true" in refused["error"]
        assert "fediflow_fence" in refused["error"]
        assert pg_role(standby) == "standby" and dns(primary) == dns_before and app_state(standby)[1] == "standby"

        # the lab's fence (the inventory's method role: fediflow.dr_lab.lab, tasks_from fence.yml): the region's
        # PostgreSQL stopped through the control plane
        _proc, _took, res = failover(tmp_path, "-e", "target_region=%s" % region2, *FAST_DETECT)
        failed_over_at = time.time()
        assert res["ok"], res.get("error")
        assert [s["step"] for s in res["steps"]][:5] == ["inspect", "detect", "fence", "dns", "promote"]
        fence = res["fence"]
        assert fence["method"] == "role" and fence["ok"] and "no process of the cluster" in fence["proved"]
        assert res["promotion"]["guards"]["split_brain"]["fenced_by"].startswith("role: no process")
        # region 1's Kubernetes API is behind the partition: its application could not be moved to the standby
        # shape, and the result says so (recorded, never fatal - the fence is what keeps its writes away)
        assert res["source_app"]["scaled_down"] is False and res["source_app"]["error"], res["source_app"]
        fence_end = res["started_at"] + sum(s["duration_s"] for s in res["steps"][:3])
        # nothing acknowledged in region 1 after its fence, and region 2 takes the writes
        assert watcher.acks(region1, after=fence_end) == []
        assert poll(lambda: len(watcher.acks(region2)) >= 10, 30)
        lost_during_partition = len(watcher.acks(region1, after=partitioned_at))

        # the partition heals: region 1 comes back fenced - its PostgreSQL stopped, marked a standby
        healed_at = time.time()
        lab_region(primary, "up")
        with pytest.raises(psycopg2.OperationalError):
            with pg_connect(primary) as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO dr_watch (region, seq, at) VALUES ('test', -1, now())")
        assert os.path.exists(os.path.join(primary["fediflow_pg_data_dir"], "standby.signal"))
        assert poll(lambda: len(watcher.acks(region2, after=healed_at)) >= 10, 30)
        assert watcher.acks(region1, after=failed_over_at) == []

        # failback: region 1 rewound into a standby, then production switched back (a planned switchover)
        playbook("failback.yml", "-e", "switch_back=true")
        assert lab_is_home(primary, standby)
        back_at = time.time()
        assert poll(lambda: len(watcher.acks(region1, after=back_at)) >= 10, 30)
        summary = watcher.check(primary, lost_region=region1, lost_until=failed_over_at)
    finally:
        watcher.stop()
    assert not summary["two_writers"], summary["two_writers"][:3]
    # what region 1 acknowledged behind the partition never reached region 2 (asynchronous replication):
    # a tail of its writes, rewound away at failback - counted, never a hole in the middle
    assert summary["lost_is_tail"], summary["missing"][:5]
    assert len(summary["missing"]) <= lost_during_partition + 5
    print("partition: fenced failover RTO %.1f s (detection %s), writes acknowledged behind the partition and lost: %d, "
          "writers at once: 0" % (sum(s["duration_s"] for s in res["steps"]), FAST_DETECT, len(summary["missing"])))
