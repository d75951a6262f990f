#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dr_report
short_description: Turn DR drill step results and recovery objectives into JSON, Markdown, HTML and JUnit reports
version_added: 0.2.0
description:
  - Takes the steps of a drill (O(steps), the other modules' registered results fit in O(steps[].details)) and
    what was measured (O(measurements)), judges each measurement against its recovery objective
    (O(objectives), by default the runbook's table) and writes the report into O(dest_dir) as
    C(<drill_id>.json), C(<drill_id>.md), C(<drill_id>.html) and C(<drill_id>.junit.xml) (O(formats)), each
    also copied to C(latest.<ext>).
  - "An objective passes when the measured seconds are at most its target. An objective nothing measured is
    reported as C(NOT RUN): neither passed nor failed (JUnit: C(skipped)). Each measurement is its own row; an
    objective measured twice (for example the replication lag and the WAL archive bound of the database RPO) has
    two rows. Scenarios of O(not_run) are listed as NOT RUN, never as passed."
  - "Overall RV(ok): every step ok (skipped steps excepted) and no objective failed. The module does not fail
    when the drill failed: it reports it (RV(ok), RV(failed_objectives), RV(failed_steps)); let the next task
    decide (C(ansible.builtin.assert) on RV(ok))."
  - "JSON (schema C(fediflow.dr/drill-report/v1), keys sorted): C(schema), C(drill_id), C(title), C(started)
    and C(finished) (UTC ISO 8601, C(finished) null without step end times), C(duration_s) (first step start to
    last step end, or null), C(ok), C(failed_objectives) (list of labels), C(failed_steps) (list of names),
    C(objectives) (rows with C(objective), C(label), C(kind) (V(rto), V(rpo), V(other), from the key's prefix),
    C(target_s), C(measured_s), C(pass) (true, false, null), C(result) (C(PASS), C(FAIL), C(NOT RUN)),
    C(source), C(note)), C(steps) (C(name), C(region), C(start), C(end), C(duration_s), C(ok), C(skipped),
    C(status) (C(ok), C(failed), C(skipped)), C(msg), C(details)), C(not_run) (C(scenario), C(why)),
    C(drill_interval_months) and C(drill_interval_days) (the one in use, the other null), C(drill_interval) (text),
    C(next_drill) (YYYY-MM-DD), C(detection) (null, or O(detection) as judged - C(shortened),
    C(production_worst_case_s), C(note)); each objective row also has C(projected_s)."
  - "Outage detection (O(detection)): a drill that detects an outage faster than production (fewer or faster
    checks, as the lab's 3 checks 1 s apart against the runbook's 3 checks 30 s apart) measures an RTO production
    would not get. The measurements that include the detection (O(detection.objectives) from
    O(detection.sources)) get C(projected_s) = measured - O(detection.measured_s) + production's worst case
    (O(detection.production_threshold) checks O(detection.production_interval_s) apart, the outage starting
    just after a passing check, plus O(detection.production_timeout_s) for the last one). Every format says the
    drill shortened the detection and shows the projection beside the measured value (the summary, Markdown and
    HTML as a C(production) column); such a row passes only when both are within the target."
  - "HTML: one self-contained file (inline CSS and SVG, no script, no external URL): the verdict and the next
    drill date, the timeline (C(svg#timeline): one C(rect) per step that has a start and an end, green ok, red
    failed, grey skipped, on a time axis from the first start; dashed vertical lines at the RTO targets (objective
    keys starting with C(rto)) that fall on the axis), the objectives table, the steps table, the scenarios not
    run, and the trend (C(svg#trend)): measured / target of every objective across the history up to this drill
    (100% = the target)."
  - "HTML and Markdown come from Jinja2 templates: the collection's own (C(plugins/templates/dr_report.html.j2) and
    C(dr_report.md.j2)), or an operator's (O(html_template), O(md_template)) to restyle the report - copy the
    collection's, change it, point the option at the copy; each documents what it is given (the JSON document as
    C(report), the history as C(trend), the verdict, the timeline and trend pictures as SVG, filters such as
    C(fmt_s) and C(fmt_dur)). The templates are read on the controller (the module's action plugin) and rendered on
    the host that writes the report, HTML with autoescaping (everything in a report came from a run), in a Jinja2
    sandbox, an undefined name an error. A template that does not compile or render is refused before any file is
    written, naming the option."
  - "JUnit XML: C(<testsuites>) with one C(<testsuite>), one C(<testcase>) per objective row (C(<failure>) with
    measured vs target when it failed, C(<skipped>) when not measured), per step (C(<failure>) with the step's
    message when not ok, C(<skipped>) when skipped) and per O(not_run) scenario (C(<skipped>))."
  - "History: a line of JSON per drill in O(history_file) (schema C(fediflow.dr/drill-history/v1): C(drill_id),
    C(started), C(ok), C(objectives) - key -> C(label), C(kind), C(target_s), C(measured_s) (the worst
    measurement), C(pass)). The line of the same drill id is replaced in place, else the line is appended; the
    last O(keep_history) lines are kept. Lines that are not history entries are kept as they are (with a
    warning) and left out of the trend. A drill id no longer in the file is appended again."
  - Details of a step are rendered compactly (one line of JSON, cut at 240 characters; in full in the JSON
    report). Secrets are never expected there, but values of keys with a word like C(password), C(passwd),
    C(secret), C(token), C(key), C(apikey), C(credential), C(authorization), C(cookie), C(private) or
    C(webhook) (snake_case, kebab-case or camelCase) are masked anyway, as are passwords in URLs and
    C(password=) values in strings; a registered result's C(invocation) and C(_ansible*) keys are dropped.
  - "Files are written atomically (temporary file in the same directory, then rename), mode C(0600); O(dest_dir)
    is created (C(0700)) when missing. Only files whose content differs are written; the history file is written
    after every report file. The same drill id with the same input (and the same history) gives the same bytes:
    C(changed=false). Nothing in a report depends on the time it was rendered."
  - Check mode writes nothing and reports which files would change; with C(--diff) the diff lists them
    (path, size and sha256 before and after).
author:
  - FediFlow SRE (@fediflow)
requirements:
  - Jinja2 (Debian C(python3-jinja2)) on the host that writes the report, for the HTML and Markdown formats
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  steps:
    description:
      - The drill's steps, in the order to show them.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the step.
        type: str
        required: true
      region:
        description: Region the step ran in.
        type: str
      start:
        description:
          - When the step started - ISO 8601 with a zone (C(2026-05-01T12:00:00Z)) or epoch seconds. A time
            without a zone is refused.
          - With O(steps[].duration_s) and one of O(steps[].start) / O(steps[].end), the other is computed.
            A step without both is listed but not drawn on the timeline.
        type: raw
      end:
        description: When the step ended, like O(steps[].start). Must not be before it.
        type: raw
      duration_s:
        description:
          - Seconds the step took, used when O(steps[].start) or O(steps[].end) is missing (a module's
            RV(duration_s)). With both times given, the duration is their difference.
        type: float
      ok:
        description:
          - Whether the step succeeded. Default - not C(details.failed).
        type: bool
      skipped:
        description:
          - Whether the step was skipped (neither ok nor failed). Default - C(details.skipped), else V(false).
        type: bool
      msg:
        description:
          - One line saying what went wrong (shown for a failed step). Default - C(details.msg), else
            C(details.error).
        type: str
      details:
        description:
          - Anything about the step, typically a module's registered result. Rendered compactly, secret-looking
            keys masked (see the description).
        type: dict
  measurements:
    description:
      - What the drill measured, each judged against one objective.
    type: list
    elements: dict
    default: []
    suboptions:
      objective:
        description: Key of O(objectives) this measurement is judged against.
        type: str
        required: true
      measured_s:
        description:
          - Measured seconds. Null (omitted) means not measured - C(NOT RUN), neither passed nor failed.
        type: float
      source:
        description: The step (or query) the value comes from.
        type: str
      note:
        description: What exactly was measured, shown after the objective's label.
        type: str
  objectives:
    description:
      - Recovery objectives, key -> target seconds, or key -> dict with C(target_s) and C(label). Merged over the
        runbook's table (C(rto_critical_s) 900, C(rto_standard_s) 3600, C(rto_non_critical_s) 14400,
        C(rto_full_system_s) 86400, C(rpo_database_s) 300, C(rpo_file_storage_s) 900, C(rpo_configuration_s) 3600,
        C(data_loss_tolerance_critical_s) 60, and the communication plan's C(first_notification_s) 900 - outage start to
        the first notification delivered, as M(fediflow.dr.incident) returns it), so the inventory's
        C(fediflow_objectives) fits as it is. Every
        objective is reported, measured or not.
      - Keys starting with C(rto) are RTO targets, drawn on the timeline.
    type: dict
  title:
    description: Title of the report.
    type: str
    default: FediFlow DR drill
  drill_id:
    description:
      - Id of the drill, naming the report files (letters, digits, C(.), C(_), C(-); not C(latest) or C(history)).
      - Default - C(drill-YYYYMMDDTHHMMSSZ) of O(drill_time), else of the earliest step start, else of now (then a
        re-run is a new drill).
    type: str
  drill_time:
    description:
      - When the drill started (ISO 8601 with a zone or epoch seconds), for the default O(drill_id) and
        RV(next_drill). Default - the earliest step start, else now.
    type: raw
  dest_dir:
    description: Directory to write the reports into. Created (mode C(0700)) when missing.
    type: path
    required: true
  formats:
    description: Report files to write.
    type: list
    elements: str
    choices: [ json, md, html, junit ]
    default: [ json, md, html, junit ]
  html_template:
    description:
      - Jinja2 template of the HTML page, a path on the controller - absolute, or searched like
        M(ansible.builtin.template)'s C(src) (the role's C(templates/), the playbook's C(templates/) and directory).
      - Empty or omitted - the collection's C(plugins/templates/dr_report.html.j2). Autoescaped.
    type: str
  md_template:
    description:
      - Jinja2 template of the Markdown summary, found like O(html_template). Not autoescaped (Markdown); its C(md)
        filter escapes a table cell.
      - Empty or omitted - the collection's C(plugins/templates/dr_report.md.j2).
    type: str
  history_file:
    description: The drill history (JSON lines). Default - C(history.jsonl) in O(dest_dir).
    type: path
  keep_history:
    description: Number of drills the history keeps (the newest lines). V(0) keeps no history file at all.
    type: int
    default: 100
  drill_interval_months:
    description:
      - Calendar months between drills, for RV(next_drill) (the day clamped to the month's last). The runbook
        drills monthly; the role C(fediflow.dr.dr_drill) passes the inventory's
        C(fediflow_schedules.drill_interval_months).
    type: int
    default: 1
  drill_interval_days:
    description: Days between drills instead of O(drill_interval_months), for RV(next_drill).
    type: int
  detection:
    description:
      - The outage detection the drill ran with and the production settings, to project the RTO a shortened
        detection flatters (see the description). Omit when the drill detected nothing (no failover).
    type: dict
    suboptions:
      measured_s:
        description: Seconds the drill's detection took (included in the measurements it applies to).
        type: float
        default: 0
      interval_s:
        description: Seconds between the drill's checks.
        type: float
        required: true
      threshold:
        description: Failed checks in a row the drill needed.
        type: int
        required: true
      production_interval_s:
        description: Seconds between production's checks (the runbook - 30).
        type: float
        required: true
      production_threshold:
        description: Failed checks in a row production needs (the runbook - 3).
        type: int
        required: true
      production_timeout_s:
        description: How long production's last check may wait for an answer.
        type: float
        default: 0
      objectives:
        description: Objectives whose measurements include the detection.
        type: list
        elements: str
        default: [rto_critical_s, rto_full_system_s, first_notification_s]
      sources:
        description: Measurement sources (O(measurements[].source)) that include the detection.
        type: list
        elements: str
        default: [region-failover]
  not_run:
    description: Scenarios of the drill that were not run, listed as NOT RUN (never as passed).
    type: list
    elements: dict
    default: []
    suboptions:
      scenario:
        description: Name of the scenario.
        type: str
        required: true
      why:
        description: Why it was not run.
        type: str
notes:
  - C(latest.<ext>) are copies of the files of the most recent run, whichever drill id it had; those of formats
    not asked for in that run are left as they were.
  - Open the HTML file in any browser; it needs no network and no JavaScript.
seealso:
  - module: fediflow.dr.pg_backup_verify
  - module: fediflow.dr.s3_snapshot
"""

EXAMPLES = r"""
- name: Report the drill
  fediflow.dr.dr_report:
    dest_dir: "{{ fediflow_report_dir }}"
    objectives: "{{ fediflow_objectives }}"
    steps:
      - name: backup-restore
        region: "{{ fediflow_region }}"
        start: "{{ _backup_started }}"
        duration_s: "{{ _drill_backup.duration_s }}"
        details: "{{ _drill_backup }}"
      - name: promote standby
        region: eu-west-1
        start: "2026-05-01T12:03:10Z"
        end: "2026-05-01T12:03:12.5Z"
        ok: "{{ _promotion is succeeded }}"
        details: "{{ _promotion }}"
    measurements:
      - objective: rto_standard_s
        measured_s: "{{ _drill_backup.phases.verify_restore }}"
        source: backup-restore
        note: database restore from backup
      - objective: rto_critical_s
    not_run:
      - {scenario: pitr, why: "pitr_restore role not implemented yet"}
  register: drill_report

- name: Fail the play when an objective was missed
  ansible.builtin.assert:
    that: drill_report.ok
    fail_msg: "{{ drill_report.summary }}"

- name: The drill report with the operator's own look (templates beside the playbook)
  fediflow.dr.dr_report:
    dest_dir: "{{ fediflow_report_dir }}"
    steps: "{{ drill_steps }}"
    html_template: "{{ playbook_dir }}/templates/our-report.html.j2"
    md_template: our-report.md.j2  # found in the playbook's templates/

- name: Only JSON and JUnit for CI, no history
  fediflow.dr.dr_report:
    dest_dir: "{{ ci_artifacts }}/dr"
    drill_id: "ci-{{ ci_job_id }}"
    formats: [json, junit]
    keep_history: 0
    steps: "{{ drill_steps }}"
"""

RETURN = r"""
ok:
  description: Every step ok (skipped ones excepted) and no objective failed.
  returned: always
  type: bool
drill_id:
  description: The drill id the files are named after.
  returned: always
  type: str
  sample: drill-20260501T120000Z
files:
  description: Paths of the report files (written, or that would be, in check mode); null for a format not asked for.
  returned: always
  type: dict
  contains:
    json:
      description: The JSON report.
      type: str
    md:
      description: The Markdown summary.
      type: str
    html:
      description: The HTML page.
      type: str
    junit:
      description: The JUnit XML file.
      type: str
    history:
      description: The history file, null with O(keep_history=0).
      type: str
  sample:
    json: /var/tmp/fediflow-lab/reports/drill-20260501T120000Z.json
    md: /var/tmp/fediflow-lab/reports/drill-20260501T120000Z.md
    html: /var/tmp/fediflow-lab/reports/drill-20260501T120000Z.html
    junit: /var/tmp/fediflow-lab/reports/drill-20260501T120000Z.junit.xml
    history: /var/tmp/fediflow-lab/reports/history.jsonl
changed_files:
  description: Files whose content changed (would change, in check mode), including C(latest.*) and the history.
  returned: always
  type: list
  elements: str
objectives:
  description: One row per measurement, and one per objective nothing measured.
  returned: always
  type: list
  elements: dict
  contains:
    objective:
      description: Key of the objective.
      type: str
    label:
      description: The objective's label.
      type: str
    target_s:
      description: Target seconds.
      type: float
    measured_s:
      description: Measured seconds, null when not measured.
      type: float
    projected_s:
      description: The measurement with production's outage detection, when the drill shortened it (O(detection)); else null.
      type: float
    pass:
      description: Measured (and RV(objectives[].projected_s), when set) <= target; null when not measured.
      type: bool
    result:
      description: C(PASS), C(FAIL) or C(NOT RUN).
      type: str
    source:
      description: Where the value comes from (O(measurements[].source)).
      type: str
    note:
      description: O(measurements[].note).
      type: str
  sample:
    - {objective: rpo_database_s, label: "RPO database (continuous replication)", target_s: 300,
       measured_s: 0.012, pass: true, result: PASS, source: replication-rpo, note: replication lag}
failed_objectives:
  description: Labels (with the note) of the objective rows that failed.
  returned: always
  type: list
  elements: str
failed_steps:
  description: Names of the steps that failed.
  returned: always
  type: list
  elements: str
not_run:
  description: O(not_run), as reported.
  returned: always
  type: list
  elements: dict
next_drill:
  description: Date the next drill is due (drill start + O(drill_interval_months), or O(drill_interval_days)).
  returned: always
  type: str
  sample: "2026-06-01"
summary:
  description: Plain-text table - objective, target s, measured s (production s, when the drill shortened the
    detection), result - then failed steps, scenarios not run, the overall verdict and the next drill.
  returned: always
  type: str
history_entries:
  description: Number of drills in the history after this run.
  returned: always
  type: int
written:
  description: Files written before a failure.
  returned: on failure while writing
  type: list
  elements: str
templates:
  description: The templates the HTML page and the Markdown summary were rendered from (paths on the controller).
  returned: always
  type: dict
  sample:
    html: /usr/share/ansible/collections/ansible_collections/fediflow/dr/plugins/templates/dr_report.html.j2
    md: /srv/dr/templates/report.md.j2
phases:
  description: Seconds spent per phase (validate, render, write).
  returned: always
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import report
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    module = AnsibleModule(
        argument_spec={
            "steps": {"type": "list", "elements": "dict", "default": [], "options": {
                "name": {"type": "str", "required": True},
                "region": {"type": "str"},
                "start": {"type": "raw"},
                "end": {"type": "raw"},
                "duration_s": {"type": "float"},
                "ok": {"type": "bool"},
                "skipped": {"type": "bool"},
                "msg": {"type": "str"},
                "details": {"type": "dict"},
            }},
            "measurements": {"type": "list", "elements": "dict", "default": [], "options": {
                "objective": {"type": "str", "required": True},
                "measured_s": {"type": "float"},
                "source": {"type": "str"},
                "note": {"type": "str"},
            }},
            "objectives": {"type": "dict"},
            "title": {"type": "str", "default": "FediFlow DR drill"},
            "drill_id": {"type": "str"},
            "drill_time": {"type": "raw"},
            "dest_dir": {"type": "path", "required": True},
            "formats": {"type": "list", "elements": "str", "default": list(report.FORMATS),
                        "choices": list(report.FORMATS)},
            "html_template": {"type": "str"},
            "md_template": {"type": "str"},
            "history_file": {"type": "path"},
            "keep_history": {"type": "int", "default": 100},
            "drill_interval_months": {"type": "int", "default": 1},
            "drill_interval_days": {"type": "int"},
            "detection": {"type": "dict", "options": {
                "measured_s": {"type": "float", "default": 0},
                "interval_s": {"type": "float", "required": True},
                "threshold": {"type": "int", "required": True},
                "production_interval_s": {"type": "float", "required": True},
                "production_threshold": {"type": "int", "required": True},
                "production_timeout_s": {"type": "float", "default": 0},
                "objectives": {"type": "list", "elements": "str", "default": list(report.DETECTION_OBJECTIVES)},
                "sources": {"type": "list", "elements": "str", "default": list(report.DETECTION_SOURCES)},
            }},
            "not_run": {"type": "list", "elements": "dict", "default": [], "options": {
                "scenario": {"type": "str", "required": True},
                "why": {"type": "str"},
            }},
        },
        supports_check_mode=True,
    )
    run_module(module, report.ensure, dict(module.params), check_mode=module.check_mode, warn=module.warn)


if __name__ == "__main__":
    main()
