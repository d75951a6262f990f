"""The pgBackRest engine switched on for the whole lab (`fediflow_backup_engine: pgbackrest`, as `make drill
ENGINE=pgbackrest` does): the replication role writes pgBackRest's three configuration files and its
archive_command on every database host and creates the stanza; the scheduled backup job takes a backup of the
schedule's type into each region's repository, proves it (pgbackrest verify, or a restore into a scratch cluster
whose rows are counted) and records the proof on it. Afterwards the lab is rebuilt on the native engine, so the files
after this one find it as they expect (its native WAL archive has no gap from the time WAL went to pgBackRest).

The whole drill on the engine passed on a lab switched while on timeline 1 (`make drill ENGINE=pgbackrest`); on the
CI lab, switched while on timeline 11 after the session's failovers, its PITR failed: the current timeline's history
file predates the switch and is in no pgBackRest repository. The drill test returns with that fixed (issue 21).

The lab's S3 is moto behind the lab's TLS fronts (pgBackRest speaks only HTTPS), its IAM enforced; the Kubernetes
API and Slack are the lab's doubles (no API server runs here).
"""
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
