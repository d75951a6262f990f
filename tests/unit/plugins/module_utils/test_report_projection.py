# -*- coding: utf-8 -*-
"""dr_report's honesty rules as plain data: the next drill date from the inventory's interval (a
calendar month by default), and an RTO measured with a shortened outage detection shown - and
judged - with the production detection beside it, in every format."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import date, datetime, timezone

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import report as rp
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

NOW = datetime(2026, 5, 1, 13, 0, 0, tzinfo=timezone.utc)
# the collection's own templates, as the module's action plugin passes them
TEMPLATES = {option: open(rp.shipped_template(fmt), encoding="utf-8").read() for fmt, option in rp.TEMPLATE_OPTIONS.items()}
LAB_DETECTION = {"measured_s": 2.1, "interval_s": 1, "threshold": 3,
                 "production_interval_s": 30, "production_threshold": 3, "production_timeout_s": 5}


def _params(tmp_path, **kw):
    params = {
        "dest_dir": str(tmp_path / "reports"), "title": "Drill", "formats": list(rp.FORMATS), "keep_history": 100,
        "objectives": {"rto_critical_s": 900},
        "steps": [{"name": "region-failover", "start": "2026-05-01T12:00:00Z", "end": "2026-05-01T12:00:30Z"}],
        "measurements": [
            {"objective": "rto_critical_s", "measured_s": 9.0, "source": "region-failover", "note": "kill -> serving"},
            {"objective": "rto_standard_s", "measured_s": 5.0, "source": "pitr", "note": "restore"},
            {"objective": "rpo_database_s", "measured_s": 0.1, "source": "region-failover", "note": "lost"},
        ],
    }
    params.update(TEMPLATES)
    params.update(kw)
    return params


def _markdown(report):
    return rp.render_markdown(report, rp.compile_template("md", TEMPLATES["md_template"]), [])


def _report(tmp_path, **kw):
    return rp.build_report(rp.validate(_params(tmp_path, **kw)), NOW)


def _row(report, objective):
    return next(r for r in report["objectives"] if r["objective"] == objective)


@pytest.mark.parametrize("start, months, expected", [
    (date(2026, 5, 1), 1, date(2026, 6, 1)),
    (date(2026, 1, 31), 1, date(2026, 2, 28)),
    (date(2028, 1, 31), 1, date(2028, 2, 29)),
    (date(2026, 11, 30), 3, date(2027, 2, 28)),
    (date(2026, 12, 15), 1, date(2027, 1, 15)),
])
def test_add_months_clamps_to_the_month(start, months, expected):
    assert rp.add_months(start, months) == expected


def test_the_next_drill_is_a_month_later_by_default(tmp_path):
    report = _report(tmp_path)
    assert report["next_drill"] == "2026-06-01" and report["drill_interval"] == "every month"
    assert report["drill_interval_months"] == 1 and report["drill_interval_days"] is None
    assert "next drill due 2026-06-01 (every month)" in _markdown(report)
    quarterly = _report(tmp_path, drill_interval_months=3)
    assert quarterly["next_drill"] == "2026-08-01" and quarterly["drill_interval"] == "every 3 months"
    days = _report(tmp_path, drill_interval_days=91)  # days, when given, instead of months
    assert days["next_drill"] == "2026-07-31" and days["drill_interval"] == "every 91 days"


def test_a_shortened_detection_is_projected_to_production_and_judged(tmp_path):
    report = _report(tmp_path, detection=LAB_DETECTION)
    det = report["detection"]
    assert det["shortened"] is True and det["production_worst_case_s"] == 95  # 3 checks 30 s apart + 5 s timeout
    assert "3 checks 1 s apart (2.1 s measured)" in det["note"] and "3 checks 30 s apart + 5 s timeout = 95 s" in det["note"]
    rto = _row(report, "rto_critical_s")
    assert rto["measured_s"] == 9.0 and rto["projected_s"] == pytest.approx(9.0 - 2.1 + 95) and rto["pass"] is True
    # only the failover's times include the detection
    assert _row(report, "rto_standard_s")["projected_s"] is None and _row(report, "rpo_database_s")["projected_s"] is None
    # within the target as measured, over it with production's detection: a FAIL, never a flattering PASS
    tight = _report(tmp_path, detection=LAB_DETECTION, objectives={"rto_critical_s": 60})
    row = _row(tight, "rto_critical_s")
    assert row["measured_s"] <= 60 < row["projected_s"] and row["result"] == "FAIL" and not tight["ok"]
    junit = ET.fromstring(rp.render_junit(tight).split("\n", 1)[1])
    failure = junit.find(".//testcase[@classname='objectives.rto_critical_s']/failure")
    assert failure is not None and failure.get("message") == "production projection 101.9 s > target 60 s"


def test_every_format_shows_the_projection_beside_the_measurement(tmp_path):
    report = _report(tmp_path, detection=LAB_DETECTION)
    summary = rp.summary_table(report).splitlines()
    assert summary[0].split()[-3:] == ["production", "s", "result"]
    assert next(l for l in summary if l.startswith("RTO critical")).split()[-4:] == ["900", "9", "101.9", "PASS"]
    assert any(l.startswith("production s: ") and "95 s worst case" in l for l in summary)
    md = _markdown(report)
    assert "| measured (s) | production (s) |" in md and "| 9 | 101.9 | PASS |" in md
    assert "The drill shortened the outage detection" in md
    page = rp.render_html(report, rp.compile_template("html", TEMPLATES["html_template"]), [rp.history_entry(report)])
    assert 'id="detection"' in page and "<th>production (s)</th>" in page and '<td class="num">101.9</td>' in page
    doc = json.loads(rp.render_json(report))
    assert doc["detection"]["shortened"] is True and _row(doc, "rto_critical_s")["projected_s"] == 101.9


def test_the_production_detection_itself_needs_no_projection(tmp_path):
    same = dict(LAB_DETECTION, interval_s=30)
    report = _report(tmp_path, detection=same)
    assert report["detection"]["shortened"] is False
    assert all(r["projected_s"] is None for r in report["objectives"])
    assert "production" not in rp.summary_table(report) and "production (s)" not in _markdown(report)
    plain = _report(tmp_path)
    assert plain["detection"] is None and "production" not in rp.summary_table(plain)


@pytest.mark.parametrize("kw, message", [
    ({"drill_interval_months": 0}, "drill_interval_months must be >= 1"),
    ({"detection": {"interval_s": 1}}, r"detection\.threshold, detection\.production_interval_s, detection\.production_threshold is required"),
    ({"detection": dict(LAB_DETECTION, interval_s=-1)}, r"detection\.interval_s must be a number >= 0"),
    ({"detection": dict(LAB_DETECTION, threshold=0)}, r"detection\.threshold must be a number >= 1"),
    ({"detection": dict(LAB_DETECTION, wait=1)}, r"detection: unknown field\(s\) wait"),
    ({"detection": dict(LAB_DETECTION, sources="region-failover")}, r"detection\.sources must be a list"),
])
def test_bad_input_is_refused(tmp_path, kw, message):
    with pytest.raises(FediflowError, match=message):
        rp.validate(_params(tmp_path, **kw))
