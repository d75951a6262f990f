"""`make drill`'s playbook (role fediflow.dr.dr_drill) against the real lab: every scenario of the
inventory's fediflow_drill_scenarios is run in order and measured (a failover that really kills
the primary, a point-in-time restore after a real DROP TABLE), the measurements are re-checked
independently with psycopg2 against the heartbeat rows in the database, and the lab ends in its
home roles - also when a scenario fails.

The Kubernetes API and Slack of the failover scenario are the lab's local HTTP doubles (no API
server can run here); moto answers Route53 changes INSYNC at once and stores the S3 backups.
"""
import datetime
import hashlib
import json
import os
import re
import stat
import xml.etree.ElementTree as ET

import pytest
import yaml

from lab_fixtures import INVENTORY, ROOT, lab_is_home, listening, pg_connect, playbook, rebuild_lab_unless_home, s3_endpoint
from runner_fixtures import run_template, secrets_absent
from watcher_fixtures import Watcher

pytestmark = pytest.mark.slow  # long role / playbook runs: not in `make test-quick`

SCENARIOS = ["replication-rpo", "backup-restore", "pitr", "region-failover", "region-recover", "file-restore", "failback",
             "partition"]
PROBE = "dr_drill_pitr_probe"


@pytest.fixture(scope="module")
def backed_up(lab):
    """The scheduled backups a drill finds (media, configuration, physical base): once for the file."""
    playbook("backup.yml")
    return lab


@pytest.fixture(scope="module")
def full_drill(backed_up, tmp_path_factory):
    """The file's one full drill (every scenario, failover included), launched as AWX launches the
    "fediflow.dr DR drill" job template: ansible-runner, the survey's defaults, the credentials
    injected as their types say, drill_summary_file given at launch. `make drill` runs the same
    playbook with ansible-playbook (test_a_failed_scenario... below runs it that way). The lab's
    state right after the drill is recorded before the lab is rebuilt (when the drill left it
    elsewhere), so the tests judge the drill and later files still start from a home lab."""
    lab = backed_up
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby), "the lab must start in its home roles"
    work = tmp_path_factory.mktemp("full-drill")
    summary = work / "summary.txt"
    # the split-brain watcher around the whole drill (its failover, failback, region losses, partition): a writer
    # in each region, as its application; two writable primaries at any instant fail the test. Acknowledged
    # writes may rightly be missing afterwards (the drill restores a point in time): only the two-writer rule
    watcher = Watcher([primary, standby], max_s=3600, db="fediflow").start()
    try:
        result, artifacts, extravars, took = run_template("fediflow.dr DR drill", lab, work / "runner",
                                                          {"drill_summary_file": str(summary)})
    finally:
        writers_at_once = watcher.writers_at_once()
    acks = {hv["fediflow_region"]: len(watcher.acks(hv["fediflow_region"])) for hv in (primary, standby)}
    came_home = lab_is_home(primary, standby)
    report_dir, report = _latest(lab)
    rebuild_lab_unless_home(primary, standby, ROOT / "tests" / "output" / "drill-logs")
    return {"lab": lab, "result": result, "artifacts": artifacts, "extravars": extravars, "seconds": took,
            "stdout": (artifacts / "stdout").read_text(), "summary": summary, "came_home": came_home,
            "report_dir": report_dir, "report": report,
            "writers_at_once": writers_at_once, "acks": acks}


def _latest(lab):
    report_dir = lab["primary"]["fediflow_lab_dir"] + "/reports"
    with open(report_dir + "/latest.json", encoding="utf-8") as handle:
        return report_dir, json.load(handle)


def _rows(report, objective):
    return [r for r in report["objectives"] if r["objective"] == objective]


def _one(rows, source):
    found = [r for r in rows if r["source"] == source]
    assert len(found) == 1, rows
    return found[0]


def _probe_digest(rows=1000):
    """What the drill table holds: payload md5(id) for id 1..rows, digest over them in id order."""
    payloads = [hashlib.md5(str(i).encode()).hexdigest() for i in range(1, rows + 1)]
    return rows, hashlib.md5(",".join(payloads).encode()).hexdigest()


def _probe(node):
    with pg_connect(node, "fediflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), md5(string_agg(payload, ',' ORDER BY id)) FROM %s" % PROBE)
        return tuple(cur.fetchone())


def test_the_lab_inventory_lists_every_scenario_in_order():
    drill_vars = yaml.safe_load((INVENTORY.parent / "group_vars" / "all" / "drill.yml").read_text())
    assert drill_vars["fediflow_drill_scenarios"] == SCENARIOS


def test_the_production_detection_falls_back_to_region_failovers_defaults():
    """dr_drill projects the failover RTO with the inventory's region_failover_detect_* settings (playbooks/dr_drill.yml
    passes them), else with the region_failover role's own defaults: the playbook's fallbacks and dr_drill's
    defaults must be those."""
    ours = yaml.safe_load((ROOT / "roles" / "dr_drill" / "defaults" / "main.yml").read_text())
    theirs = yaml.safe_load((ROOT / "roles" / "region_failover" / "defaults" / "main.yml").read_text())
    play = yaml.safe_load((ROOT / "playbooks" / "dr_drill.yml").read_text())[0]
    passed = next(t for t in play["tasks"][1]["block"] if t["ansible.builtin.include_role"]["name"] == "fediflow.dr.dr_drill")["vars"]
    for name in ("interval_s", "threshold", "timeout_s"):
        fallback = re.fullmatch(r"\{\{ region_failover_detect_%s \| default\((\d+)\) \}\}" % name,
                                passed["dr_drill_production_detect_%s" % name])
        assert fallback and int(fallback.group(1)) == theirs["region_failover_detect_%s" % name], name
        assert ours["dr_drill_production_detect_%s" % name] == theirs["region_failover_detect_%s" % name], name


@pytest.mark.restarts_lab
def test_full_drill_measures_every_scenario_and_comes_home(full_drill):
    lab, stdout, report_dir, report = full_drill["lab"], full_drill["stdout"], full_drill["report_dir"], full_drill["report"]
    primary, standby = lab["primary"], lab["standby"]
    assert report["ok"] is True, stdout[-3000:]
    text = full_drill["summary"].read_text()
    assert "NOT RUN" not in text and "report: " in text and "overall: PASS" in text
    assert report["not_run"] == []
    # one step per scenario, in the inventory's order, plus nothing else (no lab-home repair needed)
    steps = sorted(report["steps"], key=lambda s: s["start"])
    assert [s["name"] for s in steps] == SCENARIOS
    assert all(s["status"] == "ok" for s in steps)
    # progress lines: a start and a finish line per scenario, in order
    for index, name in enumerate(SCENARIOS, 1):
        assert "drill [%d/%d] %s: start" % (index, len(SCENARIOS), name) in stdout
        assert "drill [%d/%d] %s: ok in " % (index, len(SCENARIOS), name) in stdout
    steps = {s["name"]: s for s in steps}
    # every objective measured, every one passes
    assert all(r["measured_s"] is not None and r["pass"] is True for r in report["objectives"]), report["objectives"]
    rpo_db = _rows(report, "rpo_database_s")
    assert {r["source"] for r in rpo_db} == {"replication-rpo", "wal-archive", "pitr", "region-failover"}
    # archive_timeout (the inventory's fediflow_archive_timeout_s, 20 s in the lab) + the archiving latency
    assert primary["fediflow_archive_timeout_s"] <= _one(rpo_db, "wal-archive")["measured_s"] < 300
    rto = _one(_rows(report, "rto_critical_s"), "region-failover")
    # kill -> service in region 2 includes the detection window (3 checks 1 s apart)
    assert 2.0 <= rto["measured_s"] < 90
    full = _one(_rows(report, "rto_full_system_s"), "region-failover")
    assert rto["measured_s"] <= full["measured_s"] < 180
    _check_partition(lab, report, steps["partition"])
    assert _rows(report, "data_loss_tolerance_critical_s")[0]["measured_s"] is not None
    backup_rto = _one(_rows(report, "rto_standard_s"), "backup-restore")
    assert 0 < backup_rto["measured_s"] <= steps["backup-restore"]["duration_s"] + 1
    assert 0 < _rows(report, "rto_non_critical_s")[0]["measured_s"] <= steps["file-restore"]["duration_s"] + 1
    # RPO file storage and configuration: the inventory's schedule + the newest snapshot's duration (the worst
    # case), re-derived from the schedule file and the snapshots' own manifests in S3
    _check_schedule_rpo(lab, report, steps["file-restore"])
    # the lab detects an outage with 3 checks 1 s apart; production with 3 checks 30 s apart (+ 5 s timeout):
    # the failover's RTOs are shown with production's detection too, and judged on it
    _check_detection_projection(report, failover_steps=steps["region-failover"]["details"]["steps"])
    assert "production s" in text and "the drill shortened the outage detection" in text
    started = datetime.date.fromisoformat(report["started"][:10])
    assert report["drill_interval"] == "every month" and report["next_drill"] == _month_later(started).isoformat()
    failover = steps["region-failover"]["details"]
    assert [s["step"] for s in failover["steps"]][:6] == ["inspect", "detect", "fence", "dns", "promote", "kubernetes"]
    _check_pitr(lab, report, steps["pitr"])
    _check_region_loss(lab, report, steps)
    # never two writable primaries during the whole drill, with writes acknowledged in both regions (the watcher
    # saw each region take writes: its check is not vacuous)
    assert full_drill["writers_at_once"] == [], full_drill["writers_at_once"][:3]
    assert min(full_drill["acks"].values()) >= 100, full_drill["acks"]
    # the heartbeats the drill wrote before the kill are in the region that took over, then back home
    assert full_drill["came_home"]
    with pg_connect(primary, "fediflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM dr_heartbeat WHERE id <= %s", (failover["present_last_id"],))
        assert cur.fetchone()[0] >= 10
    # CI-readable: the JUnit file has no failures, the HTML exists
    junit = ET.parse(os.path.join(report_dir, "latest.junit.xml")).getroot()
    assert junit.get("failures") == "0" and int(junit.get("tests")) >= 15
    assert os.path.getsize(os.path.join(report_dir, "latest.html")) > 1000
    # everything the drill writes holds results or data: private to its owner (issue 19)
    assert stat.S_IMODE(os.stat(report_dir).st_mode) == 0o700
    loose = [(os.path.join(base, name), oct(stat.S_IMODE(os.lstat(os.path.join(base, name)).st_mode)))
             for base, _dirs, names in os.walk(report_dir) for name in names
             if stat.S_IMODE(os.lstat(os.path.join(base, name)).st_mode) & 0o077]
    assert loose == [], loose[:5]
    # the restore-verification ran on the verify host (the standby region's host), never on the primary
    verified_on = steps["backup-restore"]["details"]["verified_on"]
    assert verified_on["host"] == lab["standby"]["inventory_hostname"] and verified_on["removed"] is True, verified_on


@pytest.mark.restarts_lab
def test_drill_template_under_ansible_runner(full_drill):
    """The AWX "fediflow.dr DR drill" template under ansible-runner (moved here from
    test_ansible_runner.py: it is the same full drill, run once for both tests)."""
    result, artifacts, extravars = full_drill["result"], full_drill["artifacts"], full_drill["extravars"]
    assert result.status == "successful" and result.rc == 0, full_drill["stdout"][-3000:]
    assert extravars["drill_failover"] == "true"  # the survey default: the full drill
    assert (artifacts / "job_events").is_dir() and any((artifacts / "job_events").iterdir())
    assert not result.stats["failures"] and not result.stats["dark"]
    report = full_drill["report"]
    assert report["ok"] and {"region-failover", "failback"} <= {s["name"] for s in report["steps"]}
    assert full_drill["came_home"]
    secrets_absent(artifacts, extravars)


def _month_later(day):
    month = day.month % 12 + 1
    year = day.year + (day.month == 12)
    last = (datetime.date(year + (month == 12), month % 12 + 1, 1) - datetime.timedelta(days=1)).day
    return day.replace(year=year, month=month, day=min(day.day, last))


def _manifest_seconds(s3, holder, primary, prefix, snapshot_id):
    """A snapshot's duration as the repository it was read from holds it: start -> stop in its own region, start
    -> the copy complete (copied_at) in another region's."""
    key = "%s/%s/snapshots/%s.json" % (prefix, primary["fediflow_region"], snapshot_id)
    manifest = json.loads(s3.get_object(Bucket=holder["fediflow_backup_bucket"], Key=key)["Body"].read())
    start, stop = (datetime.datetime.fromisoformat(manifest[k].replace("Z", "+00:00"))
                   for k in ("start_time", "copied_at" if "copied_at" in manifest else "stop_time"))
    return manifest, (stop - start).total_seconds()


def _check_schedule_rpo(lab, report, step, schedules=None):
    """RPO file storage = the media schedule's interval + the newest media snapshot's duration; RPO configuration =
    the configuration schedule's interval + the newest configuration snapshot's duration (both from the inventory's
    fediflow_schedules, the durations from the manifests in S3 - in the repository the drill read them from:
    region 2's while region 1 is lost, until the copy there was complete - not from the drill's own numbers)."""
    import boto3  # pylint: disable=import-outside-toplevel
    primary = lab["primary"]
    schedules = schedules or yaml.safe_load((INVENTORY.parent / "group_vars" / "all" / "schedules.yml").read_text())["fediflow_schedules"]
    det = step["details"]
    holder = next((hv for hv in (lab["primary"], lab["standby"]) if hv["fediflow_region"] == det.get("read_from")), primary)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint(holder), region_name=holder["fediflow_region"],
                      aws_access_key_id=holder["fediflow_aws_access_key"],
                      aws_secret_access_key=holder["fediflow_aws_secret_key"])
    _media, media_s = _manifest_seconds(s3, holder, primary, "media", det["snapshot_id"])
    config, config_s = _manifest_seconds(s3, holder, primary, "config", det["config_snapshot_id"])
    assert config["stop_time"][:19] == det["config_stop_time"][:19]
    media_interval = schedules.get("media_interval_s", schedules["backup_interval_s"])
    rpo_files = _rows(report, "rpo_file_storage_s")[0]
    assert rpo_files["measured_s"] == pytest.approx(max(media_interval + media_s, det["media_pending_age_s"]), abs=0.002)
    assert rpo_files["measured_s"] >= media_interval
    rpo_config = _rows(report, "rpo_configuration_s")[0]
    assert rpo_config["measured_s"] == pytest.approx(schedules["config_interval_s"] + config_s, abs=0.002)
    return rpo_files, rpo_config


def _check_detection_projection(report, failover_steps):
    detect = next(s["duration_s"] for s in failover_steps if s["step"] == "detect")
    det = report["detection"]
    assert det["shortened"] is True and det["production_worst_case_s"] == 30 * 3 + 5
    assert det["measured_s"] == pytest.approx(detect, abs=0.001)
    for objective in ("rto_critical_s", "rto_full_system_s"):
        row = _rows(report, objective)[0]
        assert row["projected_s"] == pytest.approx(row["measured_s"] - detect + 95, abs=0.002), row
        assert row["projected_s"] > row["measured_s"] and row["pass"] is (row["projected_s"] <= row["target_s"])
    assert all(r["projected_s"] is None for r in report["objectives"] if r["kind"] == "rpo")


def _check_partition(lab, report, step):
    """partition: region 1 partitioned (alive, its application writing there), fenced through the lab's control
    plane before region 2 was promoted, healed (it refused writes), failed back; the writers in both regions never
    saw two writable primaries at once, and what region 1 acknowledged behind the partition is a counted tail."""
    region1, region2 = lab["primary"]["fediflow_region"], lab["standby"]["fediflow_region"]
    details = step["details"]
    assert step["status"] == "ok" and details["writers_at_once"] == 0, details
    assert details["fence"]["method"] == "role" and details["fence"]["ok"] and details["fence"]["proved"]
    assert details["healed_region_refused_writes"] is True and details["lost_is_tail"] is True
    assert details["acked"][region1] >= 10 and details["acked"][region2] >= 10
    assert [s["step"] for s in details["steps"]][:5] == ["inspect", "detect", "fence", "dns", "promote"]
    rto = _one(_rows(report, "rto_critical_s"), "partition")
    assert 2.0 <= rto["measured_s"] < 90 and "writers at once: 0" in rto["note"]
    full = _one(_rows(report, "rto_full_system_s"), "partition")
    assert rto["measured_s"] <= full["measured_s"] < 180 and "lost (asynchronous replication)" in full["note"]


def _check_region_loss(lab, report, steps):
    """The lab's drill loses the whole primary region (fediflow_drill_outage: region, through the lab collection's outage injector): the failover fenced
    nothing it could not reach and archived to the repository that answers; in region 2, with only what survives
    there, recover ran, the new primary was backed up (one copy: degraded), the PITR to just before the outage read
    region 1's base backup from region 2's repository and restored every heartbeat committed before the point, and
    the media and configuration snapshots were restored from region 2's copies."""
    primary, standby = lab["primary"], lab["standby"]
    lost, survivor = primary["fediflow_region"], standby["fediflow_region"]
    failover = steps["region-failover"]["details"]
    # fenced through the lab's control plane before the promotion; its host unreachable over SSH after it
    assert failover["outage"] == "region" and "fenced before the promotion (role)" in failover["old_primary"], failover

    wal = failover["wal_archive"]
    assert wal["checked"] and wal["degraded"] and wal["down"] == [lost] and wal["archiving_to"] == [survivor], wal
    rec = steps["region-recover"]["details"]
    assert rec["recover"]["ok"] and not rec["recover"]["failed"], rec["recover"]
    physical = rec["backup"]["physical"]
    assert physical["copies"] == [survivor] and physical["degraded"] in (True, "True"), physical
    pitr = rec["pitr"]
    assert pitr["base_read_from"] == "%s.%s" % (survivor, lost) or pitr["base_read_from"] == survivor, pitr
    assert any(lost in name for name in pitr["repositories_down"]), pitr
    assert int(pitr["heartbeats_restored"]) >= int(pitr["heartbeats_before_point"]) > 0, pitr
    assert pitr["base_backup"].endswith(tuple("0123456789abcdef")) and "physical" in pitr["base_backup"]
    recover_rto = _one(_rows(report, "rto_standard_s"), "region-recover")
    # counted from the outage, so the lab's shortened detection is in it: shown with production's too
    assert recover_rto["measured_s"] > 0 and recover_rto["projected_s"] > recover_rto["measured_s"]
    assert recover_rto["pass"] is True
    files = steps["file-restore"]["details"]
    assert files["read_from"] == survivor and lost in files["repositories_down"], files


def _check_pitr(lab, report, step):
    """The pitr numbers re-derived from the heartbeat rows in the live primary (they were never lost there)."""
    primary, standby = lab["primary"], lab["standby"]
    det = step["details"]
    # the dropped drill table is back in production, with its content, and replicated
    assert _probe(primary) == _probe_digest() and _probe(standby) == _probe_digest()
    with pg_connect(primary, "fediflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM at)::float8 FROM dr_heartbeat WHERE id = %s", (det["recovered_last_id"],))
        recovered_at = cur.fetchone()[0]
        # the next heartbeat after the last one the restore had was written around the drop, not before
        cur.execute("SELECT min(id), extract(epoch FROM min(at))::float8 FROM dr_heartbeat WHERE id > %s",
                    (det["recovered_last_id"],))
        next_id, next_at = cur.fetchone()
    assert abs(recovered_at - det["recovered_last_at"]) < 0.002  # the restore held exactly that row
    assert next_id is not None and next_at > det["dropped_at"] - 0.2  # nothing well before the drop was missing
    rpo = _one(_rows(report, "rpo_database_s"), "pitr")
    assert abs(rpo["measured_s"] - (det["dropped_at"] - recovered_at)) < 0.01
    assert 0 <= rpo["measured_s"] < 1.0  # a heartbeat every 0.1 s, restore point in the drop's transaction
    rto = _one(_rows(report, "rto_standard_s"), "pitr")
    assert abs(rto["measured_s"] - (det["service_at"] - det["dropped_at"])) < 0.01 and 0 < rto["measured_s"] < 300
    assert det["reached"]["lsn"] and det["wal_segments_replayed"] >= 1 and det["base_backup"]
    # the restore beside the primary is gone: port closed, no data directory left
    # (it listened where the primary does: the region's address, inherited from the base backup's settings)
    assert not [h for h in (primary, standby) if listening(h["fediflow_pg_host"], det["restore_port"])]
    parent = os.path.dirname(primary["fediflow_pg_data_dir"])
    assert not [n for n in os.listdir(parent) if ".pitr-" in n]


FOUR_HOURLY = {"backup_interval_s": 14400, "config_interval_s": 1800, "drill_interval_months": 3}
MEDIA_ONLY = ["-e", "backup_logical=false", "-e", "backup_physical=false", "-e", "backup_cache=false",
              "-e", "backup_config=false", "-e", "backup_wal_check=false"]


@pytest.fixture(scope="module")
def partial_drill(backed_up, tmp_path_factory):
    """One drill run with the failover off, for the next two tests: pitr given a WAL archive
    configuration that does not exist (it must fail; the drill goes on), then backup-restore and
    file-restore, with a media file written after the newest snapshot (exposure the file-restore
    scenario must count). A fresh media snapshot is taken first, so that file is the only change
    not in a snapshot. The inventory's schedules are replaced by the one before the 5-minute media
    snapshot (media only with the 4-hourly backup). Run with ansible-playbook, as `make drill` runs the drill."""
    lab = backed_up
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby), "the lab must start in its home roles"
    playbook("backup.yml", *MEDIA_ONLY)
    extra = os.path.join(primary["fediflow_media_dir"], "zz-drill-probe.jpg")
    with open(extra, "wb") as handle:
        handle.write(os.urandom(1024))
    work = tmp_path_factory.mktemp("partial-drill")
    try:
        scenarios = json.dumps({"fediflow_drill_scenarios": ["pitr", "backup-restore", "file-restore"],
                                "fediflow_schedules": FOUR_HOURLY})
        proc, _took = playbook("dr_drill.yml", "-e", "drill_failover=false", "-e", scenarios,
                               "-e", "dr_drill_pitr_wal_config=%s" % (work / "no-such-wal.json"), check=False)
        came_home = lab_is_home(primary, standby)
        _dir, report = _latest(lab)
    finally:
        os.unlink(extra)
        rebuild_lab_unless_home(primary, standby, ROOT / "tests" / "output" / "drill-logs")
    return {"lab": lab, "proc": proc, "report": report, "came_home": came_home}


def test_a_failed_scenario_is_reported_and_the_lab_still_comes_home(partial_drill):
    """pitr with a WAL archive configuration that does not exist must fail; the drill goes on, reports it, leaves the lab home
    and no heartbeat writer or restore behind."""
    lab, proc, report = partial_drill["lab"], partial_drill["proc"], partial_drill["report"]
    assert proc.returncode != 0
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["pitr"]["status"] != "ok" and "restore beside the primary" in steps["pitr"]["msg"]
    assert steps["backup-restore"]["status"] == "ok" and steps["file-restore"]["status"] == "ok"  # the next scenarios still ran
    assert report["failed_steps"] == ["pitr"] and report["ok"] is False
    not_run = {"replication-rpo", "region-failover", "region-recover", "failback", "partition"}
    assert {s["scenario"] for s in report["not_run"]} == not_run
    assert "drill [1/3] pitr: FAILED in" in proc.stdout and "drill [2/3] backup-restore: ok in" in proc.stdout
    assert "drill [3/3] file-restore: ok in" in proc.stdout
    assert partial_drill["came_home"]
    with open(os.path.join(lab["primary"]["fediflow_lab_dir"], "reports", "drill-heartbeat.json"), encoding="utf-8") as fh:
        assert json.load(fh).get("stopped") is True
    assert not [n for n in os.listdir(os.path.dirname(lab["primary"]["fediflow_pg_data_dir"])) if ".pitr-" in n]


def test_a_four_hour_media_schedule_fails_the_file_storage_rpo(partial_drill):
    """Media only with the 4-hourly backup against the 15-minute RPO: a FAIL (4 h + a snapshot), however fresh the
    snapshot the drill found; the media file written after it is counted as changes not in a snapshot."""
    lab, report = partial_drill["lab"], partial_drill["report"]
    steps = {s["name"]: s for s in report["steps"]}
    rpo_files, _rpo_config = _check_schedule_rpo(lab, report, steps["file-restore"], FOUR_HOURLY)
    assert rpo_files["measured_s"] >= 14400 and rpo_files["result"] == "FAIL"
    assert any(f.startswith("RPO file storage (snapshot frequency): worst case: snapshot every 14400 s + a snapshot (")
               for f in report["failed_objectives"]), report["failed_objectives"]
    assert steps["file-restore"]["details"]["media_pending_age_s"] > 0  # the file written after the snapshot
    assert report["drill_interval"] == "every 3 months"  # the next drill date follows the schedule given too
    assert "region-failover" not in {s["name"] for s in report["steps"]}
    assert report["detection"] is None  # no failover, nothing detected: nothing projected
    assert _rows(report, "rto_critical_s")[0]["measured_s"] is None  # not run, never invented
    assert _rows(report, "rto_full_system_s")[0]["measured_s"] is None
    assert {"region-failover", "failback"} <= {s["scenario"] for s in report["not_run"]}
