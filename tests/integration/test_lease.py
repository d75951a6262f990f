"""One DR operation at a time: the DR lease (module dr_lease, role lease, docs/lease.md) on the lab's three stores -
each region's own S3 (a moto in the region's namespace, lost with the region) and the global site's (moto in the
global namespace). The outcome is read straight from the stores with boto3, apart from the module's own result.

What moto fakes: on AWS a conditional PutObject (If-None-Match: *, If-Match: <ETag>) checks and writes atomically;
moto 5.2 checks, then writes, so two writers inside that window can both succeed on one store. The lease reads its
majority back after writing, which catches such a race unless the losing write lands after the winner's read-back
(a window of microseconds here, none on AWS). Expiry is judged by the stores' clocks: here all are this machine's.
"""
import json
import os
import subprocess
import time
import uuid

import pytest

from lab_fixtures import (BIN, RESUME_S, ROOT, ansible_env, lab_is_home, lab_netns, lab_region, pg_role, pg_streaming,
                          playbook, poll, rebuild_lab_unless_home)
from lease_fixtures import Background, lab_lease, said  # noqa: F401  pylint: disable=unused-import
from watcher_fixtures import Watcher

FAST_DETECT = ["-e", "region_failover_detect_interval_s=0.5", "-e", "region_failover_detect_threshold=3",
               "-e", "region_failover_detect_timeout_s=1"]
CONFIG_BACKUP = ["--tags", "backup_config", "--limit", "region_primary"]


@pytest.fixture(scope="module", autouse=True)
def timings():
    """The measured times, printed and kept in tests/output/lease-timings.txt: the wall time of a module run (with
    Python's start-up) and the module's own duration_s."""
    measured = {}
    yield measured
    lines = ["%-66s %6.2f s%s" % (what, wall, "" if inside is None else "  (module %.2f s)" % inside)
             for what, (wall, inside) in sorted(measured.items())]
    (ROOT / "tests" / "output").mkdir(parents=True, exist_ok=True)
    (ROOT / "tests" / "output" / "lease-timings.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n" + "\n".join(lines))


def _scratch():
    return "test-%s" % uuid.uuid4().hex[:10]


def _ran_role(stdout, role):
    return "TASK [fediflow.dr.%s :" % role in stdout


def test_taken_read_back_refused_naming_the_holder_and_released(lab_lease, timings):
    env = _scratch()
    predicted = lab_lease.run(env, operation="failover", ttl_s=60, check_mode=True)
    assert predicted["changed"] and not predicted["acquired"] and set(lab_lease.documents(env).values()) == {None}
    t0 = time.monotonic()
    held = lab_lease.run(env, operation="failover", playbook="playbooks/failover.yml", ttl_s=60, user="alice",
                         awx_job_id="77")
    timings["acquire, 3 stores (module run)"] = (time.monotonic() - t0, held["duration_s"])
    assert held["acquired"] and held["attempts"] == 1 and held["clock"] == "server", held
    token = held["lease"]["token"]
    docs = lab_lease.documents(env)
    assert sorted(docs) == ["eu-west-1", "global", "us-east-1"]
    for doc in docs.values():   # in every store, as the module says
        entries = [(h["token"], h["operation"], h["user"], h["awx_job_id"]) for h in doc["holders"]]
        assert entries == [(token, "failover", "alice", "77")]
    for operation, mode, parts in (("pitr", "exclusive", []), ("backup_media", "shared", ["media"])):
        refused = lab_lease.run(env, operation=operation, mode=mode, parts=parts, ttl_s=60)
        assert refused.get("failed") and not refused["acquired"], refused
        assert refused["msg"].startswith("%s refused: the DR lease of environment '%s' is held by failover "
                                         "(playbooks/failover.yml) by alice@" % (operation, env)), refused["msg"]
        assert ", AWX job 77, since %s until %s (" % (held["lease"]["since"], held["lease"]["until"]) in refused["msg"]
        assert "re-run with -e break_lease=true" in refused["msg"] and "\n" not in refused["msg"]
    again = lab_lease.run(env, operation="failover", ttl_s=60, token=token)
    assert again["reentrant"] and not again["changed"] and again["lease"]["token"] == token
    t0 = time.monotonic()
    gone = lab_lease.run(env, state="released", token=token)
    timings["release, 3 stores (module run)"] = (time.monotonic() - t0, gone["duration_s"])
    assert gone["released"] and gone["changed"] and gone["holders"] == []
    for doc in lab_lease.documents(env).values():
        assert doc["holders"] == [] and [r["token"] for r in doc["released"]] == [token]
        assert [e["event"] for e in doc["history"]] == ["acquired", "released"]
    assert not lab_lease.run(env, state="released", token=token)["changed"]   # idempotent
    assert lab_lease.run(env, operation="pitr", ttl_s=60)["acquired"]           # free again


def test_backups_share_the_lease_by_part_a_dr_operation_does_not(lab_lease):
    env = _scratch()
    full = lab_lease.run(env, operation="backup", mode="shared", parts=["database", "media", "cache", "config"], ttl_s=60)
    media = lab_lease.run(env, operation="backup_media", mode="shared", parts=["media"], ttl_s=60)
    assert full["acquired"] and media["acquired"], media
    assert "beside backup [cache, config, database, media]" in media["msg"]
    config = lab_lease.run(env, operation="backup_config", mode="shared", parts=["config"], ttl_s=60)
    assert config.get("failed") and "is held by backup [cache, config, database, media]" in config["msg"]
    failover = lab_lease.run(env, operation="failover", ttl_s=60)
    assert failover.get("failed") and "failover refused" in failover["msg"]
    assert {op for op, stores in lab_lease.holders(env).values() if len(stores) == 3} == {"backup", "backup_media"}


RACE = r"""
import json, sys, threading
from ansible_collections.fediflow.dr.plugins.module_utils import lease
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError
base, count = json.loads(sys.argv[1]), int(sys.argv[2])
barrier, out = threading.Barrier(count), {}
def take(n):
    p = dict(base, operation="racer-%d" % n)
    stores = lease.Stores(p)
    barrier.wait()                       # every racer reads the stores at the same instant
    try:
        res = lease.acquire(p, stores)
        out[n] = {"acquired": res["acquired"], "attempts": res["attempts"]}
    except FediflowError as exc:
        out[n] = {"acquired": False, "msg": exc.message, "attempts": (exc.details.get("result") or {}).get("attempts")}
threads = [threading.Thread(target=take, args=(n,)) for n in range(count)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(out))
"""


def test_racing_acquisitions_leave_one_holder(lab_lease):
    """Eight takers in one process, released together by a barrier (no start-up spreads them out), three rounds:
    each round exactly one holds the lease - in a majority of the stores - and the others are refused naming it."""
    for _round in range(3):
        env = _scratch()
        base = dict(lab_lease.creds, state="acquired", stores=lab_lease.stores, environment=env, key_prefix="fediflow-lease",
                    mode="exclusive", parts=[], concurrent_parts=["media"], ttl_s=60, wait_s=0, timeout_s=2, token=None)
        proc = subprocess.run([str(BIN / "python"), "-c", RACE, json.dumps(base), "8"], capture_output=True, text=True,
                              env=dict(ansible_env(), PYTHONPATH=str(ROOT / ".build" / "collections")), timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = {int(n): r for n, r in json.loads(proc.stdout).items()}
        winners = [n for n, res in results.items() if res["acquired"]]
        assert len(winners) == 1, results
        for n, res in results.items():
            if n != winners[0]:
                assert "is held by racer-%d " % winners[0] in res["msg"], res["msg"]
        assert [op for op, stores in lab_lease.holders(env).values() if len(stores) >= 2] == ["racer-%d" % winners[0]]
        lab_lease.held.append((env, [t for t, (op, _s) in lab_lease.holders(env).items()
                                     if op == "racer-%d" % winners[0]][0]))
        print("8 racers: racer-%d won; attempts %s" % (winners[0], sorted(r["attempts"] or 0 for r in results.values())))


def test_a_playbook_is_refused_break_lease_is_logged_an_expired_lease_is_taken_over(lab_lease):
    """backup.yml --tags backup_config (a short leased playbook) against a lease a dead run left behind."""
    dead = dict(operation="failover", playbook="playbooks/failover.yml", user="ghost", host="dead-controller")
    ghost = lab_lease.run(ttl_s=30, **dead)
    assert ghost["acquired"], ghost
    proc, _took = playbook("backup.yml", *CONFIG_BACKUP, check=False)
    out = said(proc.stdout)
    assert proc.returncode != 0 and not _ran_role(proc.stdout, "backup"), out[-2000:]
    assert ("backup_config refused: the DR lease of environment 'lab' is held by failover (playbooks/failover.yml) by "
            "ghost@dead-controller, since %s until %s" % (ghost["lease"]["since"], ghost["lease"]["until"])) in out
    proc, _took = playbook("backup.yml", *CONFIG_BACKUP, "-e", "break_lease=true")
    out = said(proc.stdout + proc.stderr)   # Ansible's warnings go to stderr
    assert "[WARNING]: break_lease=true: broke the DR lease of failover (playbooks/failover.yml) by ghost@dead-controller" in out
    assert _ran_role(proc.stdout, "backup") and "released the DR lease of backup_config [config]" in out
    for doc in lab_lease.documents().values():
        broken = [e for e in doc["history"] if e["event"] == "broken"]
        assert broken[-1]["token"] == ghost["lease"]["token"][:8] and broken[-1]["holder"] == "ghost@dead-controller"
    ghost = lab_lease.run(ttl_s=10, **dead)
    assert poll(lambda: lab_lease.run(state="query")["holders"] == [], timeout=40, interval=1), "the lease did not expire"
    proc, _took = playbook("backup.yml", *CONFIG_BACKUP)
    out = said(proc.stdout + proc.stderr)
    assert "[WARNING]: took over the expired DR lease of failover (playbooks/failover.yml) by ghost@dead-controller" in out
    assert "took over the expired lease of failover" in out   # in the run's own line too
    for doc in lab_lease.documents().values():
        assert [e["token"] for e in doc["history"] if e["event"] == "took_over"][-1] == ghost["lease"]["token"][:8]
    assert lab_lease.holders() == {}


def test_a_run_under_a_parent_holder_is_reentrant(lab_lease):
    """A process holding the lease (the drill's token here) runs a leased playbook inside it: FEDIFLOW_LEASE_TOKEN."""
    parent = lab_lease.run(operation="drill", playbook="playbooks/dr_drill.yml", ttl_s=120)
    os.environ["FEDIFLOW_LEASE_TOKEN"] = parent["lease"]["token"]
    try:
        proc, _took = playbook("backup.yml", *CONFIG_BACKUP)
    finally:
        del os.environ["FEDIFLOW_LEASE_TOKEN"]
    assert "this run holds the DR lease of environment 'lab' already (drill" in said(proc.stdout)
    assert _ran_role(proc.stdout, "backup")
    assert [op for op, stores in lab_lease.holders().values() if len(stores) == 3] == ["drill"]   # still the parent's


@pytest.mark.slow
def test_a_failover_during_a_backup_is_refused_a_media_backup_runs_beside_it(lab, lab_lease):
    primary, standby = lab["primary"], lab["standby"]
    backup = Background("backup.yml")
    try:
        assert poll(lambda: "backup" in [op for op, _s in lab_lease.holders().values()], timeout=60, interval=0.2)
        # both at once, while the full backup runs; the failover without force: should the lease not refuse it,
        # detection would (the primary is healthy) - nothing moves
        failover = Background("failover.yml", "-e", "target_region=eu-west-1", *FAST_DETECT)
        media = Background("backup.yml", "--tags", "backup_media")
        (rc, out), (media_rc, media_out) = failover.wait(), media.wait()
        assert rc != 0 and not _ran_role(out, "region_failover"), said(out)[-2000:]
        assert "failover refused: the DR lease of environment 'lab' is held by backup [cache, config, database, media] " \
               "(playbooks/backup.yml) by " in said(out)
        assert media_rc == 0 and "backup_media holds the DR lease of environment 'lab'" in said(media_out), said(media_out)[-2000:]
        assert "beside backup [cache, config, database, media]" in said(media_out)
    finally:
        rc, out = backup.wait()
    assert rc == 0, said(out)[-3000:]
    assert pg_role(primary) == "primary" and pg_role(standby) == "standby" and lab_lease.holders() == {}


@pytest.mark.restarts_lab
@pytest.mark.slow
def test_two_failovers_at_once_one_runs_a_pitr_meanwhile_is_refused(lab, lab_lease):
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby)
    watcher = Watcher([primary, standby]).start()   # the split-brain watcher: there and back, planned, nothing lost
    assert poll(lambda: len(watcher.acks(primary["fediflow_region"])) >= 10, 30), watcher.records()[-3:]
    both = [Background("failover.yml", "-e", "target_region=eu-west-1", "-e", "force=true") for _n in range(2)]
    try:
        assert poll(lambda: "failover" in [op for op, _s in lab_lease.holders().values()], timeout=60, interval=0.2)
        # a target far outside the backups: should the lease not refuse it, the PITR's preflight would
        pitr, _took = playbook("pitr_restore.yml", "-e", "pitr_restore_region=%s" % primary["fediflow_region"],
                               "-e", "pitr_restore_target_time=2001-01-01T00:00:00Z", check=False)
        assert pitr.returncode != 0 and not _ran_role(pitr.stdout, "pitr_restore"), said(pitr.stdout)[-2000:]
        assert "pitr refused: the DR lease of environment 'lab' is held by failover (playbooks/failover.yml)" \
               in said(pitr.stdout)
        ends = [run.wait() for run in both]
        assert sorted(rc == 0 for rc, _out in ends) == [False, True], [said(out)[-1500:] for _rc, out in ends]
        refused = said([out for rc, out in ends if rc != 0][0])
        assert "failover refused: the DR lease of environment 'lab' is held by failover (playbooks/failover.yml)" in refused
        assert not _ran_role([out for rc, out in ends if rc != 0][0], "region_failover")   # nothing half-done
        assert pg_role(standby) == "primary" and lab_lease.holders() == {}
        assert poll(lambda: len(watcher.acks(standby["fediflow_region"])) >= 10, 30)   # the new primary takes writes
        back, _took = playbook("failback.yml", "-e", "switch_back=true")
        assert "failback holds the DR lease" in said(back.stdout) and lab_is_home(primary, standby)
        assert lab_lease.holders() == {}
        summary = watcher.check(primary)
        assert summary["two_writers"] == [] and summary["missing"] == [], summary
    finally:
        watcher.stop()
        for run in both:
            if run.proc.poll() is None:
                run.wait()
        if pg_role(standby) == "primary":
            playbook("failback.yml", "-e", "switch_back=true", check=False)
        rebuild_lab_unless_home(primary, standby, ROOT / "tests" / "output" / "lease-logs")


@pytest.mark.restarts_lab
@pytest.mark.slow
def test_a_lost_region_leaves_a_majority_one_side_of_a_partition_is_refused(lab, lab_lease, timings):
    standby = lab["standby"]
    env = _scratch()
    stranded = lab_lease.run(env, operation="failover", ttl_s=600)            # in all three stores
    try:
        lab_region(standby, "partitioned")
        t0 = time.monotonic()
        gone = lab_lease.run(env, state="released", token=stranded["lease"]["token"])
        timings["release, eu-west-1 partitioned (module run)"] = (time.monotonic() - t0, gone["duration_s"])
        assert gone["released"] and any("stays recorded in eu-west-1" in w for w in gone["warnings"])
        t0 = time.monotonic()
        here = lab_lease.run(env, operation="failover", ttl_s=120)
        timings["acquire, eu-west-1 partitioned (module run)"] = (time.monotonic() - t0, here["duration_s"])
        assert here["acquired"] and [s["name"] for s in here["stores"] if not s["answered"]] == ["eu-west-1"], here
        t0 = time.monotonic()
        there = lab_lease.run(env, operation="pitr", ttl_s=120, netns=lab_netns(standby))   # the partitioned side
        timings["acquire from inside partitioned eu-west-1: refused (module run)"] = (time.monotonic() - t0,
                                                                                      there["duration_s"])
        assert there.get("failed") and "only 1 of the 3 lease stores answer" in there["msg"], there["msg"]
        assert lab_lease.run(env, state="released", token=here["lease"]["token"])["released"]

        lab_region(standby, "down")
        t0 = time.monotonic()
        down = lab_lease.run(env, operation="failover", ttl_s=120)
        timings["acquire, eu-west-1 down (module run)"] = (time.monotonic() - t0, down["duration_s"])
        t0 = time.monotonic()
        freed = lab_lease.run(env, state="released", token=down["lease"]["token"])
        timings["release, eu-west-1 down (module run)"] = (time.monotonic() - t0, freed["duration_s"])
        assert down["acquired"] and freed["released"]
        proc, took = playbook("backup.yml", *CONFIG_BACKUP, "-e", "fediflow_backup_required_copies=1")
        timings["backup.yml --tags backup_config, eu-west-1 down (whole playbook)"] = (took, None)
        assert "backup_config holds the DR lease of environment 'lab'" in said(proc.stdout)
        assert "lease stores not answering: eu-west-1" in said(proc.stderr)
    finally:
        lab_region(standby, "up")
        assert poll(lambda: pg_streaming(standby), timeout=RESUME_S), "the standby did not stream again"
    # back: the entry stranded in eu-west-1 by the release while it was away no longer holds (the tombstone elsewhere)
    docs = lab_lease.documents(env)
    assert stranded["lease"]["token"] in [h["token"] for h in docs["eu-west-1"]["holders"]]
    assert lab_lease.run(env, state="query")["holders"] == []
    assert lab_lease.run(env, operation="pitr", ttl_s=60)["acquired"]
