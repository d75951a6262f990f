"""A point-in-time restore and the cluster's standbys, on the lab, through playbooks/pitr_restore.yml as an operator
runs it; every outcome checked with psycopg2 on the servers themselves.

- Asked to restore the standby's region in place: refused before anything is touched (it streams on, same postmaster,
  same rows), by the role and by the module.
- In place on the primary: the primary opens a new timeline that branches off at the target. The standby had
  replayed a row that only the pre-PITR history holds; it is re-seeded onto the restored primary and afterwards
  streams on the new timeline, holds a row written after the PITR and not the row the PITR undid - a later failover
  can only promote the restored history.
- With pitr_restore_reseed_standbys=false: the standby is stopped and fenced - PostgreSQL itself refuses to start it
  on the old history - and the command the run printed re-seeds it.

The lab stays home (primary writable, standby streaming); the data directories the restores kept are removed."""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import time

import pytest

from lab_fixtures import (BIN, INVENTORY, OUTPUT, ROOT, ansible_env, keep_log, lab_is_home, lab_netns, module,
                          pg_connect, pg_role, pg_value, playbook, poll, rebuild_lab_unless_home)

pytestmark = pytest.mark.slow  # long role / playbook runs: not in `make test-quick`

TABLE = "dr_pitr_standbys_probe"


def _one(hv, sql, args=None, db=None):
    return pg_value(hv, sql, args, db=db or hv["fediflow_app_db"])


def _rows(hv):
    return _one(hv, "SELECT coalesce(array_agg(what ORDER BY id), '{}') FROM %s" % TABLE)


def _tli(hv):
    return _one(hv, "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int", db="postgres")


def _receiver(hv):
    """(status, received_tli) of the standby's WAL receiver, (None, None) without one."""
    conn = pg_connect(hv)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status, received_tli FROM pg_stat_wal_receiver")
            return cur.fetchone() or (None, None)
    finally:
        conn.close()


def _names():
    """Inventory names of the primary's and the standby's hosts (the role's output names them)."""
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"], cwd=ROOT, env=ansible_env(),
                          capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    return data["region_primary"]["hosts"][0], data["region_secondary"]["hosts"][0]


def _pid(hv):
    with open(os.path.join(hv["fediflow_pg_data_dir"], "postmaster.pid"), encoding="utf-8") as handle:
        return int(handle.readline())


@pytest.fixture(scope="module")
def pitr_lab(lab):
    """The lab at home, a verified physical base backup of the primary in its region's local ledger (where the role
    looks first) and a probe table; afterwards the probe table and the data directories the restores kept go, and
    a lab that is not home is rebuilt (its server logs kept)."""
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby), "the lab is not home (primary writable, standby streaming)"
    res = module("fediflow.dr.pg_backup_verify", {
        "login_host": primary["fediflow_pg_host"], "login_port": primary["fediflow_pg_port"],
        "login_password": primary["fediflow_pg_superuser_password"], "db": primary["fediflow_app_db"],
        "mode": "physical", "compression": "zstd", "verify": "list", "cluster_name": "pitr-standbys-test",
        "dest": os.path.join(primary["fediflow_backup_dir"], "physical")}, netns=lab_netns(primary))
    assert res.get("verified") is True, res.get("msg")
    _one(primary, "CREATE TABLE IF NOT EXISTS %s (id serial PRIMARY KEY, what text NOT NULL)" % TABLE)
    yield primary, standby, _names(), res["backup_id"]
    try:
        if pg_role(primary) == "primary":
            _one(primary, "DROP TABLE IF EXISTS %s" % TABLE)
    finally:
        for pattern in (primary["fediflow_pg_data_dir"] + ".pre-pitr-*", primary["fediflow_pg_data_dir"] + ".pitr-*",
                        standby["fediflow_pg_data_dir"] + ".failback-*"):
            for path in glob.glob(pattern):
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        rebuild_lab_unless_home(primary, standby, logs_to=OUTPUT / "pitr_standbys")


def _incident(primary, standby, tag):
    """A row the restore keeps, the restore point, then a row only the pre-PITR history holds - replayed by the
    standby (so it holds that history) - and the WAL archived. Returns the restore point's name."""
    _one(primary, "INSERT INTO %s (what) VALUES (%%s) RETURNING id" % TABLE, ("kept-" + tag,))
    name = "pitr-standbys-%s-%d" % (tag, time.time() * 1000)
    _one(primary, "SELECT pg_create_restore_point(%s)::text", (name,), db="postgres")
    _one(primary, "INSERT INTO %s (what) VALUES (%%s) RETURNING id" % TABLE, ("undone-" + tag,))
    assert poll(lambda: "undone-" + tag in _rows(standby), 30), "the standby did not replay the row the PITR undoes"
    segment = _one(primary, "SELECT pg_walfile_name(pg_switch_wal())", db="postgres")
    assert poll(lambda: _one(primary, "SELECT last_archived_wal >= %s FROM pg_stat_archiver", (segment,), db="postgres"),
                60), "segment %s was not archived" % segment
    return name


def _restore(primary, backup_id, name, *extra, check=True):
    # the restore point lies on the primary's current timeline: said, not guessed (earlier restores forked the archive);
    # the fixture's base backup: for a restore point (its position unknown) the role would take the oldest usable one
    return playbook("pitr_restore.yml", "-e", "pitr_restore_region=%s" % primary["fediflow_region"],
                    "-e", "pitr_restore_target_name=%s" % name, "-e", "pitr_restore_timeline=%d" % _tli(primary),
                    "-e", "pitr_restore_backup_id=%s" % backup_id, *extra, check=check)


def test_a_restore_of_the_standby_region_is_refused_before_anything(pitr_lab):
    primary, standby, (_p_name, s_name), _backup_id = pitr_lab
    pid, rows = _pid(standby), _rows(standby)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    proc, _took = playbook("pitr_restore.yml", "-e", "pitr_restore_region=%s" % standby["fediflow_region"],
                           "-e", "pitr_restore_target_time=%s" % now, check=False)
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert "is a standby (streaming from %s:%s)" % (primary["fediflow_pg_host"], primary["fediflow_pg_port"]) in out, out[-3000:]
    assert "-e pitr_restore_region=%s" % primary["fediflow_region"] in out and "-e pitr_restore_switch=false" in out
    assert "Point-in-time restore of" not in out.split("is a standby")[1]  # the play ended there, on every host
    # the module refuses by itself too (a caller without the role)
    data_dir = standby["fediflow_pg_data_dir"]
    res = module("fediflow.dr.pitr_restore", {
        "data_dir": data_dir, "target_time": now, "backup_dest": os.path.join(standby["fediflow_backup_dir"], "physical"),
        "wal_config": os.path.join(os.path.dirname(data_dir), "fediflow-wal.json"),
        "wal_tool": os.path.join(standby["fediflow_tools_dir"], "fediflow_wal.py"),
        "login_host": standby["fediflow_pg_host"], "login_port": standby["fediflow_pg_port"],
        "login_password": standby["fediflow_pg_superuser_password"]}, netns=lab_netns(standby))
    assert res.get("failed") is True and "holds a standby (streaming from" in res["msg"], res.get("msg")
    assert _pid(standby) == pid and _rows(standby) == rows and _receiver(standby)[0] == "streaming"
    assert not glob.glob(data_dir + ".pitr-*") and not glob.glob(data_dir + ".pre-pitr-*")


def test_in_place_on_the_primary_the_standby_is_reseeded_onto_the_new_timeline(pitr_lab):
    primary, standby, (_p_name, s_name), backup_id = pitr_lab
    name = _incident(primary, standby, "reseed")
    before = _tli(primary)
    proc, took = _restore(primary, backup_id, name)
    out = " ".join(proc.stdout.split())
    after = _tli(primary)
    assert after > before and pg_role(primary) == "primary"
    assert "kept-reseed" in _rows(primary) and "undone-reseed" not in _rows(primary)
    assert re.search(r"%s: re-seeded \(pg_rewind\), streaming on timeline %d" % (s_name, after), out), out[-3000:]
    # independently: the standby streams on the new timeline and replays what the restored primary writes now
    _one(primary, "INSERT INTO %s (what) VALUES ('written-after-the-pitr') RETURNING id" % TABLE)
    assert poll(lambda: "written-after-the-pitr" in _rows(standby), 30), _rows(standby)
    assert _receiver(standby) == ("streaming", after)
    assert pg_role(standby) == "standby"
    rows = _rows(standby)
    assert "kept-reseed" in rows and "undone-reseed" not in rows  # a failover now promotes the restored history
    # measured: the whole playbook run, the restore and the re-seed as the role reports them
    restore = re.search(r"\(total ([0-9.]+) s\); standbys re-seeded in ([0-9.]+) s", out)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "pitr_standbys.json").write_text(json.dumps({
        "playbook_s": round(took, 1), "restore_s": float(restore.group(1)), "reseed_s": float(restore.group(2))}))


def test_left_behind_the_standby_is_fenced_and_the_printed_command_reseeds_it(pitr_lab):
    primary, standby, (p_name, s_name), backup_id = pitr_lab
    name = _incident(primary, standby, "fence")
    proc, _took = _restore(primary, backup_id, name, "-e", "pitr_restore_reseed_standbys=false")
    out = " ".join(proc.stdout.split())
    after = _tli(primary)
    assert "undone-fence" not in _rows(primary)
    assert "%s: stopped and fenced" % s_name in out, out[-3000:]
    assert pg_role(standby) is None  # stopped: nothing can promote it
    data_dir = standby["fediflow_pg_data_dir"]
    with open(os.path.join(data_dir, "fediflow_pitr_left_behind.json"), encoding="utf-8") as handle:
        marker = json.load(handle)
    assert int(marker["new_timeline"]) == after and marker["primary"] == p_name
    # started by hand (or at boot), PostgreSQL refuses it: its history is not the new timeline's
    log = data_dir + ".log"
    size = os.path.getsize(log) if os.path.exists(log) else 0
    res = module("fediflow.dr.pg_ctl", {"data_dir": data_dir, "state": "started", "timeout": 30}, netns=lab_netns(standby))
    assert res.get("failed") is True, res
    with open(log, encoding="utf-8", errors="replace") as handle:
        handle.seek(size)
        assert "requested timeline %d is not a child of this server's history" % after in handle.read()
    assert pg_role(standby) is None
    # the command the run printed, run as printed
    command = re.search(r"re-seed it with: (ansible-playbook fediflow\.dr\.failback [^\n]*?failback_close_incident=false)",
                        out).group(1)
    argv = shlex.split(command)
    t0 = time.monotonic()
    done = subprocess.run([str(BIN / argv[0])] + argv[1:], cwd=ROOT, env=ansible_env(), capture_output=True, text=True,
                          check=False)
    keep_log("failback.yml-printed-by-pitr_restore", done, time.monotonic() - t0)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    _one(primary, "INSERT INTO %s (what) VALUES ('written-after-the-reseed') RETURNING id" % TABLE)
    assert poll(lambda: pg_role(standby) == "standby" and "written-after-the-reseed" in _rows(standby), 60)
    assert _receiver(standby) == ("streaming", after)
    assert "undone-fence" not in _rows(standby) and "kept-fence" in _rows(standby)
    assert not os.path.exists(os.path.join(data_dir, "fediflow_pitr_left_behind.json"))
