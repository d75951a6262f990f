"""fediflow.dr.pitr_restore with engine=pgbackrest on the real lab: a throwaway cluster (never the lab's primary)
archiving through pgBackRest into both regions' repositories over the lab's S3 TLS fronts, a full backup into each
repository proven (pgbackrest verify) and annotated as the collection's proof, batches of rows between known points
(a time, an LSN, a restore point). Each restore is checked independently with psycopg2 (exactly the earlier batches
there); a target before the oldest verified backup is refused with the cluster untouched; the in-place switch leaves
the cluster running, writable, on a new timeline, archiving its new WAL through pgBackRest, where archive-get finds it.

The lab is left as found: nothing here touches the lab's clusters; the cluster's directory (configuration, spool,
kept data directory) goes with it; its stanza stays in the lab's repositories (Object Lock), apart from others'."""
import datetime
import glob
import json
import os
import shutil
import time

import pytest

from lab_fixtures import module, poll
from pgbackrest_fixtures import (archive_through_pgbackrest, configure, pgbackrest, regions, run_pgbackrest,
                                 take_backup)
from pitr_fixtures import make_cluster

pytestmark = pytest.mark.skipif(not shutil.which("pgbackrest"), reason="pgbackrest is not installed (scripts/setup.sh installs it)")

MOD = "fediflow.dr.pitr_restore"


def _prove(engine, backups):
    """Each backup's proof as the ledger reads it: the fediflow-verified annotations pgbackrest_backup writes after
    its verification (pgbackrest.verification_annotations), set here for a backup whose run did not write them."""
    names = regions()
    for backup in backups:
        if backup["verification"]["ok"]:
            continue
        key = names.index(backup["repositories"][0]) + 1
        done = run_pgbackrest(engine, "annotate", "--set=" + backup["id"], "--repo=%d" % key,
                              *pgbackrest.verification_annotations("list", True, time.time()))
        assert done.returncode == 0, done.stderr


def _ledger(engine):
    info = run_pgbackrest(engine, "info", "--output=json")
    return pgbackrest.parse_info(info.stdout, engine["stanza"], dict(enumerate(regions(), start=1)))["backups"]


@pytest.fixture(scope="module")
def history(lab):
    """Batch 0, full backups (one per region) verified, batches a, b, restore point after-b, an incremental
    backup left unverified, batches c, d; everything archived through pgBackRest."""
    cluster = make_cluster()
    try:
        engine = configure(cluster, lab["primary"])
        archive_through_pgbackrest(engine)
        cluster.batch("0-before-backup")
        full = take_backup(engine, "full", verify="list")
        assert not full.get("failed") and full["copies"] == 2, full.get("msg")
        _prove(engine, full["backups"])
        points = {"full": full["backups"], "a": cluster.batch("a"), "b": cluster.batch("b")}
        cluster.node.one("SELECT pg_create_restore_point('after-b')::text")
        incr = take_backup(engine, "incr", verify="none")
        assert not incr.get("failed") and incr["copies"] == 2, incr.get("msg")
        points["unverified"] = {b["id"] for b in incr["backups"]}
        assert not any(b["verification"]["ok"] for b in _ledger(engine) if b["id"] in points["unverified"])
        points["c"] = cluster.batch("c")
        cluster.batch("d")   # a commit after the last target: recovery to a time knows it got there
        cluster.archive_now()
        yield cluster, engine, points
    finally:
        cluster.destroy()


def _args(cluster, engine, **extra):
    args = {"engine": "pgbackrest", "data_dir": cluster.data_dir, "login_host": "127.0.0.1",
            "login_port": cluster.node.port, "login_password": cluster.password, "db": "app", "timeout": 120,
            "pgbackrest": {"config": engine["backup"]["path"], "archive_config": engine["wal"]["path"],
                           "stanza": engine["stanza"], "repositories": regions()}}
    args.update(extra)
    return args


def _beside(cluster, engine, **target):
    return cluster.restore_beside(_args(cluster, engine, **target))


def _postmaster_pid(cluster):
    with open(os.path.join(cluster.data_dir, "postmaster.pid"), encoding="utf-8") as handle:
        return int(handle.readline())


def _utc(moment):
    return moment.astimezone(datetime.timezone.utc).isoformat()


def test_time_target_from_the_newest_verified_backup_not_the_unverified_incremental(history):
    cluster, engine, points = history
    res, restored = _beside(cluster, engine, target_time=_utc(points["a"]["after"]), action="pause")
    try:
        assert restored.batches() == {"0-before-backup": 5, "a": 5}
        assert res["state"] == "paused" and res["switched"] is False
        verified = {b["id"] for b in points["full"]}
        assert res["base_backup"]["id"] in verified and res["base_backup"]["read_from"] in regions()
        assert res["archive"]["backend"] == "pgbackrest" and res["archive"]["archive_id"] == "15-1"
        restore = [c for c in res["commands"] if "restore" in c["argv"]]
        assert restore and "--set=" + res["base_backup"]["id"] in restore[0]["argv"] and "--type=time" in restore[0]["argv"]
        assert res["verification"]["ok"] and res["verification"]["row_counts"]["public.t"] == 10
        # the restore fetched WAL with the archive identity's file, from every repository, into its own directory
        with open(os.path.join(res["new_data_dir"], "postgresql.auto.conf"), encoding="utf-8") as handle:
            auto = handle.read()
        assert "generated by pgBackRest" not in auto and "--repo=" not in auto
        assert "--config=%s" % engine["wal"]["path"] in auto and "--pg1-path=%s " % res["new_data_dir"] in auto
    finally:
        cluster.stop_restore(res)
    # a target after the unverified incremental still restores from a verified full
    res, restored = _beside(cluster, engine, target_time=_utc(points["c"]["after"]), action="pause")
    try:
        assert res["base_backup"]["id"] not in points["unverified"] and res["base_backup"]["id"] in verified
        assert restored.batches() == {"0-before-backup": 5, "a": 5, "b": 5, "c": 5}
    finally:
        cluster.stop_restore(res)
    assert cluster.exec("SELECT count(*) FROM t")[0][0] == 25 and cluster.node.running()


def test_lsn_target(history):
    cluster, engine, points = history
    res, restored = _beside(cluster, engine, target_lsn=points["a"]["lsn"], action="pause")
    try:
        assert restored.batches() == {"0-before-backup": 5, "a": 5}
    finally:
        cluster.stop_restore(res)


@pytest.mark.parametrize("args, words", [
    ({"target_time": "2020-01-01T00:00:00Z"}, "before the end of the oldest verified base backup"),
    ({"target_time": "2099-01-01T00:00:00Z"}, "after the newest archived WAL"),
    ({"target_name": "after-b", "wal_config": "/etc/hostname"}, "wal_config: the native engine's"),
    ({"target_name": "after-b", "backup_id": "20260101-000000F"}, "is not a physical backup in the ledger"),
])
def test_refusals_come_before_anything_stops(history, args, words):
    cluster, engine, _points = history
    pid, rows, dirs = _postmaster_pid(cluster), cluster.exec("SELECT count(*) FROM t")[0][0], cluster.leftovers()
    res = module(MOD, _args(cluster, engine, **args))
    assert res.get("failed") is True and words in res["msg"], res.get("msg")
    assert _postmaster_pid(cluster) == pid and cluster.exec("SELECT count(*) FROM t")[0][0] == rows  # never stopped
    assert cluster.leftovers() == dirs and not glob.glob(cluster.data_dir + ".pre-pitr-*")


def test_switch_to_a_restore_point_then_the_cluster_archives_through_pgbackrest(history):
    """Last of the module (it rewrites the cluster's history): check mode first, then the switch in place."""
    cluster, engine, _points = history
    dirs, pid = cluster.leftovers(), _postmaster_pid(cluster)
    predicted = module(MOD, _args(cluster, engine, target_name="after-b"), check_mode=True, diff=True)
    assert predicted["changed"] is True and predicted["diff"]["after"]["kept_data_dir"] and predicted["new_timeline"] == 2
    assert cluster.leftovers() == dirs and _postmaster_pid(cluster) == pid
    assert cluster.exec("SELECT count(*) FROM t")[0][0] == 25
    res = module(MOD, _args(cluster, engine, target_name="after-b"))
    assert res.get("failed") is not True, res.get("msg")
    assert res["switched"] is True and res["state"] == "promoted" and res["new_timeline"] == 2
    assert os.path.isfile(os.path.join(res["kept_data_dir"], "PG_VERSION"))
    assert dict(cluster.exec("SELECT batch, count(*) FROM t GROUP BY batch")) == {"0-before-backup": 5, "a": 5, "b": 5}
    cluster.exec("INSERT INTO t (batch) VALUES ('after-restore')")   # writable, on its own port
    with open(os.path.join(cluster.data_dir, "postgresql.auto.conf"), encoding="utf-8") as handle:
        auto = handle.read()
    assert "recovery_target" not in auto and "restore_command" not in auto and "archive-push" in auto
    # its new WAL goes through pgBackRest: a segment of timeline 2 archived, in both regions, and archive-get
    # (the archive identity's) fetches it
    segment = cluster.node.one("SELECT pg_walfile_name(pg_switch_wal())")
    assert segment.startswith("00000002")
    assert poll(lambda: cluster.node.one("SELECT last_archived_wal >= %s FROM pg_stat_archiver", (segment,)), 60,
                interval=0.1), cluster.node.query("SELECT * FROM pg_stat_archiver")
    for key in (1, 2):
        listed = run_pgbackrest(engine, "repo-ls", "--recurse", "--output=json", "--repo=%d" % key,
                                args=["archive/%s/15-1" % engine["stanza"]])
        names = json.loads(listed.stdout)
        assert "00000002.history" in names and any(n.startswith("0000000200000000/" + segment) for n in names)
    fetched = os.path.join(cluster.base, "fetched-" + segment)
    got = run_pgbackrest(engine, "archive-get", "--pg1-path=" + cluster.data_dir, "--no-archive-async", config="wal",
                         args=[segment, fetched])
    assert got.returncode == 0 and os.path.getsize(fetched) == 16 * 1024 * 1024, got.stderr
    # idempotent: the marker says this target is done
    again = module(MOD, _args(cluster, engine, target_name="after-b"))
    assert again.get("failed") is not True and again["changed"] is False and again["state"] == "already_restored"
    assert cluster.exec("SELECT count(*) FROM t")[0][0] == 16
