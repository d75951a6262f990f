"""pitr_restore against the lab's real setup, read-only for the lab: the us-east-1 primary's
WAL archive in moto's S3 (written by the replication role's fediflow_wal.py, read through the
role's own config file) and a base backup of it taken into a private directory. The restore
runs beside the lab (switch=false, a free port, archiving off) and is removed afterwards; the
lab's primary and standby keep running untouched (same postmaster pids). Skipped when the lab
is not up; it never starts or stops the lab."""
import os
import shutil
import tempfile

import pytest

from doubles_fixtures import free_port
from lab_fixtures import inventory, lab_netns, listening, module, pg_connect, pg_tls
from pair_fixtures import _as_pg, bindir

pytestmark = pytest.mark.slow  # long role / playbook runs: not in `make test-quick`


def _pid(hvars):
    with open(os.path.join(hvars["fediflow_pg_data_dir"], "postmaster.pid"), encoding="utf-8") as handle:
        return int(handle.readline())


@pytest.fixture
def lab_ro():
    primary, standby = inventory()
    if not all(listening(*p) for p in ((primary["fediflow_pg_host"], primary["fediflow_pg_port"]),
                                       (standby["fediflow_pg_host"], standby["fediflow_pg_port"]),
                                       (primary["lab_net_global_address"], primary["lab_moto_port"]))):
        pytest.skip("the lab is not up (this test never brings it up)")
    work = tempfile.mkdtemp(prefix="fediflow-pitr-lab-", dir="/var/tmp")
    shutil.chown(work, "postgres")
    yield primary, standby, work
    for name in os.listdir(work):
        if os.path.isfile(os.path.join(work, name, "postmaster.pid")):
            _as_pg([os.path.join(bindir(), "pg_ctl"), "stop", "-D", os.path.join(work, name), "-m", "immediate", "-w"],
                   check=False)
    shutil.rmtree(work, ignore_errors=True)


def test_restore_beside_the_lab_primary_from_its_s3_wal_archive(lab_ro):
    primary, standby, work = lab_ro
    pids = (_pid(primary), _pid(standby))
    conn_args = {"login_host": primary["fediflow_pg_host"], "login_port": primary["fediflow_pg_port"],
                 "login_password": primary["fediflow_pg_superuser_password"], "db": primary["fediflow_app_db"]}
    backups = os.path.join(work, "backups")
    backup_args = dict(conn_args, mode="physical", compression="zstd", verify="list", dest=backups,
                       cluster_name="pitr-lab-test")
    res = module("fediflow.dr.pg_backup_verify", backup_args)
    assert res.get("verified") is True, res.get("msg")
    with pg_connect(primary) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_insert_lsn()::text, "
                    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int")
        # the target is on the primary's current timeline: said, not guessed (after an in-place restore of the lab
        # primary - test_pitr_standbys - the archive forks there, with WAL on both sides)
        target_lsn, timeline = cur.fetchone()
        # a WAL record at/after the target even on an idle lab (a message record: no table, no catalog change)
        cur.execute("SELECT pg_logical_emit_message(false, 'fediflow-pitr-test', 'target')")
        cur.execute("SELECT pg_walfile_name(pg_switch_wal())")  # the segment just completed
        segment = cur.fetchone()[0]
    from lab_fixtures import poll

    def archived():
        with pg_connect(primary) as conn, conn.cursor() as cur:
            cur.execute("SELECT last_archived_wal >= %s FROM pg_stat_archiver", (segment,))
            return cur.fetchone()[0]
    assert poll(archived, 60), "segment %s not archived by the lab primary" % segment
    port = free_port()
    data_dir = primary["fediflow_pg_data_dir"]
    res = module("fediflow.dr.pitr_restore", dict(
        conn_args, data_dir=data_dir, target_lsn=target_lsn, timeline=str(timeline), action="pause", switch=False, restore_port=port,
        # the us-east-1 region runs Debian's packaged layout: its configuration (TLS, listen address) is apart
        config_dir=primary.get("fediflow_pg_config_dir"),
        backup_dest=backups, wal_config=os.path.join(os.path.dirname(data_dir), "fediflow-wal.json"),
        wal_tool=os.path.join(primary["fediflow_tools_dir"].replace("{{ fediflow_lab_dir }}", primary["fediflow_lab_dir"]),
                              "fediflow_wal.py"), timeout=120), netns=lab_netns(primary))  # on the primary's host
    try:
        assert res.get("failed") is not True, res.get("msg")
        assert res["archive"]["backend"] == "s3" and res["state"] == "paused" and res["verification"]["ok"]
        assert res["new_data_dir"].startswith(data_dir + ".pitr-")
        if primary.get("fediflow_pg_cluster"):  # Debian's layout: the /etc configuration came along, detached
            assert {"postgresql.conf", "pg_hba.conf", "fediflow.local.conf"} <= set(res["config_from_current"])
            assert res["config_written"] == []
            with open(os.path.join(res["new_data_dir"], "postgresql.conf"), encoding="utf-8") as handle:
                assert not [ln for ln in handle if ln.startswith(("data_directory", "hba_file", "external_pid_file"))]
        import psycopg2
        conn = psycopg2.connect(host=primary["fediflow_pg_host"], port=port, user="postgres", dbname="postgres",
                                password=primary["fediflow_pg_superuser_password"], **pg_tls(primary))
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state(), "
                        "pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s) >= 0, current_setting('archive_mode')",
                        (target_lsn,))
            assert cur.fetchone() == (True, "paused", True, "off")
        conn.close()
    finally:
        if res.get("new_data_dir") and os.path.isdir(res["new_data_dir"]):
            _as_pg([os.path.join(bindir(), "pg_ctl"), "stop", "-D", res["new_data_dir"], "-m", "immediate", "-w"],
                   check=False)
            shutil.rmtree(res["new_data_dir"], ignore_errors=True)
        if res.get("new_data_dir") and os.path.exists(res["new_data_dir"] + ".log"):
            os.unlink(res["new_data_dir"] + ".log")  # the restore's server log (kept by a failed run)
    assert (_pid(primary), _pid(standby)) == pids  # the lab's clusters were never restarted
    assert not [n for n in os.listdir(os.path.dirname(data_dir)) if ".pitr-" in n or ".pre-pitr-" in n]
