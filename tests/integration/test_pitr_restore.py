"""fediflow.dr.pitr_restore on a throwaway PostgreSQL cluster with its own WAL archive (never the
shared lab's clusters). Batches of rows are committed between known points (a time, an LSN, an xid,
a restore point); each restore is checked independently with psycopg2: exactly the earlier
batches exist. Bad inputs are refused with the cluster untouched and still serving. The in-place
switch (old data directory kept, renamed with a timestamp) runs on its own throwaway cluster."""
import datetime
import glob
import os

import pytest

from doubles_fixtures import free_port
from lab_fixtures import module, playbook_path
from pitr_fixtures import make_cluster

MOD = "fediflow.dr.pitr_restore"


@pytest.fixture(scope="module")
def history():
    """Batches a..e with a target between each pair: time after a, LSN after b, xid of c,
    restore point after d; base backup before a; everything archived."""
    cluster = make_cluster()
    try:
        cluster.batch("0-before-backup")
        cluster.base_backup()
        points = {}
        points["a"] = cluster.batch("a")
        points["b"] = cluster.batch("b")
        points["c"] = cluster.batch("c")
        points["d"] = cluster.batch("d")
        cluster.node.one("SELECT pg_create_restore_point('after-d')::text")
        cluster.batch("e")
        cluster.archive_now()
        yield cluster, points
    finally:
        cluster.destroy()


def _restore(cluster, **target):
    return cluster.restore_beside(cluster.args(action="pause", **target))


def _stop(cluster, res):
    cluster.stop_restore(res)


def test_time_target_restores_exactly_the_earlier_batches(history):
    cluster, points = history
    when = points["a"]["after"].astimezone(datetime.timezone.utc).isoformat()
    res, restored = _restore(cluster, target_time=when)
    try:
        assert restored.batches() == {"0-before-backup": 1 * 5, "a": 5}
        assert res["state"] == "paused" and res["switched"] is False
        assert res["target"]["kind"] == "time" and res["base_backup"]["where"] == "local"
        assert res["recovery_settings"]["recovery_target_action"] == "pause"
        assert res["wal_segments_replayed"] >= 1 and res["reached"]["lsn"]
        assert res["verification"]["ok"] and res["verification"]["row_counts"]["public.t"] == 10
        assert res["verification"]["amcheck"]["available"] and res["verification"]["amcheck"]["indexes"][0]["ok"]
        assert set(res["phases"]) >= {"preflight", "extract", "recovery", "verify"}
    finally:
        _stop(cluster, res)
    # the source was never touched: still writable, all batches there
    assert cluster.exec("SELECT count(*) FROM t")[0][0] == 30


def test_lsn_target(history):
    cluster, points = history
    res, restored = _restore(cluster, target_lsn=points["b"]["lsn"], inclusive=False)
    try:
        assert restored.batches() == {"0-before-backup": 5, "a": 5, "b": 5}
    finally:
        _stop(cluster, res)


def test_xid_target(history):
    cluster, points = history
    res, restored = _restore(cluster, target_xid=str(points["c"]["xid"]))
    try:
        assert restored.batches() == {"0-before-backup": 5, "a": 5, "b": 5, "c": 5}
        assert res["xid_check"]["status"] == "committed"
    finally:
        _stop(cluster, res)


def test_latest_replays_the_whole_archive_then_promotes(history):
    cluster, _points = history
    port = free_port()
    res = module(MOD, cluster.args(switch=False, restore_port=port, target_latest=True))
    assert res.get("failed") is not True, res.get("msg")
    cluster.started.append(res["new_data_dir"])
    try:
        assert cluster.restored(port).batches() == {"0-before-backup": 5, "a": 5, "b": 5, "c": 5, "d": 5, "e": 5}
        assert res["state"] == "promoted" and "recovery_target_action" not in res["recovery_settings"]
        assert not os.path.exists(os.path.join(res["new_data_dir"], "standby.signal"))
    finally:
        _stop(cluster, res)


def test_restore_point_target_and_promote_side_by_side(history):
    cluster, _points = history
    port = free_port()
    res = module(MOD, cluster.args(switch=False, action="promote", restore_port=port, target_name="after-d"))
    assert res.get("failed") is not True, res.get("msg")
    cluster.started.append(res["new_data_dir"])
    try:
        restored = cluster.restored(port)
        assert restored.batches() == {"0-before-backup": 5, "a": 5, "b": 5, "c": 5, "d": 5}
        assert res["state"] == "promoted"
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=cluster.password, dbname="app")
        with conn, conn.cursor() as cur:  # writable, and it does not archive into the source's archive
            cur.execute("SELECT pg_is_in_recovery(), current_setting('archive_mode')")
            assert cur.fetchone() == (False, "off")
        conn.close()
    finally:
        _stop(cluster, res)


@pytest.mark.parametrize("target, words", [
    ({"target_time": "2026-13-01"}, "target_time '2026-13-01' has no time zone"),
    ({"target_time": "2026-13-01T00:00:00Z"}, "month must be in 1..12"),
    ({"target_time": "2020-01-01T00:00:00Z"}, "before the end of the oldest verified base backup"),
    ({"target_time": "2099-01-01T00:00:00Z"}, "after the newest archived WAL"),
    ({"target_time": "2026-11-25T00:00:00Z", "target_lsn": "0/1"}, "give exactly one target, got target_time and target_lsn"),
    ({"target_lsn": "FF/0"}, "after the newest archived WAL"),
    ({"target_latest": True, "backup_id": "20260101T000000Z-physical-000000"}, "is not a physical backup in the ledger"),
])
def test_bad_inputs_are_refused_with_the_cluster_untouched(history, target, words):
    cluster, _points = history
    before = cluster.exec("SELECT count(*) FROM t")[0][0]
    dirs = cluster.leftovers()
    res = module(MOD, cluster.args(switch=True, **target))
    assert res.get("failed") is True and words in res["msg"], res.get("msg")
    assert cluster.node.running() and cluster.exec("SELECT count(*) FROM t")[0][0] == before
    assert cluster.leftovers() == dirs and not glob.glob(cluster.data_dir + ".pre-pitr-*")
    assert res.get("switched") in (None, False)
    assert cluster.password not in str(res)


def test_check_mode_predicts_and_touches_nothing(history):
    cluster, points = history
    when = points["b"]["after"].astimezone(datetime.timezone.utc).isoformat()
    dirs = cluster.leftovers()
    res = module(MOD, cluster.args(target_time=when), check_mode=True, diff=True)
    assert res["changed"] is True and res["base_backup"]["id"] and res["diff"]["after"]["kept_data_dir"]
    assert cluster.leftovers() == dirs and cluster.node.running()


def test_switch_in_place_keeps_the_old_data_directory_and_is_idempotent():
    """The real switch, on its own throwaway cluster: restored to a time between two batches,
    promoted in the cluster's own data directory and port; the old one kept, renamed."""
    cluster = make_cluster()
    try:
        when = cluster.a_then_b()
        standby = cluster.standby()  # streams batch b, which the restore undoes: it is left behind
        res = module(MOD, cluster.args(target_time=when, sentinel_query="SELECT count(*) = 5 FROM t", standbys=[
            {"name": "the-standby", "host": "127.0.0.1", "port": standby.port, "data_dir": standby.data_dir}]))
        assert res.get("failed") is not True, res.get("msg")
        assert res["switched"] is True and res["state"] == "promoted"
        assert res["new_timeline"] == 2 and res["fork_lsn"] and "the-standby" in res["msg"]
        assert [s["state"] for s in res["standbys_before"]] == ["streaming"]
        behind = res["left_behind"]
        assert [(b["name"], b["streamed"], b["in_inventory"]) for b in behind] == [("the-standby", True, True)]
        assert "--target-pgdata=%s" % standby.data_dir in behind[0]["howto"] and "received_tli is 2" in behind[0]["howto"]
        assert os.path.isdir(res["kept_data_dir"]) and res["kept_data_dir"].startswith(cluster.data_dir + ".pre-pitr-")
        assert cluster.exec("SELECT batch, count(*) FROM t GROUP BY batch") == [("a", 5)]
        cluster.exec("INSERT INTO t (batch) VALUES ('after-restore')")  # writable on its own port
        assert res["verification"]["sentinel"]["ok"] is True
        with open(os.path.join(cluster.data_dir, "postgresql.auto.conf"), encoding="utf-8") as handle:
            assert "recovery_target" not in handle.read()
        again = module(MOD, cluster.args(target_time=when))
        assert again.get("failed") is not True, again.get("msg")
        assert again["changed"] is False and again["state"] == "already_restored", again.get("msg")
        assert cluster.exec("SELECT count(*) FROM t")[0][0] == 6
        # the archive now forks (timeline 1 went on after timeline 2 branched off): a time after the
        # branch point may be on either side, so it is refused until a timeline is named
        later = (datetime.datetime.fromisoformat(when) + datetime.timedelta(milliseconds=1)).isoformat()
        fork = module(MOD, cluster.args(target_time=later))
        assert fork.get("failed") is True and "timeline ambiguity" in fork["msg"], fork.get("msg")
        assert cluster.exec("SELECT count(*) FROM t")[0][0] == 6
    finally:
        cluster.destroy()


def _postmaster_pid(data_dir):
    with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8") as handle:
        return int(handle.readline())


def test_a_standby_is_never_restored_in_place_only_beside():
    """A streaming standby of the throwaway cluster, then the same standby stopped (standby.signal stays: still a
    standby, as an old primary a failover fenced is): restoring its data directory in place is refused before
    anything is read or touched - it streams on (same postmaster), then stays stopped with its data; a restore
    beside it (switch=false) is no second primary, and is allowed."""
    cluster = make_cluster()
    try:
        when = cluster.a_then_b()
        standby = cluster.standby()
        pid = _postmaster_pid(standby.data_dir)
        args = cluster.args(data_dir=standby.data_dir, login_port=standby.port, target_time=when)
        for check_mode in (True, False):
            res = module(MOD, args, check_mode=check_mode)
            assert res.get("failed") is True, res.get("msg")
            assert "holds a standby (streaming from 127.0.0.1:%d)" % cluster.node.port in res["msg"], res["msg"]
            assert "on the primary" in res["msg"] and "switch=false" in res["msg"]
            assert res["cluster_before"]["standby"] is True and res.get("switched") is False
        assert _postmaster_pid(standby.data_dir) == pid
        assert standby.query("SELECT count(*) FROM t", db="app")[0][0] == 10
        standby.stop("fast")
        res = module(MOD, args)
        assert res.get("failed") is True and "holds a standby (stopped, with standby.signal)" in res["msg"], res.get("msg")
        assert not glob.glob(standby.data_dir + ".pitr-*") and not glob.glob(standby.data_dir + ".pre-pitr-*")
        assert os.path.isfile(os.path.join(standby.data_dir, "standby.signal")) and not standby.running()
        port = free_port()
        side = module(MOD, cluster.args(data_dir=standby.data_dir, login_port=standby.port, target_time=when, switch=False,
                                        action="pause", restore_port=port))
        assert side.get("failed") is not True, side.get("msg")
        assert cluster.restored(port).batches() == {"a": 5} and "left_behind" not in side
    finally:
        cluster.destroy()


def test_latest_after_the_cluster_went_down_replaces_it():
    """Disaster case: the cluster is down (stopped, data directory damaged or not): latest restores
    everything archived in its place, promoted; the old data directory is kept."""
    cluster = make_cluster()
    try:
        cluster.base_backup()
        cluster.batch("a")
        cluster.batch("b")
        cluster.archive_now()
        cluster.node.stop("immediate")
        res = module(MOD, cluster.args(target_latest=True))
        assert res.get("failed") is not True, res.get("msg")
        assert res["cluster_before"]["state"] == "stopped" and res["switched"] and res["state"] == "promoted"
        assert cluster.exec("SELECT batch, count(*) FROM t GROUP BY batch ORDER BY 1") == [("a", 5), ("b", 5)]
        assert cluster.node.one("SELECT NOT pg_is_in_recovery()") is True
        assert os.path.isfile(os.path.join(res["kept_data_dir"], "PG_VERSION"))
        assert not os.path.exists(os.path.join(cluster.data_dir, "standby.signal"))
    finally:
        cluster.destroy()


def test_a_switch_that_fails_is_rolled_back():
    """The restore cannot start in the cluster's place (its log_file cannot be written): the rename
    is undone, the old cluster started again with its data, the restore kept aside for inspection."""
    cluster = make_cluster()
    try:
        when = cluster.a_then_b()
        res = module(MOD, cluster.args(target_time=when, log_file="/nonexistent/dir/pg.log"))
        assert res.get("failed") is True and res.get("rolled_back") is True, res.get("msg")
        assert cluster.node.running() and cluster.exec("SELECT count(*) FROM t")[0][0] == 10
        cluster.exec("INSERT INTO t (batch) VALUES ('still-writable')")
        assert res["failed_data_dir"] in cluster.leftovers()
        assert not glob.glob(cluster.data_dir + ".pre-pitr-*")
        assert not os.path.exists(os.path.join(cluster.data_dir, "fediflow_pitr.json"))
    finally:
        cluster.destroy()


def test_restore_after_a_failover_follows_the_new_timeline():
    """Base backup on timeline 1, failover (standby promoted: timeline 2), batches on timeline 2:
    the restore replays from the timeline 1 backup across the switch to a time on timeline 2."""
    cluster = make_cluster()
    try:
        cluster.base_backup()
        cluster.batch("tl1")
        cluster.fail_over()
        x = cluster.batch("tl2-x")
        cluster.batch("tl2-y")
        cluster.archive_now()
        port = free_port()
        when = x["after"].astimezone(datetime.timezone.utc).isoformat()
        res = module(MOD, cluster.args(target_time=when, switch=False, action="pause", restore_port=port))
        assert res.get("failed") is not True, res.get("msg")
        cluster.started.append(res["new_data_dir"])
        assert res["target"]["timeline"] == 2 and res["target"]["lineage"] == [1, 2]
        assert res["base_backup"]["timeline"] == 1
        assert cluster.restored(port).batches() == {"tl1": 5, "tl2-x": 5}
        assert res["recovery_settings"]["recovery_target_timeline"] == "2"
    finally:
        cluster.destroy()


def test_backups_and_wal_in_s3():
    """Ledger and WAL archive in S3 (a private moto server on a free port, standing in for AWS):
    the base backup is downloaded, checked against the ledger's sha256, restored (zstd tar), and
    the WAL fetched by the collection's restore_command from S3."""
    import boto3
    from pitr_fixtures import start_moto
    proc, endpoint = start_moto()
    s3 = {"endpoint_url": endpoint, "bucket": "pitr-test-bucket", "access_key": "test-key", "secret_key": "test-secret"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test-key",
                 aws_secret_access_key="test-secret").create_bucket(Bucket=s3["bucket"])
    cluster = make_cluster(s3)
    try:
        when = cluster.a_then_b(compression="zstd")
        empty = os.path.join(cluster.base, "no-local-backups")
        os.makedirs(empty)
        port = free_port()
        res = module(MOD, cluster.args(target_time=when, switch=False, action="pause", restore_port=port,
                                       backup_dest=empty, **cluster.s3_args()))
        assert res.get("failed") is not True, res.get("msg")
        cluster.started.append(res["new_data_dir"])
        assert res["base_backup"]["where"] == "s3" and res["archive"]["backend"] == "s3"
        assert "download" in res["phases"]
        assert cluster.restored(port).batches() == {"a": 5}
        assert "test-secret" not in str(res)
        assert not os.path.exists(res["new_data_dir"] + ".download")
    finally:
        cluster.destroy()
        proc.terminate()
        proc.wait(10)


def test_failed_sentinel_leaves_the_old_cluster_running():
    cluster = make_cluster()
    try:
        when = cluster.a_then_b()
        res = module(MOD, cluster.args(target_time=when, sentinel_query="SELECT count(*) = 999 FROM t"))
        assert res.get("failed") is True and "sentinel_query" in res["msg"], res.get("msg")
        assert cluster.node.running() and cluster.exec("SELECT count(*) FROM t")[0][0] == 10
        assert cluster.leftovers() == [] and not glob.glob(cluster.data_dir + ".pre-pitr-*")
    finally:
        cluster.destroy()


def _inventory(cluster, tmp_path):
    """An inventory for the throwaway cluster, shaped like inventories/lab (one region host)."""
    import yaml
    hostvars = {"ansible_connection": "local", "ansible_python_interpreter": __import__("sys").executable,
                "fediflow_region": "pitr-test-1", "fediflow_pg_host": "127.0.0.1", "fediflow_pg_port": cluster.node.port,
                "fediflow_pg_data_dir": cluster.data_dir, "fediflow_pg_superuser_password": cluster.password,
                "fediflow_app_db": "app", "fediflow_backup_dir": os.path.dirname(cluster.backups),
                "fediflow_tools_dir": cluster.tools, "fediflow_pg_role": "primary",
                # a throwaway cluster of no environment: no DR lease (its stores: test_lease.py, on the lab)
                "fediflow_lease_enabled": False}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"region_primary": {"hosts": {"pg-pitr-test": hostvars}}}}}))
    return str(path)


def _playbook(inventory, *extra, name="pitr_restore.yml"):
    import subprocess
    import sys
    from lab_fixtures import ROOT, ansible_env
    bindir = os.path.dirname(sys.executable)
    return subprocess.run([os.path.join(bindir, "ansible-playbook"), "-i", inventory,
                           str(playbook_path(name)), *extra],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=False)


def test_playbook_restores_beside_the_cluster_and_refuses_two_targets(history, tmp_path):
    """The role as a user runs it (playbooks/pitr_restore.yml) against the throwaway cluster."""
    cluster, points = history
    os.rename(cluster.backups, os.path.join(os.path.dirname(cluster.backups), "physical"))
    cluster.backups = os.path.join(os.path.dirname(cluster.backups), "physical")  # the backup role's layout
    inventory = _inventory(cluster, tmp_path)
    wal_config = ["-e", "pitr_restore_wal_config=%s" % cluster.wal_config, "-e", "pitr_restore_s3_bucket="]
    two = _playbook(inventory, "-e", "pitr_restore_region=pitr-test-1", "-e", "pitr_restore_target_lsn=0/1",
                    "-e", "pitr_restore_target_name=x", *wal_config)
    assert two.returncode != 0 and "got lsn and name" in two.stdout, two.stdout[-2000:]
    port = free_port()
    proc = _playbook(inventory, "-e", "pitr_restore_region=pitr-test-1", "-e", "pitr_restore_target_xid=%d" % points["b"]["xid"],
                     "-e", "pitr_restore_switch=false", "-e", "pitr_restore_action=pause",
                     "-e", "pitr_restore_restore_port=%d" % port, *wal_config)
    assert proc.returncode == 0, proc.stdout[-3000:]
    new_dirs = cluster.leftovers()
    cluster.started.extend(new_dirs)
    assert cluster.restored(port).batches() == {"0-before-backup": 5, "a": 5, "b": 5}
    assert "WAL" in proc.stdout and "phases" in proc.stdout and cluster.password not in proc.stdout


def test_backup_role_restore_point_then_restore_to_it(tmp_path):
    """The backup role's restore_point task (--tags restore_point) names a point; pitr_restore
    with target_name stops exactly there."""
    cluster = make_cluster()
    try:
        cluster.base_backup()
        cluster.batch("a")
        inventory = _inventory(cluster, tmp_path)
        proc = _playbook(inventory, "--tags", "restore_point", "-e", "backup_restore_point_name=drill-point",
                         name="backup.yml")
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert "changed=1" in proc.stdout and "Create the restore point drill-point" in proc.stdout
        cluster.batch("b")
        cluster.archive_now()
        port = free_port()
        res = module(MOD, cluster.args(target_name="drill-point", switch=False, action="pause", restore_port=port))
        assert res.get("failed") is not True, res.get("msg")
        cluster.started.append(res["new_data_dir"])
        assert cluster.restored(port).batches() == {"a": 5}
    finally:
        cluster.destroy()
