"""The pgBackRest engine switched on for the whole lab (`fediflow_backup_engine: pgbackrest`, as `make drill
ENGINE=pgbackrest` does): the replication role writes pgBackRest's three configuration files and its
archive_command on every database host and creates the stanza; the scheduled backup job takes a backup of the
schedule's type into each region's repository, proves it (pgbackrest verify, or a restore into a scratch cluster
whose rows are counted) and records the proof on it; then the whole DR drill runs on the engine - its PITR from a
pgBackRest base, the region failover (the new primary archives through pgBackRest to the repositories that answer)
and the failback - and every scenario passes. Afterwards the lab is rebuilt on the native engine, so the files after
this one find it as they expect (its native WAL archive has no gap from the time WAL went to pgBackRest).

The lab's S3 is moto behind the lab's TLS fronts (pgBackRest speaks only HTTPS), its IAM enforced; the Kubernetes
API and Slack are the lab's doubles (no API server runs here).
"""
import json
import shutil
import subprocess
import sys

import pytest

from lab_fixtures import COLLECTIONS, ROOT, lab_is_home, pg_value, playbook, rebuild_lab_unless_home

sys.path.insert(0, str(COLLECTIONS))
from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("pgbackrest"), reason="pgbackrest is not installed (scripts/setup.sh)")]

ENGINE = ("-e", "fediflow_backup_engine=pgbackrest")


def _setup(hv):
    """The engine's layout on a host, as the roles compute it (the lookup's logic)."""
    values = dict(hv, fediflow_backup_engine="pgbackrest")
    return pgbackrest.host_setup(values)


def _ledger(hv):
    setup = _setup(hv)
    argv = pgbackrest.command(pgbackrest.binary(), setup["configs"]["backup"], setup["stanza"], "info", "--output=json")
    proc = subprocess.run(["runuser", "-u", hv.get("fediflow_pg_os_user", "postgres"), "--"] + argv, cwd="/",
                          capture_output=True, text=True, check=True, timeout=300)
    return pgbackrest.parse_info(proc.stdout, setup["stanza"], dict(enumerate(setup["repository_names"], start=1)))


@pytest.fixture(scope="module")
def engine_lab(lab):
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby), "the lab must start in its home roles"
    proc, _took = playbook("lab_up.yml", *ENGINE)
    try:
        yield {"lab": lab, "up": proc.stdout}
    finally:
        # the native engine again, from a fresh lab: while this file ran, WAL went to pgBackRest's archive only, so the
        # native archive has a gap a later native PITR would rightly refuse to cross
        if not rebuild_lab_unless_home(primary, standby, ROOT / "tests" / "output" / "pgbackrest-drill-logs"):
            playbook("lab_down.yml")
            playbook("lab_up.yml")


def test_the_switch_archives_through_pgbackrest_and_backups_follow_the_schedule(engine_lab):
    primary = engine_lab["lab"]["primary"]
    setup = _setup(primary)
    command = pg_value(primary, "SHOW archive_command")
    assert command == pgbackrest.archive_command(pgbackrest.binary(), setup["configs"]["wal"], setup["stanza"])
    # the first scheduled run: no full in either repository yet, so a full into each (type auto); proven with a
    # restore into a scratch cluster beside the primary (fediflow_verify_host: the operator accepts the load)
    proc, _took = playbook("backup.yml", *ENGINE, "-e", "backup_physical_verify=restore",
                           "-e", "fediflow_verify_host=%s" % primary["inventory_hostname"])
    assert "WAL archiving healthy" in proc.stdout
    first = _ledger(primary)
    regions = setup["repository_names"]
    assert all(first["repositories"][r]["ok"] for r in regions), first["repositories"]
    fulls = {r: [b for b in first["backups"] if b["repositories"] == [r] and b["type"] == "full"] for r in regions}
    assert all(fulls[r] for r in regions), first["backups"]
    newest = {r: fulls[r][-1] for r in regions}
    assert newest[regions[0]]["verification"]["level"] == "restore" and newest[regions[0]]["verification"]["ok"]
    assert newest[regions[1]]["verification"]["level"] == "list" and newest[regions[1]]["verification"]["ok"]
    # the next run of the 4-hourly job: each repository's newest full is minutes old, so an incremental on it
    playbook("backup.yml", *ENGINE, "-e", '{"backup_logical": false, "backup_media": false, "backup_cache": false, '
                                          '"backup_config": false}')
    second = _ledger(primary)
    for r in regions:
        incrs = [b for b in second["backups"] if b["repositories"] == [r] and b["type"] == "incr"
                 and b["prior"] == newest[r]["id"]]
        assert incrs and incrs[-1]["verification"]["ok"], (r, second["backups"])


def test_the_whole_drill_passes_on_the_engine(engine_lab, tmp_path):
    """Every scenario of the lab's drill (PITR from a pgBackRest base, a region lost and failed over, region 2's
    backups after it, failback, the partition) with the engine; the report's objectives all measured and met."""
    lab = engine_lab["lab"]
    summary = tmp_path / "summary.txt"
    proc, _took = playbook("dr_drill.yml", *ENGINE, "-e", "drill_summary_file=%s" % summary, check=False)
    report_dir = lab["primary"]["fediflow_lab_dir"] + "/reports"
    with open(report_dir + "/latest.json", encoding="utf-8") as handle:
        report = json.load(handle)
    steps = {s["name"]: s for s in report["steps"]}
    assert proc.returncode == 0 and report["ok"] is True, (
        {n: (s["status"], s.get("msg")) for n, s in steps.items() if s["status"] != "ok"}, proc.stdout[-4000:])
    assert all(s["status"] == "ok" for s in steps.values())
    assert all(r["measured_s"] is not None and r["pass"] is True for r in report["objectives"]), report["objectives"]
    # the PITR's base was a pgBackRest backup (a label), the failover archived through pgBackRest
    assert pgbackrest.LABEL_RE.match(str(steps["pitr"]["details"].get("base_backup") or "")), steps["pitr"]["details"]
    assert lab_is_home(lab["primary"], lab["standby"])
    # region 2's backups after the failover are in its ledger too: the engine's backups followed the primary
    ledger = _ledger(lab["standby"])
    assert any(b["verification"]["ok"] for b in ledger["backups"] if b["source"]["timeline"] > 1), ledger["backups"]
