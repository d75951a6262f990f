# -*- coding: utf-8 -*-
"""dr_report's HTML page and Markdown summary come from Jinja2 templates (plugins/templates/): the
collection's own keep the content the Python renderer wrote before them (its output for a fixed drill
is kept in fixtures/), HTML is autoescaped, an operator's template restyles the report, and a template
that does not compile or render is refused, naming its option, before anything is written."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import report as rp
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

NOW = datetime(2026, 5, 1, 13, 0, 0, tzinfo=timezone.utc)
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
TEMPLATES = {option: open(rp.shipped_template(fmt), encoding="utf-8").read() for fmt, option in rp.TEMPLATE_OPTIONS.items()}
HOSTILE = "<script>alert('x')</script> & \"quoted\""


def _params(tmp_path, **kw):
    """A drill with every part a page shows: ok, failed, skipped and untimed steps, hostile text, a
    shortened detection (the production column), objectives not measured, a scenario not run."""
    params = {
        "dest_dir": str(tmp_path / "reports"), "title": "Drill <b>\"one\"</b> & co", "drill_interval_days": 91,
        "objectives": {"rto_critical_s": 900, "rpo_database_s": {"target_s": 300, "label": "RPO db | lag"}},
        "steps": [
            {"name": "fence", "region": "us-east-1", "start": "2026-05-01T12:00:00Z", "end": "2026-05-01T12:00:30Z"},
            {"name": "region-failover", "region": "eu-west-1", "start": 1777636830, "duration_s": 12.5,
             "details": {"changed": True, "login_password": "hunter2", "msg": "promoted", "note": HOSTILE}},
            {"name": HOSTILE, "start": "2026-05-01T14:01:00+02:00", "end": "2026-05-01T14:20:00+02:00",
             "details": {"failed": True, "msg": "Route53 said no | <b>twice</b>"}},
            {"name": "notify", "skipped": True},
        ],
        "measurements": [
            {"objective": "rto_critical_s", "measured_s": 1200.0, "source": "region-failover", "note": "failover"},
            {"objective": "rpo_database_s", "measured_s": 0.25, "source": "region-failover", "note": "lag <1s>"},
            {"objective": "rpo_database_s", "measured_s": 300, "note": "archive"},
        ],
        "detection": {"measured_s": 2.1, "interval_s": 1, "threshold": 3, "production_interval_s": 30,
                      "production_threshold": 3, "production_timeout_s": 5},
        "not_run": [{"scenario": "pitr", "why": "not implemented <yet> | later"}],
    }
    params.update(TEMPLATES)
    params.update(kw)
    return params


def _rendered(tmp_path, **kw):
    v = rp.validate(_params(tmp_path, **kw))
    report = rp.build_report(v, NOW)
    earlier = {"schema": rp.HISTORY_SCHEMA, "drill_id": "q1", "started": "2026-02-01T12:00:00Z", "ok": True,
               "objectives": {"rto_critical_s": {"label": "RTO critical services", "target_s": 900, "measured_s": 700}}}
    trend = [earlier, rp.history_entry(report)]
    return rp.render_html(report, v["templates"]["html"], trend), rp.render_markdown(report, v["templates"]["md"], trend)


class _Content(HTMLParser):
    """What a page says and how it is built: tags with their attributes and the text between them
    (entities resolved, runs of white space as one), the style sheet left out."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.events, self._style = [], False

    def handle_starttag(self, tag, attrs):
        self._style = tag == "style"
        self.events.append(("<", tag, sorted(attrs)))

    def handle_endtag(self, tag):
        self._style = False
        self.events.append((">", tag))

    def handle_data(self, data):
        text = " ".join(data.split())
        if text and not self._style:
            self.events.append(("text", text))

    def handle_decl(self, decl):
        self.events.append(("decl", decl))


def _content(page):
    parser = _Content()
    parser.feed(page)
    parser.close()
    return parser.events


def _fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


def test_the_shipped_templates_keep_the_content_of_the_python_renderer(tmp_path):
    """fixtures/dr_report_before_templates.* are what report.py wrote from Python strings, for this drill,
    before the templates: the Markdown is the same to the byte; the HTML has the same elements, attributes
    and text (entities are now written as Jinja2 escapes them, &#34; for &quot;)."""
    page, markdown = _rendered(tmp_path)
    assert markdown == _fixture("dr_report_before_templates.md")
    before = _fixture("dr_report_before_templates.html")
    assert _content(page) == _content(before)
    assert page.count("\n") == before.count("\n") and page.endswith("</html>\n")


def test_the_page_shows_every_part_and_escapes_what_came_from_the_run(tmp_path):
    page, markdown = _rendered(tmp_path)
    text = [e[1] for e in _content(page) if e[0] == "text"]
    assert "Drill <b>\"one\"</b> & co - drill-20260501T120000Z" in text  # the title, as text
    assert "<script>" not in page and "<b>" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "hunter2" not in page and "hunter2" not in markdown
    for part in ('<svg id="timeline"', '<svg id="trend"', 'id="detection"', "<th>production (s)</th>",
                 '<td class="num">1292.9</td>', '<td class="FAIL"><strong>FAIL</strong>', "Next drill due 2026-07-31",
                 "<h2>Not run</h2>", "not implemented &lt;yet&gt; | later", "Not on the timeline (no start/end time): notify",
                 "Trend over 2 drills (measured / target)", '<td class="NOTRUN"><strong>NOT RUN</strong>'):
        assert part in page, part
    assert "| RPO db \\| lag: lag <1s> | 300 | 0.25 | - | PASS | region-failover |" in markdown
    assert "- **pitr** - NOT RUN: not implemented <yet> \\| later" in markdown


def test_an_operators_template_restyles_the_report_through_ensure(tmp_path):
    html = ('<html><head><style>td{color:purple}</style></head><body class="ours"><h1>{{ report.title }}</h1>\n'
            "{% for row in report.objectives %}<p>{{ row | row_title }}: {{ row.measured_s | fmt_s }} / {{ row.target_s | fmt_s }}"
            " {{ row.result }}</p>\n{% endfor %}{{ timeline_svg }}</body></html>\n")
    md = "# {{ report.drill_id }}: {{ verdict }}\n{% for s in report.steps %}* {{ s.name | md }} {{ s.status }}\n{% endfor %}"
    result = rp.ensure(_params(tmp_path, html_template=html, md_template=md), now=NOW)
    page = open(result["files"]["html"], encoding="utf-8").read()
    assert '<body class="ours"><h1>Drill &lt;b&gt;&#34;one&#34;&lt;/b&gt; &amp; co</h1>' in page
    assert "<p>RTO critical services: failover: 1200 / 900 FAIL</p>" in page and '<svg id="timeline"' in page
    assert open(result["files"]["md"], encoding="utf-8").read().splitlines()[0] == "# drill-20260501T120000Z: FAIL"
    assert "hunter2" not in page


@pytest.mark.parametrize("option, text, message", [
    ("html_template", "<p>{% if report.ok %}</p>", r"html_template: not a Jinja2 template: line 1: Unexpected end of template"),
    ("md_template", "{{ report.ok ", r"md_template: not a Jinja2 template: line 1:"),
    ("html_template", "{{ report.no_such_key }}", r"html_template: rendering failed: UndefinedError: .*no_such_key"),
    ("md_template", "{{ no_such_name }}", r"md_template: rendering failed: UndefinedError: 'no_such_name' is undefined"),
    ("html_template", "{{ report.__class__.__mro__ }}", r"html_template: rendering failed: .*__class__"),
    ("html_template", "", r"html_template: the text of a Jinja2 template is required for the html report"),
    ("md_template", None, r"md_template: the text of a Jinja2 template is required for the md report"),
])
def test_a_bad_template_is_refused_before_anything_is_written(tmp_path, option, text, message):
    with pytest.raises(FediflowError, match=message):
        rp.ensure(_params(tmp_path, **{option: text}), now=NOW)
    assert not (tmp_path / "reports").exists()


def test_formats_without_a_template_need_none(tmp_path):
    result = rp.ensure(_params(tmp_path, formats=["json", "junit"], html_template=None, md_template=None), now=NOW)
    assert result["files"]["html"] is None and os.path.exists(result["files"]["json"])
