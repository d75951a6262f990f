"""`make drill`'s playbook against the real lab: it measures what exists and never reports
a scenario it did not run."""
import glob
import json
import os

from lab_fixtures import pg_connect, playbook


def test_drill_measures_replication_and_lists_what_it_did_not_run(lab):
    playbook("backup.yml")  # the scheduled backups a drill finds (media snapshot included)
    report_dir = lab["primary"]["fediflow_lab_dir"] + "/reports"
    before = set(glob.glob(report_dir + "/drill-*.json"))
    proc, _took = playbook("dr_drill.yml")
    new = sorted(set(glob.glob(report_dir + "/drill-*.json")) - before)
    assert len(new) == 1, proc.stdout[-3000:]
    with open(new[0], encoding="utf-8") as handle:
        report = json.load(handle)
    assert os.path.exists(new[0][:-5] + ".md")
    assert "NOT IMPLEMENTED YET" in proc.stdout and new[0] in proc.stdout
    measured = {o["objective"]: o for o in report["objectives"]}
    lag = measured["RPO database (replication lag)"]
    assert lag["measured_s"] is not None and lag["pass"] in (True, "True", "true")
    # nothing is reported as measured for scenarios that do not exist yet
    not_run = {s["scenario"] for s in report["scenarios_not_run"]}
    assert {"pitr", "region-failover", "failback"} == not_run
    run = {s["scenario"]: s for s in report["scenarios_run"]}
    assert run["backup-restore"]["ok"] in (True, "True") and run["backup-restore"]["backup_id"]
    restore = measured["RTO standard (database restore from backup)"]
    assert 0 < float(restore["measured_s"]) < float(run["backup-restore"]["duration_s"]) + 1
    archive = measured["RPO database (WAL archive: archive_timeout + archive latency)"]
    assert 60 <= float(archive["measured_s"]) < 300  # archive_timeout (60 s in the lab) + latency
    files = run["file-restore"]
    assert files["ok"] in (True, "True") and int(files["files"]) >= 3000
    assert measured["RPO file storage (age of changes not in a snapshot)"]["measured_s"] is not None
    assert measured["RTO critical services"]["measured_s"] is None
    assert measured["RTO critical services"]["pass"] is None
    # the heartbeat the drill wrote is really on the standby
    with pg_connect(lab["standby"], "fediflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM dr_heartbeat")
        assert cur.fetchone()[0] >= 1


def test_file_storage_rpo_counts_changes_not_yet_in_a_snapshot(lab):
    """A media file written after the last snapshot is exposure: the drill must say so."""
    playbook("backup.yml")
    extra = os.path.join(lab["primary"]["fediflow_media_dir"], "zz-drill-probe.jpg")
    with open(extra, "wb") as handle:
        handle.write(os.urandom(1024))
    try:
        report_dir = lab["primary"]["fediflow_lab_dir"] + "/reports"
        before = set(glob.glob(report_dir + "/drill-*.json"))
        playbook("dr_drill.yml", check=False)
        new = sorted(set(glob.glob(report_dir + "/drill-*.json")) - before)
        with open(new[0], encoding="utf-8") as handle:
            report = json.load(handle)
        measured = {o["objective"]: o for o in report["objectives"]}
        assert float(measured["RPO file storage (age of changes not in a snapshot)"]["measured_s"]) > 0
    finally:
        os.unlink(extra)
