"""`make drill`'s playbook against the real lab: every scenario that exists is run and measured
(a failover that really kills the primary included), the report says what it did not run, and
the lab ends in its home roles.

The Kubernetes API and Slack of the failover scenario are the lab's local HTTP doubles (no API
server can run here); moto answers Route53 changes INSYNC at once.
"""
import json
import os
import xml.etree.ElementTree as ET

import pytest

from lab_fixtures import ROOT, lab_is_home, pg_connect, playbook, rebuild_lab_unless_home


@pytest.fixture
def home(lab):
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby), "the lab must start in its home roles"
    yield lab
    rebuild_lab_unless_home(primary, standby, ROOT / "tests" / "output" / "drill-logs")


def _latest(lab):
    report_dir = lab["primary"]["fediflow_lab_dir"] + "/reports"
    with open(report_dir + "/latest.json", encoding="utf-8") as handle:
        return report_dir, json.load(handle)


def _rows(report, objective):
    return [r for r in report["objectives"] if r["objective"] == objective]


@pytest.mark.restarts_lab
def test_full_drill_measures_every_scenario_and_comes_home(home, tmp_path):
    lab = home
    playbook("backup.yml")  # the scheduled backups a drill finds (media snapshot included)
    summary = tmp_path / "summary.txt"
    proc, _took = playbook("dr_drill.yml", "-e", "drill_summary_file=%s" % summary)
    report_dir, report = _latest(lab)
    assert report["ok"] is True, proc.stdout[-3000:]
    text = summary.read_text()
    assert "NOT RUN: pitr" in text and "report: " in text
    # nothing is reported as measured for a scenario that does not exist yet
    assert [s["scenario"] for s in report["not_run"]] == ["pitr"]
    steps = {s["name"]: s for s in report["steps"]}
    assert set(steps) == {"replication-rpo", "backup-restore", "file-restore", "region-failover", "failback"}
    assert all(s["status"] == "ok" for s in steps.values())
    # the database RPO is measured three ways, the failover's from heartbeats actually lost
    sources = {r["source"]: r for r in _rows(report, "rpo_database_s")}
    assert set(sources) == {"replication-rpo", "wal-archive", "region-failover"}
    assert all(r["pass"] is True for r in sources.values())
    assert 60 <= sources["wal-archive"]["measured_s"] < 300  # archive_timeout (60 s in the lab) + latency
    rto = _rows(report, "rto_critical_s")[0]
    # kill -> service in region 2 includes the detection window (3 checks 1 s apart) and stays well inside 15 min
    assert rto["source"] == "region-failover" and 2.0 <= rto["measured_s"] < 90 and rto["pass"] is True
    assert _rows(report, "data_loss_tolerance_critical_s")[0]["measured_s"] is not None
    restore = _rows(report, "rto_standard_s")[0]
    assert 0 < restore["measured_s"] <= steps["backup-restore"]["duration_s"] + 1
    assert _rows(report, "rpo_file_storage_s")[0]["measured_s"] is not None
    failover = steps["region-failover"]["details"]
    assert [s["step"] for s in failover["steps"]][:5] == ["inspect", "detect", "promote", "dns", "kubernetes"]
    # the heartbeats the drill wrote before the kill are in the region that took over, then back home
    assert lab_is_home(lab["primary"], lab["standby"])
    with pg_connect(lab["primary"], "fediflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM dr_heartbeat")
        assert cur.fetchone()[0] >= 10
    # CI-readable: the JUnit file has no failures, the HTML exists
    junit = ET.parse(os.path.join(report_dir, "latest.junit.xml")).getroot()
    assert junit.get("failures") == "0" and int(junit.get("tests")) >= 10
    assert os.path.getsize(os.path.join(report_dir, "latest.html")) > 1000


def test_file_storage_rpo_counts_changes_not_yet_in_a_snapshot(home):
    """A media file written after the last snapshot is exposure: the drill must say so (failover skipped)."""
    lab = home
    playbook("backup.yml")
    extra = os.path.join(lab["primary"]["fediflow_media_dir"], "zz-drill-probe.jpg")
    with open(extra, "wb") as handle:
        handle.write(os.urandom(1024))
    try:
        playbook("dr_drill.yml", "-e", "drill_failover=false", check=False)
        _dir, report = _latest(lab)
        assert _rows(report, "rpo_file_storage_s")[0]["measured_s"] > 0
        assert "region-failover" not in {s["name"] for s in report["steps"]}
        assert _rows(report, "rto_critical_s")[0]["measured_s"] is None  # not run, never invented
    finally:
        os.unlink(extra)
