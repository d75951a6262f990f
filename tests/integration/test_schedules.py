"""The schedules have one source of truth, the inventory's `fediflow_schedules`: the lab and the
production example hold the same intervals, and the AWX schedules (awx/fediflow-dr.awx.yml) and
docs/schedules.md (its table, cron lines and rrules) say the same. Each interval is computed from
the rrule / cron line itself (the longest gap between two runs: the worst case an RPO sees), never
read from a schedule's name. Then, against the real lab, the media template runs as AWX runs it
(ansible-runner with the template's job_tags): it takes a media snapshot and nothing else."""
import datetime
import json
import os
import re
import sys

import boto3
import pytest
import yaml
from dateutil.rrule import rrulestr

from lab_fixtures import COLLECTIONS, ROOT, s3_endpoint

INVENTORIES = ("lab", "production.example")
AWX = yaml.safe_load((ROOT / "awx" / "fediflow-dr.awx.yml").read_text(encoding="utf-8"))
DOC = (ROOT / "docs" / "schedules.md").read_text(encoding="utf-8")
# job -> (key in fediflow_schedules, how the job is recognised: playbook + job_tags / the command's --tags)
JOBS = {"backup": ("backup_interval_s", "playbooks/backup.yml", None),
        "media": ("media_interval_s", "playbooks/backup.yml", "backup_media"),
        "config": ("config_interval_s", "playbooks/backup.yml", "backup_config"),
        "drill": ("drill_interval_months", "playbooks/dr_drill.yml", None)}


def _schedules(name):
    path = ROOT / "inventories" / name / "group_vars" / "all" / "schedules.yml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))["fediflow_schedules"]


SCHEDULES = _schedules("production.example")


def _job(playbook, tags):
    found = [job for job, (_key, pb, tag) in JOBS.items() if pb == playbook and tag == (tags or None)]
    assert len(found) == 1, (playbook, tags)
    return found[0]


def _rrule_interval(rrule):
    """Seconds of the longest gap between the first occurrences, or ('months', n) for a monthly rule."""
    dtstart, rule = rrule.split(" ", 1)
    parts = dict(p.split("=", 1) for p in rule.split(":", 1)[1].split(";"))
    if parts["FREQ"] == "MONTHLY":
        return ("months", int(parts.get("INTERVAL", 1)))
    start = datetime.datetime.strptime(dtstart.split(":", 1)[1], "%Y%m%dT%H%M%SZ")
    rule_set = rrulestr(rule, dtstart=start)
    times = [t for _i, t in zip(range(400), rule_set)]
    return max((b - a).total_seconds() for a, b in zip(times, times[1:]))


def _cron_field(field, low, high):
    values = set()
    for part in field.split(","):
        base, _slash, step = part.partition("/")
        first, last = (low, high) if base == "*" else (int(base), int(base) if not step else high)
        values |= set(range(first, last + 1, int(step or 1)))
    return values


def _cron_interval(minute, hour, dom, month, dow):
    """Seconds of the longest gap between runs over two days (minute and hour fields), or ('months', n)
    for a line that runs on one day of every month."""
    if dom != "*" and month == "*" and dow == "*":
        return ("months", 1)
    assert (dom, month, dow) == ("*", "*", "*"), "only minute/hour schedules and monthly lines are checked"
    runs = sorted(day * 86400 + h * 3600 + m * 60 for day in (0, 1)
                  for h in _cron_field(hour, 0, 23) for m in _cron_field(minute, 0, 59))
    return max(b - a for a, b in zip(runs, runs[1:]))


def _expected(job):
    key = JOBS[job][0]
    return ("months", SCHEDULES[key]) if key.endswith("_months") else SCHEDULES[key]


def test_the_lab_and_the_production_example_hold_the_same_schedules():
    assert _schedules("lab") == SCHEDULES
    # every key is a job's interval, or one of the pgBackRest engine's type intervals (the backup job's, below)
    engine_keys = {"pgbackrest_full_interval_s", "pgbackrest_diff_interval_s"}
    assert set(SCHEDULES) == {key for key, _pb, _tags in JOBS.values()} | engine_keys


def test_the_file_storage_schedule_leaves_room_within_its_rpo():
    objectives = yaml.safe_load((ROOT / "inventories" / "production.example" / "group_vars" / "all" / "main.yml")
                                .read_text(encoding="utf-8"))["fediflow_objectives"]
    # the worst case is the interval plus a run: an interval at the target already misses it
    assert SCHEDULES["media_interval_s"] < objectives["rpo_file_storage_s"]
    assert SCHEDULES["config_interval_s"] < objectives["rpo_configuration_s"]


def test_awx_schedules_follow_the_inventory():
    seen = {}
    for template in AWX["job_templates"]:
        for schedule in template["related"]["schedules"]:
            if template["playbook"] not in ("playbooks/backup.yml", "playbooks/dr_drill.yml"):
                continue
            job = _job(template["playbook"], template.get("job_tags"))
            assert job not in seen, "two AWX schedules for %s" % job
            seen[job] = _rrule_interval(schedule["rrule"])
    assert seen == {job: _expected(job) for job in JOBS}


def test_the_docs_table_cron_lines_and_rrules_follow_the_inventory():
    for job, (key, _pb, _tags) in JOBS.items():
        row = re.search(r"^\| [^|]+ \| `%s` \| (\d+)" % key, DOC, re.M)
        assert row and int(row.group(1)) == SCHEDULES[key], (key, row and row.group(0))
    cron = re.search(r"```cron\n(.*?)```", DOC, re.S).group(1)
    seen = {}
    for line in cron.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(None, 5)
        playbook = re.search(r"(playbooks/\w+\.yml)", fields[5]).group(1)
        tags = re.search(r"--tags (\S+)", fields[5])
        job = _job(playbook, tags.group(1) if tags else None)
        assert job not in seen, "two cron lines for %s" % job
        seen[job] = _cron_interval(*fields[:5])
    assert seen == {job: _expected(job) for job in JOBS}
    awx = {s["name"]: s["rrule"] for t in AWX["job_templates"] for s in t["related"]["schedules"]}
    documented = re.findall(r"^\| (fediflow\.dr [^|]+?) \| (fediflow\.dr [^|]+?) \| `([^`]+)` \|$", DOC, re.M)
    assert len(documented) == len(JOBS)
    for _template, name, rrule in documented:
        assert awx.get(name) == rrule, "docs/schedules.md: %s is %r in awx/fediflow-dr.awx.yml" % (name, awx.get(name))


@pytest.mark.slow
def test_the_media_template_takes_a_media_snapshot_and_nothing_else(lab, tmp_path):
    """A media file written now is in the snapshot the "fediflow.dr media snapshot" template takes; no
    database backup is taken by it (the postgres/ ledger in S3 is unchanged)."""
    from runner_fixtures import run_template  # pylint: disable=import-outside-toplevel
    p = lab["primary"]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint(p), region_name=p["fediflow_region"],
                      aws_access_key_id=p["fediflow_aws_access_key"], aws_secret_access_key=p["fediflow_aws_secret_key"])

    def keys(prefix):
        out = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=p["fediflow_backup_bucket"], Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def database_backups():  # the ledger's manifests (the WAL archive beside them grows on its own)
        return {k for k in keys("postgres/%s/" % p["fediflow_region"]) if k.endswith("/manifest.json")}

    database_before = database_backups()
    media = "media/%s/snapshots/" % p["fediflow_region"]
    snapshots_before = set(keys(media))
    probe = os.path.join(p["fediflow_media_dir"], "zz-schedule-probe-%s.bin" % os.getpid())
    with open(probe, "wb") as handle:
        handle.write(os.urandom(2048))
    try:
        result, artifacts, _extra, _took = run_template("fediflow.dr media snapshot", lab, tmp_path / "runner")
    finally:
        os.unlink(probe)
    stdout = (artifacts / "stdout").read_text()
    assert result.status == "successful", stdout[-3000:]
    assert "Snapshot the media store" in stdout
    assert "Logical backup" not in stdout and "Physical backup" not in stdout and "Export the configuration" not in stdout
    new = sorted(set(keys(media)) - snapshots_before)
    assert len(new) == 1, new
    manifest = json.loads(s3.get_object(Bucket=p["fediflow_backup_bucket"], Key=new[0])["Body"].read())
    assert os.path.basename(probe) in {f["path"] for f in manifest["files"]}
    assert database_backups() == database_before


def test_the_pgbackrest_types_follow_the_inventory_schedule():
    """The backup role's pgBackRest type intervals are the inventory's (the docs table states them), and the
    module's own defaults are the same week and day (a role run without the inventory keys behaves alike)."""
    assert SCHEDULES["pgbackrest_full_interval_s"] == 604800 and SCHEDULES["pgbackrest_diff_interval_s"] == 86400
    for key in ("pgbackrest_full_interval_s", "pgbackrest_diff_interval_s"):
        row = re.search(r"^\| `%s` \| (\d+)" % key, DOC, re.M)
        assert row and int(row.group(1)) == SCHEDULES[key], key
    defaults = yaml.safe_load((ROOT / "roles" / "backup" / "defaults" / "main.yml").read_text())
    assert "fediflow_schedules" in defaults["backup_pgbackrest_full_interval_s"]
    assert "fediflow_schedules" in defaults["backup_pgbackrest_diff_interval_s"]
    sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest  # pylint: disable=import-outside-toplevel
    assert (pgbackrest.DEFAULT_FULL_INTERVAL_S, pgbackrest.DEFAULT_DIFF_INTERVAL_S) == (
        SCHEDULES["pgbackrest_full_interval_s"], SCHEDULES["pgbackrest_diff_interval_s"])
