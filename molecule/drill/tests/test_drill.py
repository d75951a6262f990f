"""Molecule `drill` verifier (testinfra, local backend): after the full DR drill, the report files
exist, the JUnit file has tests and no failures or errors, the JSON says every scenario ran and
passed, and the lab is home (region 1 primary, region 2 streaming) with its services listening on
the inventory's ports."""
import json
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from lab import inventory, lab_is_home, listening, listening_ports  # noqa: E402  pylint: disable=wrong-import-position

PRIMARY, STANDBY = inventory()
REPORTS = os.path.join(PRIMARY["fediflow_lab_dir"], "reports")


def test_report_files_exist(host):
    for name in ("latest.json", "latest.md", "latest.html", "latest.junit.xml"):
        report = host.file(os.path.join(REPORTS, name))
        assert report.exists and report.size > 100, name


def test_junit_has_no_failures():
    root = ET.parse(os.path.join(REPORTS, "latest.junit.xml")).getroot()
    assert int(root.get("tests")) >= 15
    assert root.get("failures") == "0" and root.get("errors", "0") == "0"


def test_every_scenario_ran_and_passed():
    with open(os.path.join(REPORTS, "latest.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["ok"] is True and report["not_run"] == []
    scenarios = {"replication-rpo", "backup-restore", "pitr", "region-failover", "file-restore", "failback"}
    assert {s["name"] for s in report["steps"]} >= scenarios
    assert all(row["measured_s"] is not None for row in report["objectives"])


def test_lab_is_home_and_serving(host):
    assert lab_is_home(PRIMARY, STANDBY)
    for name, (address, port) in listening_ports(PRIMARY, STANDBY).items():
        assert listening(address, port), name
