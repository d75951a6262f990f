"""fediflow.dr.dr_report driven through ansible like a user does, without the shared lab.

The module only writes files, so nothing of the lab (PostgreSQL, moto, the Kubernetes and
Slack doubles) is needed: every test writes into its own temporary directory. It runs through
`ansible` (its action plugin reads the HTML and Markdown templates on the controller). The outcome
is checked independently of the module's return value: the JSON parsed back, the JUnit XML
parsed with xml.etree, and the HTML page opened in a real browser - Debian's headless
Chromium (installed by scripts/setup.sh) - whose DOM must hold the timeline SVG with one
bar per step and whose screenshot, decoded with Pillow, must show the page (many colours,
the bars' green and red).
"""
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lab_fixtures import ROOT
from lab_fixtures import module as _module

MODULE = "fediflow.dr.dr_report"
SECRET = "pw-never-in-a-report-7f3a"
GREEN, RED = (0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)  # the ok and failed bar colours


def module(name, args, check_mode=False, diff=False):
    """The module through `ansible`, as a user runs it: its action plugin hands it the templates."""
    return _module(name, args, check_mode=check_mode, diff=diff, via="ansible")


def _objectives():
    """The lab inventory's fediflow_objectives, as a play would pass them (read as YAML, no lab)."""
    with open(ROOT / "inventories" / "lab" / "group_vars" / "all" / "main.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)["fediflow_objectives"]


def _args(dest, **kw):
    args = {
        "dest_dir": str(dest),
        "objectives": _objectives(),
        "steps": [
            {"name": "heartbeat", "region": "us-east-1", "start": "2026-05-01T12:00:00Z", "end": "2026-05-01T12:00:02Z"},
            {"name": "backup-restore", "region": "us-east-1", "start": "2026-05-01T12:00:02Z", "duration_s": 95.2,
             "details": {"backup_id": "20260501T120002Z", "verified": True, "login_password": SECRET,
                         "url": "postgresql://dr:%s@db.example/app" % SECRET}},
            {"name": "file-restore", "region": "eu-west-1", "start": "2026-05-01T14:01:40+02:00",
             "end": "2026-05-01T12:03:00Z", "details": {"failed": True, "msg": "checksum mismatch on media/a.png"}},
            {"name": "promote", "region": "eu-west-1", "start": 1777636980, "end": 1777637910},
            {"name": "notify", "start": "2026-05-01T12:18:30Z", "end": "2026-05-01T12:18:31Z", "skipped": True},
        ],
        "measurements": [
            {"objective": "rpo_database_s", "measured_s": 0.02, "source": "heartbeat", "note": "replication lag"},
            {"objective": "rpo_database_s", "measured_s": 61.5, "note": "WAL archive"},
            {"objective": "rto_standard_s", "measured_s": 95.2, "source": "backup-restore"},
            {"objective": "rto_critical_s", "measured_s": 1110, "source": "promote"},
            {"objective": "data_loss_tolerance_critical_s"},
        ],
        "not_run": [{"scenario": "pitr", "why": "pitr_restore role not implemented yet"}],
    }
    args.update(kw)
    return args


def _listing(dest):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in Path(dest).iterdir()}


# ---------------------------------------------------------------- the browser

def _chromium():
    path = shutil.which("chromium")
    if not path:
        pytest.fail("Debian's `chromium` is not installed: run scripts/setup.sh as root (it installs it) or "
                    "`apt-get install chromium`; the HTML report cannot be checked without a browser")
    return path


def _browser(html_file, tmp_path, *mode):
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--user-data-dir=%s" % (tmp_path / "chromium-profile"), "--window-size=1200,900", *mode,
            Path(html_file).resolve().as_uri()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=str(tmp_path))
    assert proc.returncode == 0, "chromium failed (rc=%s): %s" % (proc.returncode, proc.stderr[-2000:])
    return proc.stdout


def screenshot_colours(path):
    """The screenshot's size, ``{(r, g, b): pixel count}`` and the colours of every third pixel of every third row."""
    with Image.open(path) as image:
        assert image.format == "PNG", "not a PNG: %s" % image.format
        rgb = image.convert("RGB")
    width, height = rgb.size
    counts = {colour: count for count, colour in rgb.getcolors(maxcolors=width * height)}
    sampled = {rgb.getpixel((x, y)) for y in range(0, height, 3) for x in range(0, width, 3)}
    return (width, height), counts, sampled


class _Dom(HTMLParser):
    """The rects inside svg#timeline and the ids in the page, from Chromium's --dump-dom."""

    def __init__(self):
        super().__init__()
        self.svgs, self.rects, self.ids, self.external = [], [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.add(attrs.get("id"))
        self.external += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "svg":
            self.svgs.append(attrs.get("id"))
        elif tag == "rect" and "timeline" in self.svgs:
            self.rects.append(attrs.get("class"))

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svgs.pop()


# ---------------------------------------------------------------- tests

def test_reports_written_parsed_back_and_rendered_by_chromium(tmp_path):
    dest = tmp_path / "reports"
    result = module(MODULE, _args(dest))
    assert result["changed"] and not result.get("failed"), result
    assert result["ok"] is False and result["failed_steps"] == ["file-restore"]
    assert result["failed_objectives"] == ["RTO critical services"] and result["next_drill"] == "2026-06-01"  # a month later
    assert result["duration_s"] >= 0 and "NOT RUN: pitr" in result["summary"]

    doc = json.loads((dest / "drill-20260501T120000Z.json").read_text())
    assert doc["schema"] == "fediflow.dr/drill-report/v1" and doc["ok"] is False
    verdicts = {(r["objective"], r["note"]): (r["target_s"], r["measured_s"], r["pass"]) for r in doc["objectives"]}
    assert verdicts[("rto_critical_s", None)] == (900, 1110, False)
    assert verdicts[("rpo_database_s", "WAL archive")] == (300, 61.5, True)
    assert verdicts[("data_loss_tolerance_critical_s", None)] == (60, None, None)
    assert verdicts[("rpo_file_storage_s", None)] == (900, None, None)  # in the inventory, not measured
    assert verdicts[("first_notification_s", None)] == (900, None, None)  # the runbook's table, not measured
    assert [s["status"] for s in doc["steps"]] == ["ok", "ok", "failed", "ok", "skipped"]
    assert doc["steps"][2]["start"] == "2026-05-01T12:01:40Z" and doc["steps"][3]["duration_s"] == 930

    suite = ET.parse(str(dest / "latest.junit.xml")).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 10 + 5 + 1 and suite.get("tests") == "16" and suite.get("failures") == "2"
    failures = {c.get("name"): c.find("failure").get("message") for c in cases if c.find("failure") is not None}
    assert failures == {"RTO critical services": "measured 1110 s > target 900 s",
                        "file-restore": "checksum mismatch on media/a.png"}
    assert suite.get("skipped") == str(6 + 1 + 1)  # objectives not measured, a step, pitr

    for path in dest.iterdir():
        assert SECRET not in path.read_text(), "the secret is in %s" % path.name
    assert "| RTO critical services | 900 | 1110 | FAIL | promote |" in (dest / "latest.md").read_text()

    html_file = dest / "drill-20260501T120000Z.html"
    dom = _Dom()
    dom.feed(_browser(html_file, tmp_path, "--dump-dom"))
    assert {"timeline", "trend"} <= dom.ids and not dom.external
    assert dom.rects == ["step ok", "step ok", "step failed", "step ok", "step skipped"]

    shot = tmp_path / "report.png"
    _browser(html_file, tmp_path, "--screenshot=%s" % shot)
    size, counts, sampled = screenshot_colours(shot)
    assert size == (1200, 900)
    assert len(sampled) > 20, "screenshot nearly blank: %d colours" % len(sampled)
    pixels = size[0] * size[1]
    assert pixels - counts.get((255, 255, 255), 0) > 0.02 * pixels
    assert counts.get(GREEN, 0) > 500 and counts.get(RED, 0) > 200, "timeline bars not drawn"


def test_idempotent_check_mode_diff_and_history_trend(tmp_path):
    dest = tmp_path / "reports"
    args = _args(dest)
    predicted = module(MODULE, args, check_mode=True, diff=True)
    assert predicted["changed"] and not dest.exists(), predicted
    assert "%s: absent" % (dest / "history.jsonl") in predicted["diff"]["before"]
    assert module(MODULE, args)["changed"]
    before = _listing(dest)
    again = module(MODULE, args)
    assert not again["changed"] and again["changed_files"] == [] and _listing(dest) == before
    assert not module(MODULE, args, check_mode=True)["changed"]

    later = _args(dest, drill_id="q3", drill_time="2026-08-01T10:00:00Z",
                  measurements=[{"objective": "rto_critical_s", "measured_s": 600}])
    predicted = module(MODULE, later, check_mode=True, diff=True)
    assert predicted["changed"] and _listing(dest) == before
    assert "%s: absent" % (dest / "q3.html") in predicted["diff"]["before"]
    third = module(MODULE, later)
    assert third["ok"] is False and third["next_drill"] == "2026-09-01" and third["history_entries"] == 2
    history = [json.loads(line) for line in (dest / "history.jsonl").read_text().splitlines()]
    assert [h["drill_id"] for h in history] == ["drill-20260501T120000Z", "q3"]
    assert history[1]["objectives"]["rto_critical_s"] == {
        "label": "RTO critical services", "kind": "rto", "target_s": 900, "measured_s": 600, "pass": True}
    page = (dest / "q3.html").read_text()
    assert "Trend over 2 drills" in page and page.count('data-objective="rto_critical_s"') == 2
    assert (dest / "latest.html").read_text() == page
    assert (dest / "drill-20260501T120000Z.html").read_bytes() == before["drill-20260501T120000Z.html"][1]
    first_again = module(MODULE, args)  # the first drill again: only latest.* change, its own files stay
    assert sorted(os.path.basename(p) for p in first_again["changed_files"]) == sorted(
        "latest.%s" % e for e in ("json", "md", "html", "junit.xml"))


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    dest = tmp_path / "reports"
    cases = [
        (_args(dest, measurements=[{"objective": "rto_crit", "measured_s": 1}]),
         "measurements[0].objective 'rto_crit' is not a key of objectives"),
        (_args(dest, steps=[{"name": "x", "start": "2026-05-01T12:00:00"}]), "steps[0] (x).start"),
        (_args(dest, drill_id="../escape"), "drill_id '../escape' must be"),
        (_args(dest, objectives={"rto_critical_s": -5}), "objectives.rto_critical_s: target_s must be"),
    ]
    for args, message in cases:
        result = module(MODULE, args)
        assert result.get("failed") and message in result["msg"], result
        assert not result["changed"] and not dest.exists()


def test_a_shortened_detection_through_the_module(tmp_path):
    """The module's argument spec takes the drill's detection (as the dr_drill role passes it, numbers as
    strings); the failover RTO gets production's detection beside it and is judged on both."""
    dest = tmp_path / "reports"
    detection = {"measured_s": "2.5", "interval_s": "1", "threshold": "3",
                 "production_interval_s": "30", "production_threshold": "3", "production_timeout_s": "5"}
    measured = [{"objective": "rto_critical_s", "measured_s": 850, "source": "region-failover", "note": "kill -> serving"},
                {"objective": "rto_full_system_s", "measured_s": 20, "source": "region-failover"}]
    result = module(MODULE, _args(dest, measurements=measured, detection=detection, drill_interval_months=3))
    rows = {r["objective"]: r for r in result["objectives"] if r["source"] == "region-failover"}
    assert rows["rto_critical_s"]["projected_s"] == 942.5 and rows["rto_critical_s"]["result"] == "FAIL"
    assert rows["rto_full_system_s"]["projected_s"] == 112.5 and rows["rto_full_system_s"]["result"] == "PASS"
    assert "RTO critical services: kill -> serving" in result["failed_objectives"] and result["next_drill"] == "2026-08-01"
    assert "production s" in result["summary"].splitlines()[0]
    doc = json.loads((dest / "latest.json").read_text())
    assert doc["detection"]["shortened"] and "3 checks 30 s apart + 5 s timeout = 95 s worst case" in doc["detection"]["note"]
    assert "production (s)" in (dest / "latest.md").read_text() and 'id="detection"' in (dest / "latest.html").read_text()


def test_an_operators_templates_restyle_the_report(tmp_path):
    """The operator's own templates (paths on the controller, as the roles pass fediflow_report_html_template)
    render the page and the summary; the invocation names the files, not their text; a template that is not
    there, or not Jinja2, is refused before anything is written, naming the option."""
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "page.html.j2").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>{{ report.drill_id }}</title>'
        "<style>body{background:#fff8e1}rect.step.ok{fill:#2e7d32}</style></head>\n"
        '<body class="restyled"><h1>{{ verdict }}: {{ report.title }}</h1>\n{{ timeline_svg }}\n'
        "<ul>{% for row in report.objectives if row.measured_s is not none %}<li>{{ row | row_title }}: "
        "{{ row.measured_s | fmt_s }} s ({{ row.result }})</li>{% endfor %}</ul></body></html>\n")
    (ours / "summary.md.j2").write_text("# {{ report.drill_id }} {{ verdict }}\n{% for s in report.steps %}"
                                        "- {{ s.name | md }}: {{ s.status }}\n{% endfor %}")
    dest = tmp_path / "reports"
    result = module(MODULE, _args(dest, title="<b>bold</b> drill", html_template=str(ours / "page.html.j2"),
                                  md_template=str(ours / "summary.md.j2")))
    assert result["changed"] and not result.get("failed"), result
    assert result["templates"] == {"html": str(ours / "page.html.j2"), "md": str(ours / "summary.md.j2")}
    assert result["invocation"]["module_args"]["html_template"] == str(ours / "page.html.j2")
    page = (dest / "latest.html").read_text()
    assert '<body class="restyled"><h1>FAIL: &lt;b&gt;bold&lt;/b&gt; drill</h1>' in page
    assert "<li>RTO critical services: 1110 s (FAIL)</li>" in page and "Trend over" not in page
    assert (dest / "latest.md").read_text().splitlines() == [
        "# drill-20260501T120000Z FAIL", "- heartbeat: ok", "- backup-restore: ok", "- file-restore: failed",
        "- promote: ok", "- notify: skipped"]
    dom = _Dom()
    dom.feed(_browser(dest / "latest.html", tmp_path, "--dump-dom"))
    assert dom.rects == ["step ok", "step ok", "step failed", "step ok", "step skipped"] and not dom.external

    shipped = module(MODULE, _args(tmp_path / "shipped"))
    assert shipped["templates"]["html"].endswith("/plugins/templates/dr_report.html.j2")
    for option, value, message in (
            ("html_template", str(ours / "missing.html.j2"), "html_template: cannot read the template %s" % (ours / "missing.html.j2")),
            ("md_template", str(ours / "page.html.j2").replace("page.html", "broken.md"), "md_template: not a Jinja2 template: line 1")):
        (ours / "broken.md.j2").write_text("{% for %}")
        refused = module(MODULE, _args(tmp_path / "refused", **{option: value}))
        assert refused.get("failed") and message in refused["msg"], refused
        assert not refused["changed"] and not (tmp_path / "refused").exists()
