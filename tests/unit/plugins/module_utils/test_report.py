# -*- coding: utf-8 -*-
"""dr_report as plain data: time parsing, objectives and their verdicts, step normalisation and
masking, the history merge, the four renderers (JUnit and HTML parsed back), and ensure() writing
into a temporary directory (idempotency, check mode, a write that fails before the history)."""
from __future__ import annotations

import json
import os
import resource
import signal
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import report as rp
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

NOW = datetime(2026, 5, 1, 13, 0, 0, tzinfo=timezone.utc)
# the collection's own templates, as the module's action plugin passes them
TEMPLATES = {option: open(rp.shipped_template(fmt), encoding="utf-8").read() for fmt, option in rp.TEMPLATE_OPTIONS.items()}


def _params(tmp_path, **kw):
    params = {
        "dest_dir": str(tmp_path / "reports"), "title": "Drill", "drill_id": None, "drill_time": None,
        "formats": list(rp.FORMATS), "history_file": None, "keep_history": 100, "drill_interval_days": 91,
        "objectives": {"rto_critical_s": 900, "rpo_database_s": {"target_s": 300, "label": "RPO db"}},
        "steps": [
            {"name": "fence", "region": "us-east-1", "start": "2026-05-01T12:00:00Z", "end": "2026-05-01T12:00:30Z"},
            {"name": "promote", "region": "eu-west-1", "start": 1777636830, "duration_s": 12.5,
             "details": {"changed": True, "login_password": "hunter2", "msg": "promoted"}},
            {"name": "dns", "start": "2026-05-01T14:01:00+02:00", "end": "2026-05-01T14:20:00+02:00",
             "details": {"failed": True, "msg": "Route53 said no"}},
            {"name": "notify", "skipped": True},
        ],
        "measurements": [
            {"objective": "rto_critical_s", "measured_s": 1200.0, "source": "dns", "note": "failover"},
            {"objective": "rpo_database_s", "measured_s": 0.25, "source": "promote", "note": "lag"},
            {"objective": "rpo_database_s", "measured_s": 300, "note": "archive"},
        ],
        "not_run": [{"scenario": "pitr", "why": "not implemented <yet>"}],
    }
    params.update(TEMPLATES)
    params.update(kw)
    return params


def _report(tmp_path, **kw):
    return rp.build_report(rp.validate(_params(tmp_path, **kw)), NOW)


# ---------------------------------------------------------------- input

@pytest.mark.parametrize("value, expected", [
    ("2026-05-01T12:00:00Z", "2026-05-01T12:00:00Z"),
    ("2026-05-01T14:00:00.5+02:00", "2026-05-01T12:00:00.500Z"),
    (1777636800, "2026-05-01T12:00:00Z"),
    ("1777636800.25", "2026-05-01T12:00:00.250Z"),
])
def test_times(value, expected):
    """ISO 8601 with any zone and epoch seconds all end up as UTC."""
    assert rp.iso(rp.parse_time(value, "x")) == expected


@pytest.mark.parametrize("value, message", [
    ("2026-05-01T12:00:00", "has no time zone"), ("soon", "not an ISO 8601 time"), (True, "epoch seconds")])
def test_bad_times_name_the_option(value, message):
    with pytest.raises(FediflowError, match=r"steps\[0\] \(a\)\.start.*%s" % message):
        rp.normalize_steps([{"name": "a", "start": value}])


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (12.34, "12.3s"), (60, "1m"), (245, "4m05s"), (3600, "1h"), (7380, "2h03m"), (273600, "3d04h")])
def test_durations_for_people(seconds, text):
    assert rp.fmt_dur(seconds) == text


def test_objectives_merge_over_the_runbook_table():
    objectives = rp.normalize_objectives({"rto_critical_s": 600, "custom": {"target_s": 5.0, "label": "C"}})
    assert objectives["rto_critical_s"] == {"target_s": 600, "label": "RTO critical services"}
    assert objectives["rpo_database_s"]["target_s"] == 300 and objectives["custom"] == {"target_s": 5, "label": "C"}
    assert list(objectives)[:9] == list(rp.DEFAULT_OBJECTIVES)
    assert objectives["first_notification_s"]["target_s"] == 900  # the runbook's 15 minutes
    assert rp.normalize_objectives(None)["data_loss_tolerance_critical_s"]["target_s"] == 60


@pytest.mark.parametrize("given, message", [
    ({"rto_critical_s": 0}, r"objectives\.rto_critical_s: target_s must be a number of seconds > 0"),
    ({"x": {"target": 3}}, r"objectives\.x: unknown field\(s\) target"),
    ({"x": "ten"}, r"objectives\.x: target_s"),
])
def test_bad_objectives(given, message):
    with pytest.raises(FediflowError, match=message):
        rp.normalize_objectives(given)


def test_measurement_of_an_unknown_objective_is_refused():
    with pytest.raises(FediflowError, match=r"measurements\[0\]\.objective 'rto_crit' is not a key of objectives"):
        rp.normalize_measurements([{"objective": "rto_crit", "measured_s": 1}], rp.normalize_objectives(None))


def test_verdicts_boundary_not_run_and_two_rows_for_one_objective(tmp_path):
    rows = _report(tmp_path)["objectives"]
    by = {(r["objective"], r["note"]): r for r in rows}
    assert by[("rto_critical_s", "failover")]["pass"] is False and by[("rto_critical_s", "failover")]["result"] == "FAIL"
    assert by[("rpo_database_s", "lag")]["pass"] is True
    assert by[("rpo_database_s", "archive")]["pass"] is True  # measured == target passes
    assert by[("rto_full_system_s", None)]["measured_s"] is None and by[("rto_full_system_s", None)]["pass"] is None
    assert by[("rto_full_system_s", None)]["result"] == "NOT RUN"
    assert len(rows) == 10  # 9 objectives, one measured twice


def test_steps_times_status_and_masking(tmp_path):
    steps = {s["name"]: s for s in _report(tmp_path)["steps"]}
    assert steps["promote"]["end"] == "2026-05-01T12:00:42.500Z" and steps["promote"]["status"] == "ok"
    assert steps["promote"]["details"]["login_password"] == rp.MASK and steps["promote"]["msg"] == "promoted"
    assert steps["dns"]["start"] == "2026-05-01T12:01:00Z" and steps["dns"]["duration_s"] == 1140
    assert steps["dns"]["status"] == "failed" and steps["dns"]["msg"] == "Route53 said no"
    assert steps["notify"]["status"] == "skipped" and steps["notify"]["start"] is None


def test_end_before_start_is_refused():
    with pytest.raises(FediflowError, match=r"steps\[0\] \(a\)\.end .* is before its start"):
        rp.normalize_steps([{"name": "a", "start": 100, "end": 50}])


def test_mask_details():
    masked = rp.mask_details({
        "apiKey": "k", "secret_key": "s", "nested": [{"token": "t", "keys": 3}], "password": None,
        "url": "https://user:pw@db.example/x", "cmd": "psql password=abc host=x", "invocation": {"module_args": {}},
        "_ansible_no_log": False, "backup_id": "b1"})
    assert masked["apiKey"] == masked["secret_key"] == masked["nested"][0]["token"] == rp.MASK
    assert masked["nested"][0]["keys"] == 3 and masked["password"] is None and masked["backup_id"] == "b1"
    assert masked["url"] == "https://%s@db.example/x" % rp.MASK and masked["cmd"] == "psql password=%s host=x" % rp.MASK
    assert "invocation" not in masked and "_ansible_no_log" not in masked


@pytest.mark.parametrize("kw, message", [
    ({"drill_id": "latest"}, "drill_id 'latest' must be"), ({"drill_id": "a/b"}, "drill_id 'a/b' must be"),
    ({"formats": ["pdf"]}, "formats: unknown pdf"), ({"keep_history": -1}, "keep_history must be >= 0"),
    ({"drill_interval_days": 0}, "drill_interval_days must be >= 1"),
    ({"not_run": [{"why": "x"}]}, r"not_run\[0\]\.scenario is required"),
])
def test_bad_input_is_refused(tmp_path, kw, message):
    with pytest.raises(FediflowError, match=message):
        rp.validate(_params(tmp_path, **kw))


# ---------------------------------------------------------------- the document

def test_overall_ok_drill_id_and_next_drill(tmp_path):
    report = _report(tmp_path)
    assert report["drill_id"] == "drill-20260501T120000Z" and report["started"] == "2026-05-01T12:00:00Z"
    assert report["finished"] == "2026-05-01T12:20:00Z" and report["duration_s"] == 1200
    assert report["next_drill"] == "2026-07-31"
    assert not report["ok"] and report["failed_steps"] == ["dns"]
    assert report["failed_objectives"] == ["RTO critical services: failover"]
    steps = [dict(s, details={}) for s in _params(tmp_path)["steps"] if s["name"] != "dns"]
    good = _report(tmp_path, steps=steps, measurements=[{"objective": "rpo_database_s", "measured_s": 1}])
    assert good["ok"]  # the skipped step does not fail it; unmeasured objectives are NOT RUN, not failed
    assert _report(tmp_path, steps=[], drill_time="2026-01-31T23:00:00-02:00")["next_drill"] == "2026-05-03"


def test_summary_table(tmp_path):
    lines = rp.summary_table(_report(tmp_path)).splitlines()
    assert lines[0].split() == ["objective", "target", "s", "measured", "s", "result"]
    assert lines[1].startswith("RTO critical services: failover") and lines[1].split()[-3:] == ["900", "1200", "FAIL"]
    assert any(line.split()[-4:] == ["86400", "-", "NOT", "RUN"] for line in lines)
    assert "FAILED STEPS: dns" in lines and "NOT RUN: pitr" in lines and lines[-1].startswith("overall: FAIL")


def test_json_is_the_document(tmp_path):
    report = _report(tmp_path)
    assert json.loads(rp.render_json(report)) == report and report["schema"] == rp.REPORT_SCHEMA
    assert "hunter2" not in rp.render_json(report)


def test_junit_parses_back(tmp_path):
    root = ET.fromstring(rp.render_junit(_report(tmp_path)).encode())
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert root.tag == "testsuites" and len(cases) == 10 + 4 + 1 == int(suite.get("tests"))
    failed = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failed) == {"RTO critical services: failover", "dns"} and suite.get("failures") == "2"
    assert failed["RTO critical services: failover"].get("message") == "measured 1200 s > target 900 s"
    assert failed["dns"].get("message") == "Route53 said no"
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert len(skipped) == 7 + 1 + 1 == int(suite.get("skipped"))  # 7 objectives not measured, a step, pitr
    assert any(c.get("classname") == "not_run" and "NOT RUN: not implemented <yet>" in c.find("skipped").get("message")
               for c in skipped)


class _Svg(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.rects, self.lines, self.ids, self.urls = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.append(attrs["id"])
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "svg":
            self.stack.append(attrs.get("id"))
        elif tag == "rect" and self.stack[-1:] == ["timeline"]:
            self.rects.append(attrs)
        elif tag == "line" and self.stack[-1:] == ["timeline"] and attrs.get("class") == "rto":
            self.lines.append(attrs)

    def handle_endtag(self, tag):
        if tag == "svg":
            self.stack.pop()


def test_html_timeline_marks_escaping_and_no_external_urls(tmp_path):
    steps = _params(tmp_path)["steps"] + [{"name": "<script>alert(1)</script>", "start": 1777636800, "end": 1777636801}]
    report = _report(tmp_path, steps=steps)
    page = rp.render_html(report, rp.compile_template("html", TEMPLATES["html_template"]), [rp.history_entry(report)])
    svg = _Svg()
    svg.feed(page)
    assert "timeline" in svg.ids and "trend" in svg.ids and not svg.urls and "url(" not in page
    assert [r["class"] for r in svg.rects] == ["step ok", "step ok", "step failed", "step ok"]  # notify has no times
    assert len(svg.lines) == 1  # 20 min on the axis: only the 15 min RTO fits
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Next drill due 2026-07-31" in page and "hunter2" not in page


# ---------------------------------------------------------------- history

def _entry(drill_id, measured):
    return {"schema": rp.HISTORY_SCHEMA, "drill_id": drill_id, "started": "2026-01-01T00:00:00Z", "ok": True,
            "objectives": {"rto_critical_s": {"target_s": 900, "measured_s": measured}}}


def test_history_merge_replace_append_trim_and_trend():
    parsed = rp.parse_history("\n".join(rp.history_line(_entry(i, i)) for i in ("a", "b", "c")) + "\nnot json\n")
    assert [e and e["drill_id"] for _l, e in parsed] == ["a", "b", "c", None]
    lines, trend = rp.merge_history(parsed, _entry("b", 99), keep=10)
    assert len(lines) == 4 and json.loads(lines[1])["objectives"]["rto_critical_s"]["measured_s"] == 99
    assert [e["drill_id"] for e in trend] == ["a", "b"] and lines[3] == "not json"
    lines, trend = rp.merge_history(parsed, _entry("d", 1), keep=3)
    assert [json.loads(l)["drill_id"] for l in lines if l.startswith("{")] == ["c", "d"] and len(lines) == 3
    assert [e["drill_id"] for e in trend] == ["c", "d"]


def test_history_entry_keeps_the_worst_measurement(tmp_path):
    entry = rp.history_entry(_report(tmp_path))
    assert entry["objectives"]["rpo_database_s"]["measured_s"] == 300
    assert entry["objectives"]["rto_critical_s"]["pass"] is False and entry["objectives"]["rto_standard_s"]["pass"] is None


# ---------------------------------------------------------------- ensure, on a real directory

def test_ensure_writes_is_idempotent_and_check_mode_writes_nothing(tmp_path):
    params = _params(tmp_path)
    dest = tmp_path / "reports"
    predicted = rp.ensure(params, check_mode=True, now=NOW)
    assert predicted["changed"] and not dest.exists() and len(predicted["changed_files"]) == 9
    first = rp.ensure(params, now=NOW)
    assert first["changed"] and first["changed_files"] == predicted["changed_files"]
    names = sorted(os.listdir(str(dest)))
    assert names == sorted(["drill-20260501T120000Z.%s" % e for e in rp.EXTENSIONS.values()]
                           + ["latest.%s" % e for e in rp.EXTENSIONS.values()] + ["history.jsonl"])
    assert oct(os.stat(first["files"]["html"]).st_mode & 0o777) == "0o600"
    # nothing of a report is readable by group or others: the directory it made, every file
    assert [p for p in [str(dest)] + [str(dest / n) for n in names] if os.stat(p).st_mode & 0o077] == []
    assert (dest / "latest.md").read_text() == (dest / "drill-20260501T120000Z.md").read_text()
    again = rp.ensure(params, now=datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert not again["changed"] and again["changed_files"] == [] and again["history_entries"] == 1
    assert not rp.ensure(params, check_mode=True, now=NOW)["changed"]
    changed = dict(params, measurements=params["measurements"][:1])
    predicted = rp.ensure(changed, check_mode=True, now=NOW)
    assert predicted["changed"] and "history.jsonl" in predicted["diff"]["after"]
    assert len((dest / "history.jsonl").read_text().splitlines()) == 1
    rp.ensure(dict(params, drill_id="second"), now=NOW)
    assert [json.loads(l)["drill_id"] for l in (dest / "history.jsonl").read_text().splitlines()] == [
        "drill-20260501T120000Z", "second"]


def test_a_directory_in_the_way_is_refused_before_anything_is_written(tmp_path):
    dest = tmp_path / "reports"
    (dest / "latest.md").mkdir(parents=True)
    with pytest.raises(FediflowError, match=r"cannot read .*latest\.md: .*Is a directory"):
        rp.ensure(_params(tmp_path), now=NOW)
    assert os.listdir(str(dest)) == ["latest.md"]


def test_a_failed_write_leaves_the_history_alone(tmp_path):
    """A real write fault: the file size limit (RLIMIT_FSIZE, as a full disk or a quota would) lets
    the small files through and stops the HTML page; the history must not be written."""
    params = _params(tmp_path)
    dest = tmp_path / "reports"
    limit = len(rp.render_json(_report(tmp_path)).encode()) + 100  # json and md fit, html does not
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        with pytest.raises(FediflowError, match=r"writing .*\.html failed: File too large") as info:
            rp.ensure(params, now=NOW)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    partial = info.value.details["result"]
    assert [os.path.basename(p) for p in partial["written"]] == [
        "drill-20260501T120000Z.json", "latest.json", "drill-20260501T120000Z.md", "latest.md"]
    assert partial["changed"] and not (dest / "history.jsonl").exists()
    assert sorted(os.listdir(str(dest))) == sorted(os.path.basename(p) for p in partial["written"])  # no temp file left
    assert rp.ensure(params, now=NOW)["changed_files"][0].endswith(".html")  # a re-run completes the rest


def test_keep_history_zero_writes_no_history(tmp_path):
    result = rp.ensure(_params(tmp_path, keep_history=0, formats=["json"]), now=NOW)
    assert result["files"]["history"] is None and result["files"]["html"] is None
    assert sorted(os.listdir(str(tmp_path / "reports"))) == ["drill-20260501T120000Z.json", "latest.json"]
